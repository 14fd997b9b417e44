"""The published-model fixtures the Difix loader tests share: a trained tiny net and the same
weights written as an `nvidia/difix_ref` folder (tests/helpers/difix_artefacts.py says where each
layout fact comes from)."""
from __future__ import annotations

from pathlib import Path

import pytest
from helpers.difix_artefacts import trained_tiny, write_published_folder

from lightning_modules.difix.net.net import DifixNet


@pytest.fixture(scope="module")
def weights() -> DifixNet:
    """A tiny DifixNet whose every trained tensor moved off its initialisation."""
    return trained_tiny(seed=0)


@pytest.fixture(scope="module")
def difix_ref(weights: DifixNet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`weights` in the published `nvidia/difix_ref` layout."""
    return write_published_folder(weights, tmp_path_factory.mktemp("hub") / "difix_ref", multiview=True)
