"""SceneModule: the contract every scene representation (Gaussians, NeRF) shares.

A subclass holds only its representation: it builds it from a ``SceneSetup``
(``init_representation``), renders (``render_views``) and trains (``training_step``).
Everything else is written once here:

* the scene facts (``scene_scale``, background, the data transform, training cameras)
  arrive as one ``SceneSetup`` from the datamodule (``configure_model``) or from a caller
  (``setup_scene``), and ride in checkpoints;
* validation/test through ``SceneEvaluator`` (metrics.json with "mean" / "mean_fixed",
  FID, image grids);
* the Difix3D+ post-render fix arrives through ``set_post_render_fix`` (the
  ``AcceptsPostRenderFix`` contract in lightning_modules/scene/contracts.py) and is applied to test renders;
* ``predict`` renders the camera path video (``path_video``) and the predict views.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import lightning.pytorch as pl
import torch
from torch import Tensor

from datamodules.cameras.cameras import Cameras
from datamodules.files.image_io import save_image
from datamodules.files.json_io import write_json_atomic
from datamodules.scene.scene_setup import ProvidesSceneSetup, SceneSetup
from lightning_modules.image_grids import log_image
from datamodules.files.temp_files import MIN_FREE_BYTES, check_free_space, check_writable

from lightning_modules.scene.contracts import PostRenderFix
from lightning_modules.scene.evaluation import EvalSettings, SceneEvaluator
from lightning_modules.scene.path_video import PathSettings, path_cameras, render_path

__all__ = ["SceneModule"]



class SceneModule(pl.LightningModule):
    """Base of the scene LightningModules (not used on its own).

    Args:
        render_background: RGB renders are composited on; None: the scene's background for
            RGBA scenes (``SceneSetup.background``, e.g. white for NeRF-synthetic), else black.
        evaluation: how validation/test views are scored.
        predict: the camera path ``predict`` renders.
        output_dir: where metrics.json (test), metrics_val.json (validation), exports and
            predictions go (None: the trainer's log_dir). With `--ckpt_path` the value given
            to this run wins over the checkpoint's (RUNTIME_OPTIONS).
        rng_seed: seed of the per-step random draws.
    """

    # Options that do not change the trained scene: with `--ckpt_path` the command line's
    # value wins over the checkpoint's (difix3d/cli.py's DifixCLI).
    RUNTIME_OPTIONS: ClassVar[frozenset[str]] = frozenset({"output_dir", "evaluation", "predict", "render_background"})

    def __init__(
        self,
        render_background: tuple[float, float, float] | None = None,
        evaluation: EvalSettings | None = None,
        predict: PathSettings | None = None,
        output_dir: str | None = None,
        rng_seed: int = 0,
    ) -> None:
        super().__init__()
        if render_background is not None and len(render_background) != 3:
            raise ValueError(f"render_background must be 3 values (RGB), got {render_background}")
        self.render_background = render_background
        self.background: tuple[float, float, float] = tuple(render_background or (0.0, 0.0, 0.0))  # type: ignore[assignment]
        self.eval_settings = evaluation or EvalSettings()
        self.path_settings = predict or PathSettings()
        self.output_dir = output_dir
        self.rng_seed = rng_seed
        self.scene_scale: float = 1.0
        self.data_transform: Tensor | None = None  # normalised = T @ original (for exports)
        self.train_cameras: Cameras | None = None
        self.evaluator = SceneEvaluator(self.eval_settings)  # plain object: stays out of checkpoints
        self._post_render_fix: PostRenderFix | None = None
        self._ckpt_step = 0

    # ------------------------------------------------------------------ what subclasses provide
    def init_representation(self, setup: SceneSetup) -> None:
        """Builds the representation from the scene (called when it has not been built yet)."""
        raise NotImplementedError

    @property
    def is_initialised(self) -> bool:
        """Whether the representation exists (built, or sized by a checkpoint)."""
        raise NotImplementedError

    def render_views(self, cameras: Cameras) -> tuple[Tensor, Tensor]:
        """Renders without grad, in chunks (memory stays flat).

        Args:
            cameras: N cameras of one size in the normalised world.

        Returns:
            rgb: (N, 3, H, W) in [0, 1]; alpha: (N, 1, H, W).
        """
        raise NotImplementedError

    representation_name = "scene"
    """What the plain renders are called in comparison videos ("3DGS", "Nerfacto")."""

    def eval_extras(self) -> dict[str, float]:
        """Extra numbers for metrics.json and the logs (e.g. {"num_gaussians": n})."""
        return {}

    # ------------------------------------------------------------------ scene setup
    def setup_scene(self, setup: SceneSetup) -> None:
        """Takes the scene facts and builds the representation unless it exists."""
        self.scene_scale = float(setup.scene_scale)
        self.train_cameras = setup.train_cameras.to("cpu")
        if setup.transform is not None:
            self.data_transform = torch.as_tensor(setup.transform, dtype=torch.float64).cpu()
        if self.render_background is None:
            self.background = tuple(float(c) for c in (setup.background or (0.0, 0.0, 0.0)))  # type: ignore[assignment]
        if not self.is_initialised:
            self.init_representation(setup)

    def setup(self, stage: str) -> None:
        """Before any step: the output folder (metrics, exports, videos) must be writable and
        not full, so a bad ``output_dir`` fails now, not at the first validation or after training."""
        if self._trainer is None or self.trainer.is_global_zero:
            check_writable(self.output_path, "output_dir")
            check_free_space(self.output_path, MIN_FREE_BYTES, "output_dir", "the run's metrics, images and exports")

    def fit_end_files(self) -> dict[str, int]:
        """The files ``on_fit_end`` writes to ``output_path`` and their size for the current
        state (checked free when training starts); none here."""
        return {}

    def on_train_start(self) -> None:
        """The end-of-fit files at their present size (training only adds to them) must fit in
        ``output_dir``: a full disk fails before the first step, not after the last."""
        files = self.fit_end_files()
        if files and (self._trainer is None or self.trainer.is_global_zero):
            listed = ", ".join(f"{name} ({size / 2**20:.1f} MiB now, more if the scene grows)"
                               for name, size in files.items())
            check_free_space(self.output_path, sum(files.values()), "output_dir", f"{listed} at the end of training")

    def configure_model(self) -> None:
        """Takes the datamodule's ``SceneSetup`` (runs before a checkpoint restores state)."""
        dm = self.trainer.datamodule if self._trainer is not None else None
        if isinstance(dm, ProvidesSceneSetup):
            self.setup_scene(dm.scene_setup())

    def require_ready(self) -> None:
        if not self.is_initialised:
            raise RuntimeError(
                f"{type(self).__name__} has no scene yet: give it a datamodule with scene_setup() "
                "(SceneDataModule), call setup_scene(SceneSetup(...)), or load a checkpoint (--ckpt_path)"
            )

    def set_post_render_fix(self, fix: PostRenderFix | None) -> None:
        """Installs the Difix3D+ post-render fix for test renders (None removes it)."""
        self._post_render_fix = fix

    @property
    def has_post_render_fix(self) -> bool:
        """A post-render fix is installed (test / predict renders are also reported fixed)."""
        return self._post_render_fix is not None

    def _fixed_render(self, rgb: Tensor, cameras: Cameras) -> Tensor | None:
        """(N, 3, H, W) Difix3D+ renders in [0, 1], or None without a post-render fix."""
        if self._post_render_fix is None:
            return None
        return self._post_render_fix(rgb, cameras).clamp(0, 1)

    def background_tensor(self, n: int) -> Tensor:
        """(n, 3) background colours on the module's device."""
        return torch.tensor(self.background, dtype=torch.float32, device=self.device).expand(n, 3).contiguous()

    def step_seed(self, step: int) -> int:
        """Seed of step ``step``'s random draws: a resumed run draws exactly the same."""
        return (self.rng_seed * 1_000_003 + step * 7919) % (2**62)

    def logs_step(self, step: int) -> bool:
        """Whether training step ``step``'s scalars reach the logger (``trainer.log_every_n_steps``,
        Lightning's own test: ``step + 1`` a multiple of it; the last step of a run too).

        The scene modules log only then, as gsplat's trainer does: each ``self.log`` costs a fixed
        amount of Python on any device (Lightning moves its result metadata on every call), which
        a fast GPU step notices; the values of the other steps would never be written anyway.
        """
        trainer = self._trainer  # None outside a Trainer (a step called by hand): nothing to log to
        if trainer is None or trainer.log_every_n_steps <= 0:
            return False
        return (step + 1) % trainer.log_every_n_steps == 0 or step + 1 == trainer.max_steps

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["scene"] = {
            "scene_scale": self.scene_scale,
            "data_transform": self.data_transform,
            "background": list(self.background),
            "train_cameras": None if self.train_cameras is None else self.train_cameras.state_dict(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        extra = checkpoint.get("scene")
        if extra is None:
            raise KeyError(f"checkpoint has no 'scene' entry: it was not written by a {type(self).__name__}")
        self.scene_scale = float(extra["scene_scale"])
        self._ckpt_step = int(checkpoint.get("global_step", 0))
        if extra.get("background") is not None:
            self.background = tuple(float(c) for c in extra["background"])  # type: ignore[assignment]
        if extra.get("data_transform") is not None:
            self.data_transform = torch.as_tensor(extra["data_transform"], dtype=torch.float64)
        if extra.get("train_cameras") is not None:
            self.train_cameras = Cameras.from_state_dict(extra["train_cameras"])

    @property
    def trained_steps(self) -> int:
        """Training steps behind the current state (test/predict: the checkpoint's step)."""
        return max(int(self.global_step), self._ckpt_step)

    @property
    def output_path(self) -> Path:
        """``output_dir`` or the trainer's log folder (where metrics/exports/predictions go)."""
        if self.output_dir is not None:
            return Path(self.output_dir)
        if self._trainer is not None and self.trainer.log_dir is not None:
            return Path(self.trainer.log_dir)
        return Path(".")

    # ------------------------------------------------------------------ evaluation
    def on_validation_epoch_start(self) -> None:
        self.require_ready()
        self.evaluator.start("val", self.device, with_fix=False)

    def on_test_epoch_start(self) -> None:
        self.require_ready()
        views = self.output_path / "test_views" if self.eval_settings.save_views and self.trainer.is_global_zero else None
        self.evaluator.start("test", self.device, with_fix=self._post_render_fix is not None, views_dir=views)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    @torch.no_grad()
    def _eval_step(self, batch: dict[str, Any], stage: str) -> None:
        cameras: Cameras = batch["camera"].to(self.device)
        image = batch["image"].to(self.device)
        rgb, _ = self.render_views(cameras)
        fixed = self._fixed_render(rgb, cameras) if stage == "test" else None
        names = list(batch.get("name", cameras.names))
        if self.evaluator.update(rgb, image, names, fixed) and not self.trainer.sanity_checking:
            panels = [rgb] if fixed is None else [rgb, fixed]
            tag = "render_fixed_gt" if fixed is not None else "render_gt"
            for i, name in enumerate(names):
                self.log_image(f"{stage}/{tag}/{name}", torch.cat([p[i] for p in panels] + [image[i]], dim=-1))

    def log_image(self, tag: str, image: Tensor) -> None:
        """Adds a (3, H, W) image to every logger that takes images (TensorBoard)."""
        log_image(self.loggers, tag, image, self.global_step)

    def on_validation_epoch_end(self) -> None:
        self._finish_eval("val")

    def on_test_epoch_end(self) -> None:
        self._finish_eval("test")

    def _finish_eval(self, stage: str) -> None:
        records = self.evaluator.records
        if not records or self.trainer.sanity_checking:
            return
        mean, mean_fixed = self.evaluator.summary()
        extras = self.eval_extras()
        for k, v in mean.items():
            self.log(f"{stage}/{k}", v, batch_size=len(records))
        for k, v in mean_fixed.items():
            self.log(f"{stage}/{k}_fixed", v, batch_size=len(records))
        for k, v in extras.items():
            self.log(f"{stage}/{k}", float(v), batch_size=len(records))
        if self.trainer.is_global_zero:
            payload = {"stage": stage, "mean": mean, **({"mean_fixed": mean_fixed} if mean_fixed else {}),
                       "per_view": records, **extras, "step": self.trained_steps}
            # Validation during fit and a later `test` may share a folder: never overwrite each other.
            name = "metrics.json" if stage == "test" else f"metrics_{stage}.json"
            write_json_atomic(self.output_path / name, payload)

    # ------------------------------------------------------------------ predict
    def predict_cameras(self) -> Cameras | None:
        """The camera path ``predict`` renders (see ``PathSettings``)."""
        return path_cameras(self.path_settings, self.train_cameras)

    def on_predict_start(self) -> None:
        """Renders the camera path under ``output_path``/predict/path: frames + video.mp4, and with
        a post-render fix also video_fixed.mp4 and video_compare.mp4."""
        self.require_ready()
        cameras = self.predict_cameras()
        if cameras is not None and self.trainer.is_global_zero:
            # With a post-render fix (ProgressiveFixCallback during predict) also the Difix3D+
            # and side-by-side videos.
            render_path(self.render_views, cameras, self.output_path / "predict" / "path", fps=self.path_settings.fps,
                        fix=self._post_render_fix, labels=(self.representation_name, "Difix3D+"))

    @torch.no_grad()
    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """Renders the datamodule's predict views to ``predict/views/<name>.png`` and, with a
        post-render fix, their Difix3D+ versions to ``predict/views_fixed/<name>.png``.

        Returns:
            {"rgb": (B, 3, H, W), "alpha": (B, 1, H, W), "name": [str], "paths": [Path]}, plus
            "rgb_fixed" (B, 3, H, W) and "paths_fixed" with a post-render fix.
        """
        cameras: Cameras = batch["camera"].to(self.device)
        rgb, alpha = self.render_views(cameras)
        out = self.output_path / "predict"
        paths = [save_image(rgb[i], out / "views" / f"{name}.png") for i, name in enumerate(cameras.names)]
        result = {"rgb": rgb.cpu(), "alpha": alpha.cpu(), "name": list(cameras.names), "paths": paths}
        fixed = self._fixed_render(rgb, cameras)
        if fixed is not None:
            result["rgb_fixed"] = fixed.cpu()
            result["paths_fixed"] = [save_image(fixed[i], out / "views_fixed" / f"{name}.png")
                                     for i, name in enumerate(cameras.names)]
        return result
