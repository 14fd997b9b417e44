"""A TorchScript fixer through the public commands: scripts/fix_images.py, a demo Difix3D run
(progressive fix, post-render fix in test, fixed predict renders) and the viewer."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import torch

from datamodules.files.image_io import load_image, save_image
from helpers.runs import REPO, difix3d_args, run
from helpers.torchscript_fixers import script_module, write_tiny_torchscript
from lightning_modules.difix.fixers.errors import FixerError
from lightning_modules.difix.fixers.ready import ReadyFixer
from lightning_modules.difix.fixers.spec import FixerSpec

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")


def test_fix_images_command_with_a_torchscript_file(tmp_path: Path) -> None:
    ts = write_tiny_torchscript(tmp_path / "fixer.pt")
    renders = tmp_path / "renders"
    for name in ("a", "b"):
        save_image(torch.rand(3, 24, 40, generator=torch.Generator().manual_seed(len(name))), renders / f"{name}.png")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "fix_images.py"), "--fixer", str(ts), "--images",
                           str(renders), "--refs", str(renders / "a.png"), "--out", str(tmp_path / "fixed"),
                           "--size", "32", "64", "--device", "cpu"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "TorchScript" in done.stderr and "reference(s) per render are ignored" in done.stderr
    fixer = ReadyFixer(FixerSpec(name=str(ts), size=(32, 64), device="cpu"))
    want = fixer(load_image(renders / "b.png")[None])[0]
    got = load_image(tmp_path / "fixed" / "b.png")
    assert got.shape == (3, 24, 40) and float((got - want).abs().max()) <= 1 / 255 + 1e-6


def test_demo_difix3d_run_with_a_torchscript_fixer(tmp_path: Path) -> None:
    ts = write_tiny_torchscript(tmp_path / "fixer.pt")
    logs, out = tmp_path / "logs", tmp_path / "out"
    common = difix3d_args(tmp_path, str(ts), (64, 64), frames=2)
    run(["fit", *common, "--trainer.max_steps=4"])
    ckpt = logs / "difix3d_demo" / "version_0" / "checkpoints" / "last.ckpt"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(ckpt.parents[1]))
    events.Reload()
    assert [e.value for e in events.Scalars("fix/num_fixes")] == [1.0]  # step 2
    run(["test", *common, f"--ckpt_path={ckpt}"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"psnr", "ssim"} <= set(metrics["mean_fixed"]) and metrics["mean_fixed"] != metrics["mean"]
    run(["predict", *common, f"--ckpt_path={ckpt}"])
    assert len(list((out / "predict" / "views_fixed").glob("*.png"))) == len(list((out / "predict" / "views").glob("*.png"))) > 0

    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import view
    finally:
        sys.path.remove(str(REPO / "scripts"))
    viewer = view.build_viewer(view.parse_args([str(ckpt), "--fixer", str(ts), "--port", "0", "--device", "cpu"]))
    try:
        assert viewer.fix is not None
        assert "<html" in urllib.request.urlopen(viewer.url, timeout=10).read().decode().lower()
    finally:
        viewer.stop()


class _AllInf(torch.nn.Module):  # the recipe: every value +Inf
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 0 + float("inf")


class _Bytes(torch.nn.Module):  # the right shape, 0..255 integers
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ((x + 1) * 127.5).to(torch.uint8)


class _TwoInputs(torch.nn.Module):
    def forward(self, x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        return x + ref


@pytest.mark.parametrize("module, said", [(_AllInf(), "non-finite output"), (_Bytes(), "returned uint8 values"),
                                          (_TwoInputs(), "failed on 1 image")])
def test_fix_images_refuses_a_bad_torchscript_fixer_in_one_line_and_writes_nothing(module, said: str,
                                                                                   tmp_path: Path) -> None:
    ts = script_module(module, tmp_path / "bad_fixer.pt")
    save_image(torch.rand(3, 16, 16), tmp_path / "renders" / "a.png")
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "fix_images.py"), "--fixer", str(ts), "--images",
                           str(tmp_path / "renders"), "--out", str(tmp_path / "fixed"), "--size", "16", "16",
                           "--device", "cpu"], cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and f"fixer {ts}" in done.stderr and said in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and not list((tmp_path / "fixed").glob("*.png"))


def test_a_fit_with_a_broken_torchscript_fixer_stops_before_step_1(tmp_path: Path) -> None:
    ts = script_module(_TwoInputs(), tmp_path / "two_inputs.pt")
    logs, scene = tmp_path / "logs", tmp_path / "scene"
    with pytest.raises(FixerError, match=rf"fixer {ts}: failed on 1 image"):
        run(["fit", "--config", str(REPO / "configs/demo/difix3d.yaml"), "--trainer.enable_progress_bar=false",
             f"--trainer.logger.init_args.save_dir={logs}", f"--trainer.callbacks.fixer.name={ts}",
             "--trainer.callbacks.fixer.size=[16, 16]", f"--data.init_args.path={scene}",
             "--data.init_args.procedural.num_views=8", "--data.init_args.procedural.size=24",
             "--model.init_args.init.max_points=300", f"--model.init_args.output_dir={tmp_path / 'out'}"])
    assert not list(logs.rglob("*.ckpt"))  # nothing trained, nothing saved: the first fix was 200 steps away

