"""GaussianSceneModule: 3D Gaussian Splatting as a scene module (gsplat conventions).

Training follows gsplat's ``examples/simple_trainer.py``: one Adam per parameter (gsplat's
strategies need it, so optimisation is manual), means learning rate scaled by the scene
scale with an exponential decay to ``means_lr_final_factor`` over training, SH degree
raised every ``sh_degree_interval`` steps, densification by a strategy object
(``strategy.DefaultStrategy`` with its opacity reset fixed, or ``strategy.MCMCStrategy``),
given in YAML by ``class_path`` as simple_trainer's config holds one. The loss is
Difix3D's / 3DGS's ``0.8 L1 + 0.2 (1 - SSIM)``, with per-view weights and masks from the
batch (fixed novel views are weighted and masked by the progressive-fix callback).

Resuming is exact: the Gaussians are re-created at the checkpoint's size before the state
dict loads (``Gaussians._load_from_state_dict``), so Lightning's later optimizer restore
finds matching shapes; the strategy state rides in the checkpoint; every random draw of a
step (random background, split noise, MCMC noise) comes from a generator seeded by
``(seed, step)``, so it does not depend on what ran before.

Starting from a reconstruction made elsewhere (``init_file``: an INRIA / gsplat / nerfstudio
.ply, a gsplat or splatfacto checkpoint) maps its Gaussians into the datamodule's normalised
world, renders at the file's full SH degree from step 0 and, unless asked to densify, keeps
their number: the progressive fix and the post-render fix then run on someone else's 3DGS.

Evaluation, predict videos and the post-render fix hook come from ``SceneModule``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from datamodules.cameras.cameras import Cameras
from datamodules.scene.scene_setup import SceneSetup

from lightning_modules.options import check_learning_rates, check_number
from lightning_modules.scene.base import SceneModule
from lightning_modules.scene.evaluation import EvalSettings
from lightning_modules.scene.gaussians.initial import initial_gaussians
from lightning_modules.scene.gaussians.splats import SPLAT_NAMES, Gaussians, sh_to_rgb
from lightning_modules.scene.gaussians.losses import photometric_loss
from lightning_modules.scene.path_video import PathSettings
from lightning_modules.scene.gaussians.ply import ply_bytes, write_ply
from lightning_modules.scene.gaussians.reconstruction import GaussiansFile
from lightning_modules.scene.gaussians.world_units import splats_in_scene
from lightning_modules.scene.gaussians.rasterize import render
from lightning_modules.scene.gaussians.strategy import DefaultStrategy, MCMCStrategy

__all__ = ["GaussianSceneModule"]


class GaussianSceneModule(SceneModule):
    """3D Gaussian Splatting of one scene, trained on a ``SceneDataModule``.

    Args:
        strategy: densification, as an object: ``lightning_modules.scene.gaussians.strategy.DefaultStrategy``
            (3DGS; gsplat's fields: refine_start_iter, refine_stop_iter, refine_every,
            reset_every, grow_grad2d, prune_opa, ...) or ``MCMCStrategy`` (cap_max, noise_lr,
            min_opacity, ...). None: ``DefaultStrategy()`` (gsplat's defaults).
        sh_degree: maximum spherical-harmonic degree (gsplat: 3); with ``init_file``, the file's.
        sh_degree_interval: the SH degree in use grows by one every this many steps.
        init_type: "points" (the scene's sparse points, e.g. COLMAP) or "random" (uniform in a
            cube of half-size ``init_extent * scene_scale``); "points" falls back to "random"
            with a warning when the scene has no points (Blender scenes). Ignored with ``init_file``.
        init_file: start from a trained 3DGS instead (`GaussiansFile`: path, units of its world,
            SH degree, whether to densify; a plain path string means the dataset's original
            units). In YAML ``init_file: {path: .../point_cloud.ply}``; on the command line
            ``--model.init_args.init_file.path=...``.
        init_num_points: number of Gaussians for random init.
        init_extent: random-init cube half-size in units of the scene scale.
        init_center: random-init cube centre (normalised world); None: the point the training
            cameras look at when they converge (object captures), else the origin.
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
        opacity_reg: weight of mean opacity (gsplat MCMC preset: 0.01).
        scale_reg: weight of mean scale (gsplat MCMC preset: 0.01).
        ssim_lambda: weight of (1 - SSIM) in the photometric loss.
        render_background: see ``SceneModule``.
        random_background: composite training renders on a random colour each step
            (simple_trainer's ``random_bkgd``); evaluation uses the fixed background.
        backend: rasterizer backend: "auto" (gsplat on CUDA, torch on CPU), "gsplat", "torch".
        near_plane: near clipping distance.
        far_plane: far clipping distance.
        eps2d: 2D low-pass added to projected covariances.
        evaluation: see ``SceneModule``.
        predict: see ``SceneModule``.
        output_dir: see ``SceneModule`` (point_cloud.ply is written there after fit).
        rng_seed: seed of the per-step random draws (init, random background, densification).
    """

    representation_name = "3DGS"
    RUNTIME_OPTIONS: ClassVar[frozenset[str]] = SceneModule.RUNTIME_OPTIONS | {"backend", "near_plane", "far_plane"}

    def __init__(
        self,
        strategy: DefaultStrategy | MCMCStrategy | None = None,
        sh_degree: int = 3,
        sh_degree_interval: int = 1000,
        init_type: Literal["points", "random"] = "points",
        init_file: GaussiansFile | None = None,
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
        opacity_reg: float = 0.0,
        scale_reg: float = 0.0,
        ssim_lambda: float = 0.2,
        render_background: tuple[float, float, float] | None = None,
        random_background: bool = False,
        backend: Literal["auto", "gsplat", "torch"] = "auto",
        near_plane: float = 0.01,
        far_plane: float = 1e10,
        eps2d: float = 0.3,
        evaluation: EvalSettings | None = None,
        predict: PathSettings | None = None,
        output_dir: str | None = None,
        rng_seed: int = 0,
    ) -> None:
        super().__init__(render_background, evaluation, predict, output_dir, rng_seed)
        self.save_hyperparameters()
        owner = "GaussianSceneModule"
        check_learning_rates(owner, means_lr=means_lr, scales_lr=scales_lr, quats_lr=quats_lr,
                             opacities_lr=opacities_lr, sh0_lr=sh0_lr, shN_lr=shN_lr)
        check_number(owner, "means_lr_final_factor", means_lr_final_factor, above=0.0, high=1.0)
        check_number(owner, "lr_decay_steps", lr_decay_steps, low=1, integer=True, optional=True)
        self.automatic_optimization = False
        if strategy is not None and not isinstance(strategy, (DefaultStrategy, MCMCStrategy)):
            raise TypeError(
                f"strategy must be lightning_modules.scene.gaussians.strategy.DefaultStrategy or MCMCStrategy "
                f"(gsplat's own classes lack this project's fixes), got {type(strategy).__name__}"
            )
        self.strategy = strategy if strategy is not None else DefaultStrategy()
        if isinstance(init_file, str):
            init_file = GaussiansFile(path=init_file)
        self.init_file = GaussiansFile(**init_file) if isinstance(init_file, dict) else init_file
        # Empty until init_representation() (or a checkpoint) gives the Gaussians their size.
        self.gaussians = Gaussians(0, sh_degree)
        self.strategy_state: dict[str, Any] | None = None
        self._missing_file: FileNotFoundError | None = None

    # ------------------------------------------------------------------ construction
    @property
    def is_initialised(self) -> bool:
        return len(self.gaussians) > 0

    def setup_scene(self, setup: SceneSetup) -> None:
        super().setup_scene(setup)
        self.scene_scale = float(setup.scene_scale) * self.hparams.global_scale
        if self.strategy_state is None:
            self.strategy_state = self._init_strategy_state()

    def init_representation(self, setup: SceneSetup) -> None:
        if self.init_file is not None:
            try:
                self.gaussians.set_splats(splats_in_scene(self.init_file, setup))
            except FileNotFoundError as err:
                # A checkpoint restored next (resume, test --ckpt_path) holds the Gaussians; the
                # error is raised only if none does (require_ready, before any step).
                self._missing_file = err
            self.gaussians.to(self.device)
            return
        h = self.hparams
        g = initial_gaussians(
            setup, float(setup.scene_scale) * h.global_scale, h.sh_degree, h.init_type, h.init_num_points,
            h.init_extent, h.init_center, h.init_opacity, h.init_scale, h.max_init_points,
            torch.Generator().manual_seed(self.rng_seed),
        )
        self.gaussians.set_splats(g.raw())
        self.gaussians.to(self.device)

    @property
    def densifies(self) -> bool:
        """Whether the strategy runs (always, unless started from a file without ``densify``)."""
        return self.init_file is None or self.init_file.densify

    def require_ready(self) -> None:
        if not self.is_initialised and self._missing_file is not None:
            raise self._missing_file
        super().require_ready()

    def _init_strategy_state(self) -> dict[str, Any]:
        if isinstance(self.strategy, DefaultStrategy):
            return self.strategy.initialize_state(scene_scale=self.scene_scale)
        return self.strategy.initialize_state()

    def configure_optimizers(self) -> tuple[list[torch.optim.Optimizer], list[dict[str, Any]]]:
        """One Adam per parameter (order: ``SPLAT_NAMES``) and the means lr decay."""
        h = self.hparams
        lrs = {"means": h.means_lr * self.scene_scale, "scales": h.scales_lr, "quats": h.quats_lr,
               "opacities": h.opacities_lr, "sh0": h.sh0_lr, "shN": h.shN_lr}
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

    def on_fit_start(self) -> None:
        self.require_ready()
        if self.strategy_state is None:
            self.strategy_state = self._init_strategy_state()
        self.strategy.check_sanity(self.gaussians.splats, self.optimizer_dict)

    # ------------------------------------------------------------------ rendering
    def _background(self, n: int, step: int | None) -> Tensor:
        if step is not None and self.hparams.random_background:
            gen = torch.Generator().manual_seed(self.step_seed(step) + 1)
            return torch.rand(n, 3, generator=gen).to(self.device)
        return self.background_tensor(n)

    def render_batch(self, cameras: Cameras, sh_degree: int, backgrounds: Tensor | None) -> tuple[Tensor, Tensor, dict]:
        """Renders same-size cameras with gradients (training): (C, 3, H, W) colours,
        (C, 1, H, W) alphas and gsplat's info (what the densification strategy reads)."""
        w, h = cameras.common_size("render")
        a = self.gaussians.activated()
        colors, alphas, info = render(
            a["means"], a["quats"], a["scales"], a["opacities"], a["colors"],
            cameras.world_to_camera.to(self.device), cameras.K.to(self.device), w, h,
            sh_degree=sh_degree, near_plane=self.hparams.near_plane, far_plane=self.hparams.far_plane,
            backgrounds=backgrounds, render_mode="RGB", backend=self.hparams.backend, eps2d=self.hparams.eps2d,
        )
        return colors.permute(0, 3, 1, 2), alphas.permute(0, 3, 1, 2), info

    @torch.no_grad()
    def render_views(self, cameras: Cameras) -> tuple[Tensor, Tensor]:
        """Renders cameras one by one (memory stays flat) with the full SH degree.

        Args:
            cameras: N cameras of one size in the normalised world.

        Returns:
            rgb: (N, 3, H, W) in [0, 1]; alpha: (N, 1, H, W).
        """
        rgbs, alphas = [], []
        for i in range(len(cameras)):
            rgb, alpha, _ = self.render_batch(cameras[i], self.gaussians.sh_degree, self._background(1, None))
            rgbs.append(rgb.clamp(0, 1))
            alphas.append(alpha)
        return torch.cat(rgbs), torch.cat(alphas)

    # ------------------------------------------------------------------ training
    def current_sh_degree(self, step: int) -> int:
        if self.init_file is not None:  # trained Gaussians: their colours need every degree from step 0
            return self.gaussians.sh_degree
        return min(step // max(self.hparams.sh_degree_interval, 1), self.gaussians.sh_degree)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        step = self.global_step
        if self.strategy_state is None:
            self.strategy_state = self._init_strategy_state()
        self._state_to_device()
        cameras: Cameras = batch["camera"].to(self.device)
        image = batch["image"].to(self.device)
        mask, weight = batch.get("mask"), batch.get("weight")
        n = image.shape[0]

        rgb, alpha, info = self.render_batch(cameras, self.current_sh_degree(step), self._background(n, step))
        if self.densifies and isinstance(self.strategy, DefaultStrategy):
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
        self.optimizers()[0].step()
        for opt in self.trainer.optimizers[1:]:
            opt.step()
        for opt in self.trainer.optimizers:
            opt.zero_grad(set_to_none=True)
        self.lr_schedulers().step()

        if self.densifies:
            self._densify(step, info)

        if self.logs_step(step):
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

    def _densify(self, step: int, info: dict) -> None:
        """The strategy's step after the optimizer step, as simple_trainer; its random draws come
        from a step-seeded RNG so that a resumed run draws exactly the same. DefaultStrategy draws
        only when it splits (refine steps): other steps skip the fork and reseed of every RNG."""
        default = isinstance(self.strategy, DefaultStrategy)
        kw = {"packed": False} if default else {"lr": self.trainer.optimizers[0].param_groups[0]["lr"]}
        args = (self.gaussians.splats, self.optimizer_dict, self.strategy_state, step, info)
        if default and step % self.strategy.refine_every:
            self.strategy.step_post_backward(*args, **kw)
            return
        with torch.random.fork_rng(devices=[self.device.index or 0] if self.device.type == "cuda" else []):
            torch.manual_seed(self.step_seed(step))
            self.strategy.step_post_backward(*args, **kw)

    def _state_to_device(self) -> None:
        for k, v in (self.strategy_state or {}).items():
            if isinstance(v, Tensor) and v.device != self.device:
                self.strategy_state[k] = v.to(self.device)

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        state = {k: (v.detach().cpu() if isinstance(v, Tensor) else v) for k, v in (self.strategy_state or {}).items()}
        checkpoint["scene"].update(
            strategy_state=state, strategy=type(self.strategy).__name__, num_gaussians=len(self.gaussians),
            sh_degree=self.gaussians.sh_degree)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        extra = checkpoint.get("scene") or checkpoint["gaussian_scene"]
        saved = {"default": "DefaultStrategy", "mcmc": "MCMCStrategy"}.get(extra.get("strategy"), extra.get("strategy"))
        if saved != type(self.strategy).__name__:
            raise ValueError(
                f"checkpoint was trained with strategy {saved}, this module uses {type(self.strategy).__name__}")
        self.strategy_state = dict(extra["strategy_state"])
        # The Gaussians resize themselves in load_state_dict (Gaussians._load_from_state_dict);
        # their SH degree is the checkpoint's (a scene started from a file has the file's).
        degree = extra.get("sh_degree", self.gaussians.sh_degree)
        if degree != self.gaussians.sh_degree:
            self.gaussians = Gaussians(0, degree)

    def eval_extras(self) -> dict[str, float]:
        return {"num_gaussians": len(self.gaussians)}

    def seed_points(self, max_points: int) -> tuple[Tensor, Tensor] | None:
        """`SeedPoints`: up to `max_points` Gaussian centres (a fixed random subset) and their
        degree-0 colours, or None without Gaussians."""
        if len(self.gaussians) == 0 or max_points <= 0:
            return None
        keep = torch.randperm(len(self.gaussians), generator=torch.Generator().manual_seed(0))[:max_points]
        points = self.gaussians.means.detach().cpu()[keep]
        colors = sh_to_rgb(self.gaussians.splats["sh0"].detach().cpu()[keep, 0]).clamp(0, 1)
        return points, colors

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

    def fit_end_files(self) -> dict[str, int]:
        """``SceneModule``: ``on_fit_end`` writes point_cloud.ply (densification may grow it)."""
        return {"point_cloud.ply": ply_bytes(len(self.gaussians), self.gaussians.sh_degree)}

    def on_fit_end(self) -> None:
        if self.trainer.is_global_zero and len(self.gaussians) > 0:
            self.export_ply(self.output_path / "point_cloud.ply")
