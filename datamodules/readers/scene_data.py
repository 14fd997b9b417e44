"""The types of scene reading: what a format's reader returns (`RawScene`), the options of a
read (`ReadOptions`), the finished scene (`SceneData`), and the path helpers readers share.

Each disk format has its own small reader (``colmap.py``, ``blender.py``, ``nerfstudio.py``,
``llff.py``) that parses poses into OpenCV camera-to-world matrices and returns a `RawScene`;
``read_scene`` finishes every one of them in one place (``finish.py``: checks, normalisation,
split), so all formats behave the same.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from datamodules.cameras.cameras import Cameras
from datamodules.cameras.poses import apply_transform_to_c2w
from datamodules.files.image_io import IMAGE_EXTENSIONS

__all__ = ["SceneFormatError", "SceneData", "RawScene", "ReadOptions", "image_folder_for_downscale",
           "resolve_image_path", "env_path"]


class SceneFormatError(ValueError):
    """A scene on disk is missing, malformed or unsupported; the message names the file."""


@dataclass
class SceneData:
    """A scene as read from disk, in the normalised world, at the chosen downscale.

    Attributes:
        image_paths: N image files (in the folder matching the downscale when one exists).
        cameras: N cameras (OpenCV, world-to-camera) in the normalised world; ``width`` and
            ``height`` are the sizes images must be loaded at (the downscaled size).
        points: (P, 3) float32 sparse points in the normalised world, or None.
        point_colors: (P, 3) float32 in [0, 1], or None.
        split: indices into the N images: "train", "test" (and "val" when the format has it).
        transform: (4, 4) float64 similarity: ``normalised_world = transform @ original_world``.
        scale: the scale factor inside ``transform``.
        alpha_background: True when images are RGBA and get composited on a background.
        distortion: (N, 6) float32 ``[k1, k2, k3, k4, p1, p2]`` (OpenCV radial-tangential, as
            nerfstudio orders them) to remove when loading, or None when images are pinhole.
        format: the reader that produced it ("colmap", "blender", "nerfstudio", "llff").
        root: the scene folder.
        camera_ids: N sensor ids (COLMAP ``camera_id``: images sharing intrinsics, e.g. one
            camera of a rig), or None when the format has none.
    """

    image_paths: list[Path]
    cameras: Cameras
    points: Tensor | None
    point_colors: Tensor | None
    split: dict[str, list[int]]
    transform: Tensor
    scale: float
    alpha_background: bool = False
    distortion: Tensor | None = None
    format: str = ""
    root: Path = field(default_factory=Path)
    camera_ids: list[int] | None = None

    def __len__(self) -> int:
        return len(self.image_paths)

    def to_original_world(self, c2w: Tensor) -> Tensor:
        """Maps (N, 4, 4) camera-to-world poses from the normalised world back to the original."""
        inv = torch.linalg.inv(self.transform.double())
        return apply_transform_to_c2w(inv, c2w.double()).to(c2w.dtype)


@dataclass
class RawScene:
    """What a format's reader parses, before the shared steps (`finish.finish_scene`).

    Attributes:
        root: the scene folder.
        fmt: "colmap", "blender", "nerfstudio" or "llff".
        image_paths: N image files (in the folder matching the downscale when one exists).
        c2w: (N, 4, 4) OpenCV camera-to-world in the file's world.
        K: (N, 3, 3) intrinsics at the size images are loaded at (`width`, `height`).
        width, height: (N,) load sizes.
        names: N image names.
        points, point_colors: (P, 3) sparse points in the file's world and colours in [0, 1], or None.
        source: the file named in error messages.
        format_split: the format's own split (Blender's train/val/test files), or None.
        base_transform: (4, 4) similarity from the capture's original world to the file's world
            (nerfstudio ``applied_transform``), folded into ``SceneData.transform``.
        alpha_background: images are RGBA and get composited on a background.
        distortion: (N, 6) ``[k1, k2, k3, k4, p1, p2]`` to remove on load, or None.
        camera_ids: N sensor ids (COLMAP ``camera_id``), or None.
    """

    root: Path
    fmt: str
    image_paths: list[Path]
    c2w: Tensor
    K: Tensor
    width: Tensor
    height: Tensor
    names: list[str]
    points: Tensor | None = None
    point_colors: Tensor | None = None
    source: Path | str | None = None
    format_split: dict[str, list[int]] | None = None
    base_transform: Tensor | None = None
    alpha_background: bool = False
    distortion: Tensor | None = None
    camera_ids: Sequence[int] | None = None


@dataclass
class ReadOptions:
    """How to read a scene: format, image size, world normalisation, and which views train.

    Split precedence: ``split_file`` > ``name_split`` > the format's own split (Blender) >
    ``test_every``. Then
    the training set is thinned: ``train_group`` (one camera group, before the others), then
    ``train_indices`` (image indices, all training images) or else ``train_every`` followed by
    ``max_train_views``.

    Attributes:
        format: "auto" (by the files present) or one of "colmap", "blender", "nerfstudio", "llff".
        downscale: integer image shrink factor (uses ``images_<k>`` folders when present).
        test_every: every n-th image (``i % n == 0``, the LLFF convention) is a test view;
            0 means no test views. Ignored when the format has its own split.
        split_file: JSON ``{"train": [names], "test": [names]}`` (names with or without
            extension, or image indices); optional "val".
        name_split: ``[train_pattern, test_pattern]``: a view trains when its image file name
            contains the first, is a test view when it contains the second (``["_train_",
            "_eval_"]``: the reference's ``test_every: 1`` in its gsplat ``colmap.py``, and the
            ``frame_train_`` / ``frame_eval_`` frames that nerfstudio's ``ns-process-data``
            writes from a training and an evaluation video, as in the Nerfbusters data). A file
            name with neither or both is an error naming it (the reference drops the first
            kind silently; nerfstudio's filename split refuses it too).
        train_every: keep every n-th training view (sparse-view setting).
        max_train_views: keep at most the first N training views (after ``train_every``).
        train_indices: explicit image indices to train on.
        normalize: centre and scale the world by the cameras (the transform is kept).
        align_up: also rotate the mean camera up vector onto +z.
        train_group: train only on the images of this camera group (cross-reference data: fit
            on one camera of a rig, render the others). See ``camera_groups``.
        group_by: "camera_id" (COLMAP camera id, as a string) or "pattern".
        group_pattern: regular expression naming the group of each image path (group_by "pattern").
    """

    format: str = "auto"
    downscale: int = 1
    test_every: int = 8
    split_file: str | None = None
    name_split: tuple[str, str] | None = None
    train_every: int = 1
    max_train_views: int | None = None
    train_indices: tuple[int, ...] | None = None
    normalize: bool = True
    align_up: bool = False
    train_group: str | None = None
    group_by: Literal["camera_id", "pattern"] = "camera_id"
    group_pattern: str | None = None

    def __post_init__(self) -> None:
        if self.train_indices is not None:
            self.train_indices = tuple(int(i) for i in self.train_indices)
        if self.name_split is not None:
            pair = tuple(str(p) for p in self.name_split)
            if len(pair) != 2 or not all(pair) or pair[0] == pair[1]:
                raise ValueError(f"name_split must be two different non-empty patterns [train, test], got {self.name_split!r}")
            self.name_split = pair  # type: ignore[assignment]


# ---------------------------------------------------------------------------- helpers
def resolve_image_path(folder: Path, name: str, source: Path | str) -> Path:
    """``folder / name``, trying common extensions when ``name`` has none; errors name ``source``."""
    path = folder / name
    if path.is_file():
        return path
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        for ext in (".png", ".jpg", ".jpeg", ".JPG", ".PNG", ".JPEG"):
            candidate = path.with_name(path.name + ext)
            if candidate.is_file():
                return candidate
    raise SceneFormatError(f"{source}: image {name!r} is missing (looked for {path})")


def image_folder_for_downscale(root: Path, base: str, downscale: int) -> tuple[Path, int]:
    """Picks the image folder to load for a downscale factor.

    The 3DGS/LLFF convention stores pre-shrunk copies in ``{base}_{k}``. We take the largest
    ``k <= downscale`` that divides it (``k = 1`` is ``base`` itself), so ``images_8`` is used
    for 8 and, say, ``images_4`` resized by 2 for 8 when only ``images_4`` exists.

    Returns:
        (folder, k): images in ``folder`` are ``k`` times smaller than the original; the
        remaining factor ``downscale / k`` is applied when loading.

    Raises:
        SceneFormatError: no usable folder exists.
    """
    if downscale < 1:
        raise SceneFormatError(f"{root}: downscale must be an integer >= 1, got {downscale}")
    for k in range(downscale, 0, -1):
        if downscale % k:
            continue
        folder = root / (base if k == 1 else f"{base}_{k}")
        if folder.is_dir():
            return folder, k
    found = sorted(p.name for p in root.glob(f"{base}*") if p.is_dir())
    raise SceneFormatError(
        f"{root}: no image folder for downscale {downscale}: expected {base}/ or {base}_<k>/ with k dividing "
        f"{downscale}; found {found or 'none'}"
    )


def env_path(path: str | os.PathLike) -> Path:
    """Expands ``~`` and environment variables in a path given by a user or config."""
    return Path(os.path.expandvars(os.path.expanduser(str(path))))



# Part of SceneDataModule's hyperparameters, so checkpoints hold it; allow it in weights-only loading.
torch.serialization.add_safe_globals([ReadOptions])
