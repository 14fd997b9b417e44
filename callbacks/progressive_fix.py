"""Difix3D progressive 3D update and the Difix3D+ post-render fix, as one Lightning callback.

Every `fix_every_n_steps` steps the callback moves a set of novel cameras from the training
poses toward the target poses, renders them, fixes each render with Difix (nearest training
views as references) and hands the fixed images to the datamodule as fixed training views.
At test time it gives the scene module a post-render fixer, so `main.py test` reports
metrics with and without the final fix.
"""
from __future__ import annotations

import logging
from typing import Callable

import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor, nn
from tqdm.auto import tqdm

from lightning_modules.difix.fixers.spec import FixerSpec, check_fixer, load_fixer
from lightning_modules.image_grids import log_image, tile_grid
from lightning_modules.difix.fixers.image_fixer import FixerOutputError
from lightning_modules.scene.contracts import AcceptsPostRenderFix, GrowsTrainingSet, RendersViews
from datamodules.cameras.camera_json import read_cameras_json
from datamodules.cameras.cameras import Cameras, interpolate_path, nearest_views, pose_distance, step_pose_toward

log = logging.getLogger(__name__)


def _is_path_spec(targets: str) -> bool:
    n = targets.split(":", 1)[1] if targets.startswith("path:") else ""
    return n.isdigit() and int(n) > 0


class ProgressiveFixCallback(Callback):
    """Progressively distils Difix fixes into a scene model (Difix3D) and fixes final renders (Difix3D+).

    Args:
        fixer: the fixer: a name (a published model "nvidia/difix_ref" / "nvidia/difix" or a
            local folder of one, a reference `model_*.pkl`, a DifixModule checkpoint `.ckpt`,
            exported fixer weights, an SD-Turbo hub name or folder (untrained), "tiny[:SEED]",
            "identity") or a `FixerSpec` with how it runs (size, dtype, device, latent). See
            `lightning_modules.difix.fixers.spec`.
        start_step: first global step at which a fix happens.
        fix_every_n_steps: steps between fixes (2,000 in the reference code, 1,500 in the paper).
        step_size: how far a novel camera moves per fix, as a fraction of the scene extent
            (`scene_scale`); 0.5 equals the paper's 0.5 world units on a normalised scene.
        targets: "test" (the datamodule's held-out cameras, poses only), "path:N" (N poses
            interpolated along the training cameras) or a cameras JSON file.
        num_refs: references per fixed view (nearest training images); 0 fixes without one.
        fixed_view_weight: loss weight of fixed views (paper 0.3).
        real_view_weight: loss weight of real views while fixed views exist (paper 1.5).
        alpha_threshold: fixed-view loss is masked to rendered alpha above this (paper 0.5).
        batch_size: views per fixer call.
        post_render_fix: also fix test renders once more (Difix3D+) during `test`.
        log_images: views shown in the TensorBoard grid at each fix.
    """

    def __init__(
        self,
        fixer: str | FixerSpec,
        start_step: int = 2000,
        fix_every_n_steps: int = 2000,
        step_size: float = 0.5,
        targets: str = "test",
        num_refs: int = 1,
        fixed_view_weight: float = 0.3,
        real_view_weight: float = 1.5,
        alpha_threshold: float = 0.5,
        batch_size: int = 4,
        post_render_fix: bool = True,
        log_images: int = 4,
    ) -> None:
        if fix_every_n_steps <= 0:
            raise ValueError(f"fix_every_n_steps must be positive, got {fix_every_n_steps}")
        if step_size <= 0:
            raise ValueError(f"step_size must be positive, got {step_size}")
        if not (targets == "test" or _is_path_spec(targets) or targets.endswith(".json")):
            raise ValueError(f"targets must be 'test', 'path:N' (N > 0) or a cameras .json file, got {targets!r}")
        self.fixer_spec = fixer
        self.start_step = start_step
        self.fix_every_n_steps = fix_every_n_steps
        self.step_size = step_size
        self.targets = targets
        self.num_refs = num_refs
        self.fixed_view_weight = fixed_view_weight
        self.real_view_weight = real_view_weight
        self.alpha_threshold = alpha_threshold
        self.batch_size = batch_size
        self.post_render_fix = post_render_fix
        self.log_images = log_images
        # Loaded lazily on first use and never part of the scene checkpoint.
        self._fixer: nn.Module | None = None
        # Progressive state (saved in checkpoints through state_dict).
        self.novel_c2w: Tensor | None = None  # (M, 4, 4) current novel poses, one per target
        self.last_fix_step: int = -1
        self.num_fixes: int = 0

    # ------------------------------------------------------------------ fixer
    @property
    def fixer(self) -> nn.Module:
        if self._fixer is None:
            self._fixer = load_fixer(self.fixer_spec)
            self._fixer.eval().requires_grad_(False)
        return self._fixer

    @torch.no_grad()
    def fix_images(self, images: Tensor, cameras: Cameras, data: GrowsTrainingSet) -> tuple[Tensor, Tensor]:
        """Fix renders with the nearest training views as references.

        Args:
            images: (N, 3, H, W) renders in [0, 1].
            cameras: the N cameras they were rendered from.
            data: the datamodule holding the training views.

        Returns:
            fixed (N, 3, H, W) in [0, 1] and the references used, (N, K, 3, H, W).
        """
        refs = self.nearest_references(cameras, data, size=tuple(images.shape[-2:])).to(images.device)
        fixed = apply_fixer(self.fixer, images, refs if self.num_refs > 0 else None, self.batch_size)
        return fixed, refs

    def nearest_references(self, cameras: Cameras, data: GrowsTrainingSet, size: tuple[int, int]) -> Tensor:
        """The `num_refs` training images nearest to each camera (see `nearest_references`)."""
        return nearest_references(cameras, data.train_cameras, data.train_images, self.num_refs, size)

    def make_post_render_fixer(self, data: GrowsTrainingSet) -> Callable[[Tensor, Cameras], Tensor]:
        """A function (renders (N,3,H,W), cameras) -> fixed renders: the Difix3D+ final fix."""

        def post_render_fix(images: Tensor, cameras: Cameras) -> Tensor:
            return self.fix_images(images, cameras, data)[0]

        return post_render_fix

    # ------------------------------------------------------------------ targets and poses
    def target_cameras(self, data: GrowsTrainingSet) -> Cameras:
        if self.targets == "test":
            return data.target_cameras("test")
        if self.targets.startswith("path:"):
            n = int(self.targets.split(":", 1)[1])
            train = data.train_cameras
            c2w = interpolate_path(train.camera_to_world, n)
            idx = [0] * n
            return Cameras.from_c2w(c2w, train.K[idx], train.width[idx], train.height[idx], [f"path_{i:04d}" for i in range(n)])
        return read_cameras_json(self.targets)

    def advance_novel_cameras(self, train: Cameras, targets: Cameras, step: float) -> tuple[Cameras, Tensor]:
        """One progressive move: each target takes its nearest current novel pose and steps it.

        Returns:
            the new novel cameras (target intrinsics and sizes) and the distance each moved (M,).
        """
        current = self.novel_c2w if self.novel_c2w is not None else train.camera_to_world.cpu()
        target_c2w = targets.camera_to_world.cpu()
        nearest = pose_distance(current, target_c2w).argmin(dim=0)  # (M,)
        start = current[nearest]
        new_c2w, _ = step_pose_toward(start, target_c2w, step)
        moved = pose_distance(start, new_c2w).diagonal()
        self.novel_c2w = new_c2w
        names = [f"novel_{n}" for n in targets.names]
        return Cameras.from_c2w(new_c2w, targets.K.cpu(), targets.width.cpu(), targets.height.cpu(), names), moved

    # ------------------------------------------------------------------ hooks
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not isinstance(pl_module, RendersViews):
            raise TypeError(f"{type(pl_module).__name__} lacks render_views/scene_scale needed by ProgressiveFixCallback")
        data = trainer.datamodule
        if not isinstance(data, GrowsTrainingSet):
            raise TypeError(f"{type(data).__name__} lacks the fixed-view protocol needed by ProgressiveFixCallback")
        # Before step 1: a bad fixer or targets option must not cost the whole reconstruction.
        check_fixer(self.fixer_spec)
        try:
            targets = self.target_cameras(data)
        except (OSError, ValueError, KeyError) as err:
            raise ValueError(f"ProgressiveFixCallback: targets {self.targets!r} cannot be read: {err}") from err
        if len(targets) == 0:
            raise ValueError(f"ProgressiveFixCallback: targets {self.targets!r} gave no cameras")

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: object, batch_idx: int) -> None:
        step = trainer.global_step
        due = step >= self.start_step and (step - self.start_step) % self.fix_every_n_steps == 0
        if due and step != self.last_fix_step:
            self.run_fix(trainer, pl_module)

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self.post_render_fix:
            return
        if not isinstance(pl_module, AcceptsPostRenderFix):
            raise TypeError(f"{type(pl_module).__name__} lacks set_post_render_fix needed for post_render_fix=true")
        check_fixer(self.fixer_spec)
        pl_module.set_post_render_fix(self.make_post_render_fixer(trainer.datamodule))

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.post_render_fix and isinstance(pl_module, AcceptsPostRenderFix):
            pl_module.set_post_render_fix(None)

    # Difix3D+ predict videos (video_fixed.mp4, video_compare.mp4): the same hook as test.
    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.on_test_start(trainer, pl_module)

    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.on_test_end(trainer, pl_module)

    @torch.no_grad()
    def run_fix(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Move the novel cameras, render, fix, and replace the datamodule's fixed views."""
        data: GrowsTrainingSet = trainer.datamodule
        step = self.step_size * float(pl_module.scene_scale)
        targets = self.target_cameras(data)
        novel, moved = self.advance_novel_cameras(data.train_cameras, targets, step)

        m = len(novel)
        renders, alphas, fixed, refs = ([None] * m for _ in range(4))
        # Renders of one call share a size; captures with per-image sizes are grouped.
        sizes = torch.stack([novel.width, novel.height], dim=1)
        groups = [torch.nonzero((sizes == s).all(dim=1)).flatten() for s in sizes.unique(dim=0)]
        bar = tqdm(total=m, desc=f"difix fix {self.num_fixes + 1}", leave=False, disable=not trainer.is_global_zero)
        was_training = pl_module.training
        pl_module.eval()
        for group in groups:
            for chunk in group.split(self.batch_size):
                cams = novel[chunk].to(pl_module.device)
                rgb, alpha = pl_module.render_views(cams)
                where = f"novel view(s) {cams.names} at step {trainer.global_step}; nothing was added to training"
                if not bool(torch.isfinite(rgb).all()):
                    raise FloatingPointError(f"{type(pl_module).__name__} rendered NaN/Inf for {where}")
                try:
                    out, ref = self.fix_images(rgb, cams, data)
                except FixerOutputError as err:
                    raise FixerOutputError(f"{err} ({where})") from err
                for j, i in enumerate(chunk.tolist()):
                    renders[i], alphas[i], fixed[i], refs[i] = rgb[j].cpu(), alpha[j].cpu(), out[j].cpu(), ref[j, 0].cpu()
                bar.update(len(chunk))
        bar.close()
        pl_module.train(was_training)
        masks = [(a > self.alpha_threshold).float() for a in alphas]
        weights = torch.full((len(novel),), self.fixed_view_weight)
        data.set_fixed_views(fixed, novel, weights, masks, real_view_weight=self.real_view_weight)

        self.last_fix_step = trainer.global_step
        self.num_fixes += 1
        remaining = pose_distance(novel.camera_to_world, targets.camera_to_world.cpu()).diagonal()
        metrics = {
            "fix/num_views": float(len(novel)),
            "fix/mean_step_distance": float(moved.mean()),
            "fix/mean_target_distance": float(remaining.mean()),
            "fix/num_fixes": float(self.num_fixes),
        }
        if trainer.logger is not None:
            trainer.logger.log_metrics(metrics, step=trainer.global_step)
        self._log_grid(trainer, renders, fixed, refs)
        log.info("progressive fix %d at step %d: %s", self.num_fixes, trainer.global_step, metrics)

    def _log_grid(self, trainer: Trainer, renders: list[Tensor], fixed: list[Tensor], refs: list[Tensor]) -> None:
        """One row per fixed view: render | fixed | reference."""
        if self.log_images <= 0 or not renders:
            return
        tiles = [t for r, f, ref in list(zip(renders, fixed, refs))[: self.log_images] for t in (r, f, ref)]
        log_image(trainer.loggers, "fix/render_fixed_reference", tile_grid(tiles, columns=3), trainer.global_step)

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict:
        return {"novel_c2w": self.novel_c2w, "last_fix_step": self.last_fix_step, "num_fixes": self.num_fixes}

    def load_state_dict(self, state_dict: dict) -> None:
        self.novel_c2w = state_dict["novel_c2w"]
        self.last_fix_step = int(state_dict["last_fix_step"])
        self.num_fixes = int(state_dict["num_fixes"])


# Shared with the Difix3D+ post-render fix of predict videos and the live viewer
# (callbacks.post_render_fix): one reference search, one batched fixer call.
def nearest_references(
    cameras: Cameras, train_cameras: Cameras, train_images: list[Tensor], num_refs: int, size: tuple[int, int]
) -> Tensor:
    """The `num_refs` training images nearest to each camera (pose distance), resized.

    Args:
        cameras: N query cameras.
        train_cameras: the M training cameras.
        train_images: their M images, (3, h, w) in [0, 1] (sizes may differ).
        num_refs: references per camera.
        size: (H, W) the references are resized to.

    Returns:
        (N, K, 3, H, W) in [0, 1]; K = min(max(num_refs, 1), M) (slot 0 is still returned with
        num_refs = 0 so grids can show it).
    """
    if len(train_cameras) == 0:
        raise ValueError("nearest_references: no training views to take references from")
    k = min(max(num_refs, 1), len(train_cameras))
    idx = nearest_views(cameras.camera_to_world.cpu(), train_cameras.camera_to_world.cpu(), k)  # (N, K)
    # Each distinct reference image is resized once, then gathered per view.
    unique, inverse = idx.unique(return_inverse=True)
    resized = torch.stack([
        F.interpolate(train_images[j][None], size=size, mode="bilinear", antialias=True)[0]
        for j in unique.tolist()
    ])
    return resized[inverse]


@torch.no_grad()
def apply_fixer(fixer: nn.Module, images: Tensor, refs: Tensor | None, batch_size: int) -> Tensor:
    """Runs a Difix fixer over renders in batches, at the renders' size.

    Args:
        fixer: `DifixNet`-like: (B, 3, H, W), (B, K, 3, H, W) | None -> (B, 3, H', W').
        images: (N, 3, H, W) renders in [0, 1].
        refs: (N, K, 3, H, W) references or None (no reference).
        batch_size: renders per fixer call.

    Returns:
        (N, 3, H, W) fixed renders in [0, 1].
    """
    h, w = images.shape[-2:]
    out = []
    for i in range(0, len(images), batch_size):
        fixed = fixer(images[i : i + batch_size], None if refs is None else refs[i : i + batch_size])
        out.append(F.interpolate(fixed, size=(h, w), mode="bilinear", antialias=True) if fixed.shape[-2:] != (h, w) else fixed)
    return torch.cat(out).clamp(0, 1)
