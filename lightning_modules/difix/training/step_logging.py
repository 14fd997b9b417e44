"""What a fixer's training step logs (DifixModule and FixerModule alike)."""
from __future__ import annotations

import lightning.pytorch as pl
from torch import Tensor


def log_losses(module: pl.LightningModule, losses: dict[str, Tensor], batch_size: int) -> Tensor:
    """Logs ``train/loss`` (in the progress bar) and every other term as ``train/<name>``.

    Returns:
        ``losses["loss"]``, the step's loss.
    """
    module.log("train/loss", losses["loss"], prog_bar=True, batch_size=batch_size)
    module.log_dict({f"train/{k}": v.detach() for k, v in losses.items() if k != "loss"}, batch_size=batch_size)
    return losses["loss"]
