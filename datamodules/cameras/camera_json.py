"""Cameras to and from a small JSON file (novel-view targets, render paths).

Layout (OpenCV axes, camera-to-world, in the scene's normalised world unless the caller
maps it):

    {"convention": "opencv_c2w",
     "cameras": [{"name": "cam0", "width": 64, "height": 48,
                  "fx": 50.0, "fy": 50.0, "cx": 32.0, "cy": 24.0,
                  "camera_to_world": [[...4 floats...] x 4]}, ...]}
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

import torch

from datamodules.cameras.cameras import Cameras

CONVENTION = "opencv_c2w"


def _number(cam: dict, key: str, where: str, positive: bool = False) -> float:
    value = cam.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{where}: '{key}' must be a finite number, got {value!r}")
    if positive and value <= 0:
        raise ValueError(f"{where}: '{key}' must be positive, got {value!r}")
    return float(value)


def _size(cam: dict, key: str, where: str) -> int:
    value = cam.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{where}: '{key}' must be a positive integer (pixels), got {value!r}")
    return value


def _pose(cam: dict, where: str) -> torch.Tensor:
    try:
        m = torch.tensor(cam.get("camera_to_world"), dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"{where}: 'camera_to_world' must be a 4x4 (or 3x4) list of numbers ({err})") from err
    if m.shape == (3, 4):
        m = torch.cat([m, torch.tensor([[0.0, 0.0, 0.0, 1.0]], dtype=torch.float64)])
    if m.shape != (4, 4) or not torch.isfinite(m).all():
        raise ValueError(f"{where}: 'camera_to_world' is not a finite 4x4 matrix")
    r = m[:3, :3]
    if (r.T @ r - torch.eye(3, dtype=torch.float64)).abs().max() > 1e-3 or torch.linalg.det(r) <= 0:
        raise ValueError(f"{where}: the rotation of 'camera_to_world' is not a rotation (orthonormal, det +1): "
                         "a singular or scaled pose")
    return m.float()


def read_cameras_json(path: str | os.PathLike) -> Cameras:
    """Read cameras written by `write_cameras_json` (or by hand in the same layout).

    Raises:
        FileNotFoundError: no such file.
        ValueError: naming the file, the camera and the field that is wrong (missing, not a
            number, not positive, not a rotation).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"cameras JSON {path} does not exist")
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"cameras JSON {path} is not valid JSON: {err}") from err
    if not isinstance(doc, dict):
        raise ValueError(f"cameras JSON {path}: the top level must be an object with a 'cameras' list, "
                         f"got {type(doc).__name__}")
    if doc.get("convention", CONVENTION) != CONVENTION:
        raise ValueError(f"cameras JSON {path}: convention {doc['convention']!r} is not {CONVENTION!r}")
    entries = doc.get("cameras")
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"cameras JSON {path} has no 'cameras' list (or it is empty)")
    c2w, ks, ws, hs, names = [], [], [], [], []
    for i, cam in enumerate(entries):
        where = f"cameras JSON {path}, camera {i}"
        if not isinstance(cam, dict):
            raise ValueError(f"{where}: must be an object with width, height, fx, fy, cx, cy, camera_to_world; "
                             f"got {cam!r}")
        if missing := [k for k in ("width", "height", "fx", "fy", "cx", "cy", "camera_to_world") if k not in cam]:
            raise ValueError(f"{where} lacks key(s) {missing}")
        ws.append(_size(cam, "width", where))
        hs.append(_size(cam, "height", where))
        fx, fy = _number(cam, "fx", where, positive=True), _number(cam, "fy", where, positive=True)
        cx, cy = _number(cam, "cx", where), _number(cam, "cy", where)
        ks.append(torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]]))
        c2w.append(_pose(cam, where))
        names.append(str(cam.get("name", f"camera_{i:04d}")))
    return Cameras.from_c2w(torch.stack(c2w), torch.stack(ks), torch.tensor(ws), torch.tensor(hs), names)


def write_cameras_json(cameras: Cameras, path: str | os.PathLike) -> Path:
    """Write cameras atomically (temp file + rename), so a crash never leaves half a file."""
    path = Path(path)
    c2w = cameras.camera_to_world.detach().cpu()
    k = cameras.K.detach().cpu()
    entries = [
        {
            "name": cameras.names[i],
            "width": int(cameras.width[i]),
            "height": int(cameras.height[i]),
            "fx": float(k[i, 0, 0]),
            "fy": float(k[i, 1, 1]),
            "cx": float(k[i, 0, 2]),
            "cy": float(k[i, 1, 2]),
            "camera_to_world": c2w[i].tolist(),
        }
        for i in range(len(cameras))
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump({"convention": CONVENTION, "cameras": entries}, f, indent=1)
    os.replace(tmp, path)
    return path
