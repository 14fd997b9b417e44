"""Views of a scene for SceneDataModule: loading, held-out views, datasets, collate, size check.

`HeldoutViewsMixin` gives `datamodules.scene.datamodule.SceneDataModule` its image loading
and the held-out views (scene images not used for fitting, loaded on first use); `_Views`
(evaluation) and `TrainDraws` (training: draw indices) are its datasets and `collate_views`
the collate function of the views (batch layout in `datamodules.scene.datamodule`).
"""
from __future__ import annotations

from typing import Any, Callable
from collections.abc import Iterator

import torch
from torch import Tensor
from torch.utils.data import Dataset, IterableDataset

from datamodules.cameras.cameras import Cameras
from datamodules.cameras.distortion import undistort_image
from datamodules.files.image_io import load_image
from datamodules.readers.scene_data import SceneData, SceneFormatError



def collate_views(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stacks per-view samples into a batch; Cameras are concatenated, names listed.

    All views in one batch must share an image size. Training samples carry "draw" (the draw
    counter), evaluation samples "index" (the view's position among those evaluated).
    """
    batch = {
        "image": torch.stack([s["image"] for s in samples]),
        "mask": torch.stack([s["mask"] for s in samples]),
        "weight": torch.stack([torch.as_tensor(s["weight"], dtype=torch.float32) for s in samples]),
        "camera": Cameras.cat([s["camera"] for s in samples]),
        "name": [s["name"] for s in samples],
        "is_fixed": torch.tensor([bool(s["is_fixed"]) for s in samples]),
        "view_index": torch.tensor([int(s.get("view_index", -1)) for s in samples], dtype=torch.int64),
    }
    for key in ("draw", "index"):
        if key in samples[0]:
            batch[key] = torch.tensor([int(s[key]) for s in samples], dtype=torch.int64)
    return batch


class _Views(Dataset):
    """Fixed list of views in order (evaluation)."""

    def __init__(self, images: list[Tensor], cameras: Cameras, masks: list[Tensor] | None, weight: float) -> None:
        self.images, self.cameras, self.masks, self.weight = images, cameras, masks, weight

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, Any]:
        image = self.images[i]
        mask = self.masks[i] if self.masks is not None else torch.ones(1, *image.shape[-2:])
        return {
            "image": image,
            "mask": mask,
            "weight": torch.tensor(self.weight),
            "camera": self.cameras[i],
            "name": self.cameras.names[i],
            "is_fixed": False,
            "index": i,
        }


class TrainDraws(IterableDataset):
    """``length`` training draw indices per epoch, from ``next_draw()`` on (read when an epoch's
    iteration starts, after Lightning restored a checkpoint); the views are chosen when a batch
    is used (``SceneDataModule.on_before_batch_transfer``)."""

    def __init__(self, next_draw: Callable[[], int], length: int) -> None:
        self.next_draw, self.length = next_draw, int(length)

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[dict[str, int]]:
        start = int(self.next_draw())
        for k in range(self.length):
            yield {"draw": start + k}


def collate_draws(samples: list[dict[str, int]]) -> dict[str, Tensor]:
    return {"draw": torch.tensor([s["draw"] for s in samples], dtype=torch.int64)}


class HeldoutViewsMixin:
    """Image loading and held-out views of SceneDataModule (split out of it to keep files small).

    Needs from the class it is mixed into: ``scene`` (None before setup), ``background``,
    ``_heldout`` (None until first use) and ``setup()``, which reads the scene.
    """

    scene: SceneData | None
    background: tuple[float, ...]
    _heldout: tuple[list[Tensor], list[Tensor] | None] | None

    def _load(self, scene: SceneData, indices: list[int]) -> tuple[list[Tensor], list[Tensor] | None]:
        images, masks = [], []
        for i in indices:
            w, h = int(scene.cameras.width[i]), int(scene.cameras.height[i])
            image = load_image(scene.image_paths[i], size=(w, h), background=self.background)
            mask = torch.ones(1, h, w)
            if scene.distortion is not None and bool((scene.distortion[i] != 0).any()):
                image, mask = undistort_image(image, scene.cameras.K[i], scene.distortion[i])
            images.append(image.contiguous())
            masks.append(mask)
        has_mask = any(bool((m < 1).any()) for m in masks)
        return images, (masks if has_mask else None)

    # ------------------------------------------------------------------ held-out views
    @property
    def heldout_indices(self) -> list[int]:
        """Scene image indices not used for fitting, in scene order: test (and val) views,
        training views dropped by ``train_every`` / ``max_train_views`` / ``train_group``."""
        scene = self._require_scene()
        fitted = set(scene.split["train"])
        return [i for i in range(len(scene)) if i not in fitted]

    @property
    def heldout_cameras(self) -> Cameras:
        """Cameras of ``heldout_indices`` (normalised world, load size)."""
        idx = self.heldout_indices
        return self._require_scene().cameras[idx] if idx else Cameras.empty()

    @property
    def heldout_images(self) -> list[Tensor]:
        """Images (3, H, W) in [0, 1] of ``heldout_indices``, loaded (and cached) on first use."""
        return self._load_heldout()[0]

    @property
    def heldout_masks(self) -> list[Tensor] | None:
        """Validity masks (1, H, W) of the held-out images (undistorted captures), or None."""
        return self._load_heldout()[1]

    def _require_scene(self) -> SceneData:
        if self.scene is None:
            self.setup()
        assert self.scene is not None
        return self.scene

    def _load_heldout(self) -> tuple[list[Tensor], list[Tensor] | None]:
        if self._heldout is None:
            self._heldout = self._load(self._require_scene(), self.heldout_indices)
        return self._heldout


# Evaluation SSIM (torchmetrics, 11x11 Gaussian window) fails on smaller images.
MIN_IMAGE_SIZE = 11


def check_min_image_size(scene: Any, downscale: int) -> None:
    """Rejects images too small to evaluate (e.g. from a large ``downscale``) before training."""
    w, h = scene.cameras.width, scene.cameras.height
    small = torch.nonzero((w < MIN_IMAGE_SIZE) | (h < MIN_IMAGE_SIZE)).flatten().tolist()
    if small:
        i = small[0]
        raise SceneFormatError(
            f"{scene.root}: downscale {downscale} leaves {len(small)} image(s) smaller than {MIN_IMAGE_SIZE}x"
            f"{MIN_IMAGE_SIZE} pixels (e.g. {scene.image_paths[i]} at {int(w[i])}x{int(h[i])}), too small to "
            "evaluate (SSIM): use a smaller downscale"
        )
