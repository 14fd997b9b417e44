"""Loads NVIDIA's published Difix weights and the reference training code's `model_*.pkl`.

Published folder (`nvidia/difix`, `nvidia/difix_ref`; model_index.json names `DifixPipeline`):
unet/ with stock UNet2DConditionModel keys (difix_ref's model_index names a multi-view UNet
class; its extra behaviour is joint self-attention over the views = this project's reference
attention), text_encoder/, tokenizer/, scheduler/ as SD-Turbo, and vae/ holding a peft-wrapped
AutoencoderKL (adapter "vae_skip", rank 4, peft's default alpha 8):

    decoder.<module>.base_layer.weight|bias, .lora_A.vae_skip.weight, .lora_B.vae_skip.weight
    decoder.skip_conv_{1..4}.base_layer.weight (+ lora_A / lora_B)   1x1, no bias

The reference decoder adds `skip_conv_n(encoder_act[::-1][n-1] * gamma)` to the input of up
block n-1, where encoder_act[i] is the input of encoder down block i (after conv_in for i=0):
exactly `VaeSkips`' convs[n-1], so skip_conv_n maps to `skips.convs.{n-1}` with its LoRA merged
in (W + B @ A * alpha / r, times gamma). Decoder LoRA stays LoRA (adapter "default", the
project's) or is merged into the decoder weights (`vae_lora_rank=0`).

Reference `model_*.pkl` (torch.save dict): `rank_vae`, `vae_lora_target_modules`,
`state_dict_unet` (stock UNet keys, may be partial: the rest comes from the base model),
`state_dict_vae` (only keys containing "lora" or "skip", naming as above), `optimizer` (unused).

Nothing is dropped silently: every tensor in a file must land in the net, and every tensor the
net needs must come from the file (or, for the pkl, the base model). The folder's remote code
is never imported.
"""
from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ..safe_load import read_torch_file
from .loading import (PretrainedNotFoundError, offline_message, read_component_weights, read_json_file, snapshot_folder,
                      unet_is_multiview)

if TYPE_CHECKING:
    from .net import DifixNet

# nvidia/difix, nvidia/difix_ref (model cards, LICENSE.txt): the weights, and fixers fine-tuned
# from them, are for non-commercial research and evaluation only.
PUBLISHED_LICENCE = ("NVIDIA License, non-commercial (research and evaluation only), with the Stability AI Community "
                     "License appended; applies to fixers fine-tuned from these weights too")
PEFT_DEFAULT_ALPHA = 8.0  # LoraConfig's default lora_alpha; this project's adapters use it too
PROJECT_ADAPTER = "default"
# Keys of a published vae/config.json that are not AutoencoderKL arguments but are understood here.
VAE_CONFIG_EXTRAS = ("lora_rank", "lora_alpha", "gamma", "ignore_skip")
PKL_KEYS = ("vae_lora_target_modules", "rank_vae", "state_dict_unet", "state_dict_vae")
# Top-level extras that converters of reference checkpoints write, and what they mean here.
PKL_EXTRAS = {"mv_unet": "reference attention on / off"}

_SKIP = re.compile(r"^decoder\.skip_conv_(\d+)\.(?:(base_layer\.weight|weight)|lora_(A|B)\.([^.]+)\.weight)$")
_LORA = re.compile(r"^(.+)\.lora_(A|B)\.([^.]+)\.weight$")
_BASE = re.compile(r"^(.+)\.base_layer\.(weight|bias)$")


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
        if m := _SKIP.match(key):
            part = "base" if m.group(2) else m.group(3)
            skips.setdefault(int(m.group(1)), {})[part] = value
            adapters.update([m.group(4)] if m.group(4) else [])
        elif m := _LORA.match(key):
            loras.setdefault(m.group(1), {})[m.group(2)] = value
            adapters.add(m.group(3))
        elif (m := _BASE.match(key)) and merge_lora:
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


def split_vae_config(config: dict[str, Any], source: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(AutoencoderKL arguments, understood extras) of a published vae/config.json."""
    from diffusers import AutoencoderKL

    params = set(inspect.signature(AutoencoderKL.__init__).parameters) - {"self"}
    stock = {k: v for k, v in config.items() if k in params}
    extras = {k: v for k, v in config.items() if k in VAE_CONFIG_EXTRAS}
    unknown = sorted(k for k in config if not k.startswith("_") and k not in params and k not in VAE_CONFIG_EXTRAS)
    if unknown:
        raise ValueError(f"{source}: unknown VAE config key(s) {unknown}; known extras of the published Difix VAE: "
                         f"{list(VAE_CONFIG_EXTRAS)}")
    return stock, extras


def load_published_folder(cls: type[DifixNet], name_or_path: str, model_index: dict[str, Any],
                          cache_dir: str | None, revision: str | None, prompt: str, prompt_embeds: Tensor | None,
                          **net_kwargs: Any) -> DifixNet:
    """DifixNet from a published Difix folder / hub id (see `DifixNet.from_pretrained`)."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

    from .builders import encode_prompt

    folder = snapshot_folder(name_or_path, cache_dir, revision)
    needed = ["unet", "vae", "scheduler"] + (["text_encoder", "tokenizer"] if prompt_embeds is None else [])
    if missing := [s for s in needed if not (folder / s).is_dir()]:
        raise PretrainedNotFoundError(offline_message(str(folder), FileNotFoundError(f"no {missing[0]}/ in {folder}")))
    vae_cfg_path = folder / "vae" / "config.json"
    vae_cfg, extras = split_vae_config(read_json_file(vae_cfg_path), str(vae_cfg_path))
    vae_state, vae_file = read_component_weights(folder / "vae")
    unet_state, unet_file = read_component_weights(folder / "unet")
    skip_scale = 0.0 if extras.get("ignore_skip") else float(extras.get("gamma", 1.0))
    merge = net_kwargs.get("vae_lora_rank") == 0
    mapped, rank = published_vae_to_net(vae_state, str(vae_file), merge_lora=merge, skip_scale=skip_scale,
                                        lora_alpha=float(extras.get("lora_alpha", PEFT_DEFAULT_ALPHA)))
    if rank is not None and extras.get("lora_rank", rank) != rank:
        raise ValueError(f"{vae_cfg_path}: lora_rank {extras['lora_rank']} but the LoRA weights in {vae_file} "
                         f"have rank {rank}")
    if rank is None:
        net_kwargs.setdefault("vae_lora_rank", 0)  # merged layout: new (zero-effect) LoRA only when asked
    elif not merge and net_kwargs.setdefault("vae_lora_rank", rank) != rank:
        raise ValueError(f"{folder}: decoder LoRA has rank {rank}; vae_lora_rank={net_kwargs['vae_lora_rank']} was "
                         "asked (use the file's rank, or 0 to merge the LoRA into the decoder)")
    multiview, why = unet_is_multiview(model_index, folder)
    if net_kwargs.get("reference_attention") is None:
        net_kwargs["reference_attention"] = multiview
    else:
        why = f"set explicitly; the folder's UNet: {why}"
    net_kwargs.setdefault("size_mode", "reference")  # the reference pipeline's pre/post-processing
    scheduler = DDPMScheduler.from_pretrained(str(folder), subfolder="scheduler")
    if scheduler.config.get("clip_sample"):
        # As DifixPipeline.__init__: x0 clipped to [-1, 1] would clip latents, not pixels.
        scheduler = DDPMScheduler.from_config({**scheduler.config, "clip_sample": False})
    if prompt_embeds is None:
        from transformers import CLIPTextModel, CLIPTokenizer

        tokenizer = CLIPTokenizer.from_pretrained(str(folder), subfolder="tokenizer")
        prompt_embeds = encode_prompt(CLIPTextModel.from_pretrained(str(folder), subfolder="text_encoder"),
                                      tokenizer, prompt)
    # Built on the meta device: every tensor is then assigned from the files (no random init
    # of ~1.3B parameters, and a forgotten one is caught below instead of running as noise).
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(str(folder / "unet")))
        vae = AutoencoderKL(**vae_cfg)
    base = {"kind": "pretrained", "name_or_path": str(name_or_path), "revision": revision}
    provenance = {"layout": f"published Difix ({model_index.get('_class_name', 'DifixPipeline')} folder {folder})",
                  "reference_attention": why, "licence": PUBLISHED_LICENCE}
    net = cls(unet, vae, scheduler, prompt_embeds, build_config={"base": base, "prompt": prompt},
              provenance=provenance, **net_kwargs)
    state = {**{f"unet.{k}": v.float() for k, v in unet_state.items()}, **mapped,
             "prompt_embeds": net.prompt_embeds}
    expected = net.state_dict()
    if rank is None and net.build_config["vae_lora_rank"] > 0:
        state = add_fresh_lora(state, expected, net.build_config["vae_lora_rank"], "vae.")
    if net.build_config["unet_lora_rank"] > 0:
        state = add_fresh_lora(state, expected, net.build_config["unet_lora_rank"], "unet.")
    check_keys(state, expected, {"unet": str(unet_file), "vae": str(vae_file), "skips": str(vae_file)},
               require_all=True)
    net.load_state_dict(state, strict=True, assign=True)
    if left := [n for n, t in [*net.named_parameters(), *net.named_buffers()] if t.is_meta]:
        raise WeightKeyError(f"{folder}: tensors not filled from the files: {left[:5]}")
    return net


def check_pkl_fields(ckpt: dict[str, Any], path: Path) -> None:
    """Raises ValueError naming the file and field whose value has the wrong type."""
    def bad(field: str, want: str) -> ValueError:
        return ValueError(f"{path}: field '{field}' must be {want}, got {type(ckpt[field]).__name__} "
                          f"{str(ckpt[field])[:60]!r}")

    if isinstance(ckpt["rank_vae"], bool) or not isinstance(ckpt["rank_vae"], int) or ckpt["rank_vae"] <= 0:
        raise bad("rank_vae", "a positive integer (the decoder LoRA rank)")
    for field in ("state_dict_unet", "state_dict_vae"):
        value = ckpt[field]
        if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in value.items()):
            raise bad(field, "a dict of tensor names to tensors")
    targets = ckpt["vae_lora_target_modules"]
    if not isinstance(targets, (list, tuple)) or not all(isinstance(t, str) for t in targets):
        raise bad("vae_lora_target_modules", "a list of module names")
    if "mv_unet" in ckpt and not isinstance(ckpt["mv_unet"], bool):
        raise bad("mv_unet", "true or false")


def load_reference_checkpoint(cls: type[DifixNet], path: str | Path, base: str, cache_dir: str | None,
                              prompt: str, prompt_embeds: Tensor | None, **net_kwargs: Any) -> DifixNet:
    """DifixNet from the reference training script's `model_*.pkl` (see `DifixNet.from_reference_checkpoint`)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"DifixNet.from_reference_checkpoint: {path} does not exist")
    ckpt = read_torch_file(path, "reference checkpoint")  # weights only: no code from the file runs
    if not isinstance(ckpt, dict) or (missing := [k for k in PKL_KEYS if k not in ckpt]):
        raise ValueError(f"{path}: not a reference Difix checkpoint (needs keys {list(PKL_KEYS)}, "
                         f"missing {missing if isinstance(ckpt, dict) else 'all'})")
    if unknown := sorted(set(ckpt) - set(PKL_KEYS) - {"optimizer"} - set(PKL_EXTRAS)):
        raise WeightKeyError(f"{path}: unknown top-level key(s) {unknown}; known: {[*PKL_KEYS, 'optimizer', *PKL_EXTRAS]}")
    check_pkl_fields(ckpt, path)
    rank = int(ckpt["rank_vae"])
    merge = net_kwargs.get("vae_lora_rank") == 0
    net_kwargs["vae_lora_rank"] = 0 if merge else net_kwargs.get("vae_lora_rank", rank)
    if not merge and net_kwargs["vae_lora_rank"] != rank:
        raise ValueError(f"{path}: rank_vae is {rank}; vae_lora_rank={net_kwargs['vae_lora_rank']} was asked "
                         "(use the file's rank, or 0 to merge the LoRA into the decoder)")
    # The reference's Difix(mv_unet=...) is a constructor flag (its inference_difix.py turns it on
    # whenever a reference image is given); converters that record it put it in the file.
    why = "the reference's Difix(mv_unet=True) whenever a reference view is given (inference_difix.py)"
    if net_kwargs.get("reference_attention") is None:
        net_kwargs["reference_attention"] = bool(ckpt.get("mv_unet", True))
        if "mv_unet" in ckpt:
            why = f"the file's mv_unet flag is {bool(ckpt['mv_unet'])}"
    else:
        why = "set explicitly"
    net_kwargs.setdefault("size_mode", "reference")
    net = cls.from_pretrained(base, cache_dir=cache_dir, prompt=prompt, prompt_embeds=prompt_embeds, **net_kwargs)
    net.provenance.update({"layout": f"reference training checkpoint {path} on {base}", "reference_attention": why})
    current = net.state_dict()
    mapped, file_rank = published_vae_to_net(ckpt["state_dict_vae"], f"{path}:state_dict_vae", merge_lora=merge,
                                             current=current)
    if file_rank not in (None, rank):
        raise ValueError(f"{path}: rank_vae is {rank} but its LoRA weights have rank {file_rank}")
    targets = {t for t in ckpt["vae_lora_target_modules"] if not re.search(r"skip_conv_\d+$", t)}
    in_file = {m.group(1) for k in ckpt["state_dict_vae"] if (m := _LORA.match(k)) and not _SKIP.match(k)}
    if lost := sorted(targets - in_file):
        raise WeightKeyError(f"{path}: missing '{lost[0]}.lora_A.vae_skip.weight' / lora_B in state_dict_vae "
                             f"({len(lost)} of vae_lora_target_modules without LoRA weights)")
    if extra := sorted(in_file - targets):
        raise WeightKeyError(f"{path}: unknown LoRA weights '{extra[0]}.lora_A.vae_skip.weight' "
                             f"({len(extra)} modules not in vae_lora_target_modules)")
    in_net = {k[len("vae."):].split(".lora_A.")[0] for k in current if k.startswith("vae.") and ".lora_A." in k}
    if not merge and (diff := sorted(targets ^ in_net)):
        raise WeightKeyError(f"{path}: vae_lora_target_modules and this net's decoder LoRA differ at {diff[:5]} "
                             f"({len(diff)} modules)")
    unet = {f"unet.{k}": v.float() for k, v in ckpt["state_dict_unet"].items()}
    if missing_skips := [f"skips.convs.{j}.weight" for j in range(len(net.skips.convs))
                         if f"skips.convs.{j}.weight" not in mapped]:
        raise WeightKeyError(f"{path}: missing '{published_name(missing_skips[0])}' in state_dict_vae")
    state = {**unet, **mapped}
    if net.build_config["unet_lora_rank"] > 0:  # plain UNet weights go under the LoRA layers' base_layer
        state = add_fresh_lora(state, current, net.build_config["unet_lora_rank"], "unet.")
    check_keys(state, current, {"unet": f"{path}:state_dict_unet", "vae": f"{path}:state_dict_vae",
                                "skips": f"{path}:state_dict_vae"}, require_all=False)
    net.load_state_dict(state, strict=False)
    net.build_config["base"] = {"kind": "reference_checkpoint", "path": str(path), "base": str(base)}
    return net
