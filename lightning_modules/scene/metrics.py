"""Image-quality metrics for held-out views (PSNR, SSIM, LPIPS via torchmetrics), offline-safe.

torchmetrics' LPIPS builds a torchvision backbone with ImageNet weights, which it would
download. Offline, ``ImageMetrics`` looks for the backbone file first and, when it is absent,
leaves LPIPS out (one warning naming the file) instead of crashing or reporting a number
from a random backbone.
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["ImageMetrics", "lpips_backbone_path", "summarise", "LPIPS_BACKBONE_FILES"]

LPIPS_BACKBONE_FILES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth"}


def lpips_backbone_path(net: str) -> Path:
    """Where torchvision looks for the LPIPS backbone: $TORCH_HOME/hub/checkpoints/<file>."""
    if net not in LPIPS_BACKBONE_FILES:
        raise ValueError(f"lpips_net must be one of {sorted(LPIPS_BACKBONE_FILES)}, got {net!r}")
    return Path(torch.hub.get_dir()) / "checkpoints" / LPIPS_BACKBONE_FILES[net]


class ImageMetrics(nn.Module):
    """Per-image PSNR, SSIM and (when its backbone is on disk) LPIPS.

    Args:
        lpips_net: "alex" or "vgg" backbone for LPIPS.
        pretrained: False disables LPIPS altogether (no warning); True uses it when the
            backbone file exists and otherwise warns once and leaves it out.
    """

    def __init__(self, lpips_net: str = "alex", pretrained: bool = True) -> None:
        super().__init__()
        self.lpips_net = lpips_net
        self.lpips: nn.Module | None = None
        path = lpips_backbone_path(lpips_net)
        if not pretrained:
            return
        if not path.is_file():
            warnings.warn(
                f"LPIPS is skipped: its {lpips_net} backbone {path} is absent and nothing is downloaded "
                f"here. Place {path.name} in {path.parent} (or set TORCH_HOME) to get LPIPS; "
                "metrics.json then omits 'lpips'.",
                stacklevel=2,
            )
            return
        from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

        self.lpips = LearnedPerceptualImagePatchSimilarity(net_type=lpips_net, normalize=True)
        self.lpips.eval()

    @torch.no_grad()
    def forward(self, pred: Tensor, target: Tensor) -> dict[str, Tensor]:
        """Metrics per image.

        Args:
            pred: (B, 3, H, W) in [0, 1].
            target: (B, 3, H, W) in [0, 1].

        Returns:
            "psnr", "ssim" and (if available) "lpips": (B,) each.
        """
        from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

        pred = pred.clamp(0, 1).float()
        target = target.clamp(0, 1).float()
        out = {
            "psnr": peak_signal_noise_ratio(pred, target, data_range=1.0, reduction="none", dim=(1, 2, 3)),
            "ssim": structural_similarity_index_measure(pred, target, data_range=1.0, reduction="none"),
        }
        if self.lpips is not None:
            # The metric's network gives one score per image; the metric object would average.
            out["lpips"] = self.lpips.net(pred, target, normalize=True).reshape(-1)
        return out


def summarise(per_view: list[dict[str, Any]], keys: tuple[str, ...] = ("psnr", "ssim", "lpips")) -> dict[str, float]:
    """Mean of each metric present in every per-view record (PSNR of inf views stays inf)."""
    mean: dict[str, float] = {}
    for k in keys:
        vals = [r[k] for r in per_view if k in r]
        if vals and len(vals) == len(per_view):
            mean[k] = float(sum(vals) / len(vals)) if all(math.isfinite(v) for v in vals) else float("inf")
    return mean
