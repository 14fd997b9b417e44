"""GaussianSceneModule: 3D Gaussian Splatting as a LightningModule (gsplat conventions).

Training follows gsplat's ``examples/simple_trainer.py``: one Adam per parameter (gsplat's
strategies need it, so optimisation is manual), means learning rate scaled by the scene
scale with an exponential decay to ``means_lr_final_factor`` over training, SH degree
raised every ``sh_degree_interval`` steps, densification by gsplat's ``DefaultStrategy``
(opacity reset fixed, see ``strategy.py``) or ``MCMCStrategy``. The loss is Difix3D's /
3DGS's ``0.8 L1 + 0.2 (1 - SSIM)``, with per-view weights and masks from the batch (fixed
novel views are weighted and masked by the progressive-fix callback).

Resuming is exact: the Gaussians are re-created at the checkpoint's size before the state
dict loads (``Gaussians._load_from_state_dict``), so Lightning's later optimizer restore
finds matching shapes; the strategy state rides in the checkpoint; every random draw of a
step (random background, split noise, MCMC noise) comes from a generator seeded by
``(seed, step)``, so it does not depend on what ran before.

Protocol for callbacks: ``render_views(cameras) -> (rgb, alpha)`` and ``scene_scale``.
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any, Callable, ClassVar, Literal

import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_warn
import torch
from torch import Tensor

from datamodules.cameras import Cameras

from .fid import build_fid
from .gaussians import SPLAT_NAMES, Gaussians
from .losses import photometric_loss
from .metrics import ImageMetrics, summarise, write_json_atomic
from .ply import read_ply, write_ply
from .rasterize import render
from .strategy import DefaultStrategy, MCMCStrategy

__all__ = ["GaussianSceneModule"]


class GaussianSceneModule(pl.LightningModule):
    """3D Gaussian Splatting of one scene, trained on a ``SceneDataModule``.

    Args:
        sh_degree: maximum spherical-harmonic degree (gsplat: 3).
        sh_degree_interval: the SH degree in use grows by one every this many steps.
        init_type: "points" (the datamodule's sparse points, e.g. COLMAP) or "random" (uniform
            in a cube of half-size ``init_extent * scene_scale``). "points" falls back to
            "random" with a warning when the scene has no points (Blender scenes).
        init_num_points: number of Gaussians for random init.
        init_extent: random-init cube half-size in units of the scene scale.
        init_center: random-init cube centre (normalised world); None: the point the training
            cameras look at (least squares over their optical axes) when they converge, such as
            object captures, else the origin (the mean camera centre).
        init_opacity: initial opacity (gsplat: 0.1; 0.5 for MCMC).
        init_scale: multiplier on the initial (nearest-neighbour) scales (gsplat: 1.0; 0.1 MCMC).
        max_init_points: randomly keep at most this many init points (None: all).
        global_scale: extra factor on the scene scale (gsplat's ``global_scale``).
        means_lr: means learning rate per unit scene scale (gsplat: 1.6e-4).
        means_lr_final_factor: the means lr decays exponentially to this fraction.
        scales_lr: log-scale learning rate.
        quats_lr: quaternion learning rate.
        opacities_lr: opacity-logit learning rate.
        sh0_lr: degree-0 SH learning rate.
        shN_lr: higher SH learning rate (gsplat: sh0_lr / 20).
        lr_decay_steps: steps of the means lr decay (None: the trainer's max_steps).
        strategy: densification: "default" (3DGS) or "mcmc".
        refine_start_iter: densification starts after this step.
        refine_stop_iter: densification (and opacity reset) stops at this step.
        refine_every: densify every this many steps.
        reset_every: reset opacities every this many steps ("default" only).
        pause_refine_after_reset: skip refinement this many steps after a reset.
        grow_grad2d: image-plane gradient threshold for growing.
        grow_scale3d: 3D scale (/ scene scale) separating duplicate from split.
        grow_scale2d: 2D scale threshold for splitting (used while < refine_scale2d_stop_iter).
        prune_opa: opacity below which Gaussians are pruned.
        prune_scale3d: 3D scale (/ scene scale) above which Gaussians are pruned.
        prune_scale2d: 2D scale above which Gaussians are pruned (see refine_scale2d_stop_iter).
        refine_scale2d_stop_iter: use 2D-scale rules until this step (0: never, as gsplat).
        revised_opacity: revised split opacity (arXiv:2404.06109).
        cap_max: MCMC: maximum number of Gaussians.
        mcmc_noise_lr: MCMC: position-noise scale.
        mcmc_min_opacity: MCMC: Gaussians below this opacity are relocated.
        opacity_reg: weight of mean opacity (gsplat MCMC preset: 0.01).
        scale_reg: weight of mean scale (gsplat MCMC preset: 0.01).
        ssim_lambda: weight of (1 - SSIM) in the photometric loss.
        render_background: RGB the renders are composited on; None: the datamodule's
            ``background`` when its scene is RGBA (composited there, e.g. white for
            NeRF-synthetic), else black. (Named apart from the datamodule's ``background``:
            Lightning refuses equal hparam names with different values.)
        random_background: composite training renders on a random colour each step
            (simple_trainer's ``random_bkgd``), which discourages transparent Gaussians;
            evaluation uses the fixed background.
        backend: rasterizer backend: "auto" (gsplat on CUDA, torch on CPU), "gsplat", "torch".
        near_plane: near clipping distance.
        far_plane: far clipping distance.
        eps2d: 2D low-pass added to projected covariances.
        lpips_net: LPIPS backbone for validation/test ("alex" or "vgg").
        pretrained_metrics: compute LPIPS when its backbone file is on disk (else skipped with
            a warning); False never computes LPIPS.
        compute_fid: FID over the test views (torchmetrics) when its Inception weights are on
            disk; otherwise skipped with one warning (``lightning_modules.scene.fid``).
        num_log_images: render | ground-truth grids logged to TensorBoard per evaluation.
        predict_path: JSON of cameras (``datamodules.camera_json`` layout, normalised world)
            that ``predict`` renders as a video; None interpolates through the training poses.
        predict_frames: frames of the interpolated path (0: no path, only the datamodule's
            predict views).
        predict_fps: frame rate of the predicted video.
        output_dir: where metrics.json (test), metrics_val.json, point_cloud.ply and predictions
            go (None: the trainer's log_dir). With `--ckpt_path` the value given to this run wins
            over the checkpoint's (RUNTIME_OPTIONS).
        rng_seed: seed of the per-step random draws (init, random background, densification).
    """

    # Options that do not change the trained scene: with `--ckpt_path` the command line's
    # value wins over the checkpoint's (main.py's DifixCLI).
    RUNTIME_OPTIONS: ClassVar[frozenset[str]] = frozenset({
        "output_dir", "num_log_images", "predict_path", "predict_frames", "predict_fps", "lpips_net",
        "pretrained_metrics", "compute_fid", "backend", "render_background", "near_plane", "far_plane",
    })  # fmt: skip

    def __init__(
        self,
        sh_degree: int = 3,
        sh_degree_interval: int = 1000,
        init_type: Literal["points", "random"] = "points",
        init_num_points: int = 100_000,
        init_extent: float = 3.0,
        init_center: tuple[float, float, float] | None = None,
        init_opacity: float = 0.1,
        init_scale: float = 1.0,
        max_init_points: int | None = None,
        global_scale: float = 1.0,
        means_lr: float = 1.6e-4,
        means_lr_final_factor: float = 0.01,
        scales_lr: float = 5e-3,
        quats_lr: float = 1e-3,
        opacities_lr: float = 5e-2,
        sh0_lr: float = 2.5e-3,
        shN_lr: float = 2.5e-3 / 20,
        lr_decay_steps: int | None = None,
        strategy: Literal["default", "mcmc"] = "default",
        refine_start_iter: int = 500,
        refine_stop_iter: int = 15_000,
        refine_every: int = 100,
        reset_every: int = 3000,
        pause_refine_after_reset: int = 0,
        grow_grad2d: float = 2e-4,
        grow_scale3d: float = 0.01,
        grow_scale2d: float = 0.05,
        prune_opa: float = 0.005,
        prune_scale3d: float = 0.1,
        prune_scale2d: float = 0.15,
        refine_scale2d_stop_iter: int = 0,
        revised_opacity: bool = False,
        cap_max: int = 1_000_000,
        mcmc_noise_lr: float = 5e5,
        mcmc_min_opacity: float = 0.005,
        opacity_reg: float = 0.0,
        scale_reg: float = 0.0,
        ssim_lambda: float = 0.2,
        render_background: tuple[float, float, float] | None = None,
        random_background: bool = False,
        backend: Literal["auto", "gsplat", "torch"] = "auto",
        near_plane: float = 0.01,
        far_plane: float = 1e10,
        eps2d: float = 0.3,
        lpips_net: Literal["alex", "vgg"] = "alex",
        pretrained_metrics: bool = True,
        compute_fid: bool = True,
        num_log_images: int = 4,
        predict_path: str | None = None,
        predict_frames: int = 60,
        predict_fps: int = 30,
        output_dir: str | None = None,
        rng_seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        if render_background is not None and len(render_background) != 3:
            raise ValueError(f"render_background must be 3 values (RGB), got {render_background}")
        self.background: tuple[float, float, float] = tuple(render_background or (0.0, 0.0, 0.0))  # type: ignore[assignment]
        # Empty until configure_model() (or a checkpoint) gives the Gaussians their size.
        self.gaussians = Gaussians(0, sh_degree)
        self.scene_scale: float = 1.0
        self.strategy = self._build_strategy()
        self.strategy_state: dict[str, Any] | None = None
        self.data_transform: Tensor | None = None  # normalised = T @ original (for .ply export)
        # Not registered as submodules: metric networks must stay out of checkpoints.
        self._aux: dict[str, Any] = {"metrics": None, "records": []}
        # Difix3D+ hook (callbacks.protocols.AcceptsPostRenderFix), set through
        # set_post_render_fix by ProgressiveFixCallback during `test`: test then also
        # reports <metric>_fixed.
        self.post_render_fixer: Callable[[Tensor, Cameras], Tensor] | None = None

    def set_post_render_fix(self, fix: Callable[[Tensor, Cameras], Tensor] | None) -> None:
        """(rgb (N, 3, H, W) in [0, 1], cameras) -> fixed rgb for test renders; None removes it."""
        self.post_render_fixer = fix

    # ------------------------------------------------------------------ construction
    def _build_strategy(self) -> DefaultStrategy | MCMCStrategy:
        h = self.hparams
        if h.strategy == "default":
            return DefaultStrategy(
                prune_opa=h.prune_opa,
                grow_grad2d=h.grow_grad2d,
                grow_scale3d=h.grow_scale3d,
                grow_scale2d=h.grow_scale2d,
                prune_scale3d=h.prune_scale3d,
                prune_scale2d=h.prune_scale2d,
                refine_scale2d_stop_iter=h.refine_scale2d_stop_iter,
                refine_start_iter=h.refine_start_iter,
                refine_stop_iter=h.refine_stop_iter,
                reset_every=h.reset_every,
                refine_every=h.refine_every,
                pause_refine_after_reset=h.pause_refine_after_reset,
                revised_opacity=h.revised_opacity,
            )
        if h.strategy == "mcmc":
            return MCMCStrategy(
                cap_max=h.cap_max,
                noise_lr=h.mcmc_noise_lr,
                refine_start_iter=h.refine_start_iter,
                refine_stop_iter=h.refine_stop_iter,
                refine_every=h.refine_every,
                min_opacity=h.mcmc_min_opacity,
            )
        raise ValueError(f"strategy must be 'default' or 'mcmc', got {h.strategy!r}")

    def _init_strategy_state(self) -> dict[str, Any]:
        if isinstance(self.strategy, DefaultStrategy):
            return self.strategy.initialize_state(scene_scale=self.scene_scale)
        return self.strategy.initialize_state()

    def configure_model(self) -> None:
        """Creates the Gaussians from the datamodule (points or random) unless already sized.

        Runs before Lightning restores a checkpoint, which then resizes them (see module doc).
        """
        dm = self.trainer.datamodule if self._trainer is not None else None
        if dm is not None:
            # SceneDataModule.scene_scale is simple_trainer's (1.1 x the camera radius).
            self.scene_scale = float(getattr(dm, "scene_scale", 1.0)) * self.hparams.global_scale
            transform = getattr(dm, "transform", None)
            if transform is None:  # SceneDataModule keeps it on its SceneData
                transform = getattr(getattr(dm, "scene", None), "transform", None)
            if transform is not None:
                self.data_transform = torch.as_tensor(transform, dtype=torch.float64).cpu()
            if self.hparams.render_background is None:
                scene = getattr(dm, "scene", None)
                if getattr(scene, "alpha_background", False) and getattr(dm, "background", None) is not None:
                    self.background = tuple(float(c) for c in dm.background)  # type: ignore[assignment]
        # Without a datamodule (load_from_checkpoint calls this too) the checkpoint sizes them.
        if len(self.gaussians) == 0 and dm is not None:
            self._init_gaussians(dm)
        if self.strategy_state is None:
            self.strategy_state = self._init_strategy_state()

    def _init_gaussians(self, dm: Any) -> None:
        h = self.hparams
        gen = torch.Generator().manual_seed(h.rng_seed)
        points = getattr(dm, "points", None)
        colors = getattr(dm, "point_colors", None)
        init_type = h.init_type
        if init_type == "points" and (points is None or len(points) == 0):
            warnings.warn(
                "init_type='points' but the scene has no sparse points: initialising "
                f"{h.init_num_points} random Gaussians instead (set init_type: random to silence this)",
                stacklevel=2,
            )
            init_type = "random"
        if init_type == "points":
            points = torch.as_tensor(points, dtype=torch.float32).cpu()
            colors = None if colors is None else torch.as_tensor(colors, dtype=torch.float32).cpu()
            if h.max_init_points is not None and len(points) > h.max_init_points:
                keep = torch.randperm(len(points), generator=gen)[: h.max_init_points]
                points = points[keep]
                colors = None if colors is None else colors[keep]
            g = Gaussians.from_points(points, colors, h.sh_degree, h.init_opacity, h.init_scale, gen)
        else:
            center = h.init_center
            if center is None:
                center = look_at_center(getattr(dm, "train_cameras", None), self.scene_scale)
            g = Gaussians.random(
                h.init_num_points,
                h.init_extent * self.scene_scale,
                center=tuple(float(c) for c in center),
                sh_degree=h.sh_degree,
                init_opacity=h.init_opacity,
                init_scale=h.init_scale,
                generator=gen,
            )
        self.gaussians.set_splats(g.raw())
        self.gaussians.to(self.device)

    def configure_optimizers(self) -> tuple[list[torch.optim.Optimizer], list[dict[str, Any]]]:
        """One Adam per parameter (order: ``SPLAT_NAMES``) and the means lr decay."""
        h = self.hparams
        lrs = {
            "means": h.means_lr * self.scene_scale,
            "scales": h.scales_lr,
            "quats": h.quats_lr,
            "opacities": h.opacities_lr,
            "sh0": h.sh0_lr,
            "shN": h.shN_lr,
        }
        optimizers = [
            torch.optim.Adam([{"params": self.gaussians.splats[name], "lr": lrs[name], "name": name}], eps=1e-15)
            for name in SPLAT_NAMES
        ]
        steps = h.lr_decay_steps
        if steps is None:
            steps = self.trainer.max_steps if self._trainer is not None and self.trainer.max_steps > 0 else 30_000
        gamma = h.means_lr_final_factor ** (1.0 / max(int(steps), 1))
        scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizers[0], gamma=gamma)
        return optimizers, [{"scheduler": scheduler, "interval": "step"}]

    @property
    def optimizer_dict(self) -> dict[str, torch.optim.Optimizer]:
        """The raw optimizers by parameter name (what gsplat's strategies take)."""
        return dict(zip(SPLAT_NAMES, self.trainer.optimizers))

    def _require_gaussians(self) -> None:
        if len(self.gaussians) == 0:
            raise RuntimeError(
                "GaussianSceneModule has no Gaussians: give it a datamodule with points / scene_scale "
                "(SceneDataModule) or a checkpoint (--ckpt_path) to load them from"
            )

    def on_fit_start(self) -> None:
        self._require_gaussians()
        self.strategy.check_sanity(self.gaussians.splats, self.optimizer_dict)

    # ------------------------------------------------------------------ rendering
    def _background(self, n: int, step: int | None) -> Tensor:
        bg = torch.tensor(self.background, dtype=torch.float32, device=self.device).expand(n, 3)
        if step is not None and self.hparams.random_background:
            gen = torch.Generator().manual_seed(self._step_seed(step) + 1)
            bg = torch.rand(n, 3, generator=gen).to(self.device)
        return bg.contiguous()

    def _render(self, cameras: Cameras, sh_degree: int, backgrounds: Tensor | None) -> tuple[Tensor, Tensor, dict]:
        """Renders same-size cameras: (C, 3, H, W) colours, (C, 1, H, W) alphas, gsplat info."""
        if len(cameras) == 0:
            raise ValueError("render: no cameras")
        w, h = int(cameras.width[0]), int(cameras.height[0])
        if bool((cameras.width != w).any()) or bool((cameras.height != h).any()):
            raise ValueError("render: cameras of one call must share one image size")
        a = self.gaussians.activated()
        colors, alphas, info = render(
            a["means"],
            a["quats"],
            a["scales"],
            a["opacities"],
            a["colors"],
            cameras.world_to_camera.to(self.device),
            cameras.K.to(self.device),
            w,
            h,
            sh_degree=sh_degree,
            near_plane=self.hparams.near_plane,
            far_plane=self.hparams.far_plane,
            backgrounds=backgrounds,
            render_mode="RGB",
            backend=self.hparams.backend,
            eps2d=self.hparams.eps2d,
        )
        return colors.permute(0, 3, 1, 2), alphas.permute(0, 3, 1, 2), info

    @torch.no_grad()
    def render_views(self, cameras: Cameras) -> tuple[Tensor, Tensor]:
        """Renders cameras one by one (sizes may differ) with the full SH degree.

        Args:
            cameras: N cameras in the normalised world.

        Returns:
            rgb: (N, 3, H, W) in [0, 1]; alpha: (N, 1, H, W). Needs equal sizes to stack; for
            mixed sizes call it per size.
        """
        rgbs, alphas = [], []
        for i in range(len(cameras)):  # one camera per call keeps peak memory low on CPU
            rgb, alpha, _ = self._render(cameras[i], self.gaussians.sh_degree, self._background(1, None))
            rgbs.append(rgb.clamp(0, 1))
            alphas.append(alpha)
        return torch.cat(rgbs), torch.cat(alphas)

    # ------------------------------------------------------------------ training
    def _step_seed(self, step: int) -> int:
        return (self.hparams.rng_seed * 1_000_003 + step * 7919) % (2**62)

    def current_sh_degree(self, step: int) -> int:
        return min(step // max(self.hparams.sh_degree_interval, 1), self.gaussians.sh_degree)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        step = self.global_step
        if self.strategy_state is None:
            self.strategy_state = self._init_strategy_state()
        self._state_to_device()
        cameras: Cameras = batch["camera"].to(self.device)
        image = batch["image"].to(self.device)
        mask = batch.get("mask")
        weight = batch.get("weight")
        n = image.shape[0]

        rgb, alpha, info = self._render(cameras, self.current_sh_degree(step), self._background(n, step))
        if isinstance(self.strategy, DefaultStrategy):
            self.strategy.step_pre_backward(self.gaussians.splats, self.optimizer_dict, self.strategy_state, step, info)
        losses = photometric_loss(rgb, image, mask, weight, self.hparams.ssim_lambda)
        loss = losses["loss"]
        if self.hparams.opacity_reg > 0:
            loss = loss + self.hparams.opacity_reg * self.gaussians.opacities.mean()
        if self.hparams.scale_reg > 0:
            loss = loss + self.hparams.scale_reg * self.gaussians.scales.mean()
        self.manual_backward(loss)

        # Only the first optimizer steps through Lightning: each LightningOptimizer.step
        # advances global_step, which must count training steps, not parameter groups.
        lightning_opts = self.optimizers()
        lightning_opts[0].step()
        for opt in self.trainer.optimizers[1:]:
            opt.step()
        for opt in self.trainer.optimizers:
            opt.zero_grad(set_to_none=True)
        self.lr_schedulers().step()

        # Densification after the optimizer step, as simple_trainer; its random draws come
        # from a step-seeded RNG so that a resumed run draws exactly the same.
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self._step_seed(step))
            if isinstance(self.strategy, DefaultStrategy):
                self.strategy.step_post_backward(
                    self.gaussians.splats, self.optimizer_dict, self.strategy_state, step, info, packed=False
                )
            else:
                lr = self.trainer.optimizers[0].param_groups[0]["lr"]
                self.strategy.step_post_backward(
                    self.gaussians.splats, self.optimizer_dict, self.strategy_state, step, info, lr=lr
                )

        with torch.no_grad():
            m = torch.ones_like(image[:, :1]) if mask is None else mask.to(image)
            mse = ((rgb.detach().clamp(0, 1) - image) ** 2 * m).sum() / (m.sum() * 3).clamp_min(1e-8)
            psnr = -10 * torch.log10(mse.clamp_min(1e-10))
        self.log("train/loss", loss.detach(), prog_bar=True, batch_size=n)
        self.log("train/l1", losses["l1"], batch_size=n)
        self.log("train/ssim", losses["ssim"], batch_size=n)
        self.log("train/psnr", psnr, prog_bar=True, batch_size=n)
        self.log("train/num_gaussians", float(len(self.gaussians)), prog_bar=True, batch_size=n)
        self.log("train/sh_degree", float(self.current_sh_degree(step)), batch_size=n)
        return loss.detach()

    def _state_to_device(self) -> None:
        for k, v in (self.strategy_state or {}).items():
            if isinstance(v, Tensor) and v.device != self.device:
                self.strategy_state[k] = v.to(self.device)

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = {k: (v.detach().cpu() if isinstance(v, Tensor) else v) for k, v in (self.strategy_state or {}).items()}
        checkpoint["gaussian_scene"] = {
            "strategy_state": state,
            "strategy": self.hparams.strategy,
            "scene_scale": self.scene_scale,
            "data_transform": self.data_transform,
            "background": list(self.background),
            "num_gaussians": len(self.gaussians),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        extra = checkpoint.get("gaussian_scene")
        if extra is None:
            raise KeyError("checkpoint has no 'gaussian_scene' entry: it was not written by GaussianSceneModule")
        if extra.get("strategy") != self.hparams.strategy:
            raise ValueError(
                f"checkpoint was trained with strategy={extra.get('strategy')!r}, this module uses "
                f"{self.hparams.strategy!r}"
            )
        self.scene_scale = float(extra["scene_scale"])
        self._ckpt_step = int(checkpoint.get("global_step", 0))
        self.strategy_state = dict(extra["strategy_state"])
        if extra.get("background") is not None:
            self.background = tuple(float(c) for c in extra["background"])  # type: ignore[assignment]
        if extra.get("data_transform") is not None:
            self.data_transform = torch.as_tensor(extra["data_transform"], dtype=torch.float64)
        # The Gaussians resize themselves in load_state_dict (Gaussians._load_from_state_dict).

    # ------------------------------------------------------------------ evaluation
    def _metrics(self) -> ImageMetrics:
        if self._aux["metrics"] is None:
            self._aux["metrics"] = ImageMetrics(self.hparams.lpips_net, self.hparams.pretrained_metrics)
        return self._aux["metrics"].to(self.device)

    def on_validation_epoch_start(self) -> None:
        self._require_gaussians()
        self._aux["records"] = []

    def on_test_epoch_start(self) -> None:
        self._require_gaussians()
        self._aux["records"] = []
        # FID over all test views (plain and, with a post-render fixer, fixed); None offline.
        plain = build_fid() if self.hparams.compute_fid else None
        fixed = build_fid() if plain is not None and self.post_render_fixer is not None else None
        self._aux["fid"] = None if plain is None else {
            "plain": plain.to(self.device), "fixed": None if fixed is None else fixed.to(self.device)}

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "test")

    @torch.no_grad()
    def _eval_step(self, batch: dict[str, Any], batch_idx: int, stage: str) -> None:
        cameras: Cameras = batch["camera"].to(self.device)
        image = batch["image"].to(self.device)
        rgb, _, _ = self._render(cameras, self.gaussians.sh_degree, self._background(len(cameras), None))
        rgb = rgb.clamp(0, 1)
        metrics = self._metrics()
        values = metrics(rgb, image)
        panels = [rgb]
        fixed = None
        if stage == "test" and self.post_render_fixer is not None:
            fixed = self.post_render_fixer(rgb, cameras).clamp(0, 1)
            values.update({f"{k}_fixed": v for k, v in metrics(fixed, image).items()})
            panels.append(fixed)
        fid = self._aux.get("fid") if stage == "test" else None
        if fid is not None:
            for name, pred in (("plain", rgb), ("fixed", fixed)):
                if fid[name] is not None and pred is not None:
                    fid[name].update(image, real=True)
                    fid[name].update(pred, real=False)
        names = list(batch.get("name", cameras.names))
        for i in range(len(cameras)):
            record = {"name": names[i]}
            record.update({k: float(v[i]) for k, v in values.items()})
            self._aux["records"].append(record)
        if len(self._aux["records"]) - len(cameras) < self.hparams.num_log_images and not self.trainer.sanity_checking:
            tag = "render_fixed_gt" if len(panels) > 1 else "render_gt"
            for i in range(len(cameras)):
                self._log_image(f"{stage}/{tag}/{names[i]}", torch.cat([p[i] for p in panels] + [image[i]], dim=-1))

    def _log_image(self, tag: str, image: Tensor) -> None:
        for logger in self.loggers:
            exp = getattr(logger, "experiment", None)
            if hasattr(exp, "add_image"):
                exp.add_image(tag, image.detach().cpu(), self.global_step)

    def on_validation_epoch_end(self) -> None:
        self._finish_eval("val")

    def on_test_epoch_end(self) -> None:
        self._finish_eval("test")

    def _finish_eval(self, stage: str) -> None:
        records = self._aux["records"]
        if not records or self.trainer.sanity_checking:
            return
        keys = ("psnr", "ssim", "lpips")
        mean = summarise(records, keys)
        # Difix3D+: the same views after the post-render fix, under the same metric names.
        mean_fixed = {k.removesuffix("_fixed"): v for k, v in summarise(records, tuple(f"{k}_fixed" for k in keys)).items()}
        fid = self._aux.pop("fid", None) if stage == "test" else None
        if fid is not None:
            if len(records) < 2:
                rank_zero_warn("FID skipped: it needs at least 2 test views")
            else:
                mean["fid"] = float(fid["plain"].compute())
                if fid["fixed"] is not None:
                    mean_fixed["fid"] = float(fid["fixed"].compute())
        for k, v in mean.items():
            self.log(f"{stage}/{k}", v, batch_size=len(records))
        for k, v in mean_fixed.items():
            self.log(f"{stage}/{k}_fixed", v, batch_size=len(records))
        self.log(f"{stage}/num_gaussians", float(len(self.gaussians)), batch_size=len(records))
        if self.trainer.is_global_zero:
            payload = {
                "stage": stage,
                "mean": mean,
                **({"mean_fixed": mean_fixed} if mean_fixed else {}),
                "per_view": records,
                "num_gaussians": len(self.gaussians),
                "step": self.trained_steps,
            }
            # Validation during fit and a later `test` may share a folder: never overwrite each other.
            name = "metrics.json" if stage == "test" else f"metrics_{stage}.json"
            write_json_atomic(self.output_path / name, payload)

    @property
    def trained_steps(self) -> int:
        """Training steps behind the current Gaussians (test/predict: the checkpoint's step)."""
        return max(int(self.global_step), getattr(self, "_ckpt_step", 0))

    @property
    def output_path(self) -> Path:
        """``output_dir`` or the trainer's log folder (where metrics/exports/predictions go)."""
        if self.hparams.output_dir is not None:
            return Path(self.hparams.output_dir)
        if self._trainer is not None and self.trainer.log_dir is not None:
            return Path(self.trainer.log_dir)
        return Path(".")

    # ------------------------------------------------------------------ export
    def export_ply(self, path: str | Path, original_units: bool = True) -> Path:
        """Writes the Gaussians as an INRIA-layout .ply.

        Args:
            path: output .ply file.
            original_units: map back to the dataset's original world (undoing the datamodule's
                normalisation) when its transform is known; otherwise the normalised world.
        """
        transform = None
        if original_units and self.data_transform is not None:
            transform = torch.linalg.inv(self.data_transform.double())
        return write_ply(path, self.gaussians.raw(), transform=transform)

    def load_ply(self, path: str | Path, original_units: bool = True) -> None:
        """Replaces the Gaussians by a .ply's (mapped into the normalised world when known)."""
        transform = self.data_transform if original_units else None
        self.gaussians.set_splats(read_ply(path, transform=transform))
        self.gaussians.to(self.device)

    def on_fit_end(self) -> None:
        if self.trainer.is_global_zero and len(self.gaussians) > 0:
            self.export_ply(self.output_path / "point_cloud.ply")

    # ------------------------------------------------------------------ predict (render a path)
    def predict_cameras(self) -> Cameras | None:
        """The camera path ``predict`` renders: ``predict_path``'s JSON, else ``predict_frames``
        poses interpolated through the training cameras (at the first one's intrinsics and
        size); None when ``predict_frames`` is 0 and no JSON is given."""
        if self.hparams.predict_path is not None:
            from datamodules.camera_json import read_cameras_json

            return read_cameras_json(self.hparams.predict_path)
        if self.hparams.predict_frames <= 0:
            return None
        dm = self.trainer.datamodule if self._trainer is not None else None
        train = getattr(dm, "train_cameras", None)
        if train is None or len(train) == 0:
            raise RuntimeError("predict: set predict_path (a cameras JSON) or use a datamodule with train_cameras")
        from datamodules.cameras import interpolate_path

        c2w = interpolate_path(train.camera_to_world, self.hparams.predict_frames)
        names = [f"frame_{i:04d}" for i in range(len(c2w))]
        return Cameras.from_c2w(c2w, train.K[:1].expand(len(c2w), 3, 3), train.width[0], train.height[0], names)

    def on_predict_start(self) -> None:
        """Renders the camera path (frames + video.mp4 under ``output_path``/predict/path)."""
        self._require_gaussians()
        cameras = self.predict_cameras()
        if cameras is not None and self.trainer.is_global_zero:
            self.render_path(cameras, self.output_path / "predict" / "path")

    @torch.no_grad()
    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """Renders the datamodule's predict views (its test views) to ``predict/views/<name>.png``.

        Returns:
            {"rgb": (B, 3, H, W), "alpha": (B, 1, H, W), "name": [str], "paths": [Path]}.
        """
        cameras: Cameras = batch["camera"].to(self.device)
        rgb, alpha = self.render_views(cameras)
        paths = [
            save_png(rgb[i], self.output_path / "predict" / "views" / f"{name}.png")
            for i, name in enumerate(cameras.names)
        ]
        return {"rgb": rgb.cpu(), "alpha": alpha.cpu(), "name": list(cameras.names), "paths": paths}

    def render_path(self, cameras: Cameras, out_dir: str | Path) -> Path:
        """Renders ``cameras`` in order to ``out_dir``/frames/NNNNN.png and ``out_dir``/video.mp4;
        with a post-render fixer (Difix3D+) also video_fixed.mp4 and video_compare.mp4
        (``lightning_modules.scene.path_video``).

        Returns:
            The plain video's path.
        """
        from .path_video import render_path

        videos = render_path(
            self.render_views, cameras, out_dir, fps=self.hparams.predict_fps, fix=self.post_render_fixer,
            labels=("3DGS", "Difix3D+"), progress=self._trainer is not None and self.trainer.is_global_zero)
        return videos["video"]


def look_at_center(cameras: Cameras | None, scene_scale: float) -> tuple[float, float, float]:
    """The point closest (least squares) to all camera optical axes, or the origin.

    Object captures converge on the object; forward-facing captures have near-parallel axes,
    so an ill-conditioned system or a point farther than 2 scene scales gives the origin.
    """
    if cameras is None or len(cameras) < 2:
        return (0.0, 0.0, 0.0)
    c2w = cameras.camera_to_world.double()
    centers, dirs = c2w[:, :3, 3], c2w[:, :3, 2]
    proj = torch.eye(3, dtype=torch.float64) - dirs[:, :, None] * dirs[:, None, :]  # (N, 3, 3)
    A = proj.sum(0)
    b = (proj @ centers[:, :, None]).sum(0)[:, 0]
    if torch.linalg.cond(A) > 1e4:
        return (0.0, 0.0, 0.0)
    p = torch.linalg.solve(A, b)
    if not torch.isfinite(p).all() or float(p.norm()) > 2 * scene_scale:
        return (0.0, 0.0, 0.0)
    return tuple(float(v) for v in p)


def save_png(image: Tensor, path: Path) -> Path:
    """Saves a (3, H, W) [0, 1] image as an 8-bit PNG (parents created)."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    array = (image.detach().permute(1, 2, 0).cpu().numpy() * 255 + 0.5).clip(0, 255).astype("uint8")
    Image.fromarray(array).save(path)
    return path
