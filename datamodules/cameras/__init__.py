"""The project's one camera type, pose math, camera JSON files and lens distortion."""
from __future__ import annotations

from datamodules.lazy_exports import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "Cameras": "datamodules.cameras.cameras",
    "pose_distance": "datamodules.cameras.poses",
    "step_pose_toward": "datamodules.cameras.poses",
    "interpolate_path": "datamodules.cameras.poses",
    "nearest_views": "datamodules.cameras.poses",
    "look_at": "datamodules.cameras.poses",
    "look_at_center": "datamodules.cameras.cameras",
    "read_cameras_json": "datamodules.cameras.camera_json",
    "write_cameras_json": "datamodules.cameras.camera_json",
    "undistort_image": "datamodules.cameras.distortion",
})
