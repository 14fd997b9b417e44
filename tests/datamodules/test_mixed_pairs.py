"""MixedPairDataModule: several training sources, a share of clean pairs, validation from the primary."""
from __future__ import annotations

import json

import pytest
import torch

from datamodules.pairs.mixed import MixedPairDataModule
from datamodules.pairs.datamodule import PairDataError, PairDataModule
from datamodules.pairs.sources import JsonPairs, SyntheticPairs


def _synthetic(num_train: int, num_val: int, seed: int, num_refs: int = 1) -> PairDataModule:
    source = SyntheticPairs(num_train=num_train, num_val=num_val, degradations=("noise",), degradation_strength=3.0)
    return PairDataModule(source, resolution=32, crop_size=32, num_refs=num_refs, seed=seed)


def test_trains_on_all_sources_with_clean_share_and_validates_on_primary() -> None:
    dm = MixedPairDataModule(primary=_synthetic(6, 3, 0), extra=[_synthetic(10, 5, 1)], clean_fraction=0.5,
                             batch_size=4, seed=0)
    dm.setup("fit")
    train = dm.train_dataloader().dataset
    assert len(train) == 16
    items = [train[i] for i in range(len(train))]
    clean = [bool(torch.equal(it["image"], it["target"])) for it in items]  # same tensor copied: exact
    assert 0 < sum(clean) < len(clean)  # some clean pairs, not all
    assert clean == [bool(c) for c in train.clean]  # the seeded choice, every epoch the same
    assert len(dm.val_dataloader().dataset) == 3  # the primary's held-out items only
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 3, 32, 32) and batch["refs"].shape == (4, 1, 3, 32, 32)


def test_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="clean_fraction"):
        MixedPairDataModule(primary=_synthetic(2, 1, 0), clean_fraction=1.5)
    with pytest.raises(ValueError, match="num_refs"):
        MixedPairDataModule(primary=_synthetic(2, 1, 0), extra=[_synthetic(2, 1, 0, num_refs=2)])


def test_an_extra_pairs_json_needs_only_a_train_split(tmp_path) -> None:
    # Pairs curated from other scenes (PairWriter with split "train") have no val/test split:
    # only the primary's are used, so the extra source must load without them.
    from datamodules.files.image_io import save_image
    items = []
    for i in range(3):
        for kind in ("render", "target", "ref"):
            save_image(torch.rand(3, 40, 48, generator=torch.Generator().manual_seed(10 * i + len(kind))),
                       tmp_path / f"{kind}_{i}.png")
        items.append({"image": f"render_{i}.png", "target_image": f"target_{i}.png", "ref_image": [f"ref_{i}.png"]})
    (tmp_path / "pairs.json").write_text(json.dumps({"train": items}))
    extra = PairDataModule(JsonPairs(str(tmp_path / "pairs.json")), resolution=32, crop_size=32)
    dm = MixedPairDataModule(primary=_synthetic(6, 3, 0), extra=[extra], batch_size=3)
    dm.setup("fit")
    assert len(dm.train_dataloader().dataset) == 9
    assert len(dm.val_dataloader().dataset) == 3
    with pytest.raises(PairDataError, match="no .test. split"):
        extra.setup("fit")  # alone, PairDataModule still wants a validation split
