"""Gaussian .ply files in the INRIA 3DGS layout.

Layout written (binary little endian, every property ``float``, one vertex per Gaussian), the
one the reference 3DGS code (``scene/gaussian_model.py: save_ply``), SuperSplat and most viewers
read:

    x y z nx ny nz f_dc_0 f_dc_1 f_dc_2 f_rest_0 .. f_rest_{3(K-1)-1} opacity
    scale_0 scale_1 scale_2 rot_0 rot_1 rot_2 rot_3

``f_rest`` is channel-major as in INRIA: ``shN`` (N, K-1, 3) transposed to (N, 3, K-1) and
flattened. ``opacity`` is the logit, ``scale_*`` the log-scales, ``rot_*`` wxyz: the raw
(pre-activation) values, the same as gsplat's parameters. Normals are written as zeros.

Read: the same properties found by name, whatever their order and whatever else the file
holds, which covers gsplat's ``export_splats`` (no normals), nerfstudio's ``ns-export
gaussian-splat`` (comments, normals) and files with extra per-Gaussian properties (any PLY
scalar type). The writer and this reader are by hand: plyfile is not in the stack and the
layout is a fixed header plus one array.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from datamodules.files.ply_header import PlyFormatError, read_ply_header
from datamodules.files.temp_files import write_atomic

from lightning_modules.scene.gaussians.similarity import transform_splats

__all__ = ["write_ply", "read_ply", "ply_header", "ply_bytes"]

_SPLAT_KEYS = ("means", "scales", "quats", "opacities", "sh0", "shN")


def _property_names(n_rest: int) -> list[str]:
    names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    names += [f"f_rest_{i}" for i in range(n_rest)]
    names += ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    return names


def write_ply(path: str | os.PathLike, splats: dict[str, Tensor], transform: Tensor | None = None) -> Path:
    """Writes Gaussians to ``path`` in the INRIA layout, atomically (``temp_files.write_atomic``).

    Args:
        path: output file (parent folders are created).
        splats: raw gsplat tensors: means (N, 3), scales (N, 3) log, quats (N, 4) wxyz,
            opacities (N,) logit, sh0 (N, 1, 3), shN (N, K-1, 3).
        transform: optional (4, 4) similarity applied before writing (e.g. the inverse of the
            data normalisation, to export in the original world units).

    Returns:
        The written path.

    Raises:
        OSError: naming the file (a full disk: ENOSPC); an older file there stays whole.
    """
    path = Path(path)
    missing = [k for k in _SPLAT_KEYS if k not in splats]
    if missing:
        raise KeyError(f"write_ply({path}): splats lack {missing}")
    s = {k: splats[k].detach().float().cpu() for k in _SPLAT_KEYS}
    if transform is not None:
        s = transform_splats(s, transform)
    n = s["means"].shape[0]
    rest = s["shN"].transpose(1, 2).reshape(n, -1)  # (N, 3*(K-1)) channel-major, as INRIA
    data = torch.cat(
        [s["means"], torch.zeros(n, 3), s["sh0"].reshape(n, 3), rest, s["opacities"].reshape(n, 1), s["scales"],
         s["quats"]],
        dim=1,
    ).numpy().astype("<f4")
    header = _header(n, _property_names(rest.shape[1]))
    body = np.ascontiguousarray(data).tobytes()
    return write_atomic(path, lambda f: f.write(header.encode("ascii") + body), "Gaussians .ply")


def ply_bytes(num: int, sh_degree: int) -> int:
    """The size of ``write_ply``'s file for ``num`` Gaussians of SH degree ``sh_degree``."""
    names = _property_names(3 * ((sh_degree + 1) ** 2 - 1))
    header = _header(num, names)
    return len(header) + 4 * len(names) * num


def _header(num: int, names: list[str]) -> str:
    return ("ply\nformat binary_little_endian 1.0\n" + f"element vertex {num}\n"
            + "".join(f"property float {name}\n" for name in names) + "end_header\n")


def ply_header(path: Path) -> tuple[int, np.dtype, list[str], int]:
    """Parses a binary little-endian PLY header (``read_ply_header``: one parser for every .ply).

    Returns:
        (vertex count, the vertex record's numpy dtype, the header's comment lines, the byte
        offset of the vertex data).

    Raises:
        ValueError: naming the file: a malformed header (the line quoted), anything but
            binary little-endian scalar vertices first.
    """
    header = read_ply_header(path)
    if header.format != "binary_little_endian":
        raise PlyFormatError(f"read_ply: {path} is '{header.format}', only binary_little_endian is supported")
    return header.count, header.dtype(), list(header.comments), header.data_offset


def read_ply(path: str | os.PathLike, transform: Tensor | None = None) -> dict[str, Tensor]:
    """Reads a Gaussian .ply (INRIA layout: this project's, the 3DGS code's, gsplat's, splatfacto's).

    Properties are found by name, so their order and extra properties do not matter.

    Args:
        path: the .ply file.
        transform: optional (4, 4) similarity applied after reading.

    Returns:
        Raw gsplat tensors (float32): means (N, 3), scales (N, 3), quats (N, 4),
        opacities (N,), sh0 (N, 1, 3), shN (N, K-1, 3).

    Raises:
        ValueError: naming the file and what is wrong with it (not a binary PLY, truncated,
            properties missing, an f_rest count that is no SH degree).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"read_ply: {path} does not exist")
    n, dtype, _, offset = ply_header(path)
    with open(path, "rb") as f:
        f.seek(offset)
        raw = f.read(n * dtype.itemsize)
    if len(raw) != n * dtype.itemsize:
        raise ValueError(f"read_ply: {path} is truncated ({len(raw)} of {n * dtype.itemsize} data bytes)")
    records = np.frombuffer(raw, dtype=dtype, count=n)
    names = set(dtype.names or ())

    def take(keys: list[str]) -> Tensor:
        absent = [k for k in keys if k not in names]
        if absent:
            hint = ""
            if "f_dc_0" in absent and "red" in names:
                hint = " (colours stored as RGB bytes, e.g. ns-export --ply-color-mode rgb: export SH coefficients)"
            raise ValueError(f"read_ply: {path} lacks the Gaussian properties {absent}{hint}")
        if not keys:
            return torch.zeros(n, 0)
        return torch.from_numpy(np.stack([records[k].astype(np.float32) for k in keys], axis=1))

    n_rest = sum(1 for name in names if name.startswith("f_rest_"))
    if n_rest % 3 != 0 or not _is_sh_count(n_rest // 3 + 1):
        raise ValueError(f"read_ply: {path} has {n_rest} f_rest properties; 3 * ((d+1)^2 - 1) expected")
    rest = take([f"f_rest_{i}" for i in range(n_rest)])
    splats = {
        "means": take(["x", "y", "z"]),
        "scales": take(["scale_0", "scale_1", "scale_2"]),
        "quats": take(["rot_0", "rot_1", "rot_2", "rot_3"]),
        "opacities": take(["opacity"])[:, 0].contiguous(),
        "sh0": take(["f_dc_0", "f_dc_1", "f_dc_2"])[:, None, :].contiguous(),
        "shN": rest.reshape(n, 3, n_rest // 3).transpose(1, 2).contiguous(),
    }
    if transform is not None:
        splats = transform_splats(splats, transform)
    return splats


def _is_sh_count(k: int) -> bool:
    d = int(round(math.sqrt(k)))
    return d * d == k and 1 <= d <= 5
