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


def build_fid(feature: int | nn.Module = 2048, reset_real_features: bool = True) -> nn.Module | None:
    """A FrechetInceptionDistance metric, or None (with one warning) when it cannot run offline.

    Args:
        feature: Inception feature size (64, 192, 768, 2048), or any module mapping uint8
            images (N, 3, H, W) to (N, D) features (tests, custom extractors).
        reset_real_features: False keeps the real images' statistics across ``reset()``
            (several fake sets against one real set).
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
        return FrechetInceptionDistance(feature=feature, normalize=True, reset_real_features=reset_real_features)
    except (ModuleNotFoundError, ImportError, RuntimeError, OSError) as err:
        _warn(f"FID skipped: {err}")
        return None


def _load_uint8(path: Path) -> torch.Tensor:
    """(1, 3, H, W) uint8: the 8-bit PNG exactly as written (FID quantises to uint8 anyway)."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        return torch.from_numpy(np.asarray(image.convert("RGB")).copy()).permute(2, 0, 1)[None]


def fid_over_files(real: list[Path], fakes: dict[str, list[Path]], feature: int | nn.Module = 2048,
                   device: str | torch.device = "cpu") -> dict[str, float]:
    """FID of each set of ``fakes`` against one set of ``real`` images, all read from files.

    Images may differ in size (scenes of a dataset); they are fed one at a time, so memory
    does not grow with the dataset. The real statistics are computed once.

    Args:
        real: the real images (a dataset's test targets).
        fakes: {name: images} (one set per table row).
        feature: Inception feature size, or a feature module (see ``build_fid``).
        device: where features are computed.

    Returns:
        {name: FID}; empty when FID cannot run here (one warning says why) or a set has fewer
        than two images.
    """
    if len(real) < 2 or any(len(f) < 2 for f in fakes.values()):
        _warn("FID skipped: it needs at least 2 images in each set")
        return {}
    fid = build_fid(feature, reset_real_features=False)
    if fid is None:
        return {}
    fid = fid.to(device)
    for path in real:
        fid.update(_load_uint8(path).to(device), real=True)
    out = {}
    for name, paths in fakes.items():
        fid.reset()
        for path in paths:
            fid.update(_load_uint8(path).to(device), real=False)
        out[name] = float(fid.compute())
    return out
