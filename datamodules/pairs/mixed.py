"""Training on several pair sources at once: curated pairs plus synthetic ones, plus clean pairs.

The curated pairs of a few small scenes are too few for a fixer to learn what not to touch. The
issue's remedies, all on the training side only: mix in synthetic degradations of other clean
images (`extra` PairDataModules, e.g. with a `SyntheticPairs` source), and show a share of clean pairs (the
target as input: the fixer must return it unchanged), so fixing an already clean render does not
damage it. Validation and test are the primary module's alone (pairs of the unseen scene), so
val/psnr vs val/psnr_input stays the measure of the fix.
"""
from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from datamodules.pairs.datamodule import PairDataModule


class CleanShare(Dataset):
    """Wraps a pair dataset; a seeded `fraction` of items get their target as input.

    Args:
        inner: a pair dataset (items with "image" and "target").
        fraction: share of clean items, chosen per index (the same items every epoch).
        seed: seed of that choice.
    """

    def __init__(self, inner: Dataset, fraction: float, seed: int = 0) -> None:
        self.inner = inner
        gen = torch.Generator().manual_seed(seed)
        self.clean = torch.rand(len(inner), generator=gen) < fraction  # type: ignore[arg-type]

    def __len__(self) -> int:
        return len(self.clean)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.inner[index]
        if bool(self.clean[index]):
            item = {**item, "image": item["target"].clone()}
        return item


class MixedPairDataModule(LightningDataModule):
    """Train on primary + extra pair sources (with a share of clean pairs); validate on primary.

    Args:
        primary: the pairs whose val/test split is the measure (curated pairs of unseen scenes).
        extra: further training sources (their val/test splits are unused).
        clean_fraction: share of training items whose input is replaced by their clean target.
        batch_size: training batch size (the sub-modules' own batch sizes are ignored).
        seed: seed of the clean-item choice.
    """

    def __init__(
        self,
        primary: PairDataModule,
        extra: list[PairDataModule] = [],
        clean_fraction: float = 0.0,
        batch_size: int = 1,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if not 0.0 <= clean_fraction <= 1.0:
            raise ValueError(f"MixedPairDataModule.clean_fraction must be in [0, 1], got {clean_fraction}")
        if batch_size < 1:
            raise ValueError(f"MixedPairDataModule.batch_size must be >= 1, got {batch_size}")
        refs = {m.num_refs for m in [primary, *extra]}
        if len(refs) > 1:
            raise ValueError(f"MixedPairDataModule: every source needs the same num_refs, got {sorted(refs)}")
        self.primary, self.extra = primary, list(extra)
        self.clean_fraction, self.batch_size, self.seed = clean_fraction, batch_size, seed

    def setup(self, stage: str | None = None) -> None:
        self.primary.setup(stage)
        if stage in (None, "fit"):
            for module in self.extra:
                module.train_dataset()  # their val/test splits are unused (and may not exist)

    def train_dataloader(self) -> DataLoader:
        self.setup("fit")
        sources = [self.primary.datasets["train"], *(m.train_dataset() for m in self.extra)]
        data: Dataset = ConcatDataset(sources)
        if self.clean_fraction > 0:
            data = CleanShare(data, self.clean_fraction, self.seed)
        return DataLoader(data, batch_size=self.batch_size, shuffle=True, num_workers=0)

    def val_dataloader(self) -> DataLoader:
        return self.primary.val_dataloader()

    def test_dataloader(self) -> DataLoader:
        return self.primary.test_dataloader()

    def predict_dataloader(self) -> DataLoader:
        return self.primary.predict_dataloader()
