"""Held-out-view evaluation shared by every scene module (Gaussians, NeRF).

Per view PSNR / SSIM / LPIPS (``ImageMetrics``), FID over all test views (``build_fid``,
only when its weights are on disk), the same metrics after the Difix3D+ post-render fix
(``<metric>_fixed``), and ``metrics.json`` with ``"mean"`` (the plain renders: Difix3D or
the bare reconstruction) and ``"mean_fixed"`` (after the post-render fix: Difix3D+).

The evaluator is a plain object (no Lightning): a scene module feeds it renders and writes
what it returns.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from lightning_modules.scene.fid import build_fid
from lightning_modules.scene.metrics import ImageMetrics, summarise

__all__ = ["EvalSettings", "SceneEvaluator", "METRIC_KEYS"]

METRIC_KEYS = ("psnr", "ssim", "lpips")


@dataclass
class EvalSettings:
    """How held-out views are scored.

    Attributes:
        lpips_net: LPIPS backbone ("alex" or "vgg").
        pretrained_metrics: compute LPIPS when its backbone file is on disk (else skipped
            with a warning); False never computes LPIPS.
        compute_fid: FID over the test views when its Inception weights are on disk.
        num_log_images: render | (fixed |) ground-truth grids logged per evaluation.
    """

    lpips_net: Literal["alex", "vgg"] = "alex"
    pretrained_metrics: bool = True
    compute_fid: bool = True
    num_log_images: int = 4


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

    def start(self, stage: str, device: torch.device, with_fix: bool) -> None:
        """Resets the records; on "test" builds FID metrics (plain, and fixed when ``with_fix``)."""
        self.records = []
        self._fid = None
        if stage == "test" and self.settings.compute_fid:
            plain = build_fid()
            if plain is not None:
                fixed = build_fid() if with_fix else None
                self._fid = {"plain": plain.to(device), "fixed": None if fixed is None else fixed.to(device)}

    def metrics(self, device: torch.device) -> ImageMetrics:
        if self._metrics is None:
            self._metrics = ImageMetrics(self.settings.lpips_net, self.settings.pretrained_metrics)
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
        log_it = len(self.records) < self.settings.num_log_images
        for i, name in enumerate(names):
            self.records.append({"name": name, **{k: float(v[i]) for k, v in values.items()}})
        return log_it

    def summary(self) -> tuple[dict[str, float], dict[str, float]]:
        """(mean, mean_fixed) over the records; FID added when it was computed."""
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
