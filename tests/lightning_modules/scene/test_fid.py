"""FID: skipped with one clear warning offline, computed when a feature extractor is there."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from lightning_modules.scene.fid import INCEPTION_FILE, build_fid


def test_offline_fid_is_skipped_with_a_warning_naming_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv("DIFIX3D_FID_DOWNLOAD", raising=False)
    with pytest.warns(UserWarning, match=INCEPTION_FILE):
        assert build_fid() is None


class PooledColour(nn.Module):
    """A tiny feature extractor: images (N, 3, H, W) -> (N, 6) colour statistics (scale-free)."""

    num_features = 6

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        x = x / 255 if x.max() > 1 else x
        return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1).double()


def test_fid_with_a_feature_extractor_separates_distributions() -> None:
    fid = build_fid(feature=PooledColour())
    assert fid is not None
    g = torch.Generator().manual_seed(0)
    real = torch.rand(16, 3, 16, 16, generator=g)
    fid.update(real, real=True)
    fid.update(real, real=False)
    same = float(fid.compute())
    fid.reset()
    fid.update(real, real=True)
    fid.update((real * 0.3 + 0.6).clamp(0, 1), real=False)
    shifted = float(fid.compute())
    assert abs(same) < 1e-3
    assert shifted > 100 * max(abs(same), 1e-6)
