"""FID over held-out views through torchmetrics, only when its Inception weights are on disk.

torchmetrics' FrechetInceptionDistance uses torch-fidelity's InceptionV3, which downloads
its weights on first use. Offline that would crash a test run at the very end, so we check
for the file first and skip FID with one warning instead (never a made-up number).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_FILE}"


def _warn(message: str) -> None:
    from lightning.pytorch.utilities import rank_zero_warn  # Lightning only when there is something to say

    rank_zero_warn(message)


def inception_weights_path() -> Path:
    """Where torch.hub (and so torch-fidelity) looks for the FID Inception weights."""
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE


def build_fid(feature: int | nn.Module = 2048) -> nn.Module | None:
    """A FrechetInceptionDistance metric, or None (with one warning) when it cannot run offline.

    Args:
        feature: Inception feature size (64, 192, 768, 2048), or any module mapping uint8
            images (N, 3, H, W) to (N, D) features (tests, custom extractors).
    """
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance
    except ImportError as err:  # pragma: no cover - torchmetrics is a dependency
        _warn(f"FID skipped: torchmetrics FID unavailable ({err})")
        return None
    if isinstance(feature, int):
        path = inception_weights_path()
        if not path.is_file() and os.environ.get("DIFIX3D_FID_DOWNLOAD", "0") != "1":
            _warn(
                f"FID skipped: its Inception weights {path} are not on disk. Download {INCEPTION_URL} "
                f"to that path (or set DIFIX3D_FID_DOWNLOAD=1 to let torch-fidelity fetch it)."
            )
            return None
    try:
        return FrechetInceptionDistance(feature=feature, normalize=True)
    except (ModuleNotFoundError, ImportError, RuntimeError, OSError) as err:
        _warn(f"FID skipped: {err}")
        return None
