"""Checkpoints on disk: a ModelCheckpoint that keeps best.ckpt by a metric and refreshes last.ckpt
at every validation, and a checkpoint writer that never damages the previous file.

Lightning 2.6's ModelCheckpoint with ``monitor`` writes ``last.ckpt`` only at steps where it
also saved a top-k checkpoint (``on_validation_end``: "only save last checkpoint if a
checkpoint was actually saved in this step"), so with ``save_top_k: 1`` the "last" file stays
at the best step and a resume from it silently goes back in time. Two callbacks (one
monitored, one not) would fix that but make ``--trainer.callbacks.init_args.dirpath=...`` on the
command line move only the last of them, which sent best.ckpt elsewhere in a real run.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from datamodules.files.temp_files import remove_stale, write_atomic
from lightning_modules.safe_load import read_torch_file

__all__ = ["AtomicCheckpointIO", "BestAndLastCheckpoint", "LastCheckpointAtFitEnd"]


class BestAndLastCheckpoint(ModelCheckpoint):
    """ModelCheckpoint (same arguments) whose ``last.ckpt`` follows every validation."""

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._refresh_last(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Validation at every epoch's end: Lightning saves top-k here, after the validation
        # (saving last.ckpt in on_validation_end would make it skip top-k at this step).
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._refresh_last(trainer)

    def _refresh_last(self, trainer: pl.Trainer) -> None:
        # Lightning's own bookkeeping decides: skipped runs (sanity check, fast_dev_run) and a
        # step whose checkpoints (top-k and last) were just written are left alone.
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


class LastCheckpointAtFitEnd(Callback):
    """Writes each ``save_last`` checkpoint callback's last.ckpt once more when training ends,
    unless it already holds the last step.

    Lightning 2.6's ``ModelCheckpoint.on_train_end`` saves last.ckpt only when it never saved
    one, so with ``max_steps`` not a multiple of ``every_n_train_steps`` the file stays at the
    last multiple: a resume or a ``test --ckpt_path`` misses the last steps (and a fix round
    made in them). `difix3d.cli` adds this to every run.
    """

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for callback in trainer.checkpoint_callbacks:
            # Lightning's own bookkeeping decides: fast_dev_run, and a step already saved, skip.
            if isinstance(callback, ModelCheckpoint) and callback.save_last \
                    and not callback._should_skip_saving_checkpoint(trainer):
                callback._save_last_checkpoint(trainer, callback._monitor_candidates(trainer))


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint beside its final name, then renames it over the old one.

    Lightning writes through a temporary file under $TMPDIR and moves it; when the checkpoint
    folder is on another filesystem that move is a copy that truncates the old `last.ckpt`
    first, so a full disk mid-copy destroys the last good checkpoint (measured: a 587 kB
    last.ckpt replaced by an unreadable 606 kB file). Here the bytes go to a hidden temporary
    in the same folder (`datamodules.files.temp_files.write_atomic`; those of killed runs are
    removed), are flushed, and `os.replace` swaps them in: the old file stays whole until the
    new one is complete, whatever fails. `main.py` installs it for every run.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"AtomicCheckpointIO.save_checkpoint: storage_options are not supported, got {storage_options}")
        path = Path(path)
        if "://" in str(path):  # remote filesystems: Lightning's own transactional write
            return super().save_checkpoint(checkpoint, path)
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale(path.parent)  # temporaries of killed runs
        write_atomic(path, lambda f: torch.save(checkpoint, f), "checkpoint")

    def load_checkpoint(self, path: _PATH, map_location: Any | None = None,
                        weights_only: bool | None = None) -> dict[str, Any]:
        """Reads a checkpoint on the CPU with ``safe_load.read_torch_file``: a pickle payload or a
        truncated file is refused naming the file (torch's own text names neither). Remote paths
        and an explicit ``weights_only=False`` (the caller trusts the file) go to Lightning's reader."""
        if "://" in str(path) or weights_only is False:
            return super().load_checkpoint(path, map_location, weights_only)
        if not Path(path).is_file():
            raise FileNotFoundError(f"Checkpoint file not found: {path}")
        return read_torch_file(path, "checkpoint")
