"""The Difix3D+ post-render fix: renders + their cameras -> fixed renders, the nearest training views
as references. One implementation, used by test and predict (ProgressiveFixCallback), the live
viewer and the benchmarks: a `ReadyFixer` (which loads its network at the first fix, so a viewer
whose fix is never switched on loads no diffusion weights) with the views to take references from.

``reference_views_from_checkpoint`` rebuilds a scene checkpoint's datamodule (its
hyperparameters are in the checkpoint) to get the training views a standalone viewer needs.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import Tensor

from datamodules.cameras.cameras import Cameras
from lightning_modules.difix.fixers.ready import ReadyFixer, ReferenceViews
from lightning_modules.scene.contracts import GrowsTrainingSet
from lightning_modules.scene.open_scene import open_scene_data

__all__ = ["NearestViewFix", "training_views", "reference_views_from_checkpoint"]


@dataclass
class NearestViewFix:
    """Difix on renders, each with its nearest training views as references (Difix3D+).

    Attributes:
        fixer: the ready fixer (shared with the progressive fix when beside training).
        views: the views references come from; None: the fixer runs without references.
        num_refs: references per render by default (0: none).
    """

    fixer: ReadyFixer
    views: ReferenceViews | None = None
    num_refs: int = 1

    def __post_init__(self) -> None:
        if self.num_refs < 0:
            raise ValueError(f"NearestViewFix: num_refs must be >= 0, got {self.num_refs}")

    @property
    def has_references(self) -> bool:
        return self.views is not None

    def __call__(self, images: Tensor, cameras: Cameras, num_refs: int | None = None) -> Tensor:
        """Fixes renders.

        Args:
            images: (N, 3, H, W) renders in [0, 1].
            cameras: the N cameras they were rendered from (picks the references).
            num_refs: references per render for this call (the viewer's control); None: `num_refs`.

        Returns:
            (N, 3, H, W) fixed renders in [0, 1].
        """
        k = self.num_refs if num_refs is None else num_refs
        return self.fixer.fix_views(images, cameras, self.views, k)[0]


def training_views(data: GrowsTrainingSet) -> ReferenceViews:
    """A datamodule's training views, to take references from."""
    return ReferenceViews(data.train_cameras, list(data.train_images))


def reference_views_from_checkpoint(ckpt: str | Path) -> ReferenceViews | None:
    """The training views of the scene a checkpoint was trained on (its datamodule rebuilt, see
    `open_scene_data`), or None when the checkpoint holds no scene data settings."""
    data = open_scene_data(ckpt)
    return None if data is None else ReferenceViews(data.train_cameras, list(data.train_images))
