"""A real, nearly full filesystem for disk-full tests: a small tmpfs mounted for the test (root only)."""
from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from lightning.pytorch import Callback, Trainer


def can_mount_tmpfs(target: Path, size: str = "4m") -> bool:
    """Mounts a tmpfs of ``size`` at ``target`` (created); False when not root or mount fails."""
    if os.geteuid() != 0:
        return False
    target.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(target)],
                          capture_output=True).returncode == 0


def free_bytes(folder: Path) -> int:
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize


@contextlib.contextmanager
def nearly_full(target: Path, leave: int, size: str = "4m") -> Iterator[Path]:
    """A tmpfs at ``target`` with about ``leave`` bytes free (``filler`` takes the rest); skips
    the test where tmpfs cannot be mounted (CI runs as root)."""
    if not can_mount_tmpfs(target, size):
        pytest.skip("needs root and tmpfs mounts (CI runs as root) for a real full filesystem")
    try:
        with open(target / "filler", "wb") as f:
            try:
                f.write(b"\0" * max(free_bytes(target) - leave, 0))
                f.flush()
            except OSError as err:
                if err.errno != errno.ENOSPC:
                    raise
        yield target
    finally:
        subprocess.run(["umount", str(target)], check=False)


class FillDiskAt(Callback):
    """A Lightning callback (by class_path in a CLI run) that fills ``folder``'s filesystem
    after training step ``step``, as another program writing to the same disk would.

    Args:
        folder: a folder on the filesystem to fill.
        step: the global step after which it fills.
    """

    def __init__(self, folder: str, step: int) -> None:
        self.folder, self.step = Path(folder), int(step)

    def on_train_batch_end(self, trainer: Trainer, *args: object) -> None:
        if trainer.global_step == self.step:
            with open(self.folder / "filler-2", "wb") as f:
                try:
                    f.write(b"\0" * free_bytes(self.folder))
                except OSError as err:
                    if err.errno != errno.ENOSPC:
                        raise
