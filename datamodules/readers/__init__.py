"""Scene readers: one file per disk format (COLMAP, Blender / NeRF-synthetic, nerfstudio
``transforms.json``, LLFF), each returning a ``RawScene`` that ``read_scene`` finishes in one place."""
from __future__ import annotations

from datamodules.lazy_exports import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "read_scene": "datamodules.readers.read_scene",
    "detect_format": "datamodules.readers.read_scene",
    "ReadOptions": "datamodules.readers.scene_data",
    "SceneData": "datamodules.readers.scene_data",
    "RawScene": "datamodules.readers.scene_data",
    "SceneFormatError": "datamodules.readers.scene_data",
    "image_groups": "datamodules.readers.camera_groups",
    "select_group": "datamodules.readers.camera_groups",
})
