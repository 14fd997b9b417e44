"""The top layer of building DifixNets: a hub id / folder of either layout, this project's own
checkpoints and exports, and rebuilding the untrained base a checkpoint names.

Layers (each imports only those below it): `hub_files` (finding and reading files) ->
`base_models` (components, constructor configs, SD-Turbo folders) -> `published` (NVIDIA's
folders, reference pkls) and `from_prior` (offline priors) -> this module. What a fixer *name*
stands for is decided in one place, `lightning_modules.difix.fixers.sources.resolve_source`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor

from lightning_modules.difix.net.prompt import DEFAULT_PROMPT
from lightning_modules.difix.loading.base_models import net_from_config, net_from_sd_folder
from lightning_modules.difix.loading.from_prior import is_prior_checkpoint, net_from_prior
from lightning_modules.difix.loading.hub_files import (is_published_difix, load_difix_weights, read_model_index,
                                                       vae_has_difix_keys)
from lightning_modules.difix.loading.published import net_from_published_folder, net_from_reference_checkpoint
from lightning_modules.difix.net.net import NET_KEYS, DifixNet

__all__ = ["net_from_pretrained", "net_from_checkpoint", "rebuild_net"]


def net_from_pretrained(
    name_or_path: str = "stabilityai/sd-turbo",
    cache_dir: str | None = None,
    revision: str | None = None,
    prompt: str = DEFAULT_PROMPT,
    prompt_embeds: Tensor | None = None,
    **net_kwargs: Any,
) -> DifixNet:
    """Loads a hub id or local folder: SD-Turbo layout, or the published Difix layout.

    The layout is read from the folder's model_index.json: `DifixPipeline` (nvidia/difix,
    nvidia/difix_ref) loads the trained UNet, decoder LoRA and skip convs (`published.py`),
    with reference attention on when the folder's UNet is the reference's multi-view class
    (difix_ref); anything else loads as an SD-Turbo-architecture base model (untrained skips
    and LoRA). (What a name is, a folder or a pkl or a checkpoint, `fixers.sources` decides.)

    Args:
        name_or_path: hub id or folder with unet/, vae/, scheduler/, text_encoder/, tokenizer/.
        cache_dir: Hugging Face cache folder (default: $HF_HOME/hub).
        revision: hub revision.
        prompt: text prompt, encoded once with the model's CLIP text encoder.
        prompt_embeds: (1, L, D) precomputed embedding; skips loading the text encoder.
        **net_kwargs: DifixNet.__init__ options (timestep, unet_lora_rank, ...). For a published
            folder, `vae_lora_rank` must be the file's rank or 0 (merge the LoRA into the decoder),
            and `reference_attention=None` (or absent) follows the folder.

    Raises:
        PretrainedNotFoundError: offline / not cached / not an SD folder, with what to download.
        WeightKeyError: a published file with an unknown or a missing weight (named).
    """
    model_index = read_model_index(str(name_or_path), cache_dir, revision)
    if is_published_difix(model_index) or (not model_index and vae_has_difix_keys(str(name_or_path), cache_dir,
                                                                                   revision)):
        return net_from_published_folder(str(name_or_path), model_index, cache_dir, revision, prompt, prompt_embeds,
                                         **net_kwargs)
    return net_from_sd_folder(str(name_or_path), cache_dir=cache_dir, revision=revision, prompt=prompt,
                              prompt_embeds=prompt_embeds, **net_kwargs)


def rebuild_net(
    build_config: dict[str, Any],
    prompt_embeds: Tensor | None = None,
    pretrained: str | None = None,
    cache_dir: str | None = None,
    gradient_checkpointing: bool = False,
    **overrides: Any,
) -> DifixNet:
    """Rebuilds the (untrained) net that `build_config` describes.

    Args:
        build_config: a net's `build_config`.
        prompt_embeds: cached prompt embedding (skips the text encoder).
        pretrained: replaces the base model's hub id / folder (e.g. after moving it).
        cache_dir: Hugging Face cache folder.
        gradient_checkpointing: runtime option, not part of the config.
        **overrides: DifixNet.__init__ options that replace the stored ones (e.g. size_mode,
            latent; LoRA ranks other than the stored ones then fail to load the weights).
    """
    base = build_config["base"]
    net_kwargs = {k: build_config[k] for k in NET_KEYS if k in build_config}
    if unknown := sorted(set(overrides) - set(NET_KEYS)):
        raise TypeError(f"rebuild_net: unknown option(s) {unknown}; known: {list(NET_KEYS)}")
    net_kwargs.update(overrides)
    net_kwargs["gradient_checkpointing"] = gradient_checkpointing
    prompt = build_config.get("prompt", DEFAULT_PROMPT)
    if (base.get("kind") == "prior" and pretrained is None) or is_prior_checkpoint(pretrained):
        prior = pretrained or base["path"]
        try:
            return net_from_prior(prior, prompt_embeds=prompt_embeds, **net_kwargs)
        except FileNotFoundError as err:  # net_from_prior checks the file; say why it is needed
            raise FileNotFoundError(
                f"this fixer was fine-tuned from the Difix prior {prior}, which holds its frozen "
                "VAE weights, and that file is gone: restore it, or pass its new path as "
                "`pretrained` (net_from_checkpoint(..., pretrained=...))") from err
    if base.get("kind") == "reference_checkpoint":
        return net_from_reference_checkpoint(base["path"], base=pretrained or base["base"], cache_dir=cache_dir,
                                             prompt=prompt, prompt_embeds=prompt_embeds, **net_kwargs)
    if base.get("kind") == "pretrained" or pretrained is not None:
        name = pretrained if pretrained is not None else base["name_or_path"]
        revision = None if pretrained is not None else base.get("revision")
        return net_from_pretrained(name, cache_dir=cache_dir, revision=revision, prompt=prompt,
                                   prompt_embeds=prompt_embeds, **net_kwargs)
    if base.get("kind") == "config":
        return net_from_config(base["config"], seed=base["seed"], prompt=prompt, prompt_embeds=prompt_embeds,
                               **net_kwargs)
    raise ValueError(f"rebuild_net: cannot rebuild base {base!r}")


def net_from_checkpoint(
    path: str | Path,
    pretrained: str | None = None,
    cache_dir: str | None = None,
    gradient_checkpointing: bool = False,
    **overrides: Any,
) -> DifixNet:
    """Loads a DifixModule checkpoint (.ckpt) or an `export_weights` file.

    The base model is rebuilt from the stored build_config (SD-Turbo from the hub/cache/
    folder, the published model, a prior, or the seeded constructor config), then the trained
    weights are loaded.

    Args:
        path: checkpoint or exported weights (.safetensors / .pt).
        pretrained: replaces the stored base model name/folder.
        cache_dir: Hugging Face cache folder.
        gradient_checkpointing: runtime option.
        **overrides: DifixNet.__init__ options replacing the stored ones (see `rebuild_net`).
    """
    config, weights = load_difix_weights(path)
    net = rebuild_net(config, prompt_embeds=weights.get("prompt_embeds"), pretrained=pretrained, cache_dir=cache_dir,
                      gradient_checkpointing=gradient_checkpointing, **overrides)
    stored = {k: config.get(k) for k in ("unet_lora_rank", "vae_lora_rank")}
    net.load_trainable_state_dict(weights, source=f"{path} (saved with {stored})")
    base_layout = net.provenance.get("layout", "unknown")
    net.provenance["layout"] = f"DifixModule checkpoint {path} (base: {base_layout})"
    return net
