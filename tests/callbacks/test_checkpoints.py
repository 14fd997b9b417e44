"""BestAndLastCheckpoint: best.ckpt by the metric, last.ckpt from the last validation."""
from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader

from callbacks.checkpoints import BestAndLastCheckpoint


class Declining(pl.LightningModule):
    """val/psnr falls at every validation, so the best stays at the first one."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        return self.layer(batch).square().mean()

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        self.log("val/psnr", -float(self.global_step))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(torch.randn(16, 2), batch_size=2)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(torch.randn(2, 2), batch_size=2)


def steps(folder: Path) -> dict[str, int]:
    return {p.stem: torch.load(p, map_location="cpu", weights_only=False)["global_step"] for p in folder.glob("*.ckpt")}


@pytest.mark.parametrize("cls", [ModelCheckpoint, BestAndLastCheckpoint])
@pytest.mark.parametrize("every", ["2 steps", "epoch"])
def test_last_follows_every_validation(tmp_path: Path, cls: type[ModelCheckpoint], every: str) -> None:
    ckpt = cls(dirpath=tmp_path / "ckpt", filename="best", monitor="val/psnr", mode="max", save_last=True,
               save_top_k=1, enable_version_counter=False)
    # Validation every 2 steps within long epochs, or at the end of 2-step epochs (Lightning
    # saves top-k in on_validation_end in the first case, in on_train_epoch_end in the second).
    schedule = ({"val_check_interval": 2, "check_val_every_n_epoch": None} if every == "2 steps"
                else {"limit_train_batches": 2})
    trainer = pl.Trainer(accelerator="cpu", max_steps=6, num_sanity_val_steps=0, logger=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[ckpt],
                         default_root_dir=tmp_path, **schedule)
    trainer.fit(Declining())
    saved = steps(tmp_path / "ckpt")
    assert saved["best"] == 2
    # Lightning's own callback leaves last.ckpt at the best step (why this subclass exists).
    assert saved["last"] == (6 if cls is BestAndLastCheckpoint else 2)
