"""nerfstudio / instant-ngp ``transforms.json`` scenes.

Keys read (global, overridable per frame): ``fl_x``, ``fl_y``, ``cx``, ``cy``, ``w``, ``h``,
``camera_model`` (PINHOLE, OPENCV, SIMPLE_PINHOLE, SIMPLE_RADIAL, RADIAL; fisheye and
equirectangular are refused), distortion ``k1 k2 k3 k4 p1 p2`` (removed when images are
loaded), ``camera_angle_x`` / ``camera_angle_y`` when focal lengths are absent (instant-ngp).
Frames: ``file_path`` relative to the folder, ``transform_matrix`` camera-to-world in OpenGL
camera axes (flipped to OpenCV here). Pre-shrunk copies sit in ``<folder>_<k>/`` beside the folder ``file_path`` names (nerfstudio's
``images_2``, ``images_4``, ``images_8``); with ``downscale`` k they are read even when the
originals are absent, as in downloads that keep one level only (DL3DV's 960P release and its
benchmark's ``--only_level4``): ``w`` and ``h`` (the original size) are then required.
``applied_transform`` (3x4, set by ns-process-data)
maps the original capture world to the file's world; it is folded into
``SceneData.transform`` so exports can go back to the capture's units. ``ply_file_path``
names a point cloud (in the file's world) used to initialise Gaussians.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from datamodules.readers.blender import OPENGL_TO_OPENCV, parse_transform_matrix
from datamodules.files.image_io import read_image_size
from datamodules.readers.point_ply import PlyFormatError, read_point_ply
from datamodules.readers.scene_data import (
    RawScene,
    SceneFormatError,
    resolve_image_path,
)
from datamodules.readers.intrinsics import intrinsics_at_load_size

__all__ = ["read_nerfstudio", "DISTORTION_KEYS"]

DISTORTION_KEYS = ("k1", "k2", "k3", "k4", "p1", "p2")
PINHOLE_MODELS = ("PINHOLE", "SIMPLE_PINHOLE")
DISTORTED_MODELS = ("OPENCV", "SIMPLE_RADIAL", "RADIAL")


def _number(frame: dict, doc: dict, key: str, source: Path, index: int) -> float | None:
    value = frame.get(key, doc.get(key))
    if value is None:
        return None
    try:
        out = float(value)
    except (TypeError, ValueError) as error:
        raise SceneFormatError(f"{source}: frame {index}: {key!r} is not a number ({value!r})") from error
    if not math.isfinite(out):
        raise SceneFormatError(f"{source}: frame {index}: {key!r} is not finite")
    return out


def _existing(path: Path, source: Path) -> Path | None:
    """``path`` (trying image extensions when it has none), or None when no such file exists."""
    try:
        return resolve_image_path(path.parent, path.name, source)
    except SceneFormatError:
        return None


def _downscaled_path(root: Path, rel: str, downscale: int, source: Path) -> tuple[Path | None, int]:
    """Pre-shrunk copy of ``rel`` in a sibling ``<folder>_<k>`` (nerfstudio layout), if any:
    the largest k <= downscale that divides it."""
    rel_path = Path(rel)
    for k in range(downscale, 1, -1):
        if downscale % k or len(rel_path.parts) < 2:
            continue
        found = _existing(root / rel_path.parent.parent / f"{rel_path.parent.name}_{k}" / rel_path.name, source)
        if found is not None:
            return found, k
    return None, 1


def _missing_original(root: Path, rel: str, downscale: int, source: Path, index: int) -> SceneFormatError:
    """The error for a frame whose image is absent, naming the pre-shrunk folders that do hold it."""
    rel_path = Path(rel)
    levels = sorted(int(p.name.rsplit("_", 1)[1]) for p in (root / rel_path.parent.parent).glob(f"{rel_path.parent.name}_*")
                    if p.is_dir() and p.name.rsplit("_", 1)[1].isdigit() and _existing(p / rel_path.name, source))
    if not levels:
        return SceneFormatError(f"{source}: image {rel!r} is missing (looked for {root / rel})")
    return SceneFormatError(
        f"{source}: frame {index}: image {rel!r} is missing and only pre-shrunk copies exist "
        f"({', '.join(f'{rel_path.parent.name}_{k}/' for k in levels)}); read with a downscale one of them divides "
        f"(data.init_args.read.downscale: {levels[0]}), got downscale {downscale}"
    )


def read_nerfstudio(
    path: str | Path,
    downscale: int = 1,
    transforms_file: str = "transforms.json",
) -> RawScene:
    """Reads a nerfstudio / instant-ngp scene folder (see module doc).

    ``path`` may be the folder or the JSON file itself. Frames keep the file's order.
    """
    path = Path(path)
    file = path if path.suffix == ".json" else path / transforms_file
    root = file.parent
    if not file.is_file():
        raise SceneFormatError(f"{file}: transforms file is missing")
    if downscale < 1:
        raise SceneFormatError(f"{root}: downscale must be an integer >= 1, got {downscale}")
    try:
        doc = json.loads(file.read_text())
    except json.JSONDecodeError as error:
        raise SceneFormatError(f"{file}: not valid JSON ({error})") from error
    frames = doc.get("frames") if isinstance(doc, dict) else None
    if not isinstance(frames, list) or not frames:
        raise SceneFormatError(f"{file}: 'frames' is missing or empty")

    paths, c2w, Ks, ws, hs, dist, names, factors = [], [], [], [], [], [], [], []
    for i, frame in enumerate(frames):
        if "file_path" not in frame or "transform_matrix" not in frame:
            raise SceneFormatError(f"{file}: frame {i} lacks 'file_path' or 'transform_matrix'")
        model = str(frame.get("camera_model", doc.get("camera_model", "OPENCV"))).upper()
        if model not in PINHOLE_MODELS + DISTORTED_MODELS:
            raise SceneFormatError(
                f"{file}: frame {i}: camera_model {model!r} is not supported "
                f"(supported: {', '.join(PINHOLE_MODELS + DISTORTED_MODELS)})"
            )
        rel = str(frame["file_path"]).removeprefix("./")
        original = _existing(root / rel, file)
        small, k = _downscaled_path(root, rel, downscale, file) if downscale > 1 else (None, 1)
        if original is None and small is None:
            raise _missing_original(root, rel, downscale, file, i)
        w = _number(frame, doc, "w", file, i)
        h = _number(frame, doc, "h", file, i)
        if w is None or h is None:
            if original is None:
                raise SceneFormatError(f"{file}: frame {i}: only a pre-shrunk copy of {rel!r} exists ({small}), so "
                                       f"'w' and 'h' (the original size) must be given")
            w, h = (float(v) for v in read_image_size(original))
        fx = _number(frame, doc, "fl_x", file, i)
        fy = _number(frame, doc, "fl_y", file, i)
        if fx is None:
            ax = _number(frame, doc, "camera_angle_x", file, i)
            if ax is None:
                raise SceneFormatError(f"{file}: frame {i}: neither 'fl_x' nor 'camera_angle_x' is given")
            fx = 0.5 * w / math.tan(0.5 * ax)
        if fy is None:
            ay = _number(frame, doc, "camera_angle_y", file, i)
            fy = 0.5 * h / math.tan(0.5 * ay) if ay is not None else fx
        cx = _number(frame, doc, "cx", file, i)
        cy = _number(frame, doc, "cy", file, i)
        cx = w / 2 if cx is None else cx
        cy = h / 2 if cy is None else cy
        d = [(_number(frame, doc, key, file, i) or 0.0) for key in DISTORTION_KEYS]
        if model in PINHOLE_MODELS and any(d):
            raise SceneFormatError(f"{file}: frame {i}: camera_model {model} but distortion parameters are non-zero: {d}")
        paths.append(small if small is not None else original)  # type: ignore[arg-type]
        factors.append(k)
        c2w.append(parse_transform_matrix(frame["transform_matrix"], file, i) @ OPENGL_TO_OPENCV)
        Ks.append([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
        ws.append(int(round(w)))
        hs.append(int(round(h)))
        dist.append(d)
        names.append(Path(rel).stem)
    if len(set(factors)) > 1:
        raise SceneFormatError(f"{file}: downscaled image folders cover only some frames (factors {sorted(set(factors))})")
    K, width, height = intrinsics_at_load_size(
        torch.tensor(Ks, dtype=torch.float64), torch.tensor(ws), torch.tensor(hs), paths, factors[0], downscale, file
    )

    base = None
    if "applied_transform" in doc:
        try:
            A = torch.tensor(doc["applied_transform"], dtype=torch.float64)
        except (TypeError, ValueError) as error:
            raise SceneFormatError(f"{file}: 'applied_transform' is not a matrix of numbers") from error
        if A.shape not in ((3, 4), (4, 4)) or not torch.isfinite(A).all():
            raise SceneFormatError(f"{file}: 'applied_transform' must be a finite 3x4 or 4x4 matrix")
        base = torch.eye(4, dtype=torch.float64)
        base[:3] = A[:3]

    points = colors = None
    if doc.get("ply_file_path"):
        ply = root / str(doc["ply_file_path"])
        try:
            points, colors = read_point_ply(ply)
        except PlyFormatError as error:
            raise SceneFormatError(f"{file}: ply_file_path: {error}") from error

    return RawScene(root, "nerfstudio", paths, torch.stack(c2w), K, width, height, names, points=points,
                    point_colors=colors, source=file, base_transform=base,
                    distortion=torch.tensor(dist, dtype=torch.float64))
