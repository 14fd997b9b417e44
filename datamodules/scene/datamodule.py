"""SceneDataModule: a captured scene as a training set that grows with fixed novel views.

Real views come from any supported format (``read_scene``); Difix3D's progressive-fix
callback appends rendered-and-fixed novel views with :meth:`SceneDataModule.set_fixed_views`.
Each training step draws one view: a real one with probability ``real_view_probability``
when fixed views exist, else always a real one. The draw for step ``i`` is a pure function
of ``(seed, i)``, and ``i`` counts the training batches consumed, which is saved in the
checkpoint with the fixed views, so a resumed run draws exactly what the original would
have. Test images never enter the training loader.

Batches (batch size 1, training and evaluation alike)::

    {"image": (1, 3, H, W) float [0, 1], "mask": (1, 1, H, W) float (ones unless the view has
     a validity mask), "weight": (1,) float loss weight, "camera": Cameras (len 1),
     "name": [str], "is_fixed": (1,) bool, "view_index": (1,) int64 (index into the training
     views; -1 for fixed and evaluation views)}
    plus in training "draw": (1,) int64 (the draw counter: step i's draw is i), in evaluation
    "index": (1,) int64 (the view's position among the evaluated views).

Image loading, the held-out views and the datasets live in ``datamodules.scene.views``; the
fixed views in ``datamodules.scene.fixed_views``.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from datamodules.cameras.cameras import Cameras
from datamodules.scene.fixed_views import FixedViewsMixin
from datamodules.procedural.scene import ProceduralOptions
from datamodules.readers.scene_data import ReadOptions, SceneData, SceneFormatError, env_path
from datamodules.scene.scene_setup import SceneSetup
from datamodules.scene.views import HeldoutViewsMixin, TrainDraws, _Views, check_min_image_size, collate_draws, collate_views

__all__ = ["SceneDataModule", "collate_views"]

log = logging.getLogger(__name__)


class SceneDataModule(FixedViewsMixin, HeldoutViewsMixin, pl.LightningDataModule):
    """Real views of a scene plus the fixed (novel) views Difix3D adds while training."""

    def __init__(
        self,
        path: str,
        read: ReadOptions | None = None,
        background: tuple[float, float, float] = (1.0, 1.0, 1.0),
        real_view_probability: float = 0.7,
        steps_per_epoch: int = 1000,
        max_val_views: int | None = None,
        seed: int = 0,
        procedural: ProceduralOptions | None = None,
    ) -> None:
        """
        Args:
            path: scene folder (COLMAP, Blender, nerfstudio, LLFF); ``~``/``$VARS`` expand.
            read: how to read it (`ReadOptions`: format, downscale, split, sparse-view thinning,
                camera group, normalisation); None: the defaults.
            background: RGB in [0, 1] that transparent pixels (Blender RGBA) are composited on.
            real_view_probability: chance of drawing a real view when fixed views exist.
            steps_per_epoch: training draws per epoch.
            max_val_views: validate on at most this many test views, evenly spaced (test and
                predict always use all of them).
            seed: seed of the training draws (and of the procedural scene unless it has its own).
            procedural: when ``path`` holds no scene, write the project's procedural scene there
                (`ProceduralOptions`: views, size, layout seed, plain background); None: never.
                Its plain background is reported in ``scene_setup``, so a scene model with
                ``render_background: null`` renders on it (else on black, as for opaque scenes).
        """
        super().__init__()
        if not 0.0 <= real_view_probability <= 1.0:
            raise ValueError(f"real_view_probability must be in [0, 1], got {real_view_probability}")
        if steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
        if len(background) != 3:
            raise ValueError(f"background must be an RGB triple, got {background}")
        self.save_hyperparameters()
        self.path = path
        # Dicts too: LightningCLI checkpoints store these options as their fields.
        self.read = ReadOptions(**read) if isinstance(read, dict) else read if read is not None else ReadOptions()
        self.background = tuple(float(c) for c in background)
        self.real_view_probability = real_view_probability
        # Weight of the real views' loss: 1 until the progressive fix (which owns the value,
        # 1.5 in the paper) adds fixed views; saved with them in checkpoints.
        self.real_view_weight = 1.0
        self.steps_per_epoch = steps_per_epoch
        self.max_val_views = max_val_views
        self.seed = seed
        self.procedural = ProceduralOptions(**procedural) if isinstance(procedural, dict) else procedural

        self.scene: SceneData | None = None
        self.train_cameras = Cameras.empty()
        self.test_cameras = Cameras.empty()
        self.train_images: list[Tensor] = []
        self.test_images: list[Tensor] = []
        self.train_masks: list[Tensor] | None = None
        self.test_masks: list[Tensor] | None = None
        self._heldout: tuple[list[Tensor], list[Tensor] | None] | None = None  # loaded on first use
        self.points: Tensor | None = None
        self.point_colors: Tensor | None = None
        self.scene_scale: float = 1.0
        self.clear_fixed_views()
        self.draws = 0  # training draws that reached the model (the next draw's index)

    # ------------------------------------------------------------------ loading
    def _ensure_scene_on_disk(self) -> None:
        if self.procedural is None:
            return
        from datamodules.procedural.scene import is_complete, make_procedural_scene
        from datamodules.readers.read_scene import detect_format

        root = env_path(self.path)
        try:
            detect_format(root)
            return
        except SceneFormatError:
            if is_complete(root):
                return
        p = self.procedural
        make_procedural_scene(root, p.num_views, p.size, self.seed if p.seed is None else p.seed, background=p.background)

    def prepare_data(self) -> None:
        self._ensure_scene_on_disk()

    def setup(self, stage: str | None = None) -> None:
        """Reads the scene and caches train and test images in memory (once)."""
        if self.scene is not None:
            return
        from datamodules.readers.read_scene import read_scene

        self._ensure_scene_on_disk()
        scene = read_scene(self.path, self.read)
        check_min_image_size(scene, self.read.downscale)
        train_idx, test_idx = scene.split["train"], scene.split["test"]
        overlap = set(train_idx) & set(test_idx)
        if overlap:  # the split code prevents this; a guard here keeps the guarantee local
            raise SceneFormatError(f"{scene.root}: images in both train and test split: {sorted(overlap)[:5]}")
        self.train_images, self.train_masks = self._load(scene, train_idx)
        self.test_images, self.test_masks = self._load(scene, test_idx)
        self.train_cameras = scene.cameras[train_idx]
        self.test_cameras = scene.cameras[test_idx] if test_idx else Cameras.empty()
        self.points, self.point_colors = scene.points, scene.point_colors
        centers = self.train_cameras.centers.double()
        # gsplat simple_trainer: 1.1 x the largest camera distance from the mean centre.
        radius = float((centers - centers.mean(dim=0)).norm(dim=-1).max()) if len(centers) > 1 else 0.0
        self.scene_scale = 1.1 * radius if radius > 0 else 1.0
        self.scene = scene
        log.info(
            "scene %s (%s): %d train / %d test views, sizes %s, %s points, scene_scale %.3f",
            scene.root, scene.format, len(train_idx), len(test_idx),
            sorted({(int(w), int(h)) for w, h in zip(scene.cameras.width, scene.cameras.height)})[:4],
            "no" if scene.points is None else len(scene.points), self.scene_scale,
        )

    def target_cameras(self, kind: str = "test") -> Cameras:
        """Cameras (poses and intrinsics, no images) of a split: "test", "train" or "val"."""
        if self.scene is None:
            self.setup()
        assert self.scene is not None
        if kind == "test":
            return self.test_cameras
        if kind == "train":
            return self.train_cameras
        if kind in self.scene.split:
            return self.scene.cameras[self.scene.split[kind]]
        raise ValueError(f"target_cameras: unknown kind {kind!r}; have {sorted(self.scene.split)}")

    # ------------------------------------------------------------------ sampling
    def draw_train_view(self, index: int) -> dict[str, Any]:
        """The training sample for draw ``index`` (a pure function of seed, index and the views)."""
        if not self.train_images:
            raise RuntimeError("SceneDataModule.setup() must run before drawing training views")
        g = torch.Generator().manual_seed((self.seed % 2**31) * 2**32 + index)
        u = float(torch.rand(1, generator=g))
        r = float(torch.rand(1, generator=g))
        fixed = bool(self.fixed_images) and u >= self.real_view_probability
        images, masks, cameras = ((self.fixed_images, self.fixed_masks, self.fixed_cameras) if fixed
                                  else (self.train_images, self.train_masks, self.train_cameras))
        j = min(int(r * len(images)), len(images) - 1)
        image = images[j]
        return {
            "image": image,
            "mask": masks[j] if masks is not None else torch.ones(1, *image.shape[-2:]),
            "weight": self.fixed_weights[j] if fixed else torch.tensor(float(self.real_view_weight)),
            "camera": cameras[j],
            "name": cameras.names[j],
            "is_fixed": fixed,
            "draw": index,
            "view_index": -1 if fixed else j,
        }

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Turns a training batch of draw indices into the views drawn, with the current views.

        The training loader yields only indices (``{"draw": (B,)}``) and Lightning fetches one
        batch ahead, so the images are chosen here, as the batch is used: a batch can never
        hold views the progressive-fix callback has replaced since it was fetched, and a run
        resumed at that step draws exactly the same. ``draws`` (saved in checkpoints) counts
        the draws that reached the model.
        """
        if not isinstance(batch, dict) or "draw" not in batch or "camera" in batch:  # evaluation, or drawn already
            return batch
        indices = [int(i) for i in batch["draw"]]
        self.draws = indices[-1] + 1
        return collate_views([self.draw_train_view(i) for i in indices])

    # ------------------------------------------------------------------ loaders
    def train_dataloader(self) -> DataLoader:
        return DataLoader(TrainDraws(lambda: self.draws, self.steps_per_epoch), batch_size=1, collate_fn=collate_draws,
                          num_workers=0)

    def _eval_loader(self, limit: int | None) -> DataLoader:
        if self.scene is None:
            self.setup()
        idx = list(range(len(self.test_images)))
        if limit is not None and 0 < limit < len(idx):
            idx = torch.linspace(0, len(idx) - 1, limit).round().long().tolist()
        data = _Views(
            [self.test_images[i] for i in idx],
            self.test_cameras[idx],
            None if self.test_masks is None else [self.test_masks[i] for i in idx],
            float(self.real_view_weight),
        )
        return DataLoader(data, batch_size=1, shuffle=False, collate_fn=collate_views, num_workers=0)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader(self.max_val_views)

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader(None)

    def predict_dataloader(self) -> DataLoader:
        return self._eval_loader(None)

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict[str, Any]:
        """Fixed views (float32, exact) and the draw counter; saved in Lightning checkpoints."""
        return {
            "draws": self.draws,
            "real_view_weight": float(self.real_view_weight),
            "fixed_images": list(self.fixed_images),
            "fixed_cameras": self.fixed_cameras.state_dict(),
            "fixed_weights": self.fixed_weights.clone(),
            "fixed_masks": None if self.fixed_masks is None else list(self.fixed_masks),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.draws = int(state_dict["draws"])
        self.real_view_weight = float(state_dict["real_view_weight"])
        if state_dict["fixed_images"]:
            self.set_fixed_views(
                list(state_dict["fixed_images"]),
                Cameras.from_state_dict(state_dict["fixed_cameras"]),
                state_dict["fixed_weights"],
                state_dict["fixed_masks"],
            )
        else:
            self.clear_fixed_views()

    def scene_setup(self) -> SceneSetup:
        """What a scene module needs from this scene, as one typed object (after setup)."""
        scene = self._require_scene()
        return SceneSetup(
            train_cameras=self.train_cameras,
            scene_scale=float(self.scene_scale),
            background=self.background if scene.alpha_background else self._procedural_plain_background(),
            points=scene.points,
            point_colors=scene.point_colors,
            transform=scene.transform,
            all_cameras=scene.cameras,
            train_images=tuple(self.train_images),
        )

    def _procedural_plain_background(self) -> tuple[float, float, float] | None:
        """The colour an object-alone procedural scene was rendered on (None: any other scene).

        Its images are opaque, but every pixel the objects miss is this colour, as an RGBA
        scene's are the compositing colour; a model rendering on black there learns floaters.
        """
        return self.procedural.background if self.procedural is not None else None

    @property
    def scene_root(self) -> Path:
        return env_path(self.path)

    @property
    def transform(self) -> Tensor | None:
        """(4, 4) float64 ``normalised_world = transform @ original_world`` (None before setup)."""
        return None if self.scene is None else self.scene.transform
