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
import os
import tempfile
from pathlib import Path

import torch

from datamodules.cameras import Cameras

CONVENTION = "opencv_c2w"


def read_cameras_json(path: str | os.PathLike) -> Cameras:
    """Read cameras written by `write_cameras_json` (or by hand in the same layout)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"cameras JSON {path} does not exist")
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"cameras JSON {path} is not valid JSON: {err}") from err
    if doc.get("convention", CONVENTION) != CONVENTION:
        raise ValueError(f"cameras JSON {path}: convention {doc['convention']!r} is not {CONVENTION!r}")
    entries = doc.get("cameras")
    if not entries:
        raise ValueError(f"cameras JSON {path} has no 'cameras' list")
    c2w, ks, ws, hs, names = [], [], [], [], []
    for i, cam in enumerate(entries):
        try:
            m = torch.tensor(cam["camera_to_world"], dtype=torch.float32)
            k = torch.tensor([[cam["fx"], 0.0, cam["cx"]], [0.0, cam["fy"], cam["cy"]], [0.0, 0.0, 1.0]])
            ws.append(int(cam["width"]))
            hs.append(int(cam["height"]))
        except KeyError as err:
            raise ValueError(f"cameras JSON {path}: camera {i} lacks key {err}") from err
        if m.shape == (3, 4):
            m = torch.cat([m, torch.tensor([[0.0, 0.0, 0.0, 1.0]])])
        if m.shape != (4, 4) or not torch.isfinite(m).all():
            raise ValueError(f"cameras JSON {path}: camera {i} camera_to_world is not a finite 4x4 matrix")
        c2w.append(m)
        ks.append(k)
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
