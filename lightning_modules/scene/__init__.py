"""Scene representations: the shared scene layer (SceneModule: evaluation, predict videos, the
post-render fix hook), Gaussians (parameters, .ply, rasterizer front, strategies) and the NeRF.

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
    "EvalSettings": "lightning_modules.scene.evaluation",
    "SceneEvaluator": "lightning_modules.scene.evaluation",
    "PathSettings": "lightning_modules.scene.path_video",
    "render_path": "lightning_modules.scene.path_video",
    "SceneModule": "lightning_modules.scene.base",
    "GaussianSceneModule": "lightning_modules.scene.module",
    "NerfSceneModule": "lightning_modules.scene.nerf.module",
}

__all__ = ["render", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lightning_modules.scene' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
