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
    folder = tmp_path / "small_fs"
    if not _can_mount_tmpfs(folder):
        pytest.skip("needs root and tmpfs mounts (CI runs as root) for a real full filesystem")
    try:
        resume = _first_save_then(tmp_path, folder)
        before = (folder / "last.ckpt").read_bytes()
        free = os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize
        (folder / "filler").write_bytes(b"\0" * max(free - len(before) // 4, 0))  # room for a quarter of one
        with pytest.raises(OSError, match="not written"):
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
    epoch = int(data.get("steps_per_epoch") or (data.get("num_train") or 0) // int(data.get("batch_size") or 1))
    val_every = int(trainer.get("val_check_interval") or 0) or epoch * int(trainer.get("check_val_every_n_epoch") or 1)
    periodic = []
    for class_path, args in _model_checkpoints(config):
        every = int(args.get("every_n_train_steps") or 0)
        validation = class_path.endswith("BestAndLastCheckpoint") and 0 < val_every < max_steps
        periodic.append(bool(args.get("save_last")) and (0 < every < max_steps or validation))
    assert any(periodic), f"{path}: last.ckpt is written only when training ends (or never): a kill loses the run"
