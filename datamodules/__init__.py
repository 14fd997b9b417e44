"""Data (imports nothing of the rest of the project): cameras and pose math, scene readers, the
scene datamodule, the procedural scene, the fixer's pairs, and files on disk. Names resolve on
first use, so `import datamodules` pulls in neither Lightning nor any reader."""
from __future__ import annotations

from datamodules.lazy_exports import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "Cameras": "datamodules.cameras.cameras",
    "pose_distance": "datamodules.cameras.poses",
    "step_pose_toward": "datamodules.cameras.poses",
    "interpolate_path": "datamodules.cameras.poses",
    "look_at": "datamodules.cameras.poses",
    "read_scene": "datamodules.readers.read_scene",
    "ReadOptions": "datamodules.readers.scene_data",
    "SceneData": "datamodules.readers.scene_data",
    "SceneFormatError": "datamodules.readers.scene_data",
    "SceneDataModule": "datamodules.scene.datamodule",
    "SceneSetup": "datamodules.scene.scene_setup",
    "make_procedural_scene": "datamodules.procedural.scene",
    "PairDataModule": "datamodules.pairs.datamodule",
    "PairRecord": "datamodules.pairs.record",
    "read_pairs_json": "datamodules.pairs.pairs_json",
    "PairDataError": "datamodules.pairs.pairs_json",
    "load_image": "datamodules.files.image_io",
    "save_image": "datamodules.files.image_io",
})
