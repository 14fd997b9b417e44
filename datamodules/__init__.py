"""Data: the Cameras type and pose math, scene readers, SceneDataModule, PairDataModule.

Import-light: names resolve lazily (PEP 562), so `import datamodules` pulls in neither
Lightning nor any reader until a name is used. Add an export by adding a line to `_EXPORTS`.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    # cameras and pose math (scene-data helper)
    "Cameras": "datamodules.cameras",
    "pose_distance": "datamodules.cameras",
    "step_pose_toward": "datamodules.cameras",
    "interpolate_path": "datamodules.cameras",
    "look_at": "datamodules.cameras",
    # scene readers (scene-data helper)
    "SceneData": "datamodules.scene_data",
    "SceneFormatError": "datamodules.scene_data",
    "read_colmap": "datamodules.colmap",
    "read_blender": "datamodules.blender",
    "read_nerfstudio": "datamodules.nerfstudio",
    "read_llff": "datamodules.llff",
    "make_procedural_scene": "datamodules.procedural",
    "SceneDataModule": "datamodules.scene_datamodule",
    "image_groups": "datamodules.camera_groups",
    "select_group": "datamodules.camera_groups",
    # image files, pairs for the fixer, synthetic degradations (pairs helper)
    "load_image": "datamodules.image_io",
    "save_image": "datamodules.image_io",
    "read_image_size": "datamodules.image_io",
    "resize_image": "datamodules.image_io",
    "list_images": "datamodules.image_io",
    "PairDataModule": "datamodules.pairs",
    "PairDataset": "datamodules.pair_datasets",
    "SyntheticPairDataset": "datamodules.pair_datasets",
    "PairDataError": "datamodules.pairs_json",
    "read_pairs_json": "datamodules.pairs_json",
    "Degrader": "datamodules.degradations",
    "procedural_image": "datamodules.degradations",
    "DEGRADATIONS": "datamodules.degradations",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'datamodules' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


# `read_scene` is both a submodule and its main function. Importing the submodule binds the
# module to the package attribute, which would hide a lazy export, so bind the function
# eagerly here (it pulls torch, numpy and PIL, never Lightning).
from datamodules.read_scene import read_scene  # noqa: E402

__all__.append("read_scene")
