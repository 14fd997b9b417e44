"""The Difix3D+ post-render fix as a standalone callable, for the live viewer and benchmarks.

``NearestViewFix(images, cameras)`` fixes renders with Difix, each with its nearest training
views as references, through the same two functions the progressive-fix callback uses
(``nearest_references`` and ``apply_fixer``). The fixer loads lazily on first use, so a
viewer whose fix is never switched on never loads diffusion weights. ``num_refs`` may be
changed between calls (the viewer's reference-count control).

``reference_views_from_checkpoint`` rebuilds a scene checkpoint's datamodule (its
hyperparameters are in the checkpoint) to get the training views a standalone viewer needs.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn

from datamodules.cameras.cameras import Cameras

from lightning_modules.difix.fixers.spec import FixerSpec, load_fixer
from lightning_modules.difix.fixers.image_fixer import IdentityFixer, ImageFixer
from lightning_modules.scene.open_scene import open_scene_data

from callbacks.progressive_fix import apply_fixer, nearest_references

__all__ = ["NearestViewFix", "reference_views_from_checkpoint"]


class NearestViewFix:
    """Difix on renders with the nearest training views as references (Difix3D+).

    Args:
        fixer: a fixer name or ``FixerSpec`` (``lightning_modules.difix.fixers.spec``: its dtype
            and device included), a built fixer, or a function returning one (called once, at
            the first fix).
        train_cameras: cameras of the reference views (None or empty: no references).
        train_images: their images, (3, h, w) in [0, 1].
        num_refs: references per render (0: the fixer runs without references).
        batch_size: renders per fixer call.
    """

    def __init__(
        self,
        fixer: str | FixerSpec | nn.Module | Callable[[], nn.Module],
        train_cameras: Cameras | None = None,
        train_images: list[Tensor] | None = None,
        num_refs: int = 1,
        batch_size: int = 4,
    ) -> None:
        if train_cameras is not None and train_images is not None and len(train_cameras) != len(train_images):
            raise ValueError(f"NearestViewFix: {len(train_cameras)} training cameras but {len(train_images)} images")
        if num_refs < 0:
            raise ValueError(f"NearestViewFix: num_refs must be >= 0, got {num_refs}")
        self._source = fixer
        self._fixer: nn.Module | None = ready_fixer(fixer) if isinstance(fixer, nn.Module) else None
        self._load_lock = threading.Lock()
        self.train_cameras = train_cameras if train_cameras is not None and len(train_cameras) else None
        self.train_images = train_images or []
        self.num_refs = num_refs
        self.batch_size = batch_size

    @property
    def has_references(self) -> bool:
        return self.train_cameras is not None

    @property
    def fixer(self) -> nn.Module:
        """The fixer in eval mode without grads, loaded on first access (thread-safe)."""
        with self._load_lock:
            if self._fixer is None:
                source = self._source
                net = load_fixer(source) if isinstance(source, (str, FixerSpec)) else source()  # type: ignore[operator]
                self._fixer = ready_fixer(net)
            return self._fixer

    @torch.no_grad()
    def __call__(self, images: Tensor, cameras: Cameras) -> Tensor:
        """Fixes renders.

        Args:
            images: (N, 3, H, W) renders in [0, 1].
            cameras: the N cameras they were rendered from (picks the references).

        Returns:
            (N, 3, H, W) fixed renders in [0, 1].
        """
        fixer = self.fixer
        refs = None
        if self.num_refs > 0 and self.train_cameras is not None:
            refs = nearest_references(cameras, self.train_cameras, self.train_images, self.num_refs,
                                      size=tuple(images.shape[-2:])).to(images.device)
        return apply_fixer(fixer, images, refs, self.batch_size).float()


def ready_fixer(net: nn.Module) -> nn.Module:
    """In eval mode without grads; a bare net is wrapped so that it follows the renders' device."""
    if not isinstance(net, (ImageFixer, IdentityFixer)):
        net = ImageFixer(net, name=type(net).__name__)
    return net.eval().requires_grad_(False)


def reference_views_from_checkpoint(ckpt: str | Path) -> tuple[Cameras, list[Tensor]] | None:
    """The training cameras and images of the scene a checkpoint was trained on (its datamodule
    rebuilt, see `open_scene_data`), or None when the checkpoint holds no scene data settings."""
    data = open_scene_data(ckpt)
    return None if data is None else (data.train_cameras, list(data.train_images))
