"""A failed checkpoint save (full disk) leaves the previous checkpoint whole, and every shipped
config saves during training, so a kill loses at most one interval."""
from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from helpers import main_py_configs
from helpers.runs import REPO, run, scene_args

import callbacks.checkpoints as checkpoints
from helpers.small_disk import nearly_full


def _step(path: Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])


def _first_save_then(tmp_path: Path, dirpath: Path) -> list[str]:
    """A 10-step run saving last.ckpt at step 10 into `dirpath`; returns the args of a 20-step resume."""
    logs, out = tmp_path / "logs", tmp_path / "out"
    args = [*scene_args(tmp_path, logs, out, 10), f"--trainer.callbacks.init_args.dirpath={dirpath}"]
    run(["fit", *args])
    assert _step(dirpath / "last.ckpt") == 10
    resume = [*scene_args(tmp_path, logs, out, 20), f"--trainer.callbacks.init_args.dirpath={dirpath}"]
    return [*resume, f"--ckpt_path={dirpath / 'last.ckpt'}"]


def test_a_failed_save_keeps_the_previous_last_ckpt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "ckpts"
    resume = _first_save_then(tmp_path, folder)
    before = (folder / "last.ckpt").read_bytes()

    def full_disk(obj: object, f) -> None:  # half the bytes, then the disk is full
        f.write(b"PK\x03\x04" + b"\0" * 1000)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoints.torch, "save", full_disk)
    with pytest.raises(OSError, match="last.ckpt not written .*previous last.ckpt is intact"):
        run(["fit", *resume])
    assert (folder / "last.ckpt").read_bytes() == before and _step(folder / "last.ckpt") == 10
    assert sorted(p.name for p in folder.iterdir()) == ["last.ckpt"]  # no temporary file left


def _can_mount_tmpfs(target: Path) -> bool:
    if os.geteuid() != 0:
        return False
    target.mkdir(parents=True, exist_ok=True)
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(target)], capture_output=True).returncode == 0
    return ok


def test_a_really_full_disk_keeps_the_previous_last_ckpt(tmp_path: Path) -> None:
    # The checkpoint folder is checked when training starts (OutputFolderCheck): refused by
    # name before a step; the save itself on a real full disk: tests/datamodules/test_atomic_write.py.
    folder = tmp_path / "small_fs"
    if not _can_mount_tmpfs(folder):
        pytest.skip("needs root and tmpfs mounts (CI runs as root) for a real full filesystem")
    try:
        resume = _first_save_then(tmp_path, folder)
        before = (folder / "last.ckpt").read_bytes()
        free = os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize
        (folder / "filler").write_bytes(b"\0" * max(free - len(before) // 4, 0))  # room for a quarter of one
        with pytest.raises(OSError, match=rf"checkpoint dirpath {folder}: .* free, 1.0 MiB needed"):
            run(["fit", *resume])
        assert (folder / "last.ckpt").read_bytes() == before and _step(folder / "last.ckpt") == 10
        assert sorted(p.name for p in folder.iterdir()) == ["filler", "last.ckpt"]
    finally:
        subprocess.run(["umount", str(folder)], check=False)


def _model_checkpoints(config: dict) -> list[tuple[str, dict]]:
    callbacks = ((config.get("trainer") or {}).get("callbacks") or [])
    return [(str(c["class_path"]), c.get("init_args") or {}) for c in callbacks
            if str(c.get("class_path", "")).endswith(("ModelCheckpoint", "BestAndLastCheckpoint"))]


@pytest.mark.parametrize("path", main_py_configs())
def test_every_training_config_writes_last_ckpt_periodically(path: str) -> None:
    """Checked on the configs themselves (their smoke tests run the demo ones; paper-scale ones
    need a GPU): a ModelCheckpoint with save_last that saves before the run ends, every N steps,
    or (BestAndLastCheckpoint) at every validation, which comes before the last step."""
    config = yaml.safe_load((REPO / path).read_text())
    trainer = config.get("trainer") or {}
    max_steps = int(trainer.get("max_steps") or 0)
    assert max_steps > 0, f"{path}: no trainer.max_steps (every shipped config is step-based)"
    assert trainer.get("enable_checkpointing", True), f"{path}: enable_checkpointing is off"
    data = (config.get("data") or {}).get("init_args") or {}
    source = (data.get("source") or {}).get("init_args") or {}  # a SyntheticPairs source: num_train items an epoch
    epoch = int(data.get("steps_per_epoch") or (source.get("num_train") or 0) // int(data.get("batch_size") or 1))
    val_every = int(trainer.get("val_check_interval") or 0) or epoch * int(trainer.get("check_val_every_n_epoch") or 1)
    periodic = []
    for class_path, args in _model_checkpoints(config):
        every = int(args.get("every_n_train_steps") or 0)
        validation = class_path.endswith("BestAndLastCheckpoint") and 0 < val_every < max_steps
        periodic.append(bool(args.get("save_last")) and (0 < every < max_steps or validation))
    assert any(periodic), f"{path}: last.ckpt is written only when training ends (or never): a kill loses the run"


def test_the_last_ckpt_holds_the_last_step_when_max_steps_is_no_multiple_of_the_interval(tmp_path: Path) -> None:
    # 25 steps saving every 10: Lightning's own last.ckpt stays at step 20 (and would miss a
    # fix round at the last steps); the end of fit saves it again.
    ckpts = tmp_path / "ckpts"
    run(["fit", *scene_args(tmp_path, tmp_path / "logs", tmp_path / "out", 25),
         f"--trainer.callbacks.init_args.dirpath={ckpts}"])
    assert _step(ckpts / "last.ckpt") == 25


@pytest.mark.parametrize("room", ["none", "not for the .ply"])
def test_a_full_output_dir_fails_before_training_naming_it(tmp_path: Path, room: str) -> None:
    # No room: refused at setup. Room for the run's small files (1.25 MiB) but not for
    # point_cloud.ply (30,000 Gaussians of SH degree 1: 3.0 MiB): refused when training starts,
    # not after it (on_fit_end wrote it, and failed there with a bare [Errno 28]).
    leave = 0 if room == "none" else (1 << 20) + (256 << 10)
    logs = tmp_path / "logs"
    with nearly_full(tmp_path / "fs", leave=leave, size="8m") as fs:
        out = fs / "out"
        says = r"free.*needed" if room == "none" else r"1\.\d MiB free, 3\.0 MiB needed for point_cloud\.ply"
        with pytest.raises(OSError, match=rf"output_dir {out}: .*{says}"):
            run(["fit", *scene_args(tmp_path, logs, out, 10), "--model.init_args.init.type=random",
                 "--model.init_args.init.num_points=30000"])
    assert not list(logs.rglob("*.ckpt"))  # not one step ran


def test_a_full_tensorboard_dir_fails_at_setup_naming_it(tmp_path: Path) -> None:
    # TensorBoard's writer thread dies on a full disk and Lightning then reports "you tried to
    # log 0.53 which is not supported": the log folder is checked before anything is logged.
    with nearly_full(tmp_path / "fs", leave=64 << 10) as fs:
        logs = fs / "logs"
        with pytest.raises(OSError, match=rf"trainer.logger save_dir .*{fs}.*free.*needed"):
            run(["fit", *scene_args(tmp_path, logs, tmp_path / "out", 10)])


def test_a_disk_filling_up_during_training_stops_the_run_naming_the_log_folder(tmp_path: Path) -> None:
    # Another program fills the disk after step 3: the next logging step's check names the
    # folder (TensorBoard's writer would fail there later, reported as a value it cannot log).
    with nearly_full(tmp_path / "fs", leave=2 << 20, size="8m") as fs:
        logs = fs / "logs"
        args = [*scene_args(tmp_path, logs, tmp_path / "out", 20), "--trainer.log_every_n_steps=5",
                "--trainer.callbacks+=helpers.small_disk.FillDiskAt", f"--trainer.callbacks.folder={fs}",
                "--trainer.callbacks.step=3"]
        with pytest.raises(OSError, match=rf"trainer.logger save_dir \(TensorBoardLogger\) {logs}: .* free"):
            run(["fit", *args])


def test_predict_into_a_full_output_dir_fails_naming_it(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    run(["fit", *scene_args(tmp_path, logs, tmp_path / "out", 10)])
    ckpt = next(logs.rglob("last.ckpt"))
    with nearly_full(tmp_path / "fs", leave=0) as fs:
        out = fs / "predicted"
        with pytest.raises(OSError, match=rf"output_dir {out}: .*free"):
            run(["predict", *scene_args(tmp_path, logs, out, 10), f"--ckpt_path={ckpt}"])


def test_a_tensorboard_writer_failure_is_said_for_what_it_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    from torch.utils.tensorboard import SummaryWriter

    def full(*args: object, **kwargs: object) -> None:  # what its writer thread re-raises on a full disk
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(SummaryWriter, "add_scalar", full)
    logs = tmp_path / "logs"
    with caplog.at_level("ERROR"), pytest.raises(ValueError, match="you tried to log"):
        run(["fit", *scene_args(tmp_path, logs, tmp_path / "out", 10), "--trainer.log_every_n_steps=2"])
    assert f"the logger's writer failed ([Errno 28] No space left on device) in {logs}" in caplog.text
