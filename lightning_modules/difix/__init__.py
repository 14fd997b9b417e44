"""Difix: the single-step diffusion fixer (network, reference attention, VAE skips, training module).

Imports are lazy so `import lightning_modules.difix` does not pull in diffusers or Lightning.
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "DifixNet": ".net",
    "PretrainedNotFoundError": ".net",
    "load_difix_weights": ".net",
    "WeightKeyError": ".published",
    "ImageFixer": ".image_fixer",
    "MultiViewAttnProcessor": ".attention",
    "install_multiview_attention": ".attention",
    "VaeSkips": ".vae_skips",
    "DifixModule": ".module",
    "TINY_CONFIG": ".tiny",
    "SD_TURBO_CONFIG": ".tiny",
    "build_components": ".tiny",
    "save_components": ".tiny",
    "LPIPSLoss": ".losses",
    "GramLoss": ".losses",
    "load_vgg16": ".backbones",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
