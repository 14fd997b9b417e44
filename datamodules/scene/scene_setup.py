"""SceneSetup: what a scene module needs from its data, handed over as one typed object.

A scene module (Gaussians, NeRF) receives this from the datamodule (``scene_setup()``)
or from a test directly; it never reaches into the datamodule's attributes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from torch import Tensor

from datamodules.cameras.cameras import Cameras

__all__ = ["SceneSetup", "ProvidesSceneSetup"]


@dataclass(frozen=True)
class SceneSetup:
    """The scene facts a representation is initialised from.

    Attributes:
        train_cameras: the N fitted cameras (normalised world); predict paths run through them.
        scene_scale: scene extent (gsplat's: 1.1 x the largest camera distance from their mean).
        background: RGB the images were composited on (RGBA scenes, e.g. white for
            NeRF-synthetic); None when the images are opaque.
        points: (P, 3) sparse points (e.g. COLMAP) in the normalised world, or None.
        point_colors: (P, 3) their colours in [0, 1], or None.
        transform: (4, 4) float64 ``normalised_world = transform @ original_world``, or None.
        all_cameras: every camera the scene's reader found (train, test and any left out by
            thinning), normalised world; None: only the training cameras are known. What
            another tool normalised its world by (gsplat's parser uses every COLMAP image).
        train_images: the training photos, (3, H, W) in [0, 1] each, in ``train_cameras``' order
            (composited on ``background`` where it is set); None: not given. What tells the world
            of a reconstruction made elsewhere (``init.file``).
    """

    train_cameras: Cameras
    scene_scale: float
    background: tuple[float, float, float] | None = None
    points: Tensor | None = None
    point_colors: Tensor | None = None
    transform: Tensor | None = None
    all_cameras: Cameras | None = None
    train_images: tuple[Tensor, ...] | None = None

    def __post_init__(self) -> None:
        if not self.scene_scale > 0:
            raise ValueError(f"SceneSetup: scene_scale must be positive, got {self.scene_scale}")
        if self.background is not None and len(self.background) != 3:
            raise ValueError(f"SceneSetup: background must be 3 values (RGB), got {self.background}")
        if self.points is not None and (self.points.dim() != 2 or self.points.shape[-1] != 3):
            raise ValueError(f"SceneSetup: points must be (P, 3), got {tuple(self.points.shape)}")
        if self.train_images is not None and len(self.train_images) != len(self.train_cameras):
            raise ValueError(f"SceneSetup: {len(self.train_images)} train_images for {len(self.train_cameras)} "
                             "train_cameras")


@runtime_checkable
class ProvidesSceneSetup(Protocol):
    """A datamodule that can describe its scene to a scene module."""

    def scene_setup(self) -> SceneSetup: ...
