"""LLFF forward-facing scenes: ``poses_bounds.npy`` + ``images/`` (and ``images_<k>/``).

``poses_bounds.npy`` is (N, 17): per image a 3x5 matrix ``[R | t | hwf]`` flattened row by
row, then near/far depth bounds. ``R``'s columns are the camera's [down, right, back] axes
in world coordinates and ``t`` its centre (camera-to-world); ``hwf`` is height, width, focal
at the full resolution. OpenCV axes are [right, down, forward] = [col 1, col 0, -col 2].
Images are the sorted files of the image folder, matched to rows in order.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from datamodules.files.image_io import list_images
from datamodules.readers.scene_data import (
    RawScene,
    SceneFormatError,
    image_folder_for_downscale,
)
from datamodules.readers.intrinsics import intrinsics_at_load_size

__all__ = ["read_llff", "llff_to_opencv_c2w", "opencv_to_llff_c2w", "frustum_points"]

LLFF_INIT_POINTS = 20_000  # points seeded in the camera frustums when there is no SfM model


def frustum_points(
    c2w: torch.Tensor, K: torch.Tensor, width: torch.Tensor, height: torch.Tensor, bounds: torch.Tensor,
    per_camera: int, seed: int = 0,
) -> torch.Tensor:
    """Random points inside each camera's view frustum between its near and far depth.

    Depths are uniform in disparity (1 / depth), as LLFF samples forward-facing scenes.

    Args:
        c2w: (N, 4, 4) OpenCV camera-to-world.
        K: (N, 3, 3) intrinsics for images of size (width, height).
        width, height: (N,) image sizes.
        bounds: (N, 2) near / far depths along the optical axis.
        per_camera: points per camera.
        seed: generator seed (readers stay deterministic).

    Returns:
        (N * per_camera, 3) points in the world of ``c2w``.
    """
    g = torch.Generator().manual_seed(seed)
    n = c2w.shape[0]
    u = torch.rand(n, per_camera, generator=g, dtype=torch.float64) * width.double()[:, None]
    v = torch.rand(n, per_camera, generator=g, dtype=torch.float64) * height.double()[:, None]
    near, far = bounds[:, :1].clamp_min(1e-6), bounds[:, 1:].clamp_min(1e-6)
    t = torch.rand(n, per_camera, generator=g, dtype=torch.float64)
    depth = 1.0 / (1.0 / near * (1 - t) + 1.0 / far * t)
    x = (u - K[:, None, 0, 2]) / K[:, None, 0, 0] * depth
    y = (v - K[:, None, 1, 2]) / K[:, None, 1, 1] * depth
    cam = torch.stack([x, y, depth], dim=-1)  # (N, P, 3) camera coordinates
    world = cam @ c2w[:, :3, :3].transpose(1, 2).double() + c2w[:, None, :3, 3].double()
    return world.reshape(-1, 3)


def llff_to_opencv_c2w(poses: torch.Tensor) -> torch.Tensor:
    """(N, 3, 4) LLFF [down, right, back | t] -> (N, 4, 4) OpenCV camera-to-world."""
    c2w = torch.zeros(poses.shape[0], 4, 4, dtype=poses.dtype)
    c2w[:, :3, 0] = poses[:, :, 1]
    c2w[:, :3, 1] = poses[:, :, 0]
    c2w[:, :3, 2] = -poses[:, :, 2]
    c2w[:, :3, 3] = poses[:, :, 3]
    c2w[:, 3, 3] = 1
    return c2w


def opencv_to_llff_c2w(c2w: torch.Tensor) -> torch.Tensor:
    """(N, 4, 4) OpenCV camera-to-world -> (N, 3, 4) LLFF [down, right, back | t]."""
    return torch.stack([c2w[:, :3, 1], c2w[:, :3, 0], -c2w[:, :3, 2], c2w[:, :3, 3]], dim=-1)


def read_llff(
    path: str | Path,
    downscale: int = 1,
) -> RawScene:
    """Reads an LLFF scene folder (see module doc).

    ``downscale`` picks ``images_<downscale>`` when it exists (else a folder that divides it,
    resized on load). Sparse points are taken from ``sparse/0/points3D.bin`` when that
    complete COLMAP model is present (same world as the poses), else seeded at random in
    the camera frustums between the near/far bounds (`frustum_points`).
    """
    root = Path(path)
    file = root / "poses_bounds.npy"
    if not file.is_file():
        raise SceneFormatError(f"{file}: poses_bounds.npy is missing (not an LLFF scene?)")
    try:
        arr = np.load(file)
    except (ValueError, OSError, EOFError) as error:
        raise SceneFormatError(f"{file}: cannot be read as a .npy array ({error})") from error
    if arr.ndim != 2 or arr.shape[1] != 17:
        raise SceneFormatError(f"{file}: expected an (N, 17) array, got shape {arr.shape}")
    folder, k = image_folder_for_downscale(root, "images", downscale)
    try:
        paths = list_images(folder)
    except (FileNotFoundError, ValueError) as error:
        raise SceneFormatError(str(error)) from error
    if len(paths) != arr.shape[0]:
        raise SceneFormatError(
            f"{file}: {arr.shape[0]} poses but {len(paths)} images in {folder} (pose count must equal image count)"
        )
    poses = torch.from_numpy(arr[:, :15].reshape(-1, 3, 5)).double()
    names = [p.stem for p in paths]
    bad = ~torch.isfinite(torch.from_numpy(arr)).all(dim=1)
    if bad.any():
        i = int(torch.nonzero(bad)[0])
        raise SceneFormatError(f"{file}: row {i} (image {names[i]!r}) holds non-finite values")
    c2w = llff_to_opencv_c2w(poses[:, :, :4])
    h, w, f = poses[:, 0, 4], poses[:, 1, 4], poses[:, 2, 4]
    K = torch.zeros(len(paths), 3, 3, dtype=torch.float64)
    K[:, 0, 0], K[:, 1, 1] = f, f
    K[:, 0, 2], K[:, 1, 2], K[:, 2, 2] = w / 2, h / 2, 1.0
    K, width, height = intrinsics_at_load_size(
        K, torch.round(w).long(), torch.round(h).long(), paths, k, downscale, file
    )
    points = colors = None
    model = root / "sparse" / "0"
    if (model / "points3D.bin").is_file() and (model / "images.bin").is_file():
        from datamodules.readers.colmap import read_points3d_binary

        pts = read_points3d_binary(model / "points3D.bin")
        if len(pts.ids):
            points = torch.from_numpy(pts.xyz)
            colors = torch.from_numpy(pts.rgb.astype(np.float32) / 255.0)
    if points is None:
        # No SfM points: seed the Gaussians inside the frustums between each camera's
        # near/far bounds, so initialisation covers the scene's depth range (a random box
        # around the normalised origin misses most of a forward-facing scene).
        bounds = torch.from_numpy(arr[:, 15:17]).double()
        points = frustum_points(c2w, K, width, height, bounds, per_camera=max(1, LLFF_INIT_POINTS // len(paths)))
    return RawScene(root, "llff", paths, c2w, K, width, height, names, points=points, point_colors=colors,
                    source=file)
