"""Image-quality metrics for held-out views (PSNR, SSIM, LPIPS via torchmetrics, cc-PSNR), offline-safe.

torchmetrics' LPIPS builds a torchvision backbone with ImageNet weights, which it would
download. Offline, ``ImageMetrics`` looks for the backbone file first and, when it is absent,
leaves that LPIPS out (one warning naming the file) instead of crashing or reporting a number
from a random backbone.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
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


def _build_lpips(net: str, random_backbone: bool) -> nn.Module | None:
    """torchmetrics' LPIPS network for ``net``, or None (one warning) when its backbone file is absent."""
    path = lpips_backbone_path(net)
    if random_backbone:  # tests of the plumbing: torchmetrics' own linear heads on a random backbone
        from torchmetrics.functional.image.lpips import _NoTrainLpips

        return _NoTrainLpips(net=net, pnet_rand=True).eval()
    if not path.is_file():
        warnings.warn(
            f"LPIPS ({net}) is skipped: its {net} backbone {path} is absent and nothing is downloaded "
            f"here. Place {path.name} in {path.parent} (or set TORCH_HOME) to get it; "
            "metrics.json then omits it.",
            stacklevel=3,
        )
        return None
    from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

    return LearnedPerceptualImagePatchSimilarity(net_type=net, normalize=True).net.eval()


class ImageMetrics(nn.Module):
    """Per-image PSNR, SSIM and, when asked, LPIPS (when its backbone is on disk) and cc-PSNR.

    Args:
        lpips_net: "alex" or "vgg" backbone of the "lpips" key.
        pretrained: False disables LPIPS altogether (no warning); True computes each LPIPS
            whose backbone file exists and warns once for each one that does not.
        lpips_nets: more LPIPS keys, "lpips_<net>" (e.g. ("alex", "vgg"): both, as the
            dataset protocol reports them).
        cc_psnr: also "cc_psnr", PSNR after the reference's colour fit (``color_correct``).
        reference_vgg_input: LPIPS-VGG is fed the [0, 1] images as they are, without the
            rescaling to [-1, 1] that LPIPS expects, as the reference's gsplat example
            (``normalize=False``) and the official 3DGS metrics do; AlexNet is fed rescaled
            images either way, as there. False rescales for both.
        random_backbone: tests only: LPIPS on a random backbone (its numbers mean nothing).
    """

    def __init__(
        self,
        lpips_net: str = "alex",
        pretrained: bool = True,
        lpips_nets: Sequence[str] = (),
        cc_psnr: bool = False,
        reference_vgg_input: bool = False,
        random_backbone: bool = False,
    ) -> None:
        super().__init__()
        self.lpips_net = lpips_net
        self.cc_psnr = cc_psnr
        self.reference_vgg_input = reference_vgg_input
        self.keys = {"lpips": lpips_net, **{f"lpips_{net}": net for net in lpips_nets}}
        for net in self.keys.values():
            lpips_backbone_path(net)  # an unknown name fails now, offline or not
        self.nets = nn.ModuleDict()
        if pretrained:
            for net in dict.fromkeys(self.keys.values()):  # each backbone once, in order
                built = _build_lpips(net, random_backbone)
                if built is not None:
                    self.nets[net] = built

    @torch.no_grad()
    def forward(self, pred: Tensor, target: Tensor) -> dict[str, Tensor]:
        """Metrics per image.

        Args:
            pred: (B, 3, H, W) in [0, 1].
            target: (B, 3, H, W) in [0, 1].

        Returns:
            "psnr", "ssim", and each LPIPS key whose backbone is available and "cc_psnr" when
            asked: (B,) each.
        """
        from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

        pred = pred.clamp(0, 1).float()
        target = target.clamp(0, 1).float()
        out = {
            "psnr": peak_signal_noise_ratio(pred, target, data_range=1.0, reduction="none", dim=(1, 2, 3)),
            "ssim": structural_similarity_index_measure(pred, target, data_range=1.0, reduction="none"),
        }
        scores: dict[str, Tensor] = {}
        for key, net in self.keys.items():
            if net in self.nets:
                if net not in scores:
                    rescale = not (net == "vgg" and self.reference_vgg_input)
                    scores[net] = self.nets[net](pred, target, normalize=rescale).reshape(-1)
                out[key] = scores[net]
        if self.cc_psnr:
            from lightning_modules.scene.color_correct import cc_psnr

            out["cc_psnr"] = cc_psnr(pred, target)
        return out


def summarise(per_view: list[dict[str, Any]], keys: tuple[str, ...] = ("psnr", "ssim", "lpips")) -> dict[str, float]:
    """Mean of each metric present in every per-view record (PSNR of inf views stays inf)."""
    mean: dict[str, float] = {}
    for k in keys:
        vals = [r[k] for r in per_view if k in r]
        if vals and len(vals) == len(per_view):
            mean[k] = float(sum(vals) / len(vals)) if all(math.isfinite(v) for v in vals) else float("inf")
    return mean
