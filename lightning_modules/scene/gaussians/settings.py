"""The option groups of ``GaussianSceneModule`` (YAML ``lr:``, ``loss:``, ``sh:``, ``rasterizer:``).

Each is a typed dataclass (LightningCLI builds its config schema from the fields) that checks
its ranges at construction, naming the field as it is written in YAML (``lr.means``). The
initialisation group (``init:``) lives beside the code it drives, in ``initial.py``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from lightning_modules.options import check_learning_rates, check_number

__all__ = ["LearningRates", "LossSettings", "RasterSettings", "SHSchedule"]

OWNER = "GaussianSceneModule"


@dataclass
class LearningRates:
    """Adam learning rates, one per Gaussian parameter (gsplat's ``simple_trainer`` defaults).

    Attributes:
        means: means learning rate per unit scene scale (1.6e-4).
        means_final_factor: the means learning rate decays exponentially to this fraction (0.01).
        scales: log-scale learning rate (5e-3).
        quats: quaternion learning rate (1e-3).
        opacities: opacity-logit learning rate (5e-2).
        sh0: degree-0 SH learning rate (2.5e-3).
        shN: higher SH learning rate (gsplat: sh0 / 20).
        decay_steps: steps of the means decay (None: the trainer's max_steps).
    """

    means: float = 1.6e-4
    means_final_factor: float = 0.01
    scales: float = 5e-3
    quats: float = 1e-3
    opacities: float = 5e-2
    sh0: float = 2.5e-3
    shN: float = 2.5e-3 / 20
    decay_steps: int | None = None

    def __post_init__(self) -> None:
        check_learning_rates(OWNER, **{f"lr.{k}": v for k, v in self.per_parameter(1.0).items()})
        check_number(OWNER, "lr.means_final_factor", self.means_final_factor, above=0.0, high=1.0)
        check_number(OWNER, "lr.decay_steps", self.decay_steps, low=1, integer=True, optional=True)

    def per_parameter(self, scene_scale: float) -> dict[str, float]:
        """The learning rate of each parameter (``splats.SPLAT_NAMES``), the means' scaled by the scene."""
        return {"means": self.means * scene_scale, "scales": self.scales, "quats": self.quats,
                "opacities": self.opacities, "sh0": self.sh0, "shN": self.shN}


@dataclass
class LossSettings:
    """The training loss: ``(1 - ssim_lambda) L1 + ssim_lambda (1 - SSIM)`` plus regularisers.

    Attributes:
        ssim_lambda: weight of (1 - SSIM) in the photometric loss (3DGS: 0.2).
        opacity_reg: weight of the mean opacity (gsplat's MCMC preset: 0.01).
        scale_reg: weight of the mean scale (gsplat's MCMC preset: 0.01).
    """

    ssim_lambda: float = 0.2
    opacity_reg: float = 0.0
    scale_reg: float = 0.0

    def __post_init__(self) -> None:
        check_number(OWNER, "loss.ssim_lambda", self.ssim_lambda, low=0.0, high=1.0)
        check_number(OWNER, "loss.opacity_reg", self.opacity_reg, low=0.0)
        check_number(OWNER, "loss.scale_reg", self.scale_reg, low=0.0)


@dataclass
class SHSchedule:
    """The spherical harmonics of the colours and when each degree starts to train.

    Attributes:
        degree: maximum SH degree (gsplat: 3); a scene started from a file uses the file's.
        interval: the degree in use grows by one every this many steps (a file's Gaussians
            use every degree from step 0).
    """

    degree: int = 3
    interval: int = 1000

    def __post_init__(self) -> None:
        check_number(OWNER, "sh.degree", self.degree, low=0, high=4, integer=True)  # gsplat's SH go to degree 4
        check_number(OWNER, "sh.interval", self.interval, low=1, integer=True)


@dataclass
class RasterSettings:
    """How the Gaussians are rasterized (``rasterize.render``'s options).

    Attributes:
        backend: "auto" (gsplat on CUDA, torch on CPU), "gsplat" or "torch".
        near_plane: near clipping distance.
        far_plane: far clipping distance.
        eps2d: 2D low-pass added to the projected covariances (gsplat: 0.3).
    """

    backend: Literal["auto", "gsplat", "torch"] = "auto"
    near_plane: float = 0.01
    far_plane: float = 1e10
    eps2d: float = 0.3

    def __post_init__(self) -> None:
        if self.backend not in ("auto", "gsplat", "torch"):
            raise ValueError(f"{OWNER}: rasterizer.backend must be auto, gsplat or torch, got {self.backend!r}")
        check_number(OWNER, "rasterizer.near_plane", self.near_plane, above=0.0)
        check_number(OWNER, "rasterizer.far_plane", self.far_plane, above=self.near_plane)
        check_number(OWNER, "rasterizer.eps2d", self.eps2d, low=0.0)


# Settings are hyperparameters, so checkpoints hold them; allow them in weights-only loading.
torch.serialization.add_safe_globals([LearningRates, LossSettings, RasterSettings, SHSchedule])
