"""Lightning callbacks: Difix3D progressive fix, curated-pair writing, the live viewer.

Import-light: names resolve lazily (PEP 562), so `import callbacks` pulls in nothing heavy.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "ProgressiveFixCallback": "callbacks.progressive_fix",
    "RendersViews": "callbacks.protocols",
    "GrowsTrainingSet": "callbacks.protocols",
    "PairWriter": "callbacks.pair_writer",
    "ViewerCallback": "callbacks.viewer",
    "SceneViewer": "callbacks.scene_viewer",
    "NearestViewFix": "callbacks.post_render_fix",
    "BestAndLastCheckpoint": "callbacks.checkpoints",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'callbacks' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
