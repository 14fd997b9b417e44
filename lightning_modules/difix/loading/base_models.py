"""Untrained DifixNets: from diffusers components, constructor configs (offline, seeded) and
SD-Turbo-architecture folders or hub ids (the paper's starting point).

The lowest layer of `lightning_modules/difix/loading/`: it imports only the net and the file
helpers; the published-model and checkpoint loaders build on it.
"""
from __future__ import annotations

import json
from typing import Any

import torch
from torch import Tensor, nn

from lightning_modules.difix.net.prompt import DEFAULT_PROMPT
from lightning_modules.difix.loading.hub_files import PretrainedNotFoundError, offline_message
from lightning_modules.difix.net.architectures import CONFIGS, build_components
from lightning_modules.difix.net.net import DifixNet

__all__ = ["encode_prompt", "net_from_components", "net_from_config", "net_from_sd_folder", "tiny_net"]


def encode_prompt(text_encoder: nn.Module, tokenizer: Any, prompt: str) -> Tensor:
    """CLIP text embedding of `prompt` padded to the tokenizer's max length.

    Returns:
        (1, L, D) float32 last hidden state (L = 77 for CLIP).
    """
    ids = tokenizer(
        prompt, max_length=tokenizer.model_max_length, padding="max_length", truncation=True, return_tensors="pt"
    ).input_ids
    with torch.no_grad():
        return text_encoder(ids.to(text_encoder.device))[0].float().cpu()


def net_from_components(
    components: dict[str, Any],
    base: dict[str, Any],
    prompt: str = DEFAULT_PROMPT,
    prompt_embeds: Tensor | None = None,
    provenance: dict[str, str] | None = None,
    **net_kwargs: Any,
) -> DifixNet:
    """A DifixNet from diffusers components; the text encoder is used once and dropped.

    Args:
        components: "unet", "vae", "scheduler" and, without `prompt_embeds`, "text_encoder"
            and "tokenizer".
        base: how to rebuild these components (recorded in `build_config["base"]`).
        prompt: text prompt.
        prompt_embeds: (1, L, D) precomputed embedding.
        provenance: what the builder found (see `DifixNet`).
        **net_kwargs: DifixNet.__init__ options.
    """
    if prompt_embeds is None:
        if components.get("text_encoder") is None or components.get("tokenizer") is None:
            raise ValueError("DifixNet: no prompt_embeds and no text encoder/tokenizer to make them")
        prompt_embeds = encode_prompt(components["text_encoder"], components["tokenizer"], prompt)
    components.pop("text_encoder", None)  # not kept in memory
    components.pop("tokenizer", None)
    return DifixNet(components["unet"], components["vae"], components["scheduler"], prompt_embeds,
                    build_config={"base": base, "prompt": prompt}, provenance=provenance, **net_kwargs)


def net_from_config(config: str | dict[str, Any] = "tiny", seed: int = 0, prompt: str = DEFAULT_PROMPT,
                    prompt_embeds: Tensor | None = None, **net_kwargs: Any) -> DifixNet:
    """Random-weight model from constructor dicts (no download), reproducible by seed.

    Args:
        config: "tiny", "sd-turbo" (SD-Turbo's architecture) or a dict like
            `architectures.TINY_CONFIG`. Without a text encoder config the prompt embedding is
            a seeded random (1, 77, cross_attention_dim) tensor.
        seed: weight seed.
        prompt: prompt for the (random) text encoder.
        prompt_embeds: precomputed (1, L, D) embedding.
        **net_kwargs: DifixNet.__init__ options.
    """
    if isinstance(config, str):
        if config not in CONFIGS:
            raise ValueError(f"net_from_config: unknown config {config!r}; known: {sorted(CONFIGS)}")
        config = CONFIGS[config]
    config = json.loads(json.dumps(config))  # plain, JSON-able copy for build_config
    components = build_components(config, seed=seed)
    if prompt_embeds is None and components["text_encoder"] is None:
        gen = torch.Generator().manual_seed(seed)
        prompt_embeds = torch.randn(1, 77, config["unet"]["cross_attention_dim"], generator=gen)
    base = {"kind": "config", "config": config, "seed": int(seed)}
    provenance = {"layout": "constructor config (random weights, seed %d)" % seed}
    return net_from_components(components, base, prompt=prompt, prompt_embeds=prompt_embeds,
                               provenance=provenance, **net_kwargs)


def tiny_net(seed: int = 0, **net_kwargs: Any) -> DifixNet:
    """The tiny test/demo model (0.8M-param UNet, 1.3M-param VAE, 2-layer CLIP), offline."""
    return net_from_config("tiny", seed=seed, **net_kwargs)


def net_from_sd_folder(name_or_path: str, cache_dir: str | None = None, revision: str | None = None,
                       prompt: str = DEFAULT_PROMPT, prompt_embeds: Tensor | None = None, **net_kwargs: Any) -> DifixNet:
    """An SD-Turbo-architecture hub id or folder (unet/, vae/, scheduler/, text_encoder/,
    tokenizer/) as an untrained Difix: its UNet and VAE, fresh skips and LoRA.

    Raises:
        PretrainedNotFoundError: offline / not cached / not an SD folder, with what to download.
    """
    if net_kwargs.get("reference_attention", True) is None:
        net_kwargs.pop("reference_attention")
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from huggingface_hub import errors as hf_errors

    kw: dict[str, Any] = {"cache_dir": cache_dir, "revision": revision}
    load_errors = (OSError, hf_errors.HFValidationError, hf_errors.EntryNotFoundError,
                   hf_errors.RepositoryNotFoundError, hf_errors.HfHubHTTPError)
    try:
        components: dict[str, Any] = {
            "unet": UNet2DConditionModel.from_pretrained(name_or_path, subfolder="unet", **kw),
            "vae": AutoencoderKL.from_pretrained(name_or_path, subfolder="vae", **kw),
            "scheduler": DDPMScheduler.from_pretrained(name_or_path, subfolder="scheduler", **kw),
        }
        if prompt_embeds is None:
            from transformers import CLIPTextModel, CLIPTokenizer

            components["tokenizer"] = CLIPTokenizer.from_pretrained(name_or_path, subfolder="tokenizer", **kw)
            components["text_encoder"] = CLIPTextModel.from_pretrained(name_or_path, subfolder="text_encoder", **kw)
    except load_errors as err:
        raise PretrainedNotFoundError(offline_message(str(name_or_path), err, cache_dir)) from err
    if meta := [f"{c}.{n}" for c in ("unet", "vae") for n, p in components[c].named_parameters() if p.is_meta]:
        # diffusers leaves weights it did not find on the meta device (e.g. a published Difix
        # VAE read without its model_index.json): refuse instead of failing at forward.
        raise PretrainedNotFoundError(
            f"DifixNet: '{name_or_path}' loaded as an SD-Turbo folder, but {len(meta)} weights are missing "
            f"(e.g. {meta[:3]}). A published Difix folder needs its model_index.json (`hf download "
            "nvidia/difix_ref --local-dir DIR` writes it).")
    base = {"kind": "pretrained", "name_or_path": str(name_or_path), "revision": revision}
    provenance = {"layout": f"SD-Turbo-architecture folder {name_or_path} (Difix skips and LoRA untrained)",
                  "licence": f"that of {name_or_path} (see its model card)"}
    return net_from_components(components, base, prompt=prompt, prompt_embeds=prompt_embeds,
                               provenance=provenance, **net_kwargs)
