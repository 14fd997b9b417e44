"""NerfSceneModule: a nerfacto-style NeRF as a scene module (same contract as the Gaussians).

Defaults follow nerfstudio's ``nerfacto`` method (``nerfstudio/configs/method_configs.py``
and ``nerfstudio/models/nerfacto.py``): 4,096 rays per step; Adam lr 1e-2, eps 1e-15, for
the field and the proposal networks, decaying exponentially to 1e-4 over 200k steps; RGB
MSE + interlevel (x1.0) + distortion (x0.002) losses; two proposal levels of 256 and 96
samples, 48 final samples; scene contraction; 32-d appearance codes (the mean code for
views without one). Simplifications: proposal networks are updated every step (nerfacto
skips some early on) and the background is the scene's (no "last sample" colour).

Each training step takes the datamodule's drawn view (a real one, or a fixed novel view
with its loss weight and alpha mask, so ProgressiveFixCallback trains a NeRF exactly as it
trains Gaussians) and samples ``num_rays`` of its pixels. Every random draw of a step comes
from a generator seeded by ``(seed, step)``, so a resumed run continues exactly.
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from datamodules.cameras.cameras import Cameras
from datamodules.scene.scene_setup import SceneSetup

from lightning_modules.options import check_learning_rates, check_number
from lightning_modules.scene.base import SceneModule
from lightning_modules.scene.evaluation import EvalSettings
from datamodules.cameras.cameras import look_at_center
from lightning_modules.scene.path_video import PathSettings
from lightning_modules.scene.nerf.field import FieldSettings, build_fields
from lightning_modules.scene.nerf.model import NerfModel, RayOutputs, SamplingSettings
from lightning_modules.scene.nerf.rendering import distortion_loss, interlevel_loss
from lightning_modules.scene.nerf.sampling import camera_rays

__all__ = ["NerfSceneModule"]



class NerfSceneModule(SceneModule):
    """A NeRF of one scene, trained on a ``SceneDataModule``.

    Args:
        field: sizes of the field and proposal fields (None: nerfacto's, `FieldSettings`).
        sampling: sample counts, near/far, annealing (None: nerfacto's).
        unbounded: contract space beyond the box (captured scenes); False samples inside the
            box only (objects on a background, e.g. NeRF-synthetic).
        bound: box half-size in units of the scene scale.
        center: box centre (normalised world); None: the point the training cameras look at
            (object captures), else the origin.
        num_rays: rays per training step (4096).
        eval_chunk: rays per forward pass when rendering whole views (memory stays flat).
        lr: Adam learning rate (1e-2).
        lr_final: learning rate at ``lr_decay_steps`` (1e-4).
        lr_decay_steps: exponential decay length (200k; None: the trainer's max_steps).
        interlevel_loss_mult: weight of the proposal loss (1.0).
        distortion_loss_mult: weight of the distortion loss (0.002).
        render_background, evaluation, predict, output_dir, rng_seed: see ``SceneModule``.
    """

    representation_name = "Nerfacto"
    RUNTIME_OPTIONS: ClassVar[frozenset[str]] = SceneModule.RUNTIME_OPTIONS | {"eval_chunk"}

    def __init__(
        self,
        field: FieldSettings | None = None,
        sampling: SamplingSettings | None = None,
        unbounded: bool = True,
        bound: float = 1.0,
        center: tuple[float, float, float] | None = None,
        num_rays: int = 4096,
        eval_chunk: int = 4096,
        lr: float = 1e-2,
        lr_final: float = 1e-4,
        lr_decay_steps: int | None = 200_000,
        interlevel_loss_mult: float = 1.0,
        distortion_loss_mult: float = 0.002,
        render_background: tuple[float, float, float] | None = None,
        evaluation: EvalSettings | None = None,
        predict: PathSettings | None = None,
        output_dir: str | None = None,
        rng_seed: int = 0,
    ) -> None:
        super().__init__(render_background, evaluation, predict, output_dir, rng_seed)
        self.save_hyperparameters()
        field = field or FieldSettings()
        sampling = sampling or SamplingSettings()
        if len(field.proposal_max_res) != len(sampling.num_proposal_samples):
            raise ValueError(
                f"NerfSceneModule: field.proposal_max_res {field.proposal_max_res} needs one entry per proposal "
                f"level of sampling.num_proposal_samples {sampling.num_proposal_samples}"
            )
        owner = "NerfSceneModule"
        check_number(owner, "bound", bound, above=0.0)
        for name, value in (("num_rays", num_rays), ("eval_chunk", eval_chunk)):
            check_number(owner, name, value, low=1, integer=True)
        check_number(owner, "lr_decay_steps", lr_decay_steps, low=1, integer=True, optional=True)
        check_learning_rates(owner, lr=lr, lr_final=lr_final)
        for name, value in (("interlevel_loss_mult", interlevel_loss_mult), ("distortion_loss_mult", distortion_loss_mult)):
            check_number(owner, name, value, low=0.0)
        self.model = NerfModel(*build_fields(field), sampling, unbounded)
        # The box the field lives in (normalised world): set from the scene, kept in checkpoints.
        self.register_buffer("box_center", torch.zeros(3))
        self.register_buffer("box_size", torch.ones(()))
        self._ready = False

    # ------------------------------------------------------------------ construction
    @property
    def is_initialised(self) -> bool:
        return self._ready

    def init_representation(self, setup: SceneSetup) -> None:
        h = self.hparams
        center = h.center if h.center is not None else look_at_center(setup.train_cameras, setup.scene_scale)
        self.box_center.copy_(torch.tensor(center, dtype=torch.float32))
        self.box_size.fill_(h.bound * setup.scene_scale)
        self.model.field.set_num_images(len(setup.train_cameras))
        self.model.field.to(self.box_center.device)
        self._ready = True

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        codes = checkpoint["state_dict"].get("model.field.appearance.weight")
        if codes is not None and (self.model.field.appearance is None or self.model.field.appearance.num_embeddings != codes.shape[0]):
            self.model.field.set_num_images(codes.shape[0])  # sized before load_state_dict runs
        self._ready = True

    def configure_optimizers(self) -> dict[str, Any]:
        """One Adam over the field and proposal networks, exponential decay to ``lr_final``."""
        h = self.hparams
        opt = torch.optim.Adam([
            {"params": self.model.field.parameters(), "name": "field"},
            {"params": self.model.proposals.parameters(), "name": "proposals"},
        ], lr=h.lr, eps=1e-15)
        steps = h.lr_decay_steps
        if steps is None:
            steps = self.trainer.max_steps if self._trainer is not None and self.trainer.max_steps > 0 else 30_000
        ratio = h.lr_final / h.lr
        scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: ratio ** min(s / max(steps, 1), 1.0))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_fit_start(self) -> None:
        self.require_ready()

    # ------------------------------------------------------------------ rays
    def _rays(self, cameras: Cameras, pixels: Tensor, view: Tensor) -> tuple[Tensor, Tensor]:
        """Rays of pixels (R, 2) of ``cameras[view]`` in box units: origins (R, 3), dirs (R, 3)."""
        origins, dirs = camera_rays(cameras, pixels, view)
        return (origins - self.box_center) / self.box_size, dirs

    def _forward(self, origins: Tensor, dirs: Tensor, view_index: Tensor, background: Tensor, step: int,
                 generator: torch.Generator | None) -> RayOutputs:
        codes = self.model.field.appearance_codes(view_index)
        return self.model(origins, dirs, codes, background, step, generator)

    @torch.no_grad()
    def render_views(self, cameras: Cameras) -> tuple[Tensor, Tensor]:
        """``SceneModule.render_views``: in chunks of ``eval_chunk`` rays (memory flat at any size)."""
        cameras = cameras.to(self.device)
        w, h = cameras.common_size("render_views")
        bg = self.background_tensor(1)[0]
        rgbs, alphas = [], []
        for c in range(len(cameras)):
            rgb = torch.empty(h * w, 3, device=self.device)
            acc = torch.empty(h * w, 1, device=self.device)
            for start in range(0, h * w, self.hparams.eval_chunk):
                idx = torch.arange(start, min(start + self.hparams.eval_chunk, h * w), device=self.device)
                pixels = torch.stack([idx % w, idx // w], dim=-1).float()
                view = torch.full_like(idx, c)
                origins, dirs = self._rays(cameras, pixels, view)
                out = self._forward(origins, dirs, torch.full_like(idx, -1), bg, self.trained_steps, None)
                rgb[idx], acc[idx] = out.rgb, out.acc
            rgbs.append(rgb.T.reshape(3, h, w).clamp(0, 1))
            alphas.append(acc.T.reshape(1, h, w))
        return torch.stack(rgbs), torch.stack(alphas)

    # ------------------------------------------------------------------ training
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        step = self.global_step
        gen = torch.Generator().manual_seed(self.step_seed(step))
        occupancy = self.model.occupancy
        if occupancy.due(step):  # its own step-seeded draws: a resumed run updates it the same
            occupancy.update(self.model.density_at, torch.Generator().manual_seed(self.step_seed(step) + 1))
        cameras: Cameras = batch["camera"].to(self.device)
        image = batch["image"].to(self.device)  # (B, 3, H, W)
        b, _, h, w = image.shape
        mask = batch.get("mask")
        mask = torch.ones_like(image[:, :1]) if mask is None else mask.to(image)
        weight = batch.get("weight")
        weight = torch.ones(b, device=self.device) if weight is None else weight.to(image).reshape(b)
        view_index = batch.get("view_index")
        view_index = torch.full((b,), -1, dtype=torch.long) if view_index is None else view_index

        r = self.hparams.num_rays
        view = torch.randint(0, b, (r,), generator=gen)
        flat = torch.randint(0, h * w, (r,), generator=gen)
        py, px = flat // w, flat % w
        pixels = torch.stack([px, py], dim=-1).float().to(self.device)
        view, py, px = view.to(self.device), py.to(self.device), px.to(self.device)
        origins, dirs = self._rays(cameras, pixels, view)
        out = self._forward(origins, dirs, view_index.to(self.device)[view], self.background_tensor(1)[0], step, gen)

        target = image[view, :, py, px]  # (R, 3)
        m = mask[view, 0, py, px]  # (R,)
        ray_w = weight[view]  # (R,) per-view loss weights
        sq = ((out.rgb - target) ** 2).mean(dim=-1)
        rgb_loss = (ray_w * m * sq).sum() / m.sum().clamp_min(1.0)
        scale = (ray_w * m).sum() / m.sum().clamp_min(1.0)  # zero-weight views train nothing
        inter = interlevel_loss(out.weights, out.spacing, out.proposals)
        dist = distortion_loss(out.weights, out.spacing)
        loss = rgb_loss + scale * (self.hparams.interlevel_loss_mult * inter + self.hparams.distortion_loss_mult * dist)
        if not loss.requires_grad:  # every ray crossed empty space only: a zero step, not an error
            loss = loss + 0.0 * self.model.field.encoding.table.sum()

        if self.logs_step(step):
            with torch.no_grad():
                mse = (m * sq).sum() / m.sum().clamp_min(1.0)
                psnr = -10 * torch.log10(mse.clamp_min(1e-10))
            self.log("train/loss", loss.detach(), prog_bar=True, batch_size=b)
            self.log("train/rgb_mse", mse, batch_size=b)
            self.log("train/interlevel", inter.detach(), batch_size=b)
            self.log("train/distortion", dist.detach(), batch_size=b)
            self.log("train/psnr", psnr, prog_bar=True, batch_size=b)
            if occupancy.active:
                self.log("train/occupied", occupancy.occupied.float().mean(), batch_size=b)
        return loss
