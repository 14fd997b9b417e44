"""The ways to build a DifixNet: hub / local folder (SD-Turbo or published Difix layout), the
reference code's `model_*.pkl`, constructor configs (tiny, offline) and this project's own
checkpoints / exported weights.

`DifixBuilders` is a mixin of classmethods; `DifixNet` (net.py) inherits it, so callers write
`DifixNet.from_pretrained(...)`. Every builder records in `build_config["base"]` how to rebuild
the untrained base, which is all a checkpoint needs besides the trained tensors.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from .loading import (PretrainedNotFoundError, is_published_difix, load_difix_weights, offline_message,
                      read_model_index, vae_has_difix_keys)
from .tiny import CONFIGS, build_components

if TYPE_CHECKING:
    from .net import DifixNet

DEFAULT_PROMPT = "remove degradation"
# build_config keys that DifixNet.__init__ takes (the rest of build_config is "base" and "prompt").
NET_KEYS = ("timestep", "unet_lora_rank", "vae_lora_rank", "skip_init", "size_mode", "reference_attention", "latent",
            "output")


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



class DifixBuilders:
    """Classmethod builders of DifixNet (mixed into it)."""

    @classmethod
    def from_components(
        cls,
        components: dict[str, Any],
        base: dict[str, Any],
        prompt: str = DEFAULT_PROMPT,
        prompt_embeds: Tensor | None = None,
        provenance: dict[str, str] | None = None,
        **net_kwargs: Any,
    ) -> DifixNet:
        """Builds from diffusers components; the text encoder is used once and dropped."""
        if prompt_embeds is None:
            if components.get("text_encoder") is None or components.get("tokenizer") is None:
                raise ValueError("DifixNet: no prompt_embeds and no text encoder/tokenizer to make them")
            prompt_embeds = encode_prompt(components["text_encoder"], components["tokenizer"], prompt)
        components.pop("text_encoder", None)  # not kept in memory
        components.pop("tokenizer", None)
        return cls(
            components["unet"],
            components["vae"],
            components["scheduler"],
            prompt_embeds,
            build_config={"base": base, "prompt": prompt},
            provenance=provenance,
            **net_kwargs,
        )

    @classmethod
    def from_pretrained(
        cls,
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
        with reference attention on when the UNet entry names a multi-view class (difix_ref);
        anything else loads as an SD-Turbo-architecture base model (untrained skips and LoRA).
        A reference training `model_*.pkl` file goes to `from_reference_checkpoint`.

        Args:
            name_or_path: hub id or folder with unet/, vae/, scheduler/, text_encoder/, tokenizer/.
            cache_dir: Hugging Face cache folder (default: $HF_HOME/hub).
            revision: hub revision.
            prompt: text prompt, encoded once with the model's CLIP text encoder.
            prompt_embeds: (1, L, D) precomputed embedding; skips loading the text encoder.
            **net_kwargs: DifixNet.__init__ options (timestep, unet_lora_rank, ...). For a published
                folder, `vae_lora_rank` must be the file's rank or 0 (merge the LoRA into the
                decoder), and `reference_attention=None` (or absent) follows the folder.

        Raises:
            PretrainedNotFoundError: offline / not cached / not an SD folder, with what to download.
            published.WeightKeyError: a published file with an unknown or a missing weight (named).
        """
        if str(name_or_path).endswith(".pkl") and Path(name_or_path).expanduser().is_file():
            return cls.from_reference_checkpoint(name_or_path, cache_dir=cache_dir, prompt=prompt,
                                                 prompt_embeds=prompt_embeds, **net_kwargs)
        model_index = read_model_index(str(name_or_path), cache_dir, revision)
        if is_published_difix(model_index) or (not model_index and vae_has_difix_keys(str(name_or_path), cache_dir,
                                                                                       revision)):
            from .published import load_published_folder

            return load_published_folder(cls, str(name_or_path), model_index, cache_dir, revision, prompt,
                                         prompt_embeds, **net_kwargs)
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
        return cls.from_components(components, base, prompt=prompt, prompt_embeds=prompt_embeds,
                                   provenance=provenance, **net_kwargs)

    @classmethod
    def from_reference_checkpoint(
        cls,
        path: str | Path,
        base: str = "stabilityai/sd-turbo",
        cache_dir: str | None = None,
        prompt: str = DEFAULT_PROMPT,
        prompt_embeds: Tensor | None = None,
        **net_kwargs: Any,
    ) -> DifixNet:
        """Loads the reference training script's `model_*.pkl` on top of its base model.

        The pkl holds the UNet (all or some keys), the decoder LoRA and the skip convs (with
        their LoRA, merged here); everything else comes from `base` (SD-Turbo). Its optimizer
        state is not used.

        Args:
            path: the .pkl (read with torch.load(weights_only=True): no code runs).
            base: hub id or SD-Turbo folder the reference trained from.
            cache_dir: Hugging Face cache folder.
            prompt: text prompt.
            prompt_embeds: precomputed (1, L, D) embedding.
            **net_kwargs: DifixNet.__init__ options; `vae_lora_rank` defaults to the file's
                `rank_vae` (0 merges the LoRA into the decoder).

        Raises:
            FileNotFoundError / ValueError naming the file; published.WeightKeyError naming an
            unknown or missing weight; PretrainedNotFoundError when `base` cannot be loaded.
        """
        from .published import load_reference_checkpoint

        return load_reference_checkpoint(cls, path, base, cache_dir, prompt, prompt_embeds, **net_kwargs)

    @classmethod
    def from_config(
        cls,
        config: str | dict[str, Any] = "tiny",
        seed: int = 0,
        prompt: str = DEFAULT_PROMPT,
        prompt_embeds: Tensor | None = None,
        **net_kwargs: Any,
    ) -> DifixNet:
        """Random-weight model from constructor dicts (no download), reproducible by seed.

        Args:
            config: "tiny", "sd-turbo" (SD-Turbo's architecture) or a dict like
                `tiny.TINY_CONFIG`. Without a text encoder config the prompt embedding is a
                seeded random (1, 77, cross_attention_dim) tensor.
            seed: weight seed.
            prompt: prompt for the (random) text encoder.
            prompt_embeds: precomputed (1, L, D) embedding.
            **net_kwargs: DifixNet.__init__ options.
        """
        if isinstance(config, str):
            if config not in CONFIGS:
                raise ValueError(f"DifixNet.from_config: unknown config {config!r}; known: {sorted(CONFIGS)}")
            config = CONFIGS[config]
        config = json.loads(json.dumps(config))  # plain, JSON-able copy for build_config
        components = build_components(config, seed=seed)
        if prompt_embeds is None and components["text_encoder"] is None:
            gen = torch.Generator().manual_seed(seed)
            dim = config["unet"]["cross_attention_dim"]
            prompt_embeds = torch.randn(1, 77, dim, generator=gen)
        base = {"kind": "config", "config": config, "seed": int(seed)}
        provenance = {"layout": "constructor config (random weights, seed %d)" % seed}
        return cls.from_components(components, base, prompt=prompt, prompt_embeds=prompt_embeds,
                                   provenance=provenance, **net_kwargs)

    @classmethod
    def tiny(cls, seed: int = 0, **net_kwargs: Any) -> DifixNet:
        """The tiny test/demo model (0.8M-param UNet, 1.3M-param VAE, 2-layer CLIP), offline."""
        return cls.from_config("tiny", seed=seed, **net_kwargs)

    @classmethod
    def build(
        cls,
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
            raise TypeError(f"DifixNet.build: unknown option(s) {unknown}; known: {list(NET_KEYS)}")
        net_kwargs.update(overrides)
        net_kwargs["gradient_checkpointing"] = gradient_checkpointing
        prompt = build_config.get("prompt", DEFAULT_PROMPT)
        from .prior_loading import is_prior_checkpoint, net_from_prior

        if (base.get("kind") == "prior" and pretrained is None) or is_prior_checkpoint(pretrained):
            prior = pretrained or base["path"]
            try:
                return net_from_prior(prior, prompt_embeds=prompt_embeds, **net_kwargs)
            except FileNotFoundError as err:  # net_from_prior checks the file; say why it is needed
                raise FileNotFoundError(
                    f"this fixer was fine-tuned from the Difix prior {prior}, which holds its frozen "
                    "VAE weights, and that file is gone: restore it, or pass its new path as "
                    "`pretrained` (DifixNet.from_checkpoint(..., pretrained=...))") from err
        if base.get("kind") == "reference_checkpoint":
            return cls.from_reference_checkpoint(base["path"], base=pretrained or base["base"], cache_dir=cache_dir,
                                                 prompt=prompt, prompt_embeds=prompt_embeds, **net_kwargs)
        if base.get("kind") == "pretrained" or pretrained is not None:
            name = pretrained if pretrained is not None else base["name_or_path"]
            revision = None if pretrained is not None else base.get("revision")
            return cls.from_pretrained(name, cache_dir=cache_dir, revision=revision, prompt=prompt,
                                       prompt_embeds=prompt_embeds, **net_kwargs)
        if base.get("kind") == "config":
            return cls.from_config(base["config"], seed=base["seed"], prompt=prompt, prompt_embeds=prompt_embeds,
                                   **net_kwargs)
        raise ValueError(f"DifixNet.build: cannot rebuild base {base!r}")

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        pretrained: str | None = None,
        cache_dir: str | None = None,
        gradient_checkpointing: bool = False,
        **overrides: Any,
    ) -> DifixNet:
        """Loads a DifixModule checkpoint (.ckpt) or an `export_weights` file.

        The base model is rebuilt from the stored build_config (SD-Turbo from the hub/cache/
        folder, or the seeded constructor config), then the trained weights are loaded.

        Args:
            path: checkpoint or exported weights (.safetensors / .pt).
            pretrained: replaces the stored base model name/folder.
            cache_dir: Hugging Face cache folder.
            gradient_checkpointing: runtime option.
            **overrides: DifixNet.__init__ options replacing the stored ones (see `build`).
        """
        config, weights = load_difix_weights(path)
        net = cls.build(config, prompt_embeds=weights.get("prompt_embeds"), pretrained=pretrained,
                        cache_dir=cache_dir, gradient_checkpointing=gradient_checkpointing, **overrides)
        stored = {k: config.get(k) for k in ("unet_lora_rank", "vae_lora_rank")}
        net.load_trainable_state_dict(weights, source=f"{path} (saved with {stored})")
        base_layout = net.provenance.get("layout", "unknown")
        net.provenance["layout"] = f"DifixModule checkpoint {path} (base: {base_layout})"
        return net

