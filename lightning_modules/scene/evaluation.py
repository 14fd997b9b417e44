"""Held-out-view evaluation shared by every scene module (Gaussians, NeRF).

Per view PSNR / SSIM / LPIPS (``ImageMetrics``; on request cc-PSNR and LPIPS with both
backbones), FID over all test views (``build_fid``, only when its weights are on disk), the
same metrics after the Difix3D+ post-render fix (``<metric>_fixed``), and ``metrics.json``
with ``"mean"`` (the plain renders: Difix3D or the bare reconstruction) and ``"mean_fixed"``
(after the post-render fix: Difix3D+). With ``save_views`` the test renders, fixed renders
and targets are also kept as PNGs (``test_views/``), so that FID can later be computed over a
whole dataset's test images together.

The evaluator is a plain object (no Lightning): a scene module feeds it renders and writes
what it returns.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from datamodules.files.image_io import save_image
from datamodules.files.temp_files import remove_stale, replace_folder, temp_path
from lightning_modules.scene.fid import build_fid
from lightning_modules.scene.metrics import ImageMetrics, summarise

__all__ = ["EvalSettings", "SceneEvaluator", "METRIC_KEYS", "VIEW_FOLDERS"]

METRIC_KEYS = ("psnr", "ssim", "lpips", "cc_psnr", "lpips_alex", "lpips_vgg")
# test_views/<folder>/<view name>.png: what each saved image is.
VIEW_FOLDERS = {"render": "render", "fixed": "render_fixed", "target": "target"}


@dataclass
class EvalSettings:
    """How held-out views are scored.

    Attributes:
        lpips_net: LPIPS backbone of the "lpips" key ("alex" or "vgg").
        pretrained_metrics: compute LPIPS when its backbone file is on disk (else skipped
            with a warning); False never computes LPIPS.
        compute_fid: FID over the test views when its Inception weights are on disk.
        num_log_images: render | (fixed |) ground-truth grids logged per evaluation.
        lpips_nets: also report "lpips_<net>" for these backbones (the dataset protocol:
            ["alex", "vgg"]).
        cc_psnr: also report "cc_psnr" (PSNR after the reference's colour fit).
        reference_vgg_input: LPIPS-VGG on [0, 1] images without rescaling, as the reference's
            gsplat example and the official 3DGS metrics compute it (see ``ImageMetrics``).
        save_views: keep the test renders (and fixed renders) and targets as PNGs in
            ``<output_dir>/test_views/{render,render_fixed,target}/<view>.png``, replaced
            whole at the end of each test (a killed test leaves the previous set).
    """

    lpips_net: Literal["alex", "vgg"] = "alex"
    pretrained_metrics: bool = True
    compute_fid: bool = True
    num_log_images: int = 4
    lpips_nets: tuple[Literal["alex", "vgg"], ...] = ()
    cc_psnr: bool = False
    reference_vgg_input: bool = False
    save_views: bool = False


# Settings are hyperparameters, so checkpoints hold them; allow them in weights-only loading.
torch.serialization.add_safe_globals([EvalSettings])


class SceneEvaluator:
    """Collects per-view records of one evaluation epoch and summarises them.

    Args:
        settings: what to compute.
    """

    def __init__(self, settings: EvalSettings) -> None:
        self.settings = settings
        self._metrics: ImageMetrics | None = None  # built on first use, never checkpointed
        self.records: list[dict[str, Any]] = []
        self._fid: dict[str, nn.Module | None] | None = None
        self._views: tuple[Path, Path] | None = None  # (staging folder, final folder) of saved views

    def start(self, stage: str, device: torch.device, with_fix: bool, views_dir: Path | None = None) -> None:
        """Resets the records; on "test" builds FID metrics (plain, and fixed when ``with_fix``)
        and, with ``views_dir``, stages the saved views beside it (moved into place by ``summary``)."""
        self.records = []
        self._fid = None
        if self._views is not None:  # this process's own unfinished test (remove_stale spares live writers)
            shutil.rmtree(self._views[0], ignore_errors=True)
        self._views = None
        if views_dir is not None:
            remove_stale(views_dir.parent)  # staging folders of killed tests
            self._views = (temp_path(views_dir, "new"), views_dir)
        if stage == "test" and self.settings.compute_fid:
            plain = build_fid()
            if plain is not None:
                fixed = build_fid() if with_fix else None
                self._fid = {"plain": plain.to(device), "fixed": None if fixed is None else fixed.to(device)}

    def metrics(self, device: torch.device) -> ImageMetrics:
        if self._metrics is None:
            s = self.settings
            self._metrics = ImageMetrics(s.lpips_net, s.pretrained_metrics, lpips_nets=s.lpips_nets, cc_psnr=s.cc_psnr,
                                         reference_vgg_input=s.reference_vgg_input)
        return self._metrics.to(device)

    @torch.no_grad()
    def update(self, rgb: Tensor, image: Tensor, names: list[str], fixed: Tensor | None = None) -> bool:
        """Scores a batch of renders.

        Args:
            rgb: (B, 3, H, W) renders in [0, 1].
            image: (B, 3, H, W) ground truth in [0, 1].
            names: B view names.
            fixed: (B, 3, H, W) post-render-fixed renders, or None.

        Returns:
            Whether this batch should be logged as image grids (the first ``num_log_images``).
        """
        metrics = self.metrics(rgb.device)
        values = metrics(rgb, image)
        if fixed is not None:
            values.update({f"{k}_fixed": v for k, v in metrics(fixed, image).items()})
        if self._fid is not None:
            for key, pred in (("plain", rgb), ("fixed", fixed)):
                if self._fid[key] is not None and pred is not None:
                    self._fid[key].update(image, real=True)
                    self._fid[key].update(pred, real=False)
        if self._views is not None:
            staged = self._views[0]
            for key, images in (("render", rgb), ("fixed", fixed), ("target", image)):
                for i, name in enumerate(names if images is not None else []):
                    save_image(images[i], staged / VIEW_FOLDERS[key] / f"{name}.png")
        log_it = len(self.records) < self.settings.num_log_images
        for i, name in enumerate(names):
            self.records.append({"name": name, **{k: float(v[i]) for k, v in values.items()}})
        return log_it

    def summary(self) -> tuple[dict[str, float], dict[str, float]]:
        """(mean, mean_fixed) over the records; FID added when it was computed. Saved views
        replace the previous test's whole."""
        if self._views is not None:
            staged, final = self._views
            self._views = None
            if staged.is_dir():
                replace_folder(staged, final)
        mean = summarise(self.records, METRIC_KEYS)
        fixed_keys = tuple(f"{k}_fixed" for k in METRIC_KEYS)
        mean_fixed = {k.removesuffix("_fixed"): v for k, v in summarise(self.records, fixed_keys).items()}
        fid, self._fid = self._fid, None
        if fid is not None:
            if len(self.records) < 2:
                from lightning.pytorch.utilities import rank_zero_warn  # Lightning only when warning
                rank_zero_warn("FID skipped: it needs at least 2 test views")
            else:
                mean["fid"] = float(fid["plain"].compute())
                if fid["fixed"] is not None:
                    mean_fixed["fid"] = float(fid["fixed"].compute())
        return mean, mean_fixed
