"""Tiny files in the layout of NVIDIA's Fixer (`hf download nvidia/Fixer`), built from NVIDIA's own facts.

Where each fact comes from (read in the projects, never copied):
- MiniTrainDIT's state-dict names and shapes: nvidia-cosmos/cosmos-predict2
  `cosmos_predict2/models/text2image_dit.py` (PatchEmbed `x_embedder.proj.1` Linear over
  (in_channels + 1 padding-mask channel) * p * p, bias-free; `t_embedder.1.linear_1` (D, D) and,
  with adaLN-LoRA, `linear_2` (3D, D); `t_embedding_norm` RMSNorm(D); per Block `self_attn` /
  `cross_attn` `q_proj k_proj v_proj output_proj` bias-free, `q_norm k_norm` RMSNorm(head_dim),
  cross-attention k / v from the text width; `mlp.layer1` (4D, D), `layer2` (D, 4D);
  `adaln_modulation_{self_attn,cross_attn,mlp}` = Sequential(SiLU, Linear(D, lora), Linear(lora, 3D));
  `final_layer.linear` (p*p*16, D), `final_layer.adaln_modulation` (lora, D), (2D, lora)),
  its buffers `pos_embedder.seq` / `dim_spatial_range` / `dim_temporal_range`
  (VideoRopePosition3DEmb) and `accum_*` counters (networks/model_weights_stats.py).
- The pkl: nv-tlabs/Fixer `save_ckpt` (`state_dict_unet` = the Text2ImagePipeline's state dict,
  whose registered children are `tokenizer` then `dit`; `state_dict_vae` = the tokenizer's;
  `net_disc`, `optimizer`, `optimizer_disc`).
- The tokenizer file: cosmos-predict2 `CosmosImageTokenizer.__init__` (a dict of TorchScript
  archive bytes under "encoder" / "decoder" and "mean_std").
- The base DiT: `Text2ImagePipeline.from_config` strips a `net.` prefix (`net_ema.` is the EMA).
- The folder: `pretrained/pretrained_fixer.pkl`, `base/model_fast_tokenizer.pt`,
  `base/tokenizer_fast.pth` (nv-tlabs/Fixer README and its model code's paths).
"""
from __future__ import annotations

from pathlib import Path

import torch

from lightning_modules.difix.cosmos.config import DiTConfig, FixerNetConfig, TinyTokenizerConfig
from lightning_modules.difix.cosmos.net import FixerNet


def tiny_config(**overrides: object) -> FixerNetConfig:
    """A 2-block DiT of width 24 and a 4-level plain tokenizer (fast on the CPU)."""
    args: dict = {"dit": DiTConfig(num_layers=2, num_heads=2, head_dim=12, adaln_lora_dim=8, text_dim=16),
                  "tokenizer": TinyTokenizerConfig(block_channels=(8, 16, 16, 16), norm_groups=4), "text_tokens": 4}
    args.update(overrides)
    return FixerNetConfig(**args)


def minitrain_state(dit: DiTConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """A MiniTrainDIT state dict (no prefix) of these sizes, random weights, its buffers included."""
    g = torch.Generator().manual_seed(seed)
    d, lora, p, hd = dit.width, dit.adaln_lora_dim, dit.patch, dit.head_dim

    def w(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * 0.1

    state = {"x_embedder.proj.1.weight": w(d, 17 * p * p), "t_embedder.1.linear_1.weight": w(d, d),
             "t_embedder.1.linear_2.weight": w(3 * d, d), "t_embedding_norm.weight": 1 + w(d),
             "final_layer.linear.weight": w(p * p * 16, d), "final_layer.adaln_modulation.1.weight": w(lora, d),
             "final_layer.adaln_modulation.2.weight": w(2 * d, lora)}
    for i in range(dit.num_layers):
        b = f"blocks.{i}"
        for attn, ctx in (("self_attn", d), ("cross_attn", dit.text_dim)):
            state.update({f"{b}.{attn}.q_proj.weight": w(d, d), f"{b}.{attn}.k_proj.weight": w(d, ctx),
                          f"{b}.{attn}.v_proj.weight": w(d, ctx), f"{b}.{attn}.output_proj.weight": w(d, d),
                          f"{b}.{attn}.q_norm.weight": 1 + w(hd), f"{b}.{attn}.k_norm.weight": 1 + w(hd)})
        state.update({f"{b}.mlp.layer1.weight": w(4 * d, d), f"{b}.mlp.layer2.weight": w(d, 4 * d)})
        for part in ("self_attn", "cross_attn", "mlp"):
            state.update({f"{b}.adaln_modulation_{part}.1.weight": w(lora, d),
                          f"{b}.adaln_modulation_{part}.2.weight": w(3 * d, lora)})
    dim_h = hd // 6 * 2
    state.update({"pos_embedder.seq": torch.arange(128.0),
                  "pos_embedder.dim_spatial_range": torch.arange(0, dim_h, 2)[: dim_h // 2].float() / dim_h,
                  "pos_embedder.dim_temporal_range": torch.zeros((hd - 2 * dim_h) // 2),
                  "accum_video_sample_counter": torch.tensor(0), "accum_image_sample_counter": torch.tensor(0),
                  "accum_iteration": torch.tensor(0), "accum_train_in_hours": torch.tensor(0.0)})
    return state


def write_fixer_folder(root: Path, config: FixerNetConfig | None = None, seed: int = 0,
                       with_base: bool = True) -> tuple[Path, FixerNet]:
    """A tiny `hf download nvidia/Fixer --local-dir root` folder and the plain-module net it holds.

    The tokenizer programs are traced from the net's plain tokenizer; the pkl's tokenizer weights
    are moved away from the programs' own (as a fine-tuned pkl's are), so a loader that skips
    them gives other outputs.

    Returns:
        (root, the FixerNet with exactly the weights the files hold).
    """
    config = config or tiny_config()
    net = FixerNet(config).eval()
    dit_state = minitrain_state(config.dit, seed)
    from lightning_modules.difix.cosmos.keys import dit_state as to_diffusers

    net.dit.load_state_dict(to_diffusers({f"dit.{k}": v for k, v in dit_state.items()}, "dit.", "fixture")[0])
    (root / "base").mkdir(parents=True, exist_ok=True)
    (root / "pretrained").mkdir(parents=True, exist_ok=True)
    torch.save(net.tokenizer.file_payload(), root / "base" / "tokenizer_fast.pth")
    with torch.no_grad():
        for param in net.tokenizer.parameters():
            param.add_(torch.randn(param.shape, generator=torch.Generator().manual_seed(seed + 7)) * 0.02)
    vae = {k: v.clone() for k, v in net.tokenizer.state_dict().items()}
    unet = {f"tokenizer.{k}": v for k, v in vae.items()}
    unet.update({f"dit.{k}": v for k, v in dit_state.items()})
    torch.save({"state_dict_unet": unet, "state_dict_vae": vae, "net_disc": {"w": torch.zeros(2)},
                "optimizer": {"state": {}, "param_groups": [{"lr": 2e-5, "params": [0]}]},
                "optimizer_disc": {"state": {}, "param_groups": []}}, root / "pretrained" / "pretrained_fixer.pkl")
    if with_base:
        base = {f"net.{k}": v + 1.0 if v.is_floating_point() else v for k, v in dit_state.items()}
        base.update({f"net_ema.{k}": v for k, v in dit_state.items()})
        torch.save(base, root / "base" / "model_fast_tokenizer.pt")
    return root, net
