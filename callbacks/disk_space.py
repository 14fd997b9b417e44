"""Checks that the folders a run logs and checkpoints to can take it: before the first step, and
again at every logging step.

A full disk otherwise shows late and under another name: TensorBoard's writer thread dies on
``ENOSPC`` and Lightning then reports "you tried to log 0.53 which is not supported" at some
later ``self.log``; a checkpoint folder fails at the first save, after that many steps. The
scene modules check their own ``output_dir`` (``SceneModule.setup`` / ``on_train_start``).
`difix3d.cli` adds this callback to every run.
"""
from __future__ import annotations

import logging
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from datamodules.files.temp_files import MIN_FREE_BYTES, check_free_space, check_writable

__all__ = ["OutputFolderCheck"]

log = logging.getLogger(__name__)


class OutputFolderCheck(Callback):
    """Every logger's ``save_dir`` (at setup) and checkpoint ``dirpath`` (at the start of
    training, where Lightning has resolved it) must be writable with ``min_free_bytes`` free,
    and keep that much free at every logging step (``trainer.log_every_n_steps``): a disk
    filling up during training stops the run naming the folder before a writer fails in it.

    Args:
        min_free_bytes: the free space each folder needs (default 1 MiB: a full disk, not a
            small one, is what is refused).
    """

    def __init__(self, min_free_bytes: int = MIN_FREE_BYTES) -> None:
        self.min_free_bytes = int(min_free_bytes)
        self._folders: dict[Path, str] = {}

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._folders = {}
        for logger in trainer.loggers:
            folder = getattr(logger, "save_dir", None)
            if folder is not None and "://" not in str(folder):
                self._folders[Path(folder)] = f"trainer.logger save_dir ({type(logger).__name__})"
        self._check_all(trainer, writable=True)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for callback in trainer.checkpoint_callbacks:
            folder = callback.dirpath if isinstance(callback, ModelCheckpoint) else None
            if folder is not None and "://" not in str(folder):
                self._folders[Path(folder)] = "checkpoint dirpath"
        self._check_all(trainer, writable=True)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: object,
                           batch: object, batch_idx: int) -> None:
        every = trainer.log_every_n_steps
        if every > 0 and trainer.global_step % every == 0:  # a statvfs per folder: microseconds
            self._check_all(trainer, writable=False)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        # Lightning's TensorBoard logger turns its writer's OSError into "you tried to log ...
        # which is not supported" (a ValueError from the OSError): say what it was, and where.
        if isinstance(exception, ValueError) and isinstance(exception.__cause__, OSError):
            folders = ", ".join(str(f) for f, what in self._folders.items() if what.startswith("trainer.logger"))
            log.error("the logger's writer failed (%s) in %s; Lightning's message below about a value it cannot "
                      "log means that", exception.__cause__, folders or "its save_dir")

    def _check_all(self, trainer: pl.Trainer, writable: bool) -> None:
        if not trainer.is_global_zero:
            return
        for folder, what in self._folders.items():
            if writable:
                check_writable(folder, what)
            check_free_space(folder, self.min_free_bytes, what, "what the run writes there")
