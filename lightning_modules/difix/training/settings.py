"""The option groups of ``DifixModule`` (YAML ``loss:`` and ``optimizer:``).

Typed dataclasses (LightningCLI builds its config schema from the fields) that check their ranges
at construction, naming the field as it is written in YAML (``optimizer.lr``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from lightning_modules.options import check_learning_rates, check_number

__all__ = ["AdamWSettings", "FixerLoss"]

OWNER = "DifixModule"


@dataclass
class FixerLoss:
    """The fixer's loss: ``w_l2 L2 + w_lpips LPIPS(VGG) + w_gram Gram + w_ssim (1 - SSIM)``.

    Attributes:
        w_l2: weight of the L2 loss.
        w_lpips: weight of LPIPS (VGG).
        w_gram: weight of the Gram loss (0.5 paper, 1.0 reference README).
        w_ssim: weight of 1 - SSIM (torchmetrics; not in the paper, 0 by default). Offline the
            LPIPS / Gram backbones are random, so L2 alone is left and it rewards blur; SSIM is
            a structure term that needs no pretrained network (the CPU demo's stand-in).
        gram_warmup_steps: Gram loss off before this global step.
        gram_crop_size: random square crop for the Gram loss (None: whole image).
        gram_cross_batch: the reference code's Gram over the whole batch at once (cross-image
            blocks; equal to the default for batch size 1, the paper's per-GPU batch).
        on_references: also supervise the reference slots (target = the reference), as the
            reference code does.
    """

    w_l2: float = 1.0
    w_lpips: float = 1.0
    w_gram: float = 0.5
    w_ssim: float = 0.0
    gram_warmup_steps: int = 2000
    gram_crop_size: int | None = 400
    gram_cross_batch: bool = False
    on_references: bool = True

    def __post_init__(self) -> None:
        for name in ("w_l2", "w_lpips", "w_gram", "w_ssim"):
            check_number(OWNER, f"loss.{name}", getattr(self, name), low=0.0)
        check_number(OWNER, "loss.gram_warmup_steps", self.gram_warmup_steps, low=0, integer=True)
        check_number(OWNER, "loss.gram_crop_size", self.gram_crop_size, low=1, integer=True, optional=True)


@dataclass
class AdamWSettings:
    """AdamW and its learning-rate schedule.

    Attributes:
        lr: learning rate (the paper: 2e-5).
        skip_lr_scale: learning-rate factor of the VAE skip convs (1 = paper; the random-init
            demo model needs them to open faster).
        betas: AdamW betas.
        weight_decay: AdamW weight decay.
        schedule: "constant" (the paper) or "cosine": decay to lr / 10 over ``trainer.max_steps``
            (the CPU demo: its batch-1 updates otherwise leave the last weights noisy, e.g. a
            random colour cast).
    """

    lr: float = 2e-5
    skip_lr_scale: float = 1.0
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 1e-2
    schedule: Literal["constant", "cosine"] = "constant"

    def __post_init__(self) -> None:
        check_learning_rates(OWNER, **{"optimizer.lr": self.lr, "optimizer.lr x skip_lr_scale": self.lr * self.skip_lr_scale})
        if len(self.betas) != 2:
            raise ValueError(f"{OWNER}: optimizer.betas must be two values, got {self.betas}")
        for beta in self.betas:
            check_number(OWNER, "optimizer.betas", beta, low=0.0, high=1.0)
        self.betas = (float(self.betas[0]), float(self.betas[1]))
        check_number(OWNER, "optimizer.weight_decay", self.weight_decay, low=0.0)
        if self.schedule not in ("constant", "cosine"):
            raise ValueError(f"{OWNER}: optimizer.schedule must be constant or cosine, got {self.schedule!r}")


# Settings are hyperparameters, so checkpoints hold them; allow them in weights-only loading.
torch.serialization.add_safe_globals([AdamWSettings, FixerLoss])
