"""A scene as a training set: SceneDataModule (real views plus the fixed novel views Difix3D
adds), its views and datasets, and the SceneSetup it hands to a scene module."""
from __future__ import annotations

from datamodules.lazy_exports import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "SceneDataModule": "datamodules.scene.datamodule",
    "SceneSetup": "datamodules.scene.scene_setup",
    "ProvidesSceneSetup": "datamodules.scene.scene_setup",
    "collate_views": "datamodules.scene.views",
})
