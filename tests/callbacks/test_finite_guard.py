"""FiniteGuard's device-side cadence: checks read every N steps, and always before anything is saved."""
from __future__ import annotations

import contextlib
import io
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from callbacks.finite_guard import FiniteGuard, NonFiniteError, non_finite_names
from difix3d.cli import cli_main
from helpers.runs import scene_args


def _net() -> torch.nn.Module:
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    net(torch.ones(1, 3)).sum().backward()
    return net


def test_deferred_checks_stop_at_the_next_read_naming_the_step_it_diverged_at() -> None:
    net, trainer = _net(), SimpleNamespace(checkpoint_callback=None, global_step=5)
    guard = FiniteGuard(sync_every_n_steps=4)
    net[1].weight.grad[0, 2] = float("nan")
    guard.on_before_optimizer_step(trainer, net, None)  # recorded on the device, not read
    with torch.no_grad():  # what the optimizer step does with that gradient
        net[1].weight[0, 2] = float("nan")
    for step in (5, 6, 7):  # not a read step: training goes on
        trainer.global_step = step
        guard.on_train_batch_end(trainer, net, torch.tensor(1.0), None, 0)
    trainer.global_step = 8
    with pytest.raises(NonFiniteError, match=r"diverged at step 5: non-finite gradients .*read on the device at "
                                             r"step 8.*\['1.weight'\]"):
        guard.on_train_batch_end(trainer, net, torch.tensor(1.0), None, 0)


def test_deferred_checks_are_read_before_a_checkpoint_validation_and_the_end() -> None:
    for hook in ("on_save_checkpoint", "on_validation_start", "on_train_end"):
        net, trainer = _net(), SimpleNamespace(checkpoint_callback=None, global_step=3)
        guard = FiniteGuard(sync_every_n_steps=100)
        guard.on_train_batch_end(trainer, net, torch.tensor(float("nan")), None, 0)
        args = (trainer, net, {"state_dict": net.state_dict()}) if hook == "on_save_checkpoint" else (trainer, net)
        with pytest.raises(NonFiniteError, match=r"diverged at step 3: non-finite loss .*\['train/loss'\]"):
            getattr(guard, hook)(*args)
        getattr(guard, hook)(*args)  # read once: the next read has nothing pending


def test_every_step_on_the_cpu_by_default_and_bad_cadence_refused() -> None:
    net = _net()
    guard, trainer = FiniteGuard(), SimpleNamespace(checkpoint_callback=None, global_step=7)
    with pytest.raises(NonFiniteError, match=r"step 7: non-finite loss \['train/loss'\]"):
        guard.on_train_batch_end(trainer, net, torch.tensor(float("inf")), None, 0)
    with pytest.raises(ValueError, match="sync_every_n_steps"):
        FiniteGuard(sync_every_n_steps=0)


def test_diverged_scene_run_with_deferred_checks_still_saves_nothing_non_finite(tmp_path: Path) -> None:
    logs, out = tmp_path / "logs", tmp_path / "out"
    lrs = [f"--model.init_args.lr.{k}=10" for k in ("means", "scales", "opacities", "sh0", "quats")]
    with contextlib.redirect_stdout(io.StringIO()):
        cli = cli_main([*scene_args(tmp_path, logs, out, 60, every=3), *lrs], run=False)
    (guard,) = [c for c in cli.trainer.callbacks if isinstance(c, FiniteGuard)]
    guard.sync_every_n_steps = 7  # checkpoints every 3 steps fall between the reads
    with pytest.raises(NonFiniteError, match=r"diverged at step \d+: non-finite"):
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    ckpts = list(logs.rglob("*.ckpt"))
    for ckpt in ckpts:
        assert not non_finite_names(torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"].items())
    assert not (out / "point_cloud.ply").exists()


@pytest.mark.gpu
def test_deferred_checks_do_not_sync_the_gpu() -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    net = _net().cuda()
    net(torch.ones(1, 3, device="cuda")).sum().backward()
    guard, trainer = FiniteGuard(sync_every_n_steps=16), SimpleNamespace(checkpoint_callback=None, global_step=1)
    loss = torch.tensor(1.0, device="cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:  # a host sync raises here
        guard.on_before_optimizer_step(trainer, net, None)
        guard.on_train_batch_end(trainer, net, loss, None, 0)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    guard.check_now(trainer, net)  # all finite
