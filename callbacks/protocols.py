"""What ProgressiveFixCallback needs from a scene model and its data (any 3D representation).

A NeRF module can use the callback by offering `render_views` and `scene_scale`; a datamodule
by offering the real training views, target cameras and a replaceable set of fixed (novel) views.
"""
from __future__ import annotations

from typing import Callable, Protocol, runtime_checkable

from torch import Tensor

from datamodules.cameras import Cameras


@runtime_checkable
class RendersViews(Protocol):
    """A scene model that can render arbitrary cameras."""

    scene_scale: float

    def render_views(self, cameras: Cameras) -> tuple[Tensor, Tensor]:
        """Render without grad.

        Returns:
            rgb (N, 3, H, W) in [0, 1] and alpha (N, 1, H, W); all cameras share one size.
        """
        ...


PostRenderFix = Callable[[Tensor, Cameras], Tensor]
"""Difix3D+: (rgb (N, 3, H, W) in [0, 1], the N cameras) -> fixed rgb (N, 3, H, W) in [0, 1]."""


@runtime_checkable
class AcceptsPostRenderFix(Protocol):
    """A scene model whose test/predict renders can go through the Difix3D+ post-render fix."""

    def set_post_render_fix(self, fix: PostRenderFix | None) -> None:
        """Installs `fix` for the following test/predict renders (None removes it); renders
        are then reported both plain and fixed."""
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
