"""A ModelCheckpoint that keeps best.ckpt by a metric and refreshes last.ckpt at every validation.

Lightning 2.6's ModelCheckpoint with ``monitor`` writes ``last.ckpt`` only at steps where it
also saved a top-k checkpoint (``on_validation_end``: "only save last checkpoint if a
checkpoint was actually saved in this step"), so with ``save_top_k: 1`` the "last" file stays
at the best step and a resume from it silently goes back in time. Two callbacks (one
monitored, one not) would fix that but make ``--trainer.callbacks.init_args.dirpath=...`` on the
command line move only the last of them, which sent best.ckpt elsewhere in a real run.
"""
from __future__ import annotations

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint

__all__ = ["BestAndLastCheckpoint"]


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
