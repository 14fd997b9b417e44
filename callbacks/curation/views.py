"""What a curation snapshot renders: the cameras, their real images and the pool of fitted
views the references come from, for each ``render`` mode of PairWriter."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from callbacks.curation.cycle_scene import MANIFEST, read_cycle_manifest
from datamodules.cameras.cameras import Cameras
from datamodules.cameras.poses import nearest_views
from datamodules.files.image_io import load_image
from lightning_modules.scene.contracts import CurationSource

__all__ = ["SnapshotViews", "select_views", "nearest_references", "safe_name", "unique_names", "subset"]


@dataclass
class SnapshotViews:
    """What one snapshot renders and pairs.

    Attributes:
        cameras: N cameras to render.
        targets: N real images (3, H, W) at the cameras' sizes.
        masks: N validity masks (1, H, W) (undistorted captures) or None.
        pool_cameras: M fitted cameras the references are chosen from.
        pool_images: their M real images.
        pool_names: their M names.
        self_index: (N,) index of each view's own camera in the pool (-1: not in it), so a
            target is never its own reference.
        source: the scene folder the views come from (recorded per item).
    """

    cameras: Cameras
    targets: list[Tensor]
    masks: list[Tensor] | None
    pool_cameras: Cameras
    pool_images: list[Tensor]
    pool_names: list[str]
    self_index: list[int]
    source: str = ""


def safe_name(name: str) -> str:
    """A view name as a file stem (``train/r_0`` -> ``train_r_0``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "view"


def unique_names(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        k = seen.get(n, 0)
        seen[n] = k + 1
        out.append(n if k == 0 else f"{n}_{k}")
    return out


def subset(n: int, max_views: int | None) -> list[int]:
    """At most ``max_views`` of ``range(n)``, evenly spaced (all when None)."""
    if max_views is None or n <= max_views:
        return list(range(n))
    return torch.linspace(0, n - 1, max_views).round().long().unique().tolist()


def select_views(data: CurationSource, render: str, max_views: int | None, scene_name: str,
                 manifest: str | None = None) -> SnapshotViews:
    """The cameras to render, their real images and the reference pool, per ``render``
    ("train", "heldout" or "cycle_back"; see PairWriter)."""
    if render == "cycle_back":
        return _cycle_back_views(data, max_views, manifest)
    pool = (data.train_cameras, list(data.train_images), list(data.train_cameras.names))
    source = str(data.path)
    if render == "train":
        idx = subset(len(data.train_cameras), max_views)
        masks = data.train_masks
        return SnapshotViews(data.train_cameras[idx], [data.train_images[i] for i in idx],
                             None if masks is None else [masks[i] for i in idx], *pool, self_index=idx, source=source)
    cams = data.heldout_cameras
    if len(cams) == 0:
        raise ValueError(
            f"PairWriter: scene {scene_name!r} has no held-out views (every view is fitted); set "
            "data.read.train_every > 1, data.read.test_every > 0 or data.read.train_group, or use render: train"
        )
    idx = subset(len(cams), max_views)
    images, masks = data.heldout_images, data.heldout_masks
    return SnapshotViews(cams[idx], [images[i] for i in idx], None if masks is None else [masks[i] for i in idx],
                         *pool, self_index=[-1] * len(idx), source=source)


def _cycle_back_views(data: CurationSource, max_views: int | None, manifest: str | None) -> SnapshotViews:
    root = Path(data.scene_root)
    path = Path(manifest) if manifest is not None else root / MANIFEST
    transform = data.transform
    if transform is not None and not torch.allclose(transform.double(), torch.eye(4, dtype=torch.float64), atol=1e-9):
        raise ValueError(
            f"PairWriter: cycle stage 2 must keep stage 1's world: set data.read.normalize: false for {root} "
            "(the original cameras in the manifest are in stage 1's normalised world)"
        )
    cameras, files, doc = read_cycle_manifest(path)
    images = [load_image(f, size=(int(cameras.width[i]), int(cameras.height[i]))) for i, f in enumerate(files)]
    idx = subset(len(cameras), max_views)
    return SnapshotViews(cameras[idx], [images[i] for i in idx], None, cameras, images, list(cameras.names),
                         self_index=idx, source=str(doc.get("source", root)))


def nearest_references(views: SnapshotViews, num_refs: int, scene_name: str) -> list[list[int]]:
    """Per view, the pool indices of its ``num_refs`` nearest fitted views (never itself)."""
    available = len(views.pool_cameras) - (1 if any(j >= 0 for j in views.self_index) else 0)
    if available < 1:
        raise ValueError(f"PairWriter: scene {scene_name!r} has no other fitted view to use as a reference")
    k = min(num_refs, available)
    return nearest_views(views.cameras.camera_to_world, views.pool_cameras.camera_to_world, k,
                         exclude=views.self_index).tolist()
