"""Difix3D progressive 3D update and the Difix3D+ post-render fix, as one Lightning callback.

Every `fix_every_n_steps` steps the callback moves a set of novel cameras from the training
poses toward the target poses, renders them, fixes each render with Difix (nearest training
views as references) and hands the fixed images to the datamodule as fixed training views.
At test time it gives the scene module a post-render fixer, so `main.py test` reports
metrics with and without the final fix.
"""
from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor
from tqdm.auto import tqdm

from callbacks.post_render_fix import NearestViewFix, training_views
from datamodules.cameras.camera_json import read_cameras_json
from datamodules.cameras.cameras import Cameras
from datamodules.cameras.poses import interpolate_path, pose_distance, step_pose_toward
from lightning_modules.difix.fixers.errors import FixerError
from lightning_modules.difix.fixers.ready import ReadyFixer
from lightning_modules.difix.fixers.spec import FixerSpec
from lightning_modules.image_grids import log_image, tile_grid
from lightning_modules.scene.contracts import AcceptsPostRenderFix, GrowsTrainingSet, RendersViews

log = logging.getLogger(__name__)


def _is_path_spec(targets: str) -> bool:
    n = targets.split(":", 1)[1] if targets.startswith("path:") else ""
    return n.isdigit() and int(n) > 0


class ProgressiveFixCallback(Callback):
    """Progressively distils Difix fixes into a scene model (Difix3D) and fixes final renders (Difix3D+).

    Args:
        fixer: the fixer: a name (a published model "nvidia/difix_ref" / "nvidia/difix" or a
            local folder of one, a reference `model_*.pkl`, a DifixModule checkpoint `.ckpt`,
            exported fixer weights, an SD-Turbo hub name or folder (untrained), a TorchScript
            fixer, "tiny[:SEED]", "identity": `lightning_modules/difix/fixers/sources.py`) or a
            `FixerSpec` with how it runs (size, dtype, device, latent). Held as one `ReadyFixer`
            (`self.fixer`), loaded at the first fix; a viewer beside training is handed the same.
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
        self.fixer = ReadyFixer(fixer, batch_size=batch_size)
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
        # Progressive state (saved in checkpoints through state_dict).
        self.novel_c2w: Tensor | None = None  # (M, 4, 4) current novel poses, one per target
        self.last_fix_step: int = -1
        self.num_fixes: int = 0

    # ------------------------------------------------------------------ the post-render fix
    def post_render_fixer(self, data: GrowsTrainingSet) -> NearestViewFix:
        """The Difix3D+ final fix: renders + cameras -> fixed renders, with this callback's fixer."""
        return NearestViewFix(self.fixer, training_views(data), self.num_refs)

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
        self.fixer.check()
        if self.fixer.needs_trial:  # code we cannot inspect (TorchScript): one tiny call where it will run
            self.fixer.try_once(pl_module.device)
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
        self.fixer.check()
        pl_module.set_post_render_fix(self.post_render_fixer(trainer.datamodule))

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
        views = training_views(data)
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
                    out, ref = self.fixer.fix_views(rgb, cams, views, self.num_refs)
                except FixerError as err:
                    raise type(err)(f"{err} ({where})") from err
                for j, i in enumerate(chunk.tolist()):
                    renders[i], alphas[i], fixed[i], refs[i] = rgb[j].cpu(), alpha[j].cpu(), out[j].cpu(), int(ref[j, 0])
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
        self._log_grid(trainer, renders, fixed, [views.images[i] for i in refs])
        log.info("progressive fix %d at step %d: %s", self.num_fixes, trainer.global_step, metrics)

    def _log_grid(self, trainer: Trainer, renders: list[Tensor], fixed: list[Tensor], refs: list[Tensor]) -> None:
        """One row per fixed view: render | fixed | nearest reference (shown at the render's size)."""
        if self.log_images <= 0 or not renders:
            return
        rows = list(zip(renders, fixed, refs))[: self.log_images]
        tiles = [t for r, f, ref in rows for t in (r, f, F.interpolate(ref[None], size=r.shape[-2:], mode="bilinear",
                                                                       antialias=True)[0])]
        log_image(trainer.loggers, "fix/render_fixed_reference", tile_grid(tiles, columns=3), trainer.global_step)

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict:
        return {"novel_c2w": self.novel_c2w, "last_fix_step": self.last_fix_step, "num_fixes": self.num_fixes}

    def load_state_dict(self, state_dict: dict) -> None:
        self.novel_c2w = state_dict["novel_c2w"]
        self.last_fix_step = int(state_dict["last_fix_step"])
        self.num_fixes = int(state_dict["num_fixes"])
