"""The published Difix VAE's key layout mapped onto DifixNet keys, and the key checks every
weight loader runs (nothing is dropped silently: every tensor in a file must land in the net,
and every tensor the net needs must come from the file or the base model).

Published VAE (peft-wrapped AutoencoderKL, adapter "vae_skip", rank 4, peft's default alpha 8):

    decoder.<module>.base_layer.weight|bias, .lora_A.vae_skip.weight, .lora_B.vae_skip.weight
    decoder.skip_conv_{1..4}.base_layer.weight (+ lora_A / lora_B)   1x1, no bias

The reference decoder adds `skip_conv_n(encoder_act[::-1][n-1] * gamma)` to the input of up
block n-1, where encoder_act[i] is the input of encoder down block i (after conv_in for i=0):
exactly `VaeSkips`' convs[n-1], so skip_conv_n maps to `skips.convs.{n-1}` with its LoRA merged
in (W + B @ A * alpha / r, times gamma). Decoder LoRA stays LoRA (adapter "default", the
project's) or is merged into the decoder weights (`vae_lora_rank=0`).
"""
from __future__ import annotations

import re

import torch
from torch import Tensor

PEFT_DEFAULT_ALPHA = 8.0  # LoraConfig's default lora_alpha; this project's adapters use it too
PROJECT_ADAPTER = "default"

SKIP = re.compile(r"^decoder\.skip_conv_(\d+)\.(?:(base_layer\.weight|weight)|lora_(A|B)\.([^.]+)\.weight)$")
LORA = re.compile(r"^(.+)\.lora_(A|B)\.([^.]+)\.weight$")
BASE = re.compile(r"^(.+)\.base_layer\.(weight|bias)$")


class WeightKeyError(KeyError):
    """A weight file holds a tensor the net has no place for, or lacks one it needs."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


def lora_delta(a: Tensor, b: Tensor, scale: float) -> Tensor:
    """scale * B @ A in the base weight's shape, for Linear (2-D) or Conv2d (B is 1x1) LoRA."""
    if a.ndim == 2:
        return scale * (b.float() @ a.float())
    return scale * torch.einsum("or,rikl->oikl", b.float().flatten(1), a.float())


def published_vae_to_net(
    vae_state: dict[str, Tensor],
    source: str,
    merge_lora: bool,
    lora_alpha: float = PEFT_DEFAULT_ALPHA,
    skip_scale: float = 1.0,
    current: dict[str, Tensor] | None = None,
) -> tuple[dict[str, Tensor], int | None]:
    """Maps a published (peft-wrapped) VAE state dict onto DifixNet keys.

    Args:
        vae_state: published keys (see module docstring).
        source: file name for error messages.
        merge_lora: fold decoder LoRA into the decoder weights (net built with vae_lora_rank=0).
        lora_alpha: the file's LoRA alpha (scaling alpha / r).
        skip_scale: the reference decoder's `gamma` (skip input scale; 0 when `ignore_skip`).
        current: the net's state, for base weights the file does not hold (the pkl).

    Returns:
        ({DifixNet key: float32 tensor} for `vae.*` and `skips.convs.*`, LoRA rank or None).

    Raises:
        WeightKeyError naming a LoRA half without its partner or two adapters in one file.
    """
    out: dict[str, Tensor] = {}
    skips: dict[int, dict[str, Tensor]] = {}
    loras: dict[str, dict[str, Tensor]] = {}
    adapters: set[str] = set()
    for key, value in vae_state.items():
        value = value.float()
        if m := SKIP.match(key):
            part = "base" if m.group(2) else m.group(3)
            skips.setdefault(int(m.group(1)), {})[part] = value
            adapters.update([m.group(4)] if m.group(4) else [])
        elif m := LORA.match(key):
            loras.setdefault(m.group(1), {})[m.group(2)] = value
            adapters.add(m.group(3))
        elif (m := BASE.match(key)) and merge_lora:
            out[f"vae.{m.group(1)}.{m.group(2)}"] = value
        else:
            out[f"vae.{key}"] = value
    if len(adapters) > 1:
        raise WeightKeyError(f"{source}: LoRA weights of several adapters {sorted(adapters)}; expected one ('vae_skip')")
    adapter = next(iter(adapters), "vae_skip")
    ranks = {t["A"].shape[0] for t in [*skips.values(), *loras.values()] if "A" in t}
    if len(ranks) > 1:
        raise WeightKeyError(f"{source}: LoRA weights of different ranks {sorted(ranks)}")
    rank = next(iter(ranks), None)
    scale = lora_alpha / rank if rank else 0.0
    for group, name in [*((t, f"decoder.skip_conv_{n}") for n, t in skips.items()),
                        *((t, prefix) for prefix, t in loras.items())]:
        for half, other in (("A", "B"), ("B", "A")):
            if half in group and other not in group:
                raise WeightKeyError(f"{source}: '{name}.lora_{half}.{adapter}.weight' has no "
                                     f"'{name}.lora_{other}.{adapter}.weight'")
    for n, parts in skips.items():
        if "base" not in parts:
            raise WeightKeyError(f"{source}: missing 'decoder.skip_conv_{n}.base_layer.weight' "
                                 "(the skip conv itself; its LoRA alone is not enough)")
        weight = parts["base"] + (lora_delta(parts["A"], parts["B"], scale) if "A" in parts else 0.0)
        out[f"skips.convs.{n - 1}.weight"] = weight * skip_scale
    for prefix, parts in loras.items():
        if merge_lora:
            key = f"vae.{prefix}.weight"
            base = out.get(key, (current or {}).get(key))
            if base is None:
                raise WeightKeyError(f"{source}: missing '{prefix}.base_layer.weight' (needed to merge its LoRA)")
            out[key] = base.float() + lora_delta(parts["A"], parts["B"], scale)
        else:
            # The project's adapters use alpha 8: rescale B so B @ A * 8 / r is the file's update.
            out[f"vae.{prefix}.lora_A.{PROJECT_ADAPTER}.weight"] = parts["A"]
            out[f"vae.{prefix}.lora_B.{PROJECT_ADAPTER}.weight"] = parts["B"] * (lora_alpha / PEFT_DEFAULT_ALPHA)
    return out, rank


def published_name(net_key: str) -> str:
    """The published file's name for a DifixNet key (for 'missing' messages)."""
    if m := re.match(r"^skips\.convs\.(\d+)\.weight$", net_key):
        return f"decoder.skip_conv_{int(m.group(1)) + 1}.base_layer.weight"
    key = net_key.split(".", 1)[1] if net_key.startswith(("vae.", "unet.")) else net_key
    return key.replace(f".{PROJECT_ADAPTER}.", ".vae_skip.")


def check_keys(given: dict[str, Tensor], expected: dict[str, Tensor], sources: dict[str, str],
               require_all: bool) -> None:
    """Raises WeightKeyError naming the first unknown / missing / mis-shaped tensors."""
    unknown = sorted(k for k in given if k not in expected)
    if unknown:
        names = [f"'{published_name(k)}' ({sources.get(k.split('.', 1)[0], 'file')})" for k in unknown[:5]]
        raise WeightKeyError(f"unknown weight(s) {', '.join(names)} ({len(unknown)} in all): this DifixNet has no "
                             "place for them. Is the file from another architecture or LoRA target list?")
    shapes = [k for k in given if tuple(given[k].shape) != tuple(expected[k].shape)]
    if shapes:
        k = shapes[0]
        raise WeightKeyError(f"weight '{published_name(k)}' ({sources.get(k.split('.', 1)[0], 'file')}) has shape "
                             f"{tuple(given[k].shape)}, the net needs {tuple(expected[k].shape)}")
    missing = sorted(k for k in expected if k not in given and k != "prompt_embeds") if require_all else []
    if missing:
        names = [f"'{published_name(k)}' ({sources.get(k.split('.', 1)[0], 'file')})" for k in missing[:5]]
        raise WeightKeyError(f"missing weight(s) {', '.join(names)} ({len(missing)} in all)")


def add_fresh_lora(state: dict[str, Tensor], expected: dict[str, Tensor], rank: int, prefix: str) -> dict[str, Tensor]:
    """Weights without LoRA loaded into a net that fine-tunes LoRA on them (UNet LoRA; decoder LoRA
    on a merged-layout file): under `prefix`, plain weights move under `base_layer` and new LoRA
    starts as peft's gaussian init (A ~ N(0, 1/r), B = 0: no effect until trained)."""
    out = dict(state)
    gen = torch.Generator().manual_seed(0)
    for key, like in expected.items():
        if key in out or not key.startswith(prefix):
            continue
        if ".base_layer." in key and key.replace(".base_layer.", ".") in out:
            out[key] = out.pop(key.replace(".base_layer.", "."))
        elif ".lora_A." in key:
            out[key] = torch.randn(like.shape, generator=gen) / rank
        elif ".lora_B." in key:
            out[key] = torch.zeros(like.shape)
    return out
