"""NeRF-synthetic (Blender) scenes: ``transforms_{train,val,test}.json``.

Each file holds ``camera_angle_x`` (horizontal field of view, rad) and ``frames`` with a
``file_path`` (usually without extension: ``./train/r_0`` is ``train/r_0.png``) and a
camera-to-world ``transform_matrix`` in OpenGL/Blender camera axes (+x right, +y up, camera
looks down -z). We flip the y and z camera axes to get OpenCV. Images are RGBA and get
composited on the datamodule's background colour when loaded (``alpha_background``).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from datamodules.cameras.poses import fov_to_focal
from datamodules.readers.scene_data import (
    RawScene,
    SceneFormatError,
    resolve_image_path,
)
from datamodules.readers.intrinsics import downscaled_size, sizes_from_files

__all__ = ["read_blender", "OPENGL_TO_OPENCV"]

SPLITS = ("train", "val", "test")
# Right-multiplying a c2w by this flips the camera's y and z axes (OpenGL <-> OpenCV).
OPENGL_TO_OPENCV = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=torch.float64))


def _load_json(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise SceneFormatError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(doc, dict):
        raise SceneFormatError(f"{path}: expected a JSON object")
    return doc


def parse_transform_matrix(value: object, source: Path, index: int) -> torch.Tensor:
    """A frame's ``transform_matrix`` as (4, 4) float64; errors name the file and the frame."""
    try:
        m = torch.tensor(value, dtype=torch.float64)
    except (TypeError, ValueError) as error:
        raise SceneFormatError(f"{source}: frame {index}: transform_matrix is not a matrix of numbers") from error
    if m.shape == (3, 4):
        m = torch.cat([m, torch.tensor([[0.0, 0.0, 0.0, 1.0]], dtype=torch.float64)])
    if m.shape != (4, 4):
        raise SceneFormatError(f"{source}: frame {index}: transform_matrix must be 4x4, got {tuple(m.shape)}")
    if not torch.isfinite(m).all():
        raise SceneFormatError(f"{source}: frame {index}: transform_matrix is not finite")
    return m


def read_blender(
    path: str | Path,
    downscale: int = 1,
) -> RawScene:
    """Reads a NeRF-synthetic scene folder.

    The scene's own train/val/test split is kept unless ``split.split_file`` is given.
    Images are resized on load by ``downscale`` (there are no pre-shrunk folders in this
    format).
    """
    root = Path(path)
    files = {s: root / f"transforms_{s}.json" for s in SPLITS}
    if not files["train"].is_file():
        raise SceneFormatError(f"{files['train']}: transforms file is missing (not a Blender/NeRF-synthetic scene?)")
    paths, c2w, fovs, names = [], [], [], []
    format_split: dict[str, list[int]] = {}
    for kind, file in files.items():
        if not file.is_file():
            continue
        doc = _load_json(file)
        if "camera_angle_x" not in doc:
            raise SceneFormatError(f"{file}: 'camera_angle_x' is missing")
        frames = doc.get("frames")
        if not isinstance(frames, list) or not frames:
            raise SceneFormatError(f"{file}: 'frames' is missing or empty")
        idx = []
        for i, frame in enumerate(frames):
            if "file_path" not in frame or "transform_matrix" not in frame:
                raise SceneFormatError(f"{file}: frame {i} lacks 'file_path' or 'transform_matrix'")
            p = resolve_image_path(root, str(frame["file_path"]).removeprefix("./"), file)
            idx.append(len(paths))
            paths.append(p)
            c2w.append(parse_transform_matrix(frame["transform_matrix"], file, i) @ OPENGL_TO_OPENCV)
            fovs.append(float(doc["camera_angle_x"]))
            names.append(f"{kind}/{p.stem}")
        format_split[kind] = idx
    width, height = sizes_from_files(paths, root)
    K = torch.zeros(len(paths), 3, 3, dtype=torch.float64)
    for i, fov in enumerate(fovs):
        f = fov_to_focal(fov, float(width[i]))
        K[i] = torch.tensor([[f, 0.0, width[i] / 2], [0.0, f, height[i] / 2], [0.0, 0.0, 1.0]])
    if downscale != 1:
        if downscale < 1:
            raise SceneFormatError(f"{root}: downscale must be an integer >= 1, got {downscale}")
        new_w, new_h = downscaled_size(width, height, downscale)
        K[:, 0, :] *= (new_w.double() / width.double())[:, None]
        K[:, 1, :] *= (new_h.double() / height.double())[:, None]
        width, height = new_w, new_h
    format_split.setdefault("test", [])
    return RawScene(root, "blender", paths, torch.stack(c2w), K, width, height, names, source=files["train"],
                    format_split=format_split, alpha_background=True)
