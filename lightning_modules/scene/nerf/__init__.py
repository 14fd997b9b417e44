"""NeRF scene representation (nerfacto-style): hash encoding, field, proposal sampling, losses,
NerfSceneModule. Import-light: names resolve on first use (PEP 562), so importing this
package never pulls Lightning."""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "HashEncoding": "lightning_modules.scene.nerf.encoding",
    "sh_encoding": "lightning_modules.scene.nerf.encoding",
    "NerfField": "lightning_modules.scene.nerf.field",
    "ProposalField": "lightning_modules.scene.nerf.field",
    "NerfModel": "lightning_modules.scene.nerf.model",
    "SamplingSettings": "lightning_modules.scene.nerf.model",
    "render_weights": "lightning_modules.scene.nerf.rendering",
    "interlevel_loss": "lightning_modules.scene.nerf.rendering",
    "distortion_loss": "lightning_modules.scene.nerf.rendering",
    "contract": "lightning_modules.scene.nerf.sampling",
    "sample_pdf": "lightning_modules.scene.nerf.sampling",
    "NerfSceneModule": "lightning_modules.scene.nerf.module",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lightning_modules.scene.nerf' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
