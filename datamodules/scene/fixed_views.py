"""The fixed (novel) views Difix3D adds to a SceneDataModule's training set.

`FixedViewsMixin` holds them (images, cameras, loss weights, validity masks) and the loss
weight of the real views; `SceneDataModule` draws from them, checkpoints them, and
`ProgressiveFixCallback` replaces them through `set_fixed_views` (the `GrowsTrainingSet`
protocol).
"""
from __future__ import annotations

import torch
from torch import Tensor

from datamodules.cameras.cameras import Cameras

__all__ = ["FixedViewsMixin"]


class FixedViewsMixin:
    """Fixed views of a training set; the host sets `real_view_weight` (1 until fixed views come
    with another) in its `__init__`."""

    real_view_weight: float
    fixed_images: list[Tensor]
    fixed_cameras: Cameras
    fixed_weights: Tensor
    fixed_masks: list[Tensor] | None

    def set_fixed_views(
        self,
        images: list[Tensor],
        cameras: Cameras,
        weights: Tensor,
        masks: list[Tensor] | None = None,
        real_view_weight: float | None = None,
    ) -> None:
        """Replaces the fixed (novel) views.

        Args:
            images: N tensors (3, H, W) in [0, 1].
            cameras: N cameras in the normalised world.
            weights: (N,) loss weights.
            masks: N tensors (1, H, W) or None (all ones).
            real_view_weight: loss weight of the real views from now on (Difix3D raises it
                once fixed views join: paper 1.5); None keeps the current one.
        """
        if real_view_weight is not None and not real_view_weight > 0:
            raise ValueError(f"set_fixed_views: real_view_weight must be > 0, got {real_view_weight}")
        n = len(images)
        weights = torch.as_tensor(weights, dtype=torch.float32).reshape(-1)
        if len(cameras) != n or weights.shape[0] != n or (masks is not None and len(masks) != n):
            raise ValueError(
                f"set_fixed_views: {n} images but {len(cameras)} cameras, {weights.shape[0]} weights"
                + ("" if masks is None else f", {len(masks)} masks")
            )
        for i, image in enumerate(images):
            if image.dim() != 3 or image.shape[0] != 3:
                raise ValueError(f"set_fixed_views: image {i} must be (3, H, W), got {tuple(image.shape)}")
            if (int(cameras.width[i]), int(cameras.height[i])) != (image.shape[2], image.shape[1]):
                raise ValueError(
                    f"set_fixed_views: image {i} is {image.shape[2]}x{image.shape[1]} but its camera says "
                    f"{int(cameras.width[i])}x{int(cameras.height[i])}"
                )
        self.fixed_images = [im.detach().float().cpu().contiguous() for im in images]
        self.fixed_cameras = cameras.to("cpu")
        self.fixed_weights = weights.detach().cpu()
        self.fixed_masks = None if masks is None else [m.detach().float().cpu().reshape(1, *m.shape[-2:]) for m in masks]
        if real_view_weight is not None:
            self.real_view_weight = float(real_view_weight)

    def clear_fixed_views(self) -> None:
        self.fixed_images = []
        self.fixed_cameras = Cameras.empty()
        self.fixed_weights = torch.zeros(0)
        self.fixed_masks = None

    @property
    def num_fixed_views(self) -> int:
        return len(self.fixed_images)
