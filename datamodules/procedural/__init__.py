"""The procedural scene the project makes itself (analytic ray caster), for offline demos and tests."""
from __future__ import annotations

from datamodules.lazy_exports import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "make_procedural_scene": "datamodules.procedural.scene",
    "ProceduralScene": "datamodules.procedural.scene",
    "ProceduralOptions": "datamodules.procedural.scene",
})
