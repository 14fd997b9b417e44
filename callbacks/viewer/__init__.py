"""The live viewer: a scene in the browser (viser) with the Difix3D+ fix as a switch, standalone
(scripts/view.py) or beside training (ViewerCallback)."""
from __future__ import annotations

from datamodules.lazy_exports import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "ViewerCallback": "callbacks.viewer.callback",
    "SceneViewer": "callbacks.viewer.server",
})
