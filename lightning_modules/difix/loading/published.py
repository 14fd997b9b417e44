"""Loads NVIDIA's published Difix folders and the reference training code's `model_*.pkl`.

Published folder (`nvidia/difix`, `nvidia/difix_ref`; model_index.json names `DifixPipeline`):
unet/ with stock UNet2DConditionModel keys (difix_ref also ships the reference's multi-view
UNet class as `unet/unet_2d_condition.py`, never imported: its extra behaviour is joint
self-attention over the views, this project's reference attention), text_encoder/,
tokenizer/, scheduler/ as SD-Turbo, and vae/ holding a peft-wrapped AutoencoderKL
(`published_keys.py` maps its keys).

Reference `model_*.pkl` (torch.save dict): `rank_vae`, `vae_lora_target_modules`,
`state_dict_unet` (stock UNet keys, may be partial: the rest comes from the base model),
`state_dict_vae` (only keys containing "lora" or "skip"), `optimizer` (unused); converters add
extras such as `mv_unet` (`PKL_EXTRAS`).
"""
from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lightning_modules.difix.net.prompt import DEFAULT_PROMPT
from lightning_modules.difix.loading.base_models import encode_prompt, net_from_sd_folder
from lightning_modules.difix.loading.hub_files import (PretrainedNotFoundError, offline_message, read_component_weights,
                                                       read_json_file, snapshot_folder, unet_is_multiview)
from lightning_modules.difix.loading.published_keys import (LORA, PEFT_DEFAULT_ALPHA, SKIP, WeightKeyError,
                                                            add_fresh_lora, check_keys, published_name,
                                                            published_vae_to_net)
from lightning_modules.difix.net.net import DifixNet
from lightning_modules.safe_load import read_torch_file

__all__ = ["PUBLISHED_LICENCE", "net_from_published_folder", "net_from_reference_checkpoint", "check_pkl_fields"]

# nvidia/difix, nvidia/difix_ref (model cards, LICENSE.txt): the weights, and fixers fine-tuned
# from them, are for non-commercial research and evaluation only.
PUBLISHED_LICENCE = ("NVIDIA License, non-commercial (research and evaluation only), with the Stability AI Community "
                     "License appended; applies to fixers fine-tuned from these weights too")
# Keys of a published vae/config.json that are not AutoencoderKL arguments but are understood here.
VAE_CONFIG_EXTRAS = ("lora_rank", "lora_alpha", "gamma", "ignore_skip")
PKL_KEYS = ("vae_lora_target_modules", "rank_vae", "state_dict_unet", "state_dict_vae")
# Top-level extras that converters of reference checkpoints write, and what they mean here.
PKL_EXTRAS = {"mv_unet": "reference attention on / off"}
REFERENCE_BASE = "stabilityai/sd-turbo"  # what the reference training script fine-tunes


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


def net_from_published_folder(name_or_path: str, model_index: dict[str, Any], cache_dir: str | None = None,
                              revision: str | None = None, prompt: str = DEFAULT_PROMPT,
                              prompt_embeds: Tensor | None = None, **net_kwargs: Any) -> DifixNet:
    """DifixNet from a published Difix folder / hub id (see `builders.net_from_pretrained`).

    `vae_lora_rank` must be the file's rank or 0 (merge the LoRA into the decoder);
    `reference_attention=None` (or absent) follows the folder; `size_mode` defaults to the
    reference pipeline's ("reference").
    """
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

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
    net = DifixNet(unet, vae, scheduler, prompt_embeds, build_config={"base": base, "prompt": prompt},
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


def net_from_reference_checkpoint(path: str | Path, base: str = REFERENCE_BASE, cache_dir: str | None = None,
                                  prompt: str = DEFAULT_PROMPT, prompt_embeds: Tensor | None = None,
                                  **net_kwargs: Any) -> DifixNet:
    """Loads the reference training script's `model_*.pkl` on top of its base model.

    The pkl holds the UNet (all or some keys), the decoder LoRA and the skip convs (with their
    LoRA, merged here); everything else comes from `base` (an SD-Turbo-architecture hub id or
    folder: the reference trains from stabilityai/sd-turbo). Its optimizer state is not used.

    Args:
        path: the .pkl (read weights only: no code from it runs).
        base: hub id or SD-Turbo folder the reference trained from.
        cache_dir: Hugging Face cache folder.
        prompt: text prompt.
        prompt_embeds: precomputed (1, L, D) embedding.
        **net_kwargs: DifixNet.__init__ options; `vae_lora_rank` defaults to the file's
            `rank_vae` (0 merges the LoRA into the decoder).

    Raises:
        FileNotFoundError / ValueError naming the file; WeightKeyError naming an unknown or
        missing weight; PretrainedNotFoundError when `base` cannot be loaded.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"reference checkpoint {path} does not exist")
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
    net = net_from_sd_folder(base, cache_dir=cache_dir, prompt=prompt, prompt_embeds=prompt_embeds, **net_kwargs)
    net.provenance.update({"layout": f"reference training checkpoint {path} on {base}", "reference_attention": why})
    current = net.state_dict()
    mapped, file_rank = published_vae_to_net(ckpt["state_dict_vae"], f"{path}:state_dict_vae", merge_lora=merge,
                                             current=current)
    if file_rank not in (None, rank):
        raise ValueError(f"{path}: rank_vae is {rank} but its LoRA weights have rank {file_rank}")
    targets = {t for t in ckpt["vae_lora_target_modules"] if not re.search(r"skip_conv_\d+$", t)}
    in_file = {m.group(1) for k in ckpt["state_dict_vae"] if (m := LORA.match(k)) and not SKIP.match(k)}
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
