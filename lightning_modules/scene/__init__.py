"""Gaussian scene: parameters, .ply I/O, the rasterizer front, densification, the LightningModule.

Import-light: ``render`` is imported eagerly (torch + gsplat's pure-torch helpers only); the
other names resolve on first use (PEP 562), so importing this package never pulls Lightning.
"""
from __future__ import annotations

import importlib
from typing import Any

from .rasterize import render

_EXPORTS: dict[str, str] = {
    "Gaussians": "lightning_modules.scene.gaussians",
    "rgb_to_sh": "lightning_modules.scene.gaussians",
    "sh_to_rgb": "lightning_modules.scene.gaussians",
    "write_ply": "lightning_modules.scene.ply",
    "read_ply": "lightning_modules.scene.ply",
    "transform_splats": "lightning_modules.scene.ply",
    "DefaultStrategy": "lightning_modules.scene.strategy",
    "MCMCStrategy": "lightning_modules.scene.strategy",
    "photometric_loss": "lightning_modules.scene.losses",
    "ssim_map": "lightning_modules.scene.losses",
    "ImageMetrics": "lightning_modules.scene.metrics",
    "GaussianSceneModule": "lightning_modules.scene.module",
}

__all__ = ["render", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lightning_modules.scene' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
