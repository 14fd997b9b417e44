"""Cycle reconstruction's hand-over between its two fits: a nerfstudio scene of shifted renders.

Stage 1 fits a scene, renders its training trajectory shifted sideways and writes::

    <folder>/transforms.json        nerfstudio frames (OpenGL c2w, per-frame intrinsics) of the
                                    shifted renders, in stage 1's normalised world
    <folder>/images/<view>.png      the shifted renders (stage 2's training images)
    <folder>/sparse_pc.ply          stage 1's Gaussian centres and colours (stage 2's init points)
    <folder>/originals/<view>.png   the real images of the original poses, as stage 1 loaded them
    <folder>/original_cameras.json  their cameras (datamodules.cameras.camera_json layout)
    <folder>/cycle_manifest.json    {"scene", "shift", "shift_distance", "cameras", "images": [...]}

Stage 2 reads the folder as a scene with ``normalize: false`` (so its world is stage 1's),
fits on the shifted renders and renders back at ``original_cameras.json``; the pairs are
(that render, the original image).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import Tensor

from datamodules.readers.blender import OPENGL_TO_OPENCV
from datamodules.cameras.camera_json import read_cameras_json, write_cameras_json
from datamodules.cameras.cameras import Cameras
from datamodules.files.image_io import save_image
from datamodules.readers.point_ply import write_point_ply

__all__ = ["MANIFEST", "shift_sideways", "write_cycle_scene", "read_cycle_manifest"]

MANIFEST = "cycle_manifest.json"


def shift_sideways(cameras: Cameras, distance: float) -> Cameras:
    """The same cameras moved ``distance`` world units along their own +x (right) axis.

    Orientation, intrinsics and sizes are kept: a laterally shifted trajectory, as a car one
    lane over would see it.
    """
    c2w = cameras.camera_to_world.double().clone()
    c2w[:, :3, 3] += distance * c2w[:, :3, 0]
    return Cameras.from_c2w(c2w, cameras.K, cameras.width, cameras.height, list(cameras.names))


def write_cycle_scene(
    folder: Path,
    shifted: Cameras,
    renders: list[Tensor],
    names: list[str],
    original_cameras: Cameras,
    originals: list[Tensor],
    meta: dict[str, Any],
    points: Tensor | None = None,
    point_colors: Tensor | None = None,
) -> Path:
    """Writes the stage-1 folder (see module doc); ``transforms.json`` is written last.

    Args:
        folder: destination (a staging folder: the caller renames it into place).
        shifted: N shifted cameras (normalised world).
        renders: N renders (3, H, W) in [0, 1] from ``shifted``.
        names: N file stems.
        original_cameras: the N original cameras.
        originals: N real images (3, H, W) at the original cameras' sizes.
        meta: extra manifest entries (scene, shift, ...).
        points: (P, 3) initial points for stage 2, or None.
        point_colors: (P, 3) in [0, 1], or None.
    """
    frames = []
    gl = shifted.camera_to_world.double() @ OPENGL_TO_OPENCV  # OpenCV -> OpenGL camera axes
    for i, name in enumerate(names):
        rel = f"images/{name}.png"
        save_image(renders[i], folder / rel)
        K = shifted.K[i]
        frames.append({
            "file_path": rel,
            "transform_matrix": gl[i].tolist(),
            "fl_x": float(K[0, 0]), "fl_y": float(K[1, 1]), "cx": float(K[0, 2]), "cy": float(K[1, 2]),
            "w": int(shifted.width[i]), "h": int(shifted.height[i]),
        })
        save_image(originals[i], folder / "originals" / f"{name}.png")
    write_cameras_json(original_cameras, folder / "original_cameras.json")
    manifest = dict(meta, cameras="original_cameras.json", images=[f"originals/{n}.png" for n in names])
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1))
    doc: dict[str, Any] = {"camera_model": "PINHOLE", "frames": frames}
    if points is not None and len(points) > 0:
        write_point_ply(folder / "sparse_pc.ply", points, point_colors)
        doc["ply_file_path"] = "sparse_pc.ply"
    (folder / "transforms.json").write_text(json.dumps(doc, indent=1))
    return folder


def read_cycle_manifest(path: Path) -> tuple[Cameras, list[Path], dict[str, Any]]:
    """The original cameras, their real image files and the manifest itself.

    Raises:
        FileNotFoundError / ValueError: a missing or malformed manifest, naming the file.
    """
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: cycle manifest not found; run the cycle stage-1 config first (PairWriter render: shifted) "
            "and point stage 2's data.path at the folder it wrote"
        )
    try:
        doc = json.loads(path.read_text())
        cameras = read_cameras_json(path.parent / doc["cameras"])
        images = [path.parent / p for p in doc["images"]]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: not a cycle manifest ({error!r}); expected 'cameras' and 'images'") from error
    if len(images) != len(cameras):
        raise ValueError(f"{path}: {len(images)} images but {len(cameras)} cameras")
    return cameras, images, doc
