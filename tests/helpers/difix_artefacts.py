"""Tiny fixer artefacts in the layouts users bring: NVIDIA's published Difix folders and the
reference training script's model_*.pkl, written by this test code from a DifixNet with known
weights.

Where each fact of the layouts comes from:
- Key names (peft adapter "vae_skip", skip convs `decoder.skip_conv_{1..4}` LoRA-wrapped, alpha 8
  = peft's default since vae/config.json has no lora_alpha): nv-tlabs/Difix3D at c76edc5,
  `src/model.py` (`save_ckpt`, `save_model`, the VAE LoRA config) and the reference code itself
  run as an oracle (earlier sessions).
- Published folder files: the Hugging Face file listings of `nvidia/difix` and `nvidia/difix_ref`
  (METHOD.md, "The published artefacts"): model_index.json, scheduler/, text_encoder/,
  tokenizer/, unet/{config.json, diffusion_pytorch_model.safetensors} (fp32), vae/{autoencoder_kl.py,
  config.json, diffusion_pytorch_model.safetensors}, LICENSE.txt, NOTICE, README.md at the top;
  difix_ref's unet/ also holds unet_2d_condition.py (69.2 kB, the size of the reference's
  mv_unet.py).
- model_index.json: nvidia/difix's as published (`_class_name` DifixPipeline, unet ["diffusers",
  "UNet2DConditionModel"], vae ["autoencoder_kl", "AutoencoderKL"], scheduler ["diffusers",
  "DDPMScheduler"]; its `_diffusers_version` 0.25.1 is written as the installed version, which no
  loader reads); difix_ref's unet entry ["unet_2d_condition", "UNet2DConditionModel"] follows from
  diffusers naming a custom component by its module file (inferred from the file list, not seen
  directly). The `.py` files written here raise when imported: a loader that runs them fails the
  tests.
The folder itself is written by the project's exporter (`loading/export_published.py`, which
states the same facts); this helper adds what only NVIDIA's folders have.
- vae/config.json: stock AutoencoderKL keys plus gamma 1.0, ignore_skip false, lora_rank 4.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from lightning_modules.difix.net.net import DifixNet
from lightning_modules.difix.net.architectures import TINY_CONFIG, build_components, save_components
from lightning_modules.difix.loading.base_models import tiny_net
from lightning_modules.difix.loading.export_published import save_published_folder
from lightning_modules.difix.loading.export_published import published_vae_state as exported_vae_state

RANK = 4
SCALE = 8.0 / RANK  # peft's default alpha / r


def trained_tiny(seed: int = 0) -> DifixNet:
    """The tiny net with non-trivial decoder LoRA B and skip convs (as after training)."""
    net = tiny_net(seed=seed).eval()
    gen = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "lora_B" in name or name.startswith("skips."):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    return net


def published_vae_state(net: DifixNet, seed: int = 0) -> dict[str, torch.Tensor]:
    """net's VAE + skip convs under the published names (the project's exporter), each skip conv
    re-split as trained files have it: base = W - B @ A * 2 with random A and B, so a loader must
    merge the LoRA to get W back."""
    out = exported_vae_state(net)
    gen = torch.Generator().manual_seed(seed + 200)
    for j, conv in enumerate(net.skips.convs):
        w = conv.weight.detach()
        a = torch.randn(RANK, w.shape[1], 1, 1, generator=gen) * 0.1
        b = torch.randn(w.shape[0], RANK, 1, 1, generator=gen) * 0.1
        delta = SCALE * torch.einsum("or,rikl->oikl", b.flatten(1), a)
        out[f"decoder.skip_conv_{j + 1}.base_layer.weight"] = (w - delta).contiguous()
        out[f"decoder.skip_conv_{j + 1}.lora_A.vae_skip.weight"] = a
        out[f"decoder.skip_conv_{j + 1}.lora_B.vae_skip.weight"] = b
    return out


def write_vae(folder: Path, vae_state: dict[str, torch.Tensor]) -> None:
    save_file(vae_state, str(folder / "vae" / "diffusion_pytorch_model.safetensors"))


REMOTE_CODE = "raise RuntimeError('remote code must never be imported')\n"
DIFIX_REF_UNET = ["unet_2d_condition", "UNet2DConditionModel"]
LEGACY_GUESS_UNET = ["mv_unet", "UNet2DConditionModel"]  # this project's earlier guess; still accepted


def write_published_folder(net: DifixNet, folder: Path, multiview: bool, unet_entry: list[str] | None = None,
                           scheduler_extra: dict | None = None) -> Path:
    """A tiny `nvidia/difix` (multiview=False) or `nvidia/difix_ref` (True) folder holding net's weights.

    Written by the project's exporter (`save_published_folder`), then given what NVIDIA's folders
    have beyond it: the reference's module files (here ones that raise when imported), the licence
    files, the skip convs' LoRA as a trained split (`published_vae_state`).

    Args:
        unet_entry: model_index's unet entry instead of the published one (e.g. LEGACY_GUESS_UNET).
        scheduler_extra: scheduler config keys to set (e.g. {"clip_sample": True}).
    """
    components = build_components(TINY_CONFIG, seed=0)  # same text encoder / tokenizer as tiny_net(0)
    save_published_folder(net, folder, components["text_encoder"], components["tokenizer"], multiview=multiview)
    if scheduler_extra:
        from diffusers import DDPMScheduler

        config = DDPMScheduler.load_config(str(folder / "scheduler"))
        DDPMScheduler.from_config({**config, **scheduler_extra}).save_pretrained(str(folder / "scheduler"))
    if multiview:
        (folder / "unet" / "unet_2d_condition.py").write_text(REMOTE_CODE)
    (folder / "vae" / "autoencoder_kl.py").write_text(REMOTE_CODE)
    write_vae(folder, published_vae_state(net))
    if unet_entry is not None:
        index = json.loads((folder / "model_index.json").read_text())
        (folder / "model_index.json").write_text(json.dumps({**index, "unet": unet_entry}, indent=2))
    for name, text in (("LICENSE.txt", "NVIDIA License (test stand-in)\n"), ("NOTICE", "test stand-in\n"),
                       ("README.md", "---\nlicense: other\n---\n")):
        (folder / name).write_text(text)
    return folder


def write_reference_pkl(net: DifixNet, path: Path, base_folder: Path, unet_dtype: torch.dtype = torch.float32) -> Path:
    """A reference `model_*.pkl` of net, and the tiny SD-Turbo-layout base folder it trained from."""
    save_components(build_components(TINY_CONFIG, seed=0), base_folder)
    vae = published_vae_state(net)
    targets = sorted({k.split(".lora_A.")[0] for k in vae if ".lora_A." in k})
    torch.save({
        "vae_lora_target_modules": targets,
        "rank_vae": RANK,
        "state_dict_unet": {k[5:]: v.to(unet_dtype) for k, v in net.state_dict().items() if k.startswith("unet.")},
        "state_dict_vae": {k: v for k, v in vae.items() if "lora" in k or "skip" in k},
        "optimizer": {"state": {}, "param_groups": []},
    }, path)  # fmt: skip
    return path
