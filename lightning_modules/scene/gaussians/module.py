"""GaussianSceneModule: 3D Gaussian Splatting as a scene module (gsplat conventions).

Training follows gsplat's ``examples/simple_trainer.py``: one Adam per parameter (gsplat's
strategies need it, so optimisation is manual), means learning rate scaled by the scene
scale with an exponential decay to ``lr.means_final_factor`` over training, SH degree
raised every ``sh.interval`` steps, densification by a strategy object
(``strategy.DefaultStrategy`` with its opacity reset fixed, or ``strategy.MCMCStrategy``),
given in YAML by ``class_path`` as simple_trainer's config holds one. The loss is
Difix3D's / 3DGS's ``0.8 L1 + 0.2 (1 - SSIM)``, with per-view weights and masks from the
batch (fixed novel views are weighted and masked by the progressive-fix callback).

Resuming is exact: the Gaussians are re-created at the checkpoint's size before the state
dict loads (``Gaussians._load_from_state_dict``), so Lightning's later optimizer restore
finds matching shapes; the strategy state rides in the checkpoint; every random draw of a
step (random background, split noise, MCMC noise) comes from a generator seeded by
``(seed, step)``, so it does not depend on what ran before.

Starting from a reconstruction made elsewhere (``init.file``: an INRIA / gsplat / nerfstudio
.ply, a gsplat or splatfacto checkpoint) maps its Gaussians into the datamodule's normalised
world, renders at the file's full SH degree from step 0 and, unless asked to densify, keeps
their number: the progressive fix and the post-render fix then run on someone else's 3DGS.

Evaluation, predict videos and the post-render fix hook come from ``SceneModule``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor

from datamodules.cameras.cameras import Cameras
from datamodules.scene.scene_setup import SceneSetup

from lightning_modules.options import check_number
from lightning_modules.scene.base import SceneModule
from lightning_modules.scene.evaluation import EvalSettings
from lightning_modules.scene.gaussians.initial import InitSettings, initial_gaussians
from lightning_modules.scene.gaussians.splats import SPLAT_NAMES, Gaussians, sh_to_rgb
from lightning_modules.scene.gaussians.losses import photometric_loss
from lightning_modules.scene.path_video import PathSettings
from lightning_modules.scene.gaussians.ply import ply_bytes, write_ply
from lightning_modules.scene.gaussians.settings import LearningRates, LossSettings, RasterSettings, SHSchedule
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
        init: where the Gaussians start (`InitSettings`: the scene's points, random, or a
            trained 3DGS file); None: the scene's points with gsplat's defaults.
        sh: SH degree and its schedule (`SHSchedule`); None: degree 3, one more every 1000 steps.
        lr: learning rates (`LearningRates`); None: gsplat's.
        loss: loss weights (`LossSettings`); None: 3DGS's 0.8 L1 + 0.2 (1 - SSIM).
        rasterizer: backend, clipping planes, 2D low-pass (`RasterSettings`); None: gsplat's.
        global_scale: extra factor on the scene scale (gsplat's ``global_scale``).
        render_background: see ``SceneModule``.
        random_background: composite training renders on a random colour each step
            (simple_trainer's ``random_bkgd``); evaluation uses the fixed background.
        evaluation: see ``SceneModule``.
        predict: see ``SceneModule``.
        output_dir: see ``SceneModule`` (point_cloud.ply is written there after fit).
        rng_seed: seed of the per-step random draws (init, random background, densification).
    """

    representation_name = "3DGS"
    RUNTIME_OPTIONS: ClassVar[frozenset[str]] = SceneModule.RUNTIME_OPTIONS | {"rasterizer"}

    def __init__(
        self,
        strategy: DefaultStrategy | MCMCStrategy | None = None,
        init: InitSettings | None = None,
        sh: SHSchedule | None = None,
        lr: LearningRates | None = None,
        loss: LossSettings | None = None,
        rasterizer: RasterSettings | None = None,
        global_scale: float = 1.0,
        render_background: tuple[float, float, float] | None = None,
        random_background: bool = False,
        evaluation: EvalSettings | None = None,
        predict: PathSettings | None = None,
        output_dir: str | None = None,
        rng_seed: int = 0,
    ) -> None:
        super().__init__(render_background, evaluation, predict, output_dir, rng_seed)
        self.save_hyperparameters()
        check_number("GaussianSceneModule", "global_scale", global_scale, above=0.0)
        self.automatic_optimization = False
        if strategy is not None and not isinstance(strategy, (DefaultStrategy, MCMCStrategy)):
            raise TypeError(
                f"strategy must be lightning_modules.scene.gaussians.strategy.DefaultStrategy or MCMCStrategy "
                f"(gsplat's own classes lack this project's fixes), got {type(strategy).__name__}"
            )
        self.strategy = strategy if strategy is not None else DefaultStrategy()
        self.init_settings = init or InitSettings()
        self.sh_schedule = sh or SHSchedule()
        self.learning_rates = lr or LearningRates()
        self.loss_settings = loss or LossSettings()
        self.raster_settings = rasterizer or RasterSettings()
        self.global_scale = global_scale
        self.random_background = random_background
        # Empty until init_representation() (or a checkpoint) gives the Gaussians their size.
        self.gaussians = Gaussians(0, self.sh_schedule.degree)
        self.strategy_state: dict[str, Any] | None = None
        self._missing_file: FileNotFoundError | None = None

    @classmethod
    def from_splats(cls, splats: dict[str, Tensor], sh_degree: int, scene_scale: float | None = None
                    ) -> GaussianSceneModule:
        """A module holding given Gaussians, ready to render (a file opened for viewing).

        Args:
            splats: raw parameters (``Gaussians.raw()`` layout), in their own world.
            sh_degree: their SH degree.
            scene_scale: the extent of that world; None: from the Gaussians themselves (the
                90th percentile of the centres' distance from their median, as the cameras that
                gsplat measures the scale by are not known).
        """
        module = cls(sh=SHSchedule(degree=sh_degree))
        module.gaussians.set_splats(splats)
        if scene_scale is None:
            means = splats["means"]
            scene_scale = float((means - means.median(dim=0).values).norm(dim=-1).quantile(0.9).clamp_min(1e-3))
        module.scene_scale = float(scene_scale)
        return module

    # ------------------------------------------------------------------ construction
    @property
    def is_initialised(self) -> bool:
        return len(self.gaussians) > 0

    def setup_scene(self, setup: SceneSetup) -> None:
        super().setup_scene(setup)
        self.scene_scale = float(setup.scene_scale) * self.global_scale
        if self.strategy_state is None:
            self.strategy_state = self._init_strategy_state()

    def init_representation(self, setup: SceneSetup) -> None:
        if self.init_settings.file is not None:
            try:
                self.gaussians.set_splats(splats_in_scene(self.init_settings.file, setup))
            except FileNotFoundError as err:
                # A checkpoint restored next (resume, test --ckpt_path) holds the Gaussians; the
                # error is raised only if none does (require_ready, before any step).
                self._missing_file = err
            self.gaussians.to(self.device)
            return
        g = initial_gaussians(setup, float(setup.scene_scale) * self.global_scale, self.sh_schedule.degree,
                              self.init_settings, torch.Generator().manual_seed(self.rng_seed))
        self.gaussians.set_splats(g.raw())
        self.gaussians.to(self.device)

    @property
    def densifies(self) -> bool:
        """Whether the strategy runs (always, unless started from a file without ``densify``)."""
        return self.init_settings.file is None or self.init_settings.file.densify

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
        lrs = self.learning_rates.per_parameter(self.scene_scale)
        optimizers = [
            torch.optim.Adam([{"params": self.gaussians.splats[name], "lr": lrs[name], "name": name}], eps=1e-15)
            for name in SPLAT_NAMES
        ]
        steps = self.learning_rates.decay_steps
        if steps is None:
            steps = self.trainer.max_steps if self._trainer is not None and self.trainer.max_steps > 0 else 30_000
        gamma = self.learning_rates.means_final_factor ** (1.0 / max(int(steps), 1))
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
        if step is not None and self.random_background:
            gen = torch.Generator().manual_seed(self.step_seed(step) + 1)
            return torch.rand(n, 3, generator=gen).to(self.device)
        return self.background_tensor(n)

    def render_batch(self, cameras: Cameras, sh_degree: int, backgrounds: Tensor | None) -> tuple[Tensor, Tensor, dict]:
        """Renders same-size cameras with gradients (training): (C, 3, H, W) colours,
        (C, 1, H, W) alphas and gsplat's info (what the densification strategy reads)."""
        w, h = cameras.common_size("render")
        a = self.gaussians.activated()
        r = self.raster_settings
        colors, alphas, info = render(
            a["means"], a["quats"], a["scales"], a["opacities"], a["colors"],
            cameras.world_to_camera.to(self.device), cameras.K.to(self.device), w, h,
            sh_degree=sh_degree, near_plane=r.near_plane, far_plane=r.far_plane,
            backgrounds=backgrounds, render_mode="RGB", backend=r.backend, eps2d=r.eps2d,
        )
        return colors.permute(0, 3, 1, 2), alphas.permute(0, 3, 1, 2), info

    @torch.no_grad()
    def render_views(self, cameras: Cameras) -> tuple[Tensor, Tensor]:
        """``SceneModule.render_views``: camera by camera (memory stays flat), at the full SH degree."""
        rgbs, alphas = [], []
        for i in range(len(cameras)):
            rgb, alpha, _ = self.render_batch(cameras[i], self.gaussians.sh_degree, self._background(1, None))
            rgbs.append(rgb.clamp(0, 1))
            alphas.append(alpha)
        return torch.cat(rgbs), torch.cat(alphas)

    # ------------------------------------------------------------------ training
    def current_sh_degree(self, step: int) -> int:
        if self.init_settings.file is not None:  # trained Gaussians: their colours need every degree from step 0
            return self.gaussians.sh_degree
        return min(step // self.sh_schedule.interval, self.gaussians.sh_degree)

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
        weights = self.loss_settings
        losses = photometric_loss(rgb, image, mask, weight, weights.ssim_lambda)
        loss = losses["loss"]
        if weights.opacity_reg > 0:
            loss = loss + weights.opacity_reg * self.gaussians.opacities.mean()
        if weights.scale_reg > 0:
            loss = loss + weights.scale_reg * self.gaussians.scales.mean()
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
        scene = checkpoint["scene"]
        saved = scene.get("strategy")
        if saved != type(self.strategy).__name__:
            raise ValueError(
                f"checkpoint was trained with strategy {saved}, this module uses {type(self.strategy).__name__}")
        self.strategy_state = dict(scene["strategy_state"])
        # The Gaussians resize themselves in load_state_dict (Gaussians._load_from_state_dict);
        # their SH degree is the checkpoint's (a scene started from a file has the file's).
        degree = scene.get("sh_degree", self.gaussians.sh_degree)
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
