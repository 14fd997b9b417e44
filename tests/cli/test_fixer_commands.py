"""NVIDIA's current Fixer (a tiny folder in its `hf download nvidia/Fixer` layout) through the
public commands: a demo Difix3D fit (progressive fixes) and test (post-render fix), and
scripts/fix_images.py; the name is resolved by the same function as every fixer's."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from datamodules.files.image_io import load_image, save_image
from helpers.fixer_files import write_fixer_folder
from helpers.runs import REPO, difix3d_args, run
from lightning_modules.difix.fixers.ready import ReadyFixer
from lightning_modules.difix.fixers.sources import resolve_source

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")


@pytest.fixture(scope="module")
def fixer_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fixer_folder(tmp_path_factory.mktemp("fixer") / "models")[0]


def test_every_spelling_of_a_fixer_download_is_the_current_fixer(fixer_folder: Path) -> None:
    for name in (fixer_folder, fixer_folder.parent, fixer_folder / "pretrained" / "pretrained_fixer.pkl"):
        source = resolve_source(str(name))
        assert source.kind == "Fixer (Cosmos-Predict2)" and not source.difix


def test_demo_difix3d_fit_and_test_with_a_fixer_folder(fixer_folder: Path, tmp_path: Path) -> None:
    logs, out = tmp_path / "logs", tmp_path / "out"
    common = difix3d_args(tmp_path, str(fixer_folder), (32, 32))
    run(["fit", *common, "--trainer.max_steps=4"])
    ckpt = logs / "difix3d_demo" / "version_0" / "checkpoints" / "last.ckpt"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(ckpt.parents[1]))
    events.Reload()
    assert [e.value for e in events.Scalars("fix/num_fixes")] == [1.0]  # at step 2, with the Fixer
    run(["test", *common, f"--ckpt_path={ckpt}"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"psnr", "ssim"} <= set(metrics["mean_fixed"]) and metrics["mean_fixed"] != metrics["mean"]


def test_fix_images_with_a_fixer_folder(fixer_folder: Path, tmp_path: Path) -> None:
    renders = tmp_path / "renders"
    save_image(torch.rand(3, 24, 40, generator=torch.Generator().manual_seed(1)), renders / "a.png")
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "fix_images.py"), "--fixer", str(fixer_folder),
                           "--images", str(renders), "--refs", str(renders / "a.png"), "--out", str(tmp_path / "fixed"),
                           "--device", "cpu"], cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "Fixer (nv-tlabs/Fixer)" in done.stderr and "runs at 576x1024 (bilinear" in done.stderr
    assert "reference(s) per render are ignored" in done.stderr
    want = ReadyFixer(str(fixer_folder))(load_image(renders / "a.png")[None])[0]
    got = load_image(tmp_path / "fixed" / "a.png")
    assert got.shape == (3, 24, 40) and float((got - want).abs().max()) <= 1 / 255 + 1e-6
    assert float((got - load_image(renders / "a.png")).abs().mean()) > 1e-3  # it changed the image
