"""The Fixer denoiser: diffusers' `CosmosTransformer3DModel` as cosmos-predict2's `MiniTrainDIT`.

diffusers ships the Cosmos-Predict2 DiT (its `diffusers/scripts/convert_cosmos_to_diffusers.py` converts
the "Cosmos-2.0" checkpoints into it). Read side by side with cosmos-predict2's
`models/text2image_dit.py` it computes the same function: patchify order (c, t, h, w), 3D RoPE
(t / h / w split of head_dim // 6 * 2, NTK scaling, rotate-half, self-attention only), the
normalised sinusoidal timestep embedding and the adaLN-LoRA shift / scale / gate of each
self-attention, cross-attention and MLP, the final adaLN layer and the unpatchify order. One
difference: diffusers' attention builds its q / k RMSNorms with eps 1e-5 where MiniTrainDIT
uses 1e-6 (Transformer Engine's RMSNorm(head_dim, eps=1e-6)); `build_dit` sets 1e-6.

The key map below is written from the two modules' own names (MiniTrainDIT's attributes, as
in its state dict under the `net.` prefix of the base checkpoint or the `dit.` prefix of
Fixer's `state_dict_unet`). Buffers that MiniTrainDIT recomputes (the RoPE tables), its
training counters and Transformer Engine's `_extra_state` carry no weights and are dropped.
"""
from __future__ import annotations

import re

import torch

from lightning_modules.difix.cosmos.config import LATENT_CHANNELS, DiTConfig

# MiniTrainDIT module path -> CosmosTransformer3DModel module path (every tensor is ".weight").
TOP_LEVEL = {
    "x_embedder.proj.1": "patch_embed.proj",
    "t_embedder.1.linear_1": "time_embed.t_embedder.linear_1",
    "t_embedder.1.linear_2": "time_embed.t_embedder.linear_2",
    "t_embedding_norm": "time_embed.norm",
    "final_layer.linear": "proj_out",
    "final_layer.adaln_modulation.1": "norm_out.linear_1",
    "final_layer.adaln_modulation.2": "norm_out.linear_2",
}
# Inside `blocks.{i}` -> inside `transformer_blocks.{i}`.
PER_BLOCK = {
    **{f"{cosmos}.{a}": f"{ours}.{b}"
       for cosmos, ours in (("self_attn", "attn1"), ("cross_attn", "attn2"))
       for a, b in (("q_proj", "to_q"), ("k_proj", "to_k"), ("v_proj", "to_v"), ("output_proj", "to_out.0"),
                    ("q_norm", "norm_q"), ("k_norm", "norm_k"))},
    "mlp.layer1": "ff.net.0.proj",
    "mlp.layer2": "ff.net.2",
    **{f"adaln_modulation_{part}.{j}": f"{norm}.linear_{j}"
       for part, norm in (("self_attn", "norm1"), ("cross_attn", "norm2"), ("mlp", "norm3")) for j in (1, 2)},
}
# MiniTrainDIT state-dict entries that are no weights: RoPE tables it rebuilds, training
# counters (WeightTrainingStat), Transformer Engine fp8 metadata.
NOT_WEIGHTS = re.compile(r"^(pos_embedder\.(seq|dim_spatial_range|dim_temporal_range)|"
                         r"accum_(video_sample_counter|image_sample_counter|iteration|train_in_hours))$|_extra_state$")
_BLOCK = re.compile(r"^(blocks|transformer_blocks)\.(\d+)\.(.+)$")


def cosmos_to_diffusers_key(key: str) -> str | None:
    """A MiniTrainDIT key (no prefix) -> its CosmosTransformer3DModel key; None for a non-weight
    entry (`NOT_WEIGHTS`).

    Raises:
        KeyError: a key MiniTrainDIT has no place for (the caller names it).
    """
    if NOT_WEIGHTS.search(key):
        return None
    module, _, leaf = key.rpartition(".")
    if leaf != "weight":
        raise KeyError(key)
    match = _BLOCK.match(module)
    if match and match.group(1) == "blocks" and match.group(3) in PER_BLOCK:
        return f"transformer_blocks.{match.group(2)}.{PER_BLOCK[match.group(3)]}.weight"
    if module in TOP_LEVEL:
        return f"{TOP_LEVEL[module]}.weight"
    raise KeyError(key)


_INVERSE_TOP = {v: k for k, v in TOP_LEVEL.items()}
_INVERSE_BLOCK = {v: k for k, v in PER_BLOCK.items()}


def diffusers_to_cosmos_key(key: str) -> str:
    """A CosmosTransformer3DModel key -> MiniTrainDIT's (no prefix), for writing NVIDIA's layout."""
    module, _, leaf = key.rpartition(".")
    match = _BLOCK.match(module)
    if match and match.group(1) == "transformer_blocks" and match.group(3) in _INVERSE_BLOCK:
        return f"blocks.{match.group(2)}.{_INVERSE_BLOCK[match.group(3)]}.{leaf}"
    if module in _INVERSE_TOP:
        return f"{_INVERSE_TOP[module]}.{leaf}"
    raise KeyError(f"{key}: no MiniTrainDIT name (not a Cosmos-Predict2 text-to-image DiT weight)")


def build_dit(config: DiTConfig, seed: int = 0) -> torch.nn.Module:
    """A randomly initialised CosmosTransformer3DModel with MiniTrainDIT's options.

    Args:
        config: sizes (the published 0.6B by default).
        seed: weight seed (the weights are normally replaced by a checkpoint's).
    """
    from diffusers import CosmosTransformer3DModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        dit = CosmosTransformer3DModel(
            in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS, num_attention_heads=config.num_heads,
            attention_head_dim=config.head_dim, num_layers=config.num_layers, mlp_ratio=config.mlp_ratio,
            text_embed_dim=config.text_dim, adaln_lora_dim=config.adaln_lora_dim, max_size=tuple(config.max_size),
            patch_size=(1, config.patch, config.patch), rope_scale=tuple(config.rope_scale),
            concat_padding_mask=True, extra_pos_embed_type=None)
    for block in dit.transformer_blocks:
        for attn in (block.attn1, block.attn2):
            attn.norm_q.eps = attn.norm_k.eps = 1e-6  # MiniTrainDIT's q/k RMSNorm eps (diffusers: 1e-5)
    return dit


def run_dit(dit: torch.nn.Module, latent: torch.Tensor, timestep: torch.Tensor, text_tokens: int) -> torch.Tensor:
    """One DiT call with Fixer's condition: the empty text (zero T5 tokens) and a zero padding mask.

    Args:
        dit: the CosmosTransformer3DModel.
        latent: (B, 16, T, h, w) input, already scaled by c_in.
        timestep: (B,) the rectified-flow time t (c_noise).
        text_tokens: length of the zero text condition.

    Returns:
        (B, 16, T, h, w) the network output (a velocity), in the DiT's dtype.
    """
    b, _, _, h, w = latent.shape
    text = latent.new_zeros(b, text_tokens, dit.config.text_embed_dim)
    # One mask for the batch: diffusers repeats the mask by the batch size itself.
    padding_mask = latent.new_zeros(1, 1, h, w)
    return dit(latent, timestep, encoder_hidden_states=text, padding_mask=padding_mask, return_dict=False)[0]


def infer_dit_config(state: dict[str, torch.Tensor], source: str) -> DiTConfig:
    """The DiT's sizes read off its weights (diffusers' names), for files that carry no config
    (NVIDIA's); RoPE scale and table size keep the published values.

    Raises:
        ValueError: naming the file when a weight that gives a size is missing.
    """
    try:
        width, patch_in = state["patch_embed.proj.weight"].shape
        head_dim = state["transformer_blocks.0.attn1.norm_q.weight"].shape[0]
        lora = state["transformer_blocks.0.norm1.linear_1.weight"].shape[0]
        text_dim = state["transformer_blocks.0.attn2.to_k.weight"].shape[1]
        hidden = state["transformer_blocks.0.ff.net.0.proj.weight"].shape[0]
    except KeyError as err:
        raise ValueError(f"{source}: no DiT weight {err} to read the model's size from") from err
    layers = 1 + max(int(m.group(2)) for k in state if (m := _BLOCK.match(k)))
    patch = round(((patch_in) / (LATENT_CHANNELS + 1)) ** 0.5)
    return DiTConfig(num_layers=layers, num_heads=width // head_dim, head_dim=head_dim, mlp_ratio=hidden / width,
                     adaln_lora_dim=lora, text_dim=text_dim, patch=patch)
