"""The contracts between scene models, their data, and the callbacks / viewer that use them.

Declared once here and checked where they are needed (`isinstance` at `on_fit_start`), so any
representation (Gaussians, NeRF) and any datamodule offering the members works:

- `RendersViews`: a scene model that renders arbitrary cameras (progressive fix, viewer, curation),
  with its extent and device (the viewer places its first camera by the one and renders on the other).
- `AcceptsPostRenderFix` with `PostRenderFix`: the Difix3D+ fix of test / predict renders.
- `SeedPoints`: a scene model that can hand out points of its geometry (curation's cycle stage 1
  seeds the second fit with them).
- `GrowsTrainingSet`: a datamodule whose training set takes fixed novel views (Difix3D).
- `CurationSource`: a datamodule curation renders and pairs from (fitted and held-out views).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Protocol, runtime_checkable

import torch
from torch import Tensor

from datamodules.cameras.cameras import Cameras

PostRenderFix = Callable[[Tensor, Cameras], Tensor]
"""Difix3D+: (rgb (N, 3, H, W) in [0, 1], the N cameras) -> fixed rgb (N, 3, H, W) in [0, 1]."""


@runtime_checkable
class RendersViews(Protocol):
    """A scene model that can render arbitrary cameras.

    Attributes:
        scene_scale: the scene's extent in its world (what camera steps and orbits are measured in).
        device: where its renders are made (cameras are moved there).
    """

    scene_scale: float
    device: torch.device

    def render_views(self, cameras: Cameras) -> tuple[Tensor, Tensor]:
        """Render without grad.

        Returns:
            rgb (N, 3, H, W) in [0, 1] and alpha (N, 1, H, W); all cameras share one size.
        """
        ...


@runtime_checkable
class AcceptsPostRenderFix(Protocol):
    """A scene model whose test/predict renders can go through the Difix3D+ post-render fix."""

    def set_post_render_fix(self, fix: PostRenderFix | None) -> None:
        """Installs `fix` for the following test/predict renders (None removes it); renders
        are then reported both plain and fixed."""
        ...


@runtime_checkable
class SeedPoints(Protocol):
    """A scene model that can hand out points of its geometry."""

    def seed_points(self, max_points: int) -> tuple[Tensor, Tensor] | None:
        """At most `max_points` points (P, 3) of the geometry (normalised world) and their
        colours (P, 3) in [0, 1], chosen reproducibly; None when there are none."""
        ...


@runtime_checkable
class GrowsTrainingSet(Protocol):
    """A datamodule whose training set can take fixed (novel) views."""

    train_cameras: Cameras
    train_images: list[Tensor]

    def target_cameras(self, kind: str = "test") -> Cameras: ...

    def set_fixed_views(
        self,
        images: list[Tensor],
        cameras: Cameras,
        weights: Tensor,
        masks: list[Tensor] | None,
        real_view_weight: float | None = None,
    ) -> None: ...


@runtime_checkable
class CurationSource(Protocol):
    """A datamodule of a fitted scene that curation renders pairs from.

    Attributes:
        train_cameras, train_images, train_masks: the fitted views (masks: None or (1, H, W)).
        heldout_cameras, heldout_images, heldout_masks: the scene's views not fitted.
        path: the scene folder as configured (recorded with each pair).
        scene_root: that folder resolved (``~``, ``$VARS``).
        transform: (4, 4) normalised world from the original one (None before setup).
    """

    train_cameras: Cameras
    train_images: list[Tensor]
    train_masks: list[Tensor] | None
    heldout_cameras: Cameras
    heldout_images: list[Tensor]
    heldout_masks: list[Tensor] | None
    path: str
    scene_root: Path
    transform: Tensor | None
