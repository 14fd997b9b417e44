"""DifixNetSpec: which DifixNet a DifixModule trains, as one typed object of its config.

The net is built from it in `DifixModule.configure_model` (never at construction, so config
checks and `--print_config` load no weights), through the one dispatcher every caller that
names a fixer uses (`lightning_modules.difix.fixers.sources.build_difix_net`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

from lightning_modules.difix.net.prompt import DEFAULT_PROMPT


@dataclass
class DifixNetSpec:
    """What fine-tuning starts from and the net's options.

    Attributes:
        pretrained: "stabilityai/sd-turbo" (the paper: untrained skips and LoRA), a published
            Difix ("nvidia/difix_ref", "nvidia/difix": its trained UNet, decoder LoRA and skip
            convs; vae_lora_rank must stay 4), a local folder of either, a reference
            `model_*.pkl`, a `DifixPriorModule` checkpoint (the offline prior of the CPU demo,
            in SD-Turbo's place; its prompt embedding is kept), or a DifixModule checkpoint /
            exported weights (fine-tunes that fixer further: its LoRA ranks must be these);
            None builds the tiny random-weight model (tests).
        tiny_seed: weight seed of the tiny model.
        prompt: text prompt, encoded once.
        timestep: the single denoising timestep (199).
        unet_lora_rank: 0 = full UNet fine-tune (paper); r > 0 = UNet LoRA of rank r.
        vae_lora_rank: decoder LoRA rank (4).
        skip_init: initial weight of the VAE skip convs (1e-5).
        size_mode: "pad" or "resize" to the model's size multiple, or "reference" (Lanczos to a
            multiple of 8, as the reference pipeline).
        reference_attention: joint self-attention over render + references.
        latent: "mode" of the VAE latent (default) or a "sample" (reference code).
        output: "decode" (the paper) or "residual" (input + the change the UNet step decodes
            to; see DifixNet).
    """

    pretrained: str | None = "stabilityai/sd-turbo"
    tiny_seed: int = 0
    prompt: str = DEFAULT_PROMPT
    timestep: int = 199
    unet_lora_rank: int = 0
    vae_lora_rank: int = 4
    skip_init: float = 1e-5
    size_mode: Literal["pad", "resize", "reference"] = "pad"
    reference_attention: bool = True
    latent: Literal["mode", "sample"] = "mode"
    output: Literal["decode", "residual"] = "decode"

    @property
    def name(self) -> str:
        """The fixer name `build_difix_net` takes."""
        return f"tiny:{self.tiny_seed}" if self.pretrained is None else str(self.pretrained)

    def net_options(self) -> dict[str, Any]:
        """DifixNet.__init__ options."""
        return {"timestep": self.timestep, "unet_lora_rank": self.unet_lora_rank, "vae_lora_rank": self.vae_lora_rank,
                "skip_init": self.skip_init, "size_mode": self.size_mode,
                "reference_attention": self.reference_attention, "latent": self.latent, "output": self.output}

    def build(self, cache_dir: str | None = None, gradient_checkpointing: bool = False) -> Any:
        """The DifixNet (loads weights: call from `configure_model`)."""
        from lightning_modules.difix.fixers.sources import build_difix_net

        prompt = None if self.prompt == DEFAULT_PROMPT else self.prompt
        return build_difix_net(self.name, cache_dir=cache_dir, prompt=prompt,
                               gradient_checkpointing=gradient_checkpointing, **self.net_options())


# Part of DifixModule's hyperparameters, so checkpoints hold it; allow it in weights-only loading.
torch.serialization.add_safe_globals([DifixNetSpec])
