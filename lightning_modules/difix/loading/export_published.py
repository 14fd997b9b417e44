"""Writes a DifixNet as a folder in NVIDIA's published Difix layout (`nvidia/difix_ref`,
`nvidia/difix`), the layout `net_from_pretrained` / `net_from_published_folder` read.

What the folder holds (the published file listings, `published.py`'s docstring and
`published_keys.py`): model_index.json naming `DifixPipeline` (its UNet entry
["unet_2d_condition", "UNet2DConditionModel"] for the multi-view UNet of difix_ref, diffusers'
stock class for difix), unet/ with stock UNet2DConditionModel keys in float32 (a UNet LoRA is
merged into them), vae/ as the reference's peft-wrapped AutoencoderKL (decoder LoRA under adapter
"vae_skip", skip convs as `decoder.skip_conv_{1..4}` wrapped the same way, config extras
lora_rank / gamma / ignore_skip), scheduler/, text_encoder/ and tokenizer/. NVIDIA's folders
also ship the reference's Python modules (unet/unet_2d_condition.py, vae/autoencoder_kl.py);
they are not written here: this project's loader never runs them and reads the multi-view UNet
from the model_index entry.

The skip convs are plain 1x1 convs in DifixNet; the published file wraps them in LoRA. They are
written as LoRA freshly added by peft looks (A drawn with std 1/r, B zero), so base + B @ A is
the conv exactly. The text encoder and tokenizer are given: the net keeps only the prompt's
embedding, and the loader encodes the prompt again with the folder's encoder, so the encoder
must reproduce `net.prompt_embeds` (checked before anything is written).

Used by benchmarks/random_difix_ref.py (a random SD-Turbo-size folder for the GPU check) and the
tests' fixture writer (tests/helpers/difix_artefacts.py).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from datamodules.files.temp_files import replace_folder, temp_path
from lightning_modules.difix.loading.base_models import encode_prompt
from lightning_modules.difix.loading.published_keys import PEFT_DEFAULT_ALPHA, PROJECT_ADAPTER, lora_delta

if TYPE_CHECKING:
    from lightning_modules.difix.net.net import DifixNet

__all__ = ["save_published_folder", "published_unet_state", "published_vae_state", "PUBLISHED_ADAPTER"]

PUBLISHED_ADAPTER = "vae_skip"  # the reference code's peft adapter name in the published VAE
MULTIVIEW_UNET = ["unet_2d_condition", "UNet2DConditionModel"]  # nvidia/difix_ref's model_index entry
STOCK_UNET = ["diffusers", "UNet2DConditionModel"]  # nvidia/difix's


def published_unet_state(net: DifixNet) -> dict[str, Tensor]:
    """The UNet's weights under diffusers' stock keys in float32, a UNet LoRA merged in.

    Returns:
        {UNet2DConditionModel key: float32 CPU tensor}.
    """
    state = {k: v.detach().float().cpu() for k, v in net.unet.state_dict().items()}
    config = getattr(net.unet, "peft_config", {}).get(PROJECT_ADAPTER)
    if config is None:
        return {k: v.contiguous() for k, v in state.items()}
    scale = float(config.lora_alpha) / float(config.r)
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if ".lora_" in key:
            continue
        if ".base_layer." in key:
            prefix, _, name = key.partition(".base_layer.")
            if name == "weight":
                a = state[f"{prefix}.lora_A.{PROJECT_ADAPTER}.weight"]
                b = state[f"{prefix}.lora_B.{PROJECT_ADAPTER}.weight"]
                value = value + lora_delta(a, b, scale).reshape(value.shape)
            key = f"{prefix}.{name}"
        out[key] = value.contiguous()
    return out


def published_vae_state(net: DifixNet, seed: int = 0) -> dict[str, Tensor]:
    """The VAE and skip convs under the published keys (see the module docstring), float32.

    Args:
        net: a DifixNet with a decoder LoRA (`vae_lora_rank` > 0: the published VAE has one).
        seed: seed of the skip convs' LoRA A matrices (their B is zero).

    Raises:
        ValueError: the net has no decoder LoRA.
    """
    rank = int(net.build_config["vae_lora_rank"])
    if rank <= 0:
        raise ValueError("published Difix layout: its VAE holds a decoder LoRA (rank 4 as published); this net has "
                         "vae_lora_rank=0 (the LoRA merged into the decoder). Export a net with vae_lora_rank > 0.")
    out = {}
    for key, value in net.vae.state_dict().items():
        key = key.replace(f".lora_A.{PROJECT_ADAPTER}.", f".lora_A.{PUBLISHED_ADAPTER}.")
        out[key.replace(f".lora_B.{PROJECT_ADAPTER}.", f".lora_B.{PUBLISHED_ADAPTER}.")] = value.detach().float().cpu()
    gen = torch.Generator().manual_seed(seed)
    for j, conv in enumerate(net.skips.convs):
        weight = conv.weight.detach().float().cpu()
        name = f"decoder.skip_conv_{j + 1}"
        out[f"{name}.base_layer.weight"] = weight
        out[f"{name}.lora_A.{PUBLISHED_ADAPTER}.weight"] = torch.randn(rank, weight.shape[1], 1, 1, generator=gen) / rank
        out[f"{name}.lora_B.{PUBLISHED_ADAPTER}.weight"] = torch.zeros(weight.shape[0], rank, 1, 1)
    return {k: v.contiguous() for k, v in out.items()}


def _check_prompt(net: DifixNet, text_encoder: nn.Module, tokenizer: Any) -> None:
    """Raises ValueError unless the encoder gives the net's prompt embedding (what the loader will use)."""
    prompt = net.build_config["prompt"]
    given = encode_prompt(text_encoder, tokenizer, prompt)
    have = net.prompt_embeds.detach().float().cpu()
    if given.shape != have.shape or not torch.allclose(given, have, rtol=1e-4, atol=1e-5):
        diff = (given - have).abs().max().item() if given.shape == have.shape else float("nan")
        raise ValueError(f"published Difix layout: the text encoder embeds the prompt {prompt!r} as "
                         f"{tuple(given.shape)} (max difference {diff:.3g}), not as this net's prompt embedding "
                         f"{tuple(have.shape)}; a loader would run another prompt. Give the encoder the net was built with.")


def save_published_folder(net: DifixNet, folder: str | Path, text_encoder: nn.Module, tokenizer: Any,
                          multiview: bool | None = None) -> Path:
    """Writes `net` as a published Difix folder (complete or not at all: staged, then renamed).

    Args:
        net: the fixer (any device / dtype; written as float32).
        folder: the folder to write; an existing one is replaced once the new one is complete.
        text_encoder: the CLIP text encoder that made `net.prompt_embeds` (saved as text_encoder/).
        tokenizer: its tokenizer (saved as tokenizer/).
        multiview: write the multi-view UNet entry of nvidia/difix_ref (True) or the stock one of
            nvidia/difix (False); None follows `net.reference_attention`.

    Returns:
        The folder.

    Raises:
        ValueError: the net has no decoder LoRA, or the encoder does not reproduce its prompt embedding.
    """
    from diffusers import __version__ as diffusers_version

    folder = Path(folder)
    multiview = net.reference_attention if multiview is None else multiview
    vae_state = published_vae_state(net)
    _check_prompt(net, text_encoder, tokenizer)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staged = temp_path(folder, "new")
    try:
        staged.mkdir()
        index = {"_class_name": "DifixPipeline", "_diffusers_version": diffusers_version,
                 "scheduler": ["diffusers", "DDPMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
                 "tokenizer": ["transformers", "CLIPTokenizer"], "vae": ["autoencoder_kl", "AutoencoderKL"],
                 "unet": MULTIVIEW_UNET if multiview else STOCK_UNET, "safety_checker": [None, None],
                 "feature_extractor": [None, None]}
        (staged / "model_index.json").write_text(json.dumps(index, indent=2))
        _save_component(staged / "unet", dict(net.unet.config), "UNet2DConditionModel", published_unet_state(net))
        extras = {"lora_rank": int(net.build_config["vae_lora_rank"]), "gamma": 1.0, "ignore_skip": False}
        alpha = float(net.vae.peft_config[PROJECT_ADAPTER].lora_alpha)
        if alpha != PEFT_DEFAULT_ALPHA:  # the published config has none: peft's default then
            extras["lora_alpha"] = alpha
        _save_component(staged / "vae", {**dict(net.vae.config), **extras}, "AutoencoderKL", vae_state)
        net.scheduler.save_pretrained(str(staged / "scheduler"))
        text_encoder.save_pretrained(str(staged / "text_encoder"))
        tokenizer.save_pretrained(str(staged / "tokenizer"))
        (staged / "README.md").write_text(
            "A Difix fixer written by difix3d (lightning_modules/difix/loading/export_published.py) in the layout of "
            f"NVIDIA's published {'nvidia/difix_ref' if multiview else 'nvidia/difix'}.\n\n{net.describe()}\n")
        return replace_folder(staged, folder)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise


def _save_component(path: Path, config: dict[str, Any], class_name: str, state: dict[str, Tensor]) -> None:
    """config.json (diffusers' own keys first) and diffusion_pytorch_model.safetensors of one component."""
    from diffusers import __version__ as diffusers_version
    from safetensors.torch import save_file

    path.mkdir()
    config = {"_class_name": class_name, "_diffusers_version": diffusers_version,
              **{k: v for k, v in config.items() if not k.startswith("_")}}
    (path / "config.json").write_text(json.dumps(config, indent=2, default=list))
    save_file(state, str(path / "diffusion_pytorch_model.safetensors"))
