"""Checks, before the first step, that the folders a run logs and checkpoints to can take it.

A full disk otherwise shows late and under another name: TensorBoard's writer thread dies on
``ENOSPC`` and Lightning then reports "you tried to log 0.53 which is not supported" at some
later ``self.log``; a checkpoint folder fails at the first save, after that many steps. The
scene modules check their own ``output_dir`` (``SceneModule.setup`` / ``on_train_start``).
`difix3d.cli` adds this callback to every run.
"""
from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from datamodules.files.temp_files import MIN_FREE_BYTES, check_free_space, check_writable

__all__ = ["OutputFolderCheck"]


class OutputFolderCheck(Callback):
    """Every logger's ``save_dir`` at setup and every checkpoint ``dirpath`` at the start of
    training (where Lightning has resolved it): writable, and ``min_free_bytes`` free.

    Args:
        min_free_bytes: the free space each folder needs (default 1 MiB: a full disk, not a
            small one, is what is refused).
    """

    def __init__(self, min_free_bytes: int = MIN_FREE_BYTES) -> None:
        self.min_free_bytes = int(min_free_bytes)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if not trainer.is_global_zero:
            return
        for logger in trainer.loggers:
            folder = getattr(logger, "save_dir", None)
            if folder is not None and "://" not in str(folder):
                self._check(Path(folder), f"trainer.logger save_dir ({type(logger).__name__})")

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        for callback in trainer.checkpoint_callbacks:
            folder = callback.dirpath if isinstance(callback, ModelCheckpoint) else None
            if folder is not None and "://" not in str(folder):
                self._check(Path(folder), "checkpoint dirpath")

    def _check(self, folder: Path, what: str) -> None:
        check_writable(folder, what)
        check_free_space(folder, self.min_free_bytes, what, "what the run writes there")
