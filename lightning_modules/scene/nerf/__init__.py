"""NeRF scene representation (nerfacto-style): hash encoding, field, proposal sampling, losses,
NerfSceneModule. Names resolve on first use, so importing this package never pulls Lightning."""
from __future__ import annotations

from datamodules.lazy_exports import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "HashEncoding": "lightning_modules.scene.nerf.encoding",
    "FieldSettings": "lightning_modules.scene.nerf.field",
    "NerfField": "lightning_modules.scene.nerf.field",
    "ProposalField": "lightning_modules.scene.nerf.field",
    "NerfModel": "lightning_modules.scene.nerf.model",
    "SamplingSettings": "lightning_modules.scene.nerf.model",
    "NerfSceneModule": "lightning_modules.scene.nerf.module",
})
