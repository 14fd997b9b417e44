"""Shared pytest fixtures."""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from helpers.scene_writers import Rig

# Offline by construction: never let a test reach for the model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Before torch loads: spinning OpenMP waits make shared-core CPU runs many times slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """The research scenes in ../shared/data; skips the test when they are absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is absent (research data is not shipped with the project)")
    return SHARED_DATA


@pytest.fixture
def seed() -> int:
    import torch

    torch.manual_seed(0)
    return 0


@pytest.fixture(scope="module")
def rig() -> Rig:
    """The small synthetic capture (tests/helpers/scene_writers.py) every reader test writes in each format."""
    from helpers.scene_writers import make_rig

    return make_rig()
