"""Coloured point clouds in PLY files (``element vertex`` with x, y, z and optional colours).

Reads ASCII and binary (little/big endian) PLY as written by nerfstudio's
``ns-process-data`` (``sparse_pc.ply``), COLMAP, Open3D, ...; writes binary little endian.
Only the vertex element is read; it has to be the first element in the file.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = ["read_point_ply", "write_point_ply", "PlyFormatError"]

_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}


class PlyFormatError(ValueError):
    """A PLY file cannot be read; the message names the file and the problem."""


def read_point_ply(path: str | os.PathLike) -> tuple[Tensor, Tensor | None]:
    """Reads vertex positions and colours.

    Args:
        path: PLY file.

    Returns:
        points: (P, 3) float32.
        colors: (P, 3) float32 in [0, 1] (integer colours divided by 255), or None when the
            file has no red/green/blue properties.

    Raises:
        PlyFormatError: not a PLY, unsupported layout, or truncated.
    """
    path = Path(path)
    if not path.is_file():
        raise PlyFormatError(f"{path}: PLY file not found")
    data = path.read_bytes()
    end = data.find(b"end_header")
    if not data.startswith(b"ply") or end < 0:
        raise PlyFormatError(f"{path}: not a PLY file (missing 'ply' magic or 'end_header')")
    body_start = data.find(b"\n", end) + 1
    header = data[:end].decode("ascii", errors="replace").splitlines()
    fmt, count, props, first_element = None, 0, [], None
    in_vertex = False
    for line in header:
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "format":
            fmt = parts[1]
        elif parts[0] == "element":
            first_element = first_element or parts[1]
            in_vertex = parts[1] == "vertex"
            if in_vertex:
                count = int(parts[2])
        elif parts[0] == "property" and in_vertex:
            if parts[1] == "list":
                raise PlyFormatError(f"{path}: list properties on vertices are not supported")
            if parts[1] not in _TYPES:
                raise PlyFormatError(f"{path}: unknown PLY property type {parts[1]!r}")
            props.append((parts[2], _TYPES[parts[1]]))
    if first_element != "vertex":
        raise PlyFormatError(f"{path}: the first PLY element must be 'vertex', got {first_element!r}")
    names = [p for p, _ in props]
    if not {"x", "y", "z"} <= set(names):
        raise PlyFormatError(f"{path}: vertices lack x, y, z properties (have {names})")
    if fmt == "ascii":
        rows = data[body_start:].decode("ascii", errors="replace").split("\n")
        values = [r.split() for r in rows[:count]]
        if len(values) < count or any(len(v) < len(props) for v in values):
            raise PlyFormatError(f"{path}: truncated: expected {count} vertices with {len(props)} values each")
        table = np.array([v[: len(props)] for v in values], dtype=np.float64).reshape(count, len(props))
        columns = {name: table[:, i] for i, name in enumerate(names)}
        int_colours = {name: np.dtype(t).kind in "iu" for name, t in props}
    elif fmt in ("binary_little_endian", "binary_big_endian"):
        order = "<" if fmt == "binary_little_endian" else ">"
        dtype = np.dtype([(name, order + t) for name, t in props])
        if len(data) - body_start < dtype.itemsize * count:
            raise PlyFormatError(
                f"{path}: truncated at byte {len(data)}: {count} vertices need {dtype.itemsize * count} bytes after the header"
            )
        rec = np.frombuffer(data, dtype=dtype, count=count, offset=body_start)
        columns = {name: rec[name].astype(np.float64) for name in names}
        int_colours = {name: np.dtype(t).kind in "iu" for name, t in props}
    else:
        raise PlyFormatError(f"{path}: unsupported PLY format {fmt!r}")
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
