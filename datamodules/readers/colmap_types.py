"""COLMAP's model types: camera models, cameras, images, points (as its files hold them).

Shared by the binary/text file readers and writers (``datamodules/readers/colmap_io.py``) and the
scene reader (``datamodules/readers/colmap.py``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from datamodules.cameras.poses import rigid_inverse, rotmat_to_quat

# model id -> (name, number of parameters), as in COLMAP's src/colmap/sensor/models.h
CAMERA_MODELS: dict[int, tuple[str, int]] = {
    0: ("SIMPLE_PINHOLE", 3),
    1: ("PINHOLE", 4),
    2: ("SIMPLE_RADIAL", 4),
    3: ("RADIAL", 5),
    4: ("OPENCV", 8),
    5: ("OPENCV_FISHEYE", 8),
    6: ("FULL_OPENCV", 12),
    7: ("FOV", 5),
    8: ("SIMPLE_RADIAL_FISHEYE", 4),
    9: ("RADIAL_FISHEYE", 5),
    10: ("THIN_PRISM_FISHEYE", 12),
    11: ("RAD_TAN_THIN_PRISM_FISHEYE", 16),
}
MODEL_IDS = {name: mid for mid, (name, _) in CAMERA_MODELS.items()}
SUPPORTED_MODELS = ("SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV")


@dataclass
class ColmapCamera:
    """One COLMAP camera (intrinsics shared by the images that name its id)."""

    id: int
    model: str
    width: int
    height: int
    params: list[float]


@dataclass
class ColmapImage:
    """One registered image: world-to-camera pose and its 2D observations."""

    id: int
    qvec: np.ndarray  # (4,) float64 wxyz, world-to-camera rotation
    tvec: np.ndarray  # (3,) float64 world-to-camera translation
    camera_id: int
    name: str
    xys: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))  # (M, 2) float64
    point3d_ids: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))  # (M,) -1 = none


@dataclass
class ColmapPoints:
    """Sparse points, vectorised; ``tracks[i]`` is an (L, 2) int array of (image_id, point2D_idx)."""

    ids: np.ndarray  # (P,) int64
    xyz: np.ndarray  # (P, 3) float64
    rgb: np.ndarray  # (P, 3) uint8
    error: np.ndarray  # (P,) float64
    tracks: list[np.ndarray]

    @classmethod
    def from_arrays(cls, xyz: np.ndarray, rgb: np.ndarray) -> ColmapPoints:
        p = len(xyz)
        return cls(
            np.arange(1, p + 1, dtype=np.int64),
            np.asarray(xyz, np.float64),
            np.asarray(rgb, np.uint8),
            np.zeros(p),
            [np.zeros((0, 2), np.int64) for _ in range(p)],
        )


def colmap_pose_from_c2w(c2w: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(4, 4) OpenCV camera-to-world -> COLMAP (qvec wxyz, tvec) world-to-camera."""
    w2c = rigid_inverse(c2w.double()[None])[0]
    q = rotmat_to_quat(w2c[:3, :3])
    return q.numpy(), w2c[:3, 3].numpy()
