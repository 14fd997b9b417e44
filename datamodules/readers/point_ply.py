"""Coloured point clouds in PLY files (``element vertex`` with x, y, z and optional colours).

Reads ASCII and binary (little/big endian) PLY as written by nerfstudio's
``ns-process-data`` (``sparse_pc.ply``), COLMAP, Open3D, ...; writes binary little endian.
Only the vertex element is read; elements before it must be empty. The header is parsed and
checked by ``datamodules.files.ply_header``, as for the Gaussian .ply files.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from datamodules.files.ply_header import PLY_TYPES, PlyFormatError, read_ply_header

__all__ = ["read_point_ply", "write_point_ply", "PlyFormatError"]


def read_point_ply(path: str | os.PathLike) -> tuple[Tensor, Tensor | None]:
    """Reads vertex positions and colours.

    Args:
        path: PLY file.

    Returns:
        points: (P, 3) float32.
        colors: (P, 3) float32 in [0, 1] (integer colours divided by 255), or None when the
            file has no red/green/blue properties.

    Raises:
        PlyFormatError: naming the file: not a PLY, a malformed header (``read_ply_header``),
            no x, y, z, a value that is no number, or truncated.
    """
    path = Path(path)
    if not path.is_file():
        raise PlyFormatError(f"{path}: PLY file not found")
    header = read_ply_header(path)
    names, count = header.names, header.count
    if not {"x", "y", "z"} <= set(names):
        raise PlyFormatError(f"{path}: vertices lack x, y, z properties (have {names})")
    data = path.read_bytes()[header.data_offset:]
    if header.format == "ascii":
        rows = data.decode("ascii", errors="replace").split("\n")
        values = [r.split() for r in rows[:count]]
        if len(values) < count or any(len(v) < len(names) for v in values):
            raise PlyFormatError(f"{path}: truncated: expected {count} vertices with {len(names)} values each")
        table = _numbers(path, [v[: len(names)] for v in values]).reshape(count, len(names))
        columns = {name: table[:, i] for i, name in enumerate(names)}
    else:
        dtype = header.dtype()
        if len(data) < dtype.itemsize * count:
            raise PlyFormatError(
                f"{path}: truncated at byte {header.data_offset + len(data)}: {count} vertices need "
                f"{dtype.itemsize * count} bytes after the header"
            )
        rec = np.frombuffer(data, dtype=dtype, count=count)
        columns = {name: rec[name].astype(np.float64) for name in names}
    int_colours = {name: PLY_TYPES[kind][0] in "iu" for name, kind in header.properties}
    points = torch.from_numpy(np.stack([columns["x"], columns["y"], columns["z"]], axis=-1)).float()
    colors = None
    for keys in (("red", "green", "blue"), ("r", "g", "b")):
        if set(keys) <= set(names):
            rgb = np.stack([columns[k] for k in keys], axis=-1)
            if int_colours[keys[0]]:
                rgb = rgb / 255.0
            colors = torch.from_numpy(rgb).float().clamp(0, 1)
            break
    return points, colors


def _numbers(path: Path, rows: list[list[str]]) -> np.ndarray:
    """An ASCII PLY's vertex values as float64, or an error naming the vertex and the word."""
    try:
        return np.array(rows, dtype=np.float64)
    except ValueError:
        for i, row in enumerate(rows):  # only after a failure: find the culprit to name it
            for word in row:
                try:
                    float(word)
                except ValueError:
                    raise PlyFormatError(f"{path}: vertex {i} holds '{word}', not a number") from None
        raise


def write_point_ply(path: str | os.PathLike, points: Tensor, colors: Tensor | None = None) -> Path:
    """Writes points (P, 3) and colours (P, 3) in [0, 1] as binary little-endian PLY."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pts = points.detach().cpu().float().numpy().reshape(-1, 3)
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {len(pts)}"]
    header += [f"property float {c}" for c in "xyz"]
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if colors is not None:
        header += [f"property uchar {c}" for c in ("red", "green", "blue")]
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    header.append("end_header")
    rec = np.zeros(len(pts), dtype=np.dtype(fields))
    rec["x"], rec["y"], rec["z"] = pts[:, 0], pts[:, 1], pts[:, 2]
    if colors is not None:
        rgb = (colors.detach().cpu().float().clamp(0, 1) * 255).round().to(torch.uint8).numpy().reshape(-1, 3)
        rec["red"], rec["green"], rec["blue"] = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    path.write_bytes(("\n".join(header) + "\n").encode("ascii") + rec.tobytes())
    return path
