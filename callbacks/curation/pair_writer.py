"""PairWriter: turns a scene fit into Difix training triplets (degraded render, real image, reference).

The four curation strategies of Difix3D+ (METHOD.md, "Making training pairs") are each a
scene config plus this callback:

* sparse: fit on every n-th view (``data.train_every``), ``render: heldout``.
* underfit: ``at_fractions: [0.25, 0.5, 0.75]`` of ``trainer.max_steps`` (the full schedule:
  learning-rate decay and densification follow it), ``render: train``.
* cross: ``data.train_group`` picks one camera of a rig, ``render: heldout`` renders the others.
* cycle: stage 1 ``render: shifted`` writes a scene of sideways-shifted renders
  (``callbacks.curation.cycle_scene``); stage 2 fits that scene and ``render: cycle_back`` renders
  the original poses.

Each pair: the render, the real image of the same camera (written next to it at the
render's size, so the pairs folder is self-contained), and the ``num_refs`` nearest fitted
real images by pose distance (never the target itself). Files and the merge into
``pairs.json`` are handled by ``datamodules.pairs.store``: nothing is visible until the fit
ends, and then all of the run's items replace the (scene, strategy)'s previous ones.
"""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor
from tqdm.auto import tqdm

from callbacks.curation.cycle_scene import shift_sideways, write_cycle_scene
from callbacks.curation.views import (SnapshotViews, nearest_references, safe_name, select_views, subset,
                                      unique_names)
from datamodules.files.image_io import resize_image, save_image
from datamodules.pairs import store as pair_store
from datamodules.pairs.record import DEFAULT_PROMPT, PairRecord
from lightning_modules.image_grids import log_image, tile_grid
from lightning_modules.scene.contracts import CurationSource, RendersViews, SeedPoints

__all__ = ["PairWriter", "CYCLE_STAGE1_DIR"]

log = logging.getLogger(__name__)

CYCLE_STAGE1_DIR = "cycle_stage1"


class PairWriter(Callback):
    """Writes (render, real image, references) triplets of a scene fit into a pairs folder.

    Args:
        out_dir: the pairs folder (``pairs.json`` + ``<scene_name>/<strategy>[_<fraction>]/``).
        scene_name: name of the source scene, recorded per item; also the folder name. A
            scene's pairs go to one split only.
        strategy: "sparse", "underfit", "cross" or "cycle" (recorded per item; the run's
            items replace this scene and strategy's previous items).
        split: "train" or "test" split of ``pairs.json``; keep test scenes out of training.
        render: which views: "heldout" (every view not used for fitting: the scene's test
            views and the training views dropped by ``train_every`` / ``train_group``),
            "train" (the fitted views), "shifted" (cycle stage 1: the fitted views moved
            sideways, written as a scene for stage 2, no pairs) or "cycle_back" (cycle
            stage 2: the original poses from the stage-1 manifest).
        at_fractions: write a snapshot at each of these fractions (0, 1] of
            ``trainer.max_steps`` during the fit (underfitting); None: once, at the end.
        num_refs: references per pair: the nearest fitted real images by pose distance
            (translation + rotation angle), excluding the view itself.
        max_views: render at most this many views per snapshot, evenly spaced (None: all).
        shift: cycle stage 1: sideways shift as a fraction of the scene extent (the
            module's ``scene_scale``); negative shifts left.
        shift_points: cycle stage 1: at most this many Gaussian centres written as the
            stage-2 scene's initial points (0: none, stage 2 starts from random).
        manifest: cycle stage 2: the stage-1 ``cycle_manifest.json`` (None: the one in the
            datamodule's scene folder).
        prompt: the prompt of every item.
        log_images: (render | target | reference) rows logged to TensorBoard per snapshot.
    """

    def __init__(
        self,
        out_dir: str,
        scene_name: str,
        strategy: Literal["sparse", "underfit", "cross", "cycle"],
        split: Literal["train", "test"] = "train",
        render: Literal["heldout", "train", "shifted", "cycle_back"] = "heldout",
        at_fractions: list[float] | None = None,
        num_refs: int = 1,
        max_views: int | None = None,
        shift: float = 0.1,
        shift_points: int = 50_000,
        manifest: str | None = None,
        prompt: str = DEFAULT_PROMPT,
        log_images: int = 4,
    ) -> None:
        if strategy not in ("sparse", "underfit", "cross", "cycle"):
            raise ValueError(f"PairWriter: strategy must be sparse, underfit, cross or cycle, got {strategy!r}")
        if split not in ("train", "test"):
            raise ValueError(f"PairWriter: split must be 'train' or 'test', got {split!r}")
        if render not in ("heldout", "train", "shifted", "cycle_back"):
            raise ValueError(f"PairWriter: render must be heldout, train, shifted or cycle_back, got {render!r}")
        if render in ("shifted", "cycle_back") and strategy != "cycle":
            raise ValueError(f"PairWriter: render {render!r} belongs to strategy 'cycle', not {strategy!r}")
        if not scene_name or safe_name(scene_name) != scene_name:
            raise ValueError(f"PairWriter: scene_name {scene_name!r} must be a plain folder name (letters, digits, . _ -)")
        if at_fractions is not None:
            if not at_fractions or any(not 0.0 < float(f) <= 1.0 for f in at_fractions):
                raise ValueError(f"PairWriter: at_fractions must be non-empty fractions in (0, 1], got {at_fractions}")
            if render == "shifted":
                raise ValueError("PairWriter: render 'shifted' writes one scene at the end of the fit; drop at_fractions")
        if num_refs < 1:
            raise ValueError(f"PairWriter: num_refs must be >= 1 (PairDataModule needs a reference), got {num_refs}")
        if max_views is not None and max_views < 1:
            raise ValueError(f"PairWriter: max_views must be >= 1 or None, got {max_views}")
        self.out_dir = Path(out_dir)
        self.scene_name = scene_name
        self.strategy = strategy
        self.split = split
        self.render = render
        self.at_fractions = None if at_fractions is None else sorted({float(f) for f in at_fractions})
        self.num_refs = num_refs
        self.max_views = max_views
        self.shift = shift
        self.shift_points = shift_points
        self.manifest = manifest
        self.prompt = prompt
        self.log_images = log_images
        # Per-fit state; in checkpoints (state_dict), so that a resumed fit keeps the snapshots
        # it had staged and writes the ones still due.
        self._staging: Path | None = None
        self._items: list[dict[str, Any]] = []
        self._staged: dict[str, Path] = {}
        self._due: dict[int, float] = {}  # global step -> fraction still to write
        self._restored: dict[str, Any] | None = None

    # ------------------------------------------------------------------ hooks
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not isinstance(pl_module, RendersViews):
            raise TypeError(f"{type(pl_module).__name__} lacks render_views/scene_scale needed by PairWriter")
        self._reset()
        if self.at_fractions is not None:
            if trainer.max_steps is None or trainer.max_steps <= 0:
                raise ValueError("PairWriter: at_fractions are fractions of trainer.max_steps; set trainer.max_steps")
            steps = [max(1, round(f * trainer.max_steps)) for f in self.at_fractions]
            if len(set(steps)) != len(steps):
                raise ValueError(f"PairWriter: at_fractions {self.at_fractions} fall on the same steps {steps} of max_steps {trainer.max_steps}")
            self._due = dict(zip(steps, self.at_fractions))
        restored, self._restored = self._restored, None
        if trainer.is_global_zero:
            with pair_store.locked(self.out_dir):
                pair_store.recover(self.out_dir)  # finish or undo a commit that was killed midway
                self._staging = pair_store.staging_dir(self.out_dir / self.scene_name, self.strategy)
                if restored is not None:  # before remove_stale, which would take the killed run's folder
                    self._adopt(restored)
                for path in pair_store.remove_stale(self.out_dir):
                    log.info("PairWriter: removed %s left by an interrupted run", path)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        fraction = self._due.pop(trainer.global_step, None)
        if fraction is not None and trainer.is_global_zero:
            self.snapshot(trainer, pl_module, fraction)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        try:
            if self.render == "shifted":
                self.write_shifted_scene(trainer, pl_module)
                return
            if self.at_fractions is None:
                self.snapshot(trainer, pl_module, None)
            elif self._due:
                missing = sorted(self._due.values())
                raise RuntimeError(
                    f"PairWriter: the fit ended at step {trainer.global_step} before the snapshots at fractions "
                    f"{missing} of max_steps {trainer.max_steps}; nothing was written"
                )
            path = pair_store.commit(self.out_dir, self.scene_name, self.strategy, self.split, self._staged, self._items)
            log.info("PairWriter: %d %s pairs of scene %s -> %s (%s)", len(self._items), self.strategy, self.scene_name, path, self.split)
            if trainer.logger is not None:
                trainer.logger.log_metrics({"curate/num_pairs": float(len(self._items))}, step=trainer.global_step)
        finally:
            self._cleanup()

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self._cleanup()

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """The snapshots staged so far (their folder, files and items) and the ones still due."""
        return {"staging": None if self._staging is None else str(self._staging), "items": list(self._items),
                "staged": {k: str(v) for k, v in self._staged.items()}, "due": dict(self._due)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restored = dict(state_dict)

    def _adopt(self, state: dict[str, Any]) -> None:
        """Takes over the staged snapshots of the run a checkpoint came from (moved into this
        run's staging folder), and its list of snapshots still due."""
        old = Path(state["staging"]) if state.get("staging") else None
        if state.get("items") and (old is None or not old.is_dir()):
            raise FileNotFoundError(
                f"PairWriter: the checkpoint's run had staged {len(state['items'])} pairs in {old}, which is gone; "
                "start this curation again without --ckpt_path")
        assert self._staging is not None
        if old is not None and old.is_dir() and old != self._staging:
            for child in old.iterdir():
                os.rename(child, self._staging / child.name)
            shutil.rmtree(old, ignore_errors=True)
        self._items = list(state.get("items") or [])
        self._staged = {k: self._staging / Path(v).relative_to(old) if old is not None else Path(v)
                        for k, v in (state.get("staged") or {}).items()}
        if self.at_fractions is not None:
            self._due = {int(k): float(v) for k, v in (state.get("due") or {}).items()}

    def _reset(self) -> None:
        self._cleanup()
        self._items, self._staged, self._due = [], {}, {}

    def _cleanup(self) -> None:
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)
            self._staging = None

    # ------------------------------------------------------------------ views
    def views(self, trainer: Trainer) -> SnapshotViews:
        """The cameras to render, their real images and the reference pool, per ``render``."""
        data = trainer.datamodule
        if not isinstance(data, CurationSource):
            missing = [m for m in CurationSource.__annotations__ if not hasattr(data, m)]
            raise TypeError(f"PairWriter needs a datamodule with the CurationSource members (SceneDataModule); "
                            f"{type(data).__name__} lacks {missing}")
        return select_views(data, self.render, self.max_views, self.scene_name, self.manifest)

    # ------------------------------------------------------------------ writing
    @torch.no_grad()
    def snapshot(self, trainer: Trainer, pl_module: LightningModule, fraction: float | None) -> None:
        """Renders the views now and stages their pairs (committed at the end of the fit)."""
        assert self._staging is not None
        views = self.views(trainer)
        folder_name = self.strategy if fraction is None else f"{self.strategy}_{fraction:g}"
        staged = self._staging / folder_name
        final = f"{self.scene_name}/{folder_name}"
        refs = nearest_references(views, self.num_refs, self.scene_name)
        names = unique_names([safe_name(n) for n in views.cameras.names])
        ref_files: dict[tuple[int, int, int], str] = {}
        step = int(trainer.global_step)
        rows: list[Tensor] = []
        was_training = pl_module.training
        pl_module.eval()
        bar = tqdm(total=len(names), desc=f"pairs {folder_name}", leave=False, disable=not trainer.is_global_zero)
        for i, name in enumerate(names):
            rgb, _ = pl_module.render_views(views.cameras[i].to(pl_module.device))
            rgb = rgb[0].detach().float().cpu().clamp(0, 1)
            target = views.targets[i]
            if views.masks is not None:  # undistorted captures: invalid border black in both
                rgb = rgb * views.masks[i]
                target = target * views.masks[i]
            h, w = rgb.shape[-2:]
            save_image(rgb, staged / "render" / f"{name}.png")
            save_image(target, staged / "target" / f"{name}.png")
            ref_paths = []
            for j in refs[i]:
                key = (j, h, w)
                if key not in ref_files:
                    ref = views.pool_images[j]
                    stem = safe_name(views.pool_names[j])
                    if tuple(ref.shape[-2:]) != (h, w):  # a reference must match its render's size
                        ref, stem = resize_image(ref, (h, w)), f"{stem}_{w}x{h}"
                    save_image(ref, staged / "ref" / f"{stem}.png")
                    ref_files[key] = f"{final}/ref/{stem}.png"
                ref_paths.append(ref_files[key])
            self._items.append(PairRecord(
                name=f"{final}/{name}",
                image=f"{final}/render/{name}.png",
                target_image=f"{final}/target/{name}.png",
                ref_image=ref_paths,
                prompt=self.prompt,
                strategy=self.strategy,
                scene=self.scene_name,
                source=views.source,
                step=step,
                fraction=fraction,
                view=views.cameras.names[i],
                ref_views=[views.pool_names[j] for j in refs[i]],
            ).to_json())
            if len(rows) < 3 * self.log_images:
                rows += [rgb, target, resize_image(views.pool_images[refs[i][0]], (h, w))]
            bar.update(1)
        bar.close()
        pl_module.train(was_training)
        self._staged[final] = staged
        self._log_grid(trainer, rows, folder_name)
        log.info("PairWriter: staged %d views of %s at step %d", len(names), final, step)

    @torch.no_grad()
    def write_shifted_scene(self, trainer: Trainer, pl_module: LightningModule) -> Path:
        """Cycle stage 1: renders the fitted views shifted sideways and writes them as a scene."""
        assert self._staging is not None
        data = trainer.datamodule
        idx = subset(len(data.train_cameras), self.max_views)
        original = data.train_cameras[idx]
        distance = self.shift * float(pl_module.scene_scale)
        shifted = shift_sideways(original, distance)
        names = unique_names([safe_name(n) for n in original.names])
        was_training = pl_module.training
        pl_module.eval()
        renders = [pl_module.render_views(shifted[i].to(pl_module.device))[0][0].float().cpu().clamp(0, 1)
                   for i in tqdm(range(len(names)), desc="cycle shifted renders", leave=False)]
        pl_module.train(was_training)
        points = colors = None
        if self.shift_points > 0 and isinstance(pl_module, SeedPoints):
            seeds = pl_module.seed_points(self.shift_points)
            if seeds is not None:
                points, colors = seeds
        meta = {"scene": self.scene_name, "shift": self.shift, "shift_distance": distance,
                "source": str(data.path), "step": int(trainer.global_step)}
        staged = self._staging / CYCLE_STAGE1_DIR
        write_cycle_scene(staged, shifted, renders, names, original, [data.train_images[i] for i in idx], meta, points, colors)
        final = self.out_dir / self.scene_name / CYCLE_STAGE1_DIR
        with pair_store.locked(self.out_dir):
            pair_store.replace_folder(staged, final)
        log.info("PairWriter: cycle stage 1 scene (%d views shifted by %.4f) -> %s", len(names), distance, final)
        return final

    def _log_grid(self, trainer: Trainer, rows: list[Tensor], tag: str) -> None:
        """One row per view: render | target | reference."""
        if rows:
            log_image(trainer.loggers, f"curate/{tag}/render_target_ref", tile_grid(rows, columns=3), trainer.global_step)
