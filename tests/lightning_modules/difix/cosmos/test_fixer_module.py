"""FixerModule: Fixer's recipe through the Trainer on pairs JSON, and the file it writes reads back."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer, seed_everything

from datamodules.pairs.datamodule import PairDataModule
from datamodules.pairs.sources import JsonPairs
from helpers.fixer_files import tiny_config, write_fixer_folder
from helpers.pairs_files import write_fixer_pairs_json
from helpers.tolerances import CROSS_PATH
from lightning_modules.difix.cosmos.files import find_fixer_files
from lightning_modules.difix.cosmos.load import load_fixer_net
from lightning_modules.difix.training.fixer_module import FixerModule
from lightning_modules.difix.training.fixer_spec import FixerNetSpec

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _fit(module: FixerModule, json_path: Path, tmp_path: Path, steps: int) -> Trainer:
    trainer = Trainer(accelerator="cpu", devices=1, max_steps=steps, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                      limit_val_batches=1, default_root_dir=str(tmp_path), gradient_clip_val=1.0)
    data = PairDataModule(source=JsonPairs(str(json_path)), num_refs=0, resolution=(48, 48), batch_size=1,
                          val_batch_size=1)
    trainer.fit(module, datamodule=data)
    return trainer


def test_construction_loads_nothing() -> None:
    module = FixerModule()  # nvidia/Fixer: no hub access, no weights
    assert module.net is None and module.hparams.lr == 2e-5 and module.hparams.w_lpips == 0.3


def test_fine_tuning_from_a_fixer_folder_writes_a_fixer_that_reads_back(tmp_path: Path) -> None:
    seed_everything(0)
    root, _ = write_fixer_folder(tmp_path / "models")
    json_path = write_fixer_pairs_json(tmp_path / "pairs", size=(48, 48))
    module = FixerModule(net=FixerNetSpec(pretrained=str(root)), w_lpips=0.3, lpips_crop=(32, 40),
                         pretrained_backbone=False, lr=1e-3, export_dir=str(tmp_path / "trained"))
    before = {k: v.clone() for k, v in load_fixer_net(find_fixer_files(str(root))).state_dict().items()}
    _fit(module, json_path, tmp_path, steps=3)
    net = module.net.eval()
    moved = [k for k, v in net.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith("dit.") for k in moved) and any(k.startswith("tokenizer.") for k in moved)
    back = load_fixer_net(find_fixer_files(str(tmp_path / "trained"))).eval()
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(back(images), net(images), **CROSS_PATH)


def test_losses_follow_fixers_ranges() -> None:
    module = FixerModule(net=FixerNetSpec(pretrained=None, config=tiny_config()), w_lpips=0.0)
    module.configure_model()
    batch = {"image": torch.rand(1, 3, 32, 32), "target": torch.rand(1, 3, 32, 32)}
    losses = module.compute_losses(batch)
    with torch.no_grad():
        pred = module.net.restore(batch["image"] * 2 - 1)
    # L2 on [-1, 1] images: 4x the L2 of the same images in [0, 1]
    torch.testing.assert_close(losses["loss_l2"], 4 * torch.mean(((pred + 1) / 2 - batch["target"]) ** 2))
