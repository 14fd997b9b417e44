"""Runs that survive a kill -9, refuse to save a diverged state and respect command-line outputs."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from callbacks.finite_guard import FiniteGuard, NonFiniteError, all_finite, non_finite_names
from difix3d.cli import CheckpointOptionError
from helpers.runs import REPO, run, scene_args

def _ckpt_step(path: Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=False)["global_step"])


def test_kill9_mid_fit_resumes_to_the_same_metrics(tmp_path: Path) -> None:
    steps = 120
    # Uninterrupted reference run.
    ref_logs, ref_out = tmp_path / "ref_logs", tmp_path / "ref_out"
    run(["fit", *scene_args(tmp_path, ref_logs, ref_out, steps)])
    ref_ckpt = ref_logs / "scene_demo" / "version_0" / "checkpoints" / "last.ckpt"
    run(["test", *scene_args(tmp_path, ref_logs, ref_out, steps), f"--ckpt_path={ref_ckpt}"])
    reference = json.loads((ref_out / "metrics.json").read_text())

    # The same run in a subprocess, killed with SIGKILL once its first periodic checkpoint exists.
    logs, out = tmp_path / "logs", tmp_path / "out"
    ckpt = logs / "scene_demo" / "version_0" / "checkpoints" / "last.ckpt"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(REPO / "main.py"), "fit", *scene_args(tmp_path, logs, out, steps)],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not ckpt.is_file() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ckpt.is_file(), "no periodic last.ckpt was written during training"
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL, "the run ended before it could be killed mid-way"
    finally:
        if proc.poll() is None:
            proc.kill()
    killed_at = _ckpt_step(ckpt)
    assert 0 < killed_at < steps and not (out / "point_cloud.ply").exists()

    run(["fit", *scene_args(tmp_path, logs, out, steps), f"--ckpt_path={ckpt}"])
    assert _ckpt_step(ckpt) == steps
    run(["test", *scene_args(tmp_path, logs, out, steps), f"--ckpt_path={ckpt}"])
    resumed = json.loads((out / "metrics.json").read_text())
    assert resumed["step"] == reference["step"] == steps
    assert resumed["num_gaussians"] == reference["num_gaussians"]
    for a, b in zip(resumed["per_view"], reference["per_view"]):
        # Same computation resumed from exact state: only float reassociation may differ.
        assert a["psnr"] == pytest.approx(b["psnr"], abs=1e-3), (killed_at, a, b)
        assert a["ssim"] == pytest.approx(b["ssim"], abs=1e-4), (killed_at, a, b)


def test_rerun_in_the_same_folder_replaces_last_ckpt(tmp_path: Path) -> None:
    logs, out = tmp_path / "logs", tmp_path / "out"
    run(["fit", *scene_args(tmp_path, logs, out, 10)])
    run(["fit", *scene_args(tmp_path, logs, out, 20)])
    folder = logs / "scene_demo" / "version_0" / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["last.ckpt"]  # no last-v1.ckpt beside a stale one
    assert _ckpt_step(folder / "last.ckpt") == 20


def _all_finite(path: Path) -> bool:
    state = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
    return not non_finite_names(state.items())


def test_diverged_scene_run_stops_and_saves_nothing_non_finite(tmp_path: Path) -> None:
    logs, out = tmp_path / "logs", tmp_path / "out"
    args = scene_args(tmp_path, logs, out, 60)
    lrs = [f"--model.init_args.lr.{k}=10" for k in ("means", "scales", "opacities", "sh0", "quats")]
    with pytest.raises(NonFiniteError, match=r"diverged at step \d+: non-finite"):
        run(["fit", *args, *lrs])
    for ckpt in logs.rglob("*.ckpt"):
        assert _all_finite(ckpt), ckpt
    assert not (out / "point_cloud.ply").exists()


def test_diverged_fixer_run_stops_and_keeps_no_nan_best(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    args = ["fit", "--config", str(REPO / "configs/demo/difix.yaml"), "--trainer.max_steps=30",
            "--trainer.enable_progress_bar=false", f"--trainer.logger.init_args.save_dir={logs}",
            "--data.init_args.source.init_args.num_train=10", "--data.init_args.source.init_args.num_val=2", "--data.init_args.resolution=32",
            "--data.init_args.crop_size=32", "--model.init_args.optimizer.lr=2", "--trainer.gradient_clip_val=null"]
    with pytest.raises(NonFiniteError, match=r"diverged at step \d+"):
        run(args)
    for ckpt in logs.rglob("*.ckpt"):
        assert _all_finite(ckpt), ckpt


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("where", [0, 263, -1])
def test_all_finite_finds_one_bad_value_anywhere(bad: float, where: int) -> None:
    tensors = [torch.randn(1000), torch.randn(31, 17, dtype=torch.float64), torch.arange(5)]
    assert all_finite(tensors)
    tensors[1].view(-1)[where] = bad
    assert not all_finite(tensors)
    assert non_finite_names(enumerate(tensors)) == [1]
    # Large finite values, empty and integer tensors, no tensors: all finite.
    assert all_finite([torch.full((3,), 3e38), torch.zeros(0), torch.arange(3)]) and all_finite([])


def test_guard_names_the_non_finite_gradient_and_parameter() -> None:
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    net(torch.ones(1, 3)).sum().backward()
    guard, trainer = FiniteGuard(), SimpleNamespace(checkpoint_callback=None, global_step=7)
    guard.on_before_optimizer_step(trainer, net, None)  # all finite: no error
    net[1].weight.grad[0, 2] = float("nan")
    with pytest.raises(NonFiniteError, match=r"step 7: non-finite gradients \['1.weight.grad'\]"):
        guard.on_before_optimizer_step(trainer, net, None)
    with torch.no_grad():
        net[0].bias[1] = float("inf")
    with pytest.raises(NonFiniteError, match=r"non-finite parameters \['0.bias'\]"):
        guard.on_train_batch_end(trainer, net, torch.tensor(1.0), None, 0)


def test_ckpt_path_keeps_command_line_output_dir_and_refuses_model_options(tmp_path: Path) -> None:
    logs, out = tmp_path / "logs", tmp_path / "fit_out"
    run(["fit", *scene_args(tmp_path, logs, out, 20)])
    ckpt = logs / "scene_demo" / "version_0" / "checkpoints" / "last.ckpt"
    fit_val = (out / "metrics_val.json").read_bytes()
    test_out = tmp_path / "test_out"
    args = scene_args(tmp_path, logs, out, 20)
    args[args.index(f"--model.init_args.output_dir={out}")] = f"--model.init_args.output_dir={test_out}"
    run(["test", *args, f"--ckpt_path={ckpt}"])
    assert json.loads((test_out / "metrics.json").read_text())["stage"] == "test"
    assert not (out / "metrics.json").exists() and (out / "metrics_val.json").read_bytes() == fit_val
    with pytest.raises(CheckpointOptionError, match=r"sh \(given"):
        run(["test", *args, f"--ckpt_path={ckpt}", "--model.init_args.sh.degree=3"])


@pytest.mark.parametrize(("fixer", "targets", "error"), [
    ("missing/fixer.ckpt", "test", "missing/fixer.ckpt"),
    ("nobody/no-such-model", "test", "HF_HUB_OFFLINE"),
    ("tiny", "missing_targets.json", "missing_targets.json"),
])  # fmt: skip
def test_progressive_fix_checks_fixer_and_targets_before_step_1(
    tmp_path: Path, fixer: str, targets: str, error: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    logs = tmp_path / "logs"
    args = ["fit", "--config", str(REPO / "configs/demo/difix3d.yaml"), "--trainer.enable_progress_bar=false",
            f"--trainer.logger.init_args.save_dir={logs}", f"--trainer.callbacks.fixer={fixer}",
            f"--trainer.callbacks.targets={targets}", "--trainer.callbacks.start_step=1000",
            f"--data.init_args.path={tmp_path / 'scene'}", "--data.init_args.procedural.num_views=8",
            "--data.init_args.procedural.size=24", "--data.init_args.read.test_every=4", "--trainer.max_steps=5",
            f"--model.init_args.output_dir={tmp_path / 'out'}"]
    with pytest.raises((FileNotFoundError, ValueError), match=error):
        run(args)
    assert not list(logs.rglob("*.ckpt"))  # failed before any training step
