"""COLMAP scenes: the scene reader (file formats: ``colmap_io.py``; types: ``colmap_types.py``).

Layout read by :func:`read_colmap`: ``ROOT/sparse/0/`` (or ``ROOT/sparse/`` or ``ROOT``)
holding ``cameras``, ``images`` and ``points3D`` as ``.bin`` or ``.txt``, and images in
``ROOT/images/`` (``images_<k>/`` pre-shrunk copies are used for downscale k, as 3DGS does).
COLMAP poses are world-to-camera (qw, qx, qy, qz, tx, ty, tz) in OpenCV axes: the project's
convention, so no axis flips happen here.

Supported camera models: SIMPLE_PINHOLE, PINHOLE, SIMPLE_RADIAL, RADIAL, OPENCV; distortion
of the last three is removed when images are loaded (``SceneData.distortion``). Other models
(fisheye, FULL_OPENCV, FOV, ...) are refused with a message naming the file and the model.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from datamodules.cameras.poses import quat_to_rotmat, rigid_inverse
from datamodules.readers.colmap_io import find_colmap_model, read_colmap_model, write_colmap_binary, write_colmap_text
from datamodules.readers.colmap_types import (
    CAMERA_MODELS,
    MODEL_IDS,
    SUPPORTED_MODELS,
    ColmapCamera,
    ColmapImage,
    ColmapPoints,
    colmap_pose_from_c2w,
)
from datamodules.readers.scene_data import (
    RawScene,
    SceneFormatError,
    image_folder_for_downscale,
)
from datamodules.readers.intrinsics import intrinsics_at_load_size

__all__ = [
    "ColmapCamera",
    "ColmapImage",
    "ColmapPoints",
    "CAMERA_MODELS",
    "read_colmap",
    "read_colmap_model",
    "find_colmap_model",
    "write_colmap_binary",
    "write_colmap_text",
    "colmap_pose_from_c2w",
]


def _intrinsics(cam: ColmapCamera, source: Path) -> tuple[list[float], list[float]]:
    """COLMAP camera -> ([fx, fy, cx, cy], [k1, k2, k3, k4, p1, p2])."""
    p = cam.params
    if cam.model == "SIMPLE_PINHOLE":
        return [p[0], p[0], p[1], p[2]], [0.0] * 6
    if cam.model == "PINHOLE":
        return [p[0], p[1], p[2], p[3]], [0.0] * 6
    if cam.model == "SIMPLE_RADIAL":
        return [p[0], p[0], p[1], p[2]], [p[3], 0.0, 0.0, 0.0, 0.0, 0.0]
    if cam.model == "RADIAL":
        return [p[0], p[0], p[1], p[2]], [p[3], p[4], 0.0, 0.0, 0.0, 0.0]
    if cam.model == "OPENCV":
        return [p[0], p[1], p[2], p[3]], [p[4], p[5], 0.0, 0.0, p[6], p[7]]
    raise SceneFormatError(
        f"{source}: camera {cam.id} uses model {cam.model} (id {MODEL_IDS.get(cam.model)}), which is not supported "
        f"(supported: {', '.join(SUPPORTED_MODELS)}); undistort the images first with `colmap image_undistorter`"
    )


def read_colmap(
    path: str | Path,
    downscale: int = 1,
    images_dir: str = "images",
) -> RawScene:
    """Reads a COLMAP scene (see module doc) into a SceneData.

    Images are ordered by name. ``downscale`` uses ``{images_dir}_{k}`` folders when present,
    else resizes on load; intrinsics follow the files' real sizes.
    """
    root = Path(path)
    if not root.is_dir():
        raise SceneFormatError(f"{root}: scene folder not found")
    model = find_colmap_model(root)
    cameras, images, points = read_colmap_model(model)
    cam_file = model / ("cameras.bin" if (model / "cameras.bin").is_file() else "cameras.txt")
    img_file = model / ("images.bin" if (model / "images.bin").is_file() else "images.txt")
    if not images:
        raise SceneFormatError(f"{img_file}: the model has no registered images")
    folder, k = image_folder_for_downscale(root, images_dir, downscale)
    ordered = sorted(images.values(), key=lambda im: im.name)
    paths, names, c2w, Ks, dist, ws, hs = [], [], [], [], [], [], []
    for im in ordered:
        if im.camera_id not in cameras:
            raise SceneFormatError(f"{img_file}: image {im.name!r} refers to camera {im.camera_id}, absent from {cam_file}")
        cam = cameras[im.camera_id]
        (fx, fy, cx, cy), d = _intrinsics(cam, cam_file)
        Ks.append([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
        dist.append(d)
        ws.append(cam.width)
        hs.append(cam.height)
        w2c = torch.eye(4, dtype=torch.float64)
        w2c[:3, :3] = quat_to_rotmat(torch.as_tensor(im.qvec, dtype=torch.float64))
        w2c[:3, 3] = torch.as_tensor(im.tvec, dtype=torch.float64)
        if not (np.isfinite(im.qvec).all() and np.isfinite(im.tvec).all()) or np.linalg.norm(im.qvec) < 1e-12:
            raise SceneFormatError(f"{img_file}: pose of image {im.name!r} is not finite")
        c2w.append(rigid_inverse(w2c[None])[0])
        p = folder / im.name
        if not p.is_file():
            raise SceneFormatError(f"{img_file}: image {im.name!r} is missing (looked for {p})")
        paths.append(p)
        names.append(str(Path(im.name).with_suffix("").as_posix()))
    K, w, h = intrinsics_at_load_size(
        torch.tensor(Ks, dtype=torch.float64), torch.tensor(ws), torch.tensor(hs), paths, k, downscale, img_file
    )
    pts = cols = None
    if points is not None and len(points.ids):
        pts = torch.from_numpy(points.xyz)
        cols = torch.from_numpy(points.rgb.astype(np.float32) / 255.0)
    return RawScene(root, "colmap", paths, torch.stack(c2w), K, w, h, names, points=pts, point_colors=cols,
                    source=img_file, distortion=torch.tensor(dist, dtype=torch.float64),
                    camera_ids=[im.camera_id for im in ordered])
