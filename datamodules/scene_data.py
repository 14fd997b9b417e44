"""What every scene reader returns, plus the shared steps: image folders, normalisation, splits.

Each disk format has its own small reader (``colmap.py``, ``blender.py``, ``nerfstudio.py``,
``llff.py``) that parses poses into OpenCV camera-to-world matrices and then calls
:func:`finish_scene`, so normalisation and train/test splitting behave the same for all.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Sequence

import torch
from torch import Tensor

from datamodules.cameras import Cameras
from datamodules.image_io import IMAGE_EXTENSIONS

__all__ = [
    "SceneFormatError",
    "SceneData",
    "SplitSpec",
    "normalization_transform",
    "apply_transform_to_c2w",
    "make_split",
    "finish_scene",
    "image_folder_for_downscale",
    "check_finite_poses",
    "resolve_image_path",
]


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

    def subset(self, kind: str) -> tuple[list[Path], Cameras]:
        """Image paths and cameras of one split ("train", "test", "val")."""
        idx = self.split.get(kind, [])
        return [self.image_paths[i] for i in idx], self.cameras[list(idx)]

    def to_original_world(self, c2w: Tensor) -> Tensor:
        """Maps (N, 4, 4) camera-to-world poses from the normalised world back to the original."""
        inv = torch.linalg.inv(self.transform.double())
        return apply_transform_to_c2w(inv, c2w.double()).to(c2w.dtype)


@dataclass(frozen=True)
class SplitSpec:
    """How to split a scene into train and test views.

    Precedence: ``split_file`` > the format's own split (Blender) > ``test_every``.
    Then the sparse-view options thin the training set: ``train_indices`` (image indices,
    must all be training images) or else ``train_every`` followed by ``max_train_views``.

    Attributes:
        test_every: every n-th image (``i % n == 0``, the LLFF convention) is a test view;
            0 means no test views.
        split_file: JSON ``{"train": [names], "test": [names]}`` (names with or without
            extension, or image indices); optional "val".
        train_every: keep every n-th training view (sparse-view setting).
        max_train_views: keep at most the first N training views (after ``train_every``).
        train_indices: explicit image indices to train on.
    """

    test_every: int = 8
    split_file: str | None = None
    train_every: int = 1
    max_train_views: int | None = None
    train_indices: tuple[int, ...] | None = None


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


def check_finite_poses(c2w: Tensor, names: Sequence[str], source: Path | str) -> None:
    """Raises a SceneFormatError naming the first image whose pose is not finite."""
    bad = ~torch.isfinite(c2w.reshape(c2w.shape[0], -1)).all(dim=1)
    if bad.any():
        i = int(torch.nonzero(bad)[0])
        raise SceneFormatError(f"{source}: pose of image {names[i]!r} (index {i}) is not finite")


def apply_transform_to_c2w(transform: Tensor, c2w: Tensor) -> Tensor:
    """Applies a similarity ``transform`` (4, 4) to camera-to-world poses (N, 4, 4).

    The rotation part of the result stays orthonormal (the scale only moves centres).
    """
    s = torch.linalg.det(transform[:3, :3]).abs() ** (1.0 / 3.0)
    R = transform[:3, :3] / s
    out = c2w.clone()
    out[:, :3, :3] = R @ c2w[:, :3, :3]
    out[:, :3, 3] = (transform[:3, :3] @ c2w[:, :3, 3:]).squeeze(-1) + transform[:3, 3]
    return out


def _rotation_between(a: Tensor, b: Tensor) -> Tensor:
    """(3, 3) rotation taking unit vector ``a`` onto unit vector ``b`` (float64)."""
    v = torch.linalg.cross(a, b)
    c = float(torch.dot(a, b))
    if c < -1 + 1e-10:  # opposite: rotate 180 degrees about any axis perpendicular to a
        axis = torch.linalg.cross(a, torch.tensor([1.0, 0.0, 0.0], dtype=a.dtype))
        if axis.norm() < 1e-6:
            axis = torch.linalg.cross(a, torch.tensor([0.0, 1.0, 0.0], dtype=a.dtype))
        axis = axis / axis.norm()
        return 2 * torch.outer(axis, axis) - torch.eye(3, dtype=a.dtype)
    vx = torch.tensor([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]], dtype=a.dtype)
    return torch.eye(3, dtype=a.dtype) + vx + vx @ vx / (1 + c)


def normalization_transform(c2w: Tensor, align_up: bool = False) -> Tensor:
    """The similarity that centres and scales a scene by its cameras.

    Centre = mean camera centre; scale so that the farthest camera is at distance 1. With
    ``align_up`` the mean camera up direction (OpenCV -y) is rotated onto +z.

    Args:
        c2w: (N, 4, 4) camera-to-world poses (OpenCV axes).
        align_up: rotate the average up vector onto world +z.

    Returns:
        (4, 4) float64 ``T`` with ``normalised = T @ original`` (for points).
    """
    c2w = c2w.double()
    centers = c2w[:, :3, 3]
    center = centers.mean(dim=0)
    radius = float((centers - center).norm(dim=-1).max()) if len(c2w) > 1 else 0.0
    scale = 1.0 / radius if radius > 1e-12 else 1.0
    R = torch.eye(3, dtype=torch.float64)
    if align_up:
        up = -c2w[:, :3, 1].mean(dim=0)
        if up.norm() > 1e-8:
            R = _rotation_between(up / up.norm(), torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))
    T = torch.eye(4, dtype=torch.float64)
    T[:3, :3] = scale * R
    T[:3, 3] = -scale * (R @ center)
    return T


def _read_split_file(path: Path, names: Sequence[str], image_paths: Sequence[Path]) -> dict[str, list[int]]:
    if not path.is_file():
        raise SceneFormatError(f"{path}: split file not found")
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise SceneFormatError(f"{path}: split file is not valid JSON ({error})") from error
    if not isinstance(doc, dict) or "train" not in doc or "test" not in doc:
        raise SceneFormatError(f"{path}: split file must be a JSON object with 'train' and 'test' lists")
    lookup: dict[str, int] = {}
    for i, (name, p) in enumerate(zip(names, image_paths)):
        for key in (name, p.name, p.stem, Path(name).name):
            lookup.setdefault(key, i)
    split: dict[str, list[int]] = {}
    for kind in ("train", "test", "val"):
        if kind not in doc:
            continue
        if not isinstance(doc[kind], list):
            raise SceneFormatError(f"{path}: split file entry {kind!r} must be a list")
        idx = []
        for entry in doc[kind]:
            if isinstance(entry, int) and not isinstance(entry, bool):
                if not 0 <= entry < len(names):
                    raise SceneFormatError(f"{path}: {kind} index {entry} is out of range for {len(names)} images")
                idx.append(entry)
                continue
            key = str(entry)
            hit = lookup.get(key, lookup.get(Path(key).stem, lookup.get(Path(key).name)))
            if hit is None:
                raise SceneFormatError(f"{path}: {kind} image {key!r} is not in the scene")
            idx.append(hit)
        split[kind] = idx
    overlap = set(split["train"]) & set(split["test"])
    if overlap:
        raise SceneFormatError(f"{path}: images in both train and test: {sorted(names[i] for i in overlap)[:5]}")
    return split


def make_split(
    names: Sequence[str],
    image_paths: Sequence[Path],
    spec: SplitSpec,
    format_split: dict[str, list[int]] | None = None,
) -> dict[str, list[int]]:
    """Train/test (and val) image indices for a scene, following ``spec`` (see SplitSpec).

    Test views never enter "train": every option below keeps the two disjoint.
    """
    n = len(names)
    if spec.split_file is not None:
        split = _read_split_file(Path(spec.split_file), names, image_paths)
    elif format_split is not None:
        split = {k: list(v) for k, v in format_split.items()}
    elif spec.test_every > 0:
        split = {
            "train": [i for i in range(n) if i % spec.test_every != 0],
            "test": [i for i in range(n) if i % spec.test_every == 0],
        }
    elif spec.test_every == 0:
        split = {"train": list(range(n)), "test": []}
    else:
        raise SceneFormatError(f"test_every must be >= 0, got {spec.test_every}")

    train = split["train"]
    if spec.train_indices is not None:
        not_train = [i for i in spec.train_indices if i not in set(train)]
        if not_train:
            raise SceneFormatError(
                f"train_indices {not_train} are not training images (test/val images or out of range; "
                f"{n} images in the scene)"
            )
        train = list(spec.train_indices)
    else:
        if spec.train_every < 1:
            raise SceneFormatError(f"train_every must be >= 1, got {spec.train_every}")
        train = train[:: spec.train_every]
        if spec.max_train_views is not None:
            if spec.max_train_views < 1:
                raise SceneFormatError(f"max_train_views must be >= 1, got {spec.max_train_views}")
            train = train[: spec.max_train_views]
    if not train:
        raise SceneFormatError(f"the split leaves no training images ({n} images in the scene)")
    split["train"] = train
    split.setdefault("test", [])
    return split


def finish_scene(
    *,
    root: Path,
    fmt: str,
    image_paths: list[Path],
    c2w: Tensor,
    K: Tensor,
    width: Tensor,
    height: Tensor,
    names: list[str],
    points: Tensor | None,
    point_colors: Tensor | None,
    split: SplitSpec | None,
    format_split: dict[str, list[int]] | None = None,
    normalize: bool = True,
    align_up: bool = False,
    base_transform: Tensor | None = None,
    alpha_background: bool = False,
    distortion: Tensor | None = None,
    source: Path | str | None = None,
    camera_ids: Sequence[int] | None = None,
) -> SceneData:
    """Shared tail of every reader: checks, normalisation, split.

    Args:
        c2w: (N, 4, 4) OpenCV camera-to-world in the file's world.
        K: (N, 3, 3) intrinsics at the size images are loaded at (``width``, ``height``).
        base_transform: (4, 4) similarity from the capture's original world to the file's
            world (nerfstudio ``applied_transform``); folded into ``SceneData.transform``.
        source: file named in error messages (defaults to ``root``).
        camera_ids: N sensor ids (COLMAP ``camera_id``), or None.
    """
    source = source if source is not None else root
    n = len(image_paths)
    if n == 0:
        raise SceneFormatError(f"{source}: the scene has no images")
    check_finite_poses(c2w, names, source)
    if not torch.isfinite(K).all() or (K[:, 0, 0] <= 0).any() or (K[:, 1, 1] <= 0).any():
        raise SceneFormatError(f"{source}: camera intrinsics are not finite and positive")
    if points is not None and not torch.isfinite(points).all():
        raise SceneFormatError(f"{source}: sparse points contain non-finite coordinates")
    c2w = c2w.double()
    T = normalization_transform(c2w, align_up=align_up) if normalize else torch.eye(4, dtype=torch.float64)
    scale = float(torch.linalg.det(T[:3, :3]).abs() ** (1.0 / 3.0))
    c2w_n = apply_transform_to_c2w(T, c2w)
    if points is not None:
        points = (points.double() @ T[:3, :3].T + T[:3, 3]).float()
        point_colors = point_colors.float() if point_colors is not None else torch.full_like(points, 0.5)
    full_T = T if base_transform is None else T @ base_transform.double()
    cameras = Cameras.from_c2w(c2w_n, K.float(), width, height, names)
    split_idx = make_split(names, image_paths, split or SplitSpec(), format_split)
    if distortion is not None and not bool((distortion != 0).any()):
        distortion = None
    return SceneData(
        image_paths=list(image_paths),
        cameras=cameras,
        points=points,
        point_colors=point_colors,
        split=split_idx,
        transform=full_T,
        scale=scale,
        alpha_background=alpha_background,
        distortion=None if distortion is None else distortion.float(),
        format=fmt,
        root=root,
        camera_ids=None if camera_ids is None else [int(c) for c in camera_ids],
    )


def env_path(path: str | os.PathLike) -> Path:
    """Expands ``~`` and environment variables in a path given by a user or config."""
    return Path(os.path.expandvars(os.path.expanduser(str(path))))

