"""The shared steps every reader's output goes through, once (``finish_scene``): checks,
normalisation of the world by the cameras, the train/test split and its thinning.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from datamodules.cameras.cameras import Cameras
from datamodules.cameras.poses import apply_transform_to_c2w
from datamodules.files.image_io import warn_greyscale_among_colour
from datamodules.readers.scene_data import RawScene, ReadOptions, SceneData, SceneFormatError

__all__ = ["finish_scene", "make_split", "normalization_transform", "check_finite_poses"]


def check_finite_poses(c2w: Tensor, names: Sequence[str], source: Path | str) -> None:
    """Raises a SceneFormatError naming the first image whose pose is not finite."""
    bad = ~torch.isfinite(c2w.reshape(c2w.shape[0], -1)).all(dim=1)
    if bad.any():
        i = int(torch.nonzero(bad)[0])
        raise SceneFormatError(f"{source}: pose of image {names[i]!r} (index {i}) is not finite")


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


def _split_by_name(image_paths: Sequence[Path], patterns: tuple[str, str]) -> dict[str, list[int]]:
    """Train/test indices by a pattern in each image file name (ReadOptions.name_split)."""
    train_pattern, test_pattern = patterns
    split: dict[str, list[int]] = {"train": [], "test": []}
    neither, both = [], []
    for i, path in enumerate(image_paths):
        is_train, is_test = train_pattern in path.name, test_pattern in path.name
        if is_train and is_test:
            both.append(path.name)
        elif is_train or is_test:
            split["train" if is_train else "test"].append(i)
        else:
            neither.append(path.name)
    if neither or both:
        bad = f"{len(neither)} image(s) with neither pattern ({neither[:3]})" if neither else ""
        bad += ("; " if neither and both else "") + (f"{len(both)} with both ({both[:3]})" if both else "")
        raise SceneFormatError(f"name_split {list(patterns)}: every image name must contain exactly one of the "
                               f"two patterns: {bad}")
    if not split["test"]:
        raise SceneFormatError(f"name_split {list(patterns)}: no image name contains {test_pattern!r}, so there are "
                               f"no test views ({len(image_paths)} images, e.g. {image_paths[0].name!r})")
    return split


def make_split(
    names: Sequence[str],
    image_paths: Sequence[Path],
    spec: ReadOptions,
    format_split: dict[str, list[int]] | None = None,
    thin: bool = True,
) -> dict[str, list[int]]:
    """Train/test (and val) image indices for a scene, following ``spec`` (see ReadOptions).

    Test views never enter "train": every option below keeps the two disjoint. With
    ``thin=False`` the training views are not thinned (``train_group`` thins after choosing).
    """
    n = len(names)
    if spec.split_file is not None:
        split = _read_split_file(Path(spec.split_file), names, image_paths)
    elif spec.name_split is not None:
        split = _split_by_name(image_paths, spec.name_split)
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
    if not thin:
        pass
    elif spec.train_indices is not None:
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


def finish_scene(raw: RawScene, options: ReadOptions) -> SceneData:
    """The shared tail of every reader: checks, normalisation, split (and a camera group).

    Args:
        raw: what the format's reader parsed.
        options: the read's options (split, thinning, normalisation, group).

    Raises:
        SceneFormatError naming ``raw.source`` (or the scene folder).
    """
    source = raw.source if raw.source is not None else raw.root
    if len(raw.image_paths) == 0:
        raise SceneFormatError(f"{source}: the scene has no images")
    check_finite_poses(raw.c2w, raw.names, source)
    warn_greyscale_among_colour(raw.image_paths, source)
    K = raw.K
    if not torch.isfinite(K).all() or (K[:, 0, 0] <= 0).any() or (K[:, 1, 1] <= 0).any():
        raise SceneFormatError(f"{source}: camera intrinsics are not finite and positive")
    points, point_colors = raw.points, raw.point_colors
    if points is not None and not torch.isfinite(points).all():
        raise SceneFormatError(f"{source}: sparse points contain non-finite coordinates")
    c2w = raw.c2w.double()
    T = normalization_transform(c2w, align_up=options.align_up) if options.normalize else torch.eye(4, dtype=torch.float64)
    scale = float(torch.linalg.det(T[:3, :3]).abs() ** (1.0 / 3.0))
    c2w_n = apply_transform_to_c2w(T, c2w)
    if points is not None:
        points = (points.double() @ T[:3, :3].T + T[:3, 3]).float()
        point_colors = point_colors.float() if point_colors is not None else torch.full_like(points, 0.5)
    full_T = T if raw.base_transform is None else T @ raw.base_transform.double()
    cameras = Cameras.from_c2w(c2w_n, K.float(), raw.width, raw.height, raw.names)
    distortion = raw.distortion
    if distortion is not None and not bool((distortion != 0).any()):
        distortion = None
    scene = SceneData(
        image_paths=list(raw.image_paths),
        cameras=cameras,
        points=points,
        point_colors=point_colors,
        split={},
        transform=full_T,
        scale=scale,
        alpha_background=raw.alpha_background,
        distortion=None if distortion is None else distortion.float(),
        format=raw.fmt,
        root=raw.root,
        camera_ids=None if raw.camera_ids is None else [int(c) for c in raw.camera_ids],
    )
    if options.train_group is None:
        scene.split = make_split(raw.names, raw.image_paths, options, raw.format_split)
        return scene
    # One camera group of a rig trains: chosen among all training views, then thinned as the
    # split would. Normalisation used every camera, so the world does not depend on the group.
    from datamodules.readers.camera_groups import select_group

    if options.train_indices is not None:
        raise SceneFormatError(f"{raw.root}: train_group and train_indices both choose the training views; give one")
    if options.train_every < 1:
        raise SceneFormatError(f"train_every must be >= 1, got {options.train_every}")
    if options.max_train_views is not None and options.max_train_views < 1:
        raise SceneFormatError(f"max_train_views must be >= 1, got {options.max_train_views}")
    scene.split = make_split(raw.names, raw.image_paths, options, raw.format_split, thin=False)
    train = select_group(scene, scene.split["train"], options.train_group, options.group_by, options.group_pattern)
    scene.split["train"] = train[:: options.train_every][: options.max_train_views]
    return scene
