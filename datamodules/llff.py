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

from datamodules.image_io import list_images
from datamodules.scene_data import (
    SceneData,
    SceneFormatError,
    SplitSpec,
    finish_scene,
    image_folder_for_downscale,
    intrinsics_at_load_size,
)

__all__ = ["read_llff", "llff_to_opencv_c2w", "opencv_to_llff_c2w"]


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
    split: SplitSpec | None = None,
    normalize: bool = True,
    align_up: bool = False,
) -> SceneData:
    """Reads an LLFF scene folder (see module doc).

    ``downscale`` picks ``images_<downscale>`` when it exists (else a folder that divides it,
    resized on load). Sparse points are taken from ``sparse/0/points3D.bin`` when that
    complete COLMAP model is present (same world as the poses), else None.
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
        from datamodules.colmap import read_points3d_binary

        pts = read_points3d_binary(model / "points3D.bin")
        if len(pts.ids):
            points = torch.from_numpy(pts.xyz)
            colors = torch.from_numpy(pts.rgb.astype(np.float32) / 255.0)
    return finish_scene(
        root=root,
        fmt="llff",
        image_paths=paths,
        c2w=c2w,
        K=K,
        width=width,
        height=height,
        names=names,
        points=points,
        point_colors=colors,
        split=split,
        normalize=normalize,
        align_up=align_up,
        source=file,
    )
