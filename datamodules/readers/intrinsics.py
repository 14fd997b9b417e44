"""Image sizes and intrinsics at load size, for the scene readers.

Cameras are given at the capture size; images may sit in pre-shrunk ``{base}_{k}`` folders and
be downscaled further on load. These helpers read the files' real sizes, check them against
the cameras (an error names the image) and scale the intrinsics to match.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from datamodules.files.image_io import read_image_size
from datamodules.readers.scene_data import SceneFormatError

__all__ = ["sizes_from_files", "fit_intrinsics_to_files", "downscaled_size", "intrinsics_at_load_size"]


def sizes_from_files(paths: Sequence[Path], source: Path | str) -> tuple[Tensor, Tensor]:
    """(N,) widths and heights read from image headers; a missing file is a SceneFormatError."""
    ws, hs = [], []
    for p in paths:
        try:
            w, h = read_image_size(p)
        except FileNotFoundError as error:
            raise SceneFormatError(f"{source}: image {p} is missing") from error
        except ValueError as error:
            raise SceneFormatError(f"{source}: {error}") from error
        ws.append(w)
        hs.append(h)
    return torch.tensor(ws, dtype=torch.int64), torch.tensor(hs, dtype=torch.int64)


def fit_intrinsics_to_files(
    K: Tensor, width: Tensor, height: Tensor, file_w: Tensor, file_h: Tensor, factor: int, paths: Sequence[Path], source: Path | str
) -> tuple[Tensor, Tensor, Tensor]:
    """Scales intrinsics given at the original size to the files' actual sizes.

    Files in ``{base}_{factor}`` folders are expected near ``size / factor`` (rounding
    differs between tools, so +-1 pixel is accepted); anything else means the folder does
    not match the cameras and is an error naming the image.

    Returns:
        K (N, 3, 3), width (N,), height (N,) at the files' sizes.
    """
    exp_w = width.double() / factor
    exp_h = height.double() / factor
    bad = ((file_w - exp_w).abs() > 1.0) | ((file_h - exp_h).abs() > 1.0)
    if bad.any():
        i = int(torch.nonzero(bad)[0])
        raise SceneFormatError(
            f"{source}: image {paths[i]} is {int(file_w[i])}x{int(file_h[i])} but its camera says "
            f"{int(width[i])}x{int(height[i])} / {factor} = {exp_w[i]:.1f}x{exp_h[i]:.1f}"
        )
    K = K.clone().double()
    K[:, 0, :] *= (file_w.double() / width.double())[:, None]
    K[:, 1, :] *= (file_h.double() / height.double())[:, None]
    K[:, 2, :] = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    return K.float(), file_w.clone(), file_h.clone()


def downscaled_size(width: Tensor, height: Tensor, factor: float) -> tuple[Tensor, Tensor]:
    """Sizes after shrinking by ``factor`` (>= 1): ``round(size / factor)``, at least 1 pixel."""
    w = torch.clamp(torch.round(width.double() / factor), min=1).to(torch.int64)
    h = torch.clamp(torch.round(height.double() / factor), min=1).to(torch.int64)
    return w, h


def intrinsics_at_load_size(
    K: Tensor,
    width: Tensor,
    height: Tensor,
    paths: Sequence[Path],
    folder_factor: int,
    downscale: int,
    source: Path | str,
) -> tuple[Tensor, Tensor, Tensor]:
    """Intrinsics and sizes at which images are loaded, from intrinsics at the original size.

    Reads the files' real sizes (images in ``{base}_{folder_factor}`` are already shrunk),
    checks them against the cameras, then applies the remaining ``downscale / folder_factor``.

    Args:
        K: (N, 3, 3) intrinsics for (width, height), the original capture size.
        width, height: (N,) original sizes.
        paths: N image files (a missing one is an error naming it).

    Returns:
        K (N, 3, 3) float32, width (N,), height (N,) at load size.
    """
    file_w, file_h = sizes_from_files(paths, source)
    K, w, h = fit_intrinsics_to_files(K, width, height, file_w, file_h, folder_factor, paths, source)
    rest = downscale / folder_factor
    if rest != 1:
        new_w, new_h = downscaled_size(w, h, rest)
        K = K.clone()
        K[:, 0, :] *= (new_w.float() / w.float())[:, None]
        K[:, 1, :] *= (new_h.float() / h.float())[:, None]
        w, h = new_w, new_h
    return K, w, h
