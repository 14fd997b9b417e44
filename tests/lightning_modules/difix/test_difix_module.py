"""DifixModule through the Trainer: logging, lean checkpoints, exact reload, resume, predict."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from torch.utils.data import DataLoader, Dataset
from torchmetrics.functional.image import structural_similarity_index_measure

from datamodules.pairs.datamodule import PairDataModule
from datamodules.pairs.sources import RenderFolder, SyntheticPairs
from lightning_modules.difix.training.module import DifixModule
from lightning_modules.difix.training.net_spec import DifixNetSpec
from lightning_modules.difix.training.settings import AdamWSettings, FixerLoss
from lightning_modules.difix.net.net import DifixNet
from helpers.tolerances import CROSS_PATH
from lightning_modules.difix.loading.builders import net_from_checkpoint
from helpers import REPO

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

TINY = {"net": DifixNetSpec(pretrained=None), "pretrained_backbone": False, "optimizer": AdamWSettings(lr=1e-3)}
COSINE = AdamWSettings(lr=1e-3, schedule="cosine")


def _trainer(tmp_path: Path, **kwargs: Any) -> Trainer:
    defaults: dict[str, Any] = {
        "accelerator": "cpu", "devices": 1, "logger": False, "enable_checkpointing": False,
        "enable_progress_bar": False, "enable_model_summary": False, "num_sanity_val_steps": 0,
        "default_root_dir": str(tmp_path),
    }  # fmt: skip
    defaults.update(kwargs)
    return Trainer(**defaults)


def _synthetic(**kwargs: Any) -> PairDataModule:
    source = SyntheticPairs(num_train=kwargs.pop("num_train", 2), num_val=2)
    args: dict[str, Any] = {"resolution": 32, "crop_size": 32, "num_refs": 1, "val_batch_size": 2}
    args.update(kwargs)
    return PairDataModule(source, **args)


def test_construction_loads_nothing() -> None:
    module = DifixModule(net=DifixNetSpec(pretrained="stabilityai/sd-turbo"))  # no hub access, no weights
    assert module.net is None and module.lpips is None


def test_cosine_lr_decays_to_a_tenth_over_max_steps(tmp_path: Path) -> None:
    module = DifixModule(**{**TINY, "optimizer": COSINE}, loss=FixerLoss(w_lpips=0.0, w_gram=0.0))
    trainer = _trainer(tmp_path, max_steps=4, limit_val_batches=0)
    trainer.fit(module, datamodule=_synthetic(num_train=4, batch_size=1))
    (scheduler,) = trainer.lr_scheduler_configs
    assert scheduler.interval == "step"
    torch.testing.assert_close(trainer.optimizers[0].param_groups[0]["lr"], 1e-4)  # lr / 10 at max_steps
    with pytest.raises(ValueError, match="max_steps"):
        _trainer(tmp_path, max_epochs=1, limit_val_batches=0).fit(
            DifixModule(**{**TINY, "optimizer": COSINE}, loss=FixerLoss(w_lpips=0.0, w_gram=0.0)), datamodule=_synthetic())
    assert DifixModule().optimizer_settings.schedule == "constant"  # the paper's


def test_fit_logs_metrics_grid_and_saves_lean_checkpoint(tmp_path: Path) -> None:
    seed_everything(0)
    module = DifixModule(**TINY, loss=FixerLoss(gram_warmup_steps=1, gram_crop_size=16))
    logger = TensorBoardLogger(str(tmp_path), name="tb")
    ckpt_cb = ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), save_last=True)
    trainer = _trainer(tmp_path, max_steps=2, logger=logger, enable_checkpointing=True, callbacks=[ckpt_cb],
                       log_every_n_steps=1)
    trainer.fit(module, datamodule=_synthetic())
    logged = trainer.callback_metrics
    for key in ("train/loss", "train/loss_l2", "train/loss_lpips", "train/loss_gram", "val/psnr", "val/ssim",
                "val/psnr_input", "val/ssim_input"):
        assert key in logged, key
    assert "val/lpips" not in logged and "val/lpips_input" not in logged  # random VGG: not reported
    assert logged["train/loss_gram"] > 0  # warm-up of 1 step is over at step 2

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(logger.log_dir, size_guidance={"images": 0})
    events.Reload()
    assert "val/input_fixed_target_ref" in events.Tags()["images"]

    path = Path(ckpt_cb.last_model_path)
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    keys = set(ckpt["state_dict"])
    assert keys == {f"net.{k}" for k in module.net.trainable_state_dict()}
    assert not any(k.startswith("net.vae.encoder") or "base_layer" in k or "lpips" in k for k in keys)
    assert ckpt["difix_net_config"]["base"]["kind"] == "config"

    # A fresh DifixNet from the checkpoint reproduces the trained module's output exactly.
    x, refs = torch.rand(1, 3, 32, 32), torch.rand(1, 1, 3, 32, 32)
    module.net.eval()
    with torch.no_grad():
        expected = module.net(x, refs)
        torch.testing.assert_close(net_from_checkpoint(path).eval()(x, refs), expected, **CROSS_PATH)
        # ...and so does the module's exported weights file.
        exported = module.export_weights(tmp_path / "difix.safetensors")
        torch.testing.assert_close(net_from_checkpoint(exported).eval()(x, refs), expected, **CROSS_PATH)
    # LightningModule.load_from_checkpoint builds the net and refills the frozen weights.
    reloaded = DifixModule.load_from_checkpoint(path)
    with torch.no_grad():
        torch.testing.assert_close(reloaded.net.eval()(x, refs), expected, **CROSS_PATH)


class _FixedPairs(Dataset):
    """One fixed pair repeated: a resumed epoch sees the same batches whatever Lightning's
    restart position in a non-stateful DataLoader."""

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        item = {"image": torch.rand(3, 32, 32, generator=g), "target": torch.rand(3, 32, 32, generator=g),
                "refs": torch.rand(1, 3, 32, 32, generator=g), "prompt": "remove degradation", "name": "p"}
        self.items = [item, item]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.items[i]


def test_val_lpips_is_logged_with_a_real_backbone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A real VGG16 file is 528 MB: LPIPS is replaced by a stand-in that needs none (mean |a - b|);
    # what is tested is that DifixModule computes and logs it when the backbone is real.
    import lightning_modules.difix.training.losses as losses

    class StandIn(torch.nn.Module):
        def __init__(self, **_: Any) -> None:
            super().__init__()

        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return (a - b).abs().mean()

    monkeypatch.setattr(losses, "LPIPSLoss", StandIn)
    module = DifixModule(**{**TINY, "pretrained_backbone": True}, loss=FixerLoss(w_gram=0.0))
    trainer = _trainer(tmp_path, max_steps=2)  # one epoch: validation runs
    trainer.fit(module, datamodule=_synthetic())
    logged = trainer.callback_metrics
    assert "val/lpips" in logged and "val/lpips_input" in logged
    assert logged["val/lpips_input"] > 0  # synthetic inputs differ from their targets


def _fit(tmp_path: Path, max_steps: int, ckpt_path: str | None = None) -> tuple[DifixModule, Trainer]:
    seed_everything(0)
    # gram_crop_size None: no random crop, so the run does not depend on the global RNG.
    module = DifixModule(**TINY, loss=FixerLoss(gram_warmup_steps=0, gram_crop_size=None))
    trainer = _trainer(tmp_path, max_steps=max_steps, limit_val_batches=0, gradient_clip_val=1.0)
    trainer.fit(module, train_dataloaders=DataLoader(_FixedPairs(), batch_size=1, shuffle=False), ckpt_path=ckpt_path)
    return module, trainer


def test_resume_continues_steps_and_optimizer(tmp_path: Path) -> None:
    full, _ = _fit(tmp_path / "full", 4)
    half, trainer = _fit(tmp_path / "half", 2)
    ckpt = tmp_path / "half.ckpt"
    trainer.save_checkpoint(ckpt)
    resumed, trainer = _fit(tmp_path / "resumed", 4, ckpt_path=str(ckpt))
    assert trainer.global_step == 4
    full_state, resumed_state = full.net.trainable_state_dict(), resumed.net.trainable_state_dict()
    half_state = half.net.trainable_state_dict()
    assert any(not torch.equal(half_state[k], full_state[k]) for k in full_state)  # steps 3-4 did something
    for key, value in full_state.items():
        torch.testing.assert_close(resumed_state[key], value, rtol=1e-4, atol=1e-6, msg=key)
    # Adam moments came back too (a fresh optimizer would give different weights above).
    assert trainer.optimizers[0].state_dict()["state"][0]["step"].item() == 4


def test_pretrained_difix_module_checkpoint_fine_tunes_from_its_weights(tmp_path: Path) -> None:
    trained, trainer = _fit(tmp_path / "first", 2)
    ckpt = tmp_path / "first.ckpt"
    trainer.save_checkpoint(ckpt)
    export = trained.export_weights(tmp_path / "first.safetensors")
    for source in (ckpt, export):
        module = DifixModule(**{**TINY, "net": DifixNetSpec(pretrained=str(source))},
                             loss=FixerLoss(gram_warmup_steps=0, gram_crop_size=None))
        module.configure_model()
        got, want = module.net.trainable_state_dict(), trained.net.trainable_state_dict()
        assert set(got) == set(want)
        for key, value in want.items():
            torch.testing.assert_close(got[key], value, rtol=0, atol=0, msg=key)  # the same tensors, loaded
        assert f"DifixModule checkpoint {source}" in module.net.describe()
    # ... and training continues from them (a second fit moves the weights on).
    module = DifixModule(**{**TINY, "net": DifixNetSpec(pretrained=str(ckpt))},
                         loss=FixerLoss(gram_warmup_steps=0, gram_crop_size=None))
    _trainer(tmp_path / "second", max_steps=2, limit_val_batches=0).fit(
        module, train_dataloaders=DataLoader(_FixedPairs(), batch_size=1, shuffle=False))
    moved = module.net.trainable_state_dict()
    assert any(not torch.equal(moved[k], v) for k, v in trained.net.trainable_state_dict().items())
    # Other LoRA ranks than the checkpoint's cannot load its weights: said with the stored ranks.
    wrong = DifixModule(**{**TINY, "net": DifixNetSpec(pretrained=str(ckpt), unet_lora_rank=4)})
    with pytest.raises(KeyError, match="unet_lora_rank': 0"):
        wrong.configure_model()


def test_predict_writes_pngs_and_csv_logger_needs_no_images(tmp_path: Path) -> None:
    out_dir = tmp_path / "fixed"
    module = DifixModule(**TINY, predict_output_dir=str(out_dir))
    # A non-TensorBoard logger: the image grid is skipped, metrics still logged.
    trainer = _trainer(tmp_path, max_steps=1, logger=CSVLogger(str(tmp_path)), limit_val_batches=1)
    data = _synthetic()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, datamodule=data)
        written = trainer.predict(module, datamodule=data)
    files = sorted(out_dir.glob("*.png"))
    assert [Path(p) for batch in written for p in batch] == files
    assert len(files) == 2 and not list(out_dir.glob(".*tmp"))
    from PIL import Image

    assert Image.open(files[0]).size == (32, 32)

    # A folder of renders at an odd size, no references: written at the render's size.
    renders = tmp_path / "renders"
    renders.mkdir()
    for name in ("a", "b"):
        Image.fromarray((torch.rand(37, 50, 3) * 255).to(torch.uint8).numpy()).save(renders / f"{name}.png")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.predict(module, datamodule=PairDataModule(SyntheticPairs(), resolution=32,
                                                          predict=RenderFolder(str(renders)), num_refs=0))
    assert Image.open(out_dir / "a.png").size == (50, 37) and (out_dir / "b.png").is_file()


def test_gram_warmup_and_reference_slot_losses() -> None:
    module = DifixModule(**TINY, loss=FixerLoss(gram_warmup_steps=5, gram_crop_size=None))
    module.configure_model()
    g = torch.Generator().manual_seed(0)
    target = torch.rand(1, 3, 32, 32, generator=g)
    batch = {"image": target.clone(), "target": target, "refs": torch.rand(1, 1, 3, 32, 32, generator=g)}
    losses = module.compute_losses(batch)  # global_step 0 < warm-up
    assert losses["loss_gram"] == 0
    module.loss_settings.gram_warmup_steps = 0
    assert module.compute_losses(batch)["loss_gram"] > 0
    module.loss_settings.on_references = False
    fixed_only = module.compute_losses(batch)["loss_l2"]
    with torch.no_grad():
        pred = module.net(batch["image"], batch["refs"]).clamp(0, 1)  # the training loss sees the clamped output
    torch.testing.assert_close(fixed_only, torch.nn.functional.mse_loss(pred, target), rtol=1e-5, atol=1e-7)
    module.loss_settings.on_references = True
    assert not torch.allclose(module.compute_losses(batch)["loss_l2"], fixed_only)


def test_ssim_term_matches_torchmetrics_and_has_gradients() -> None:
    module = DifixModule(**TINY, loss=FixerLoss(w_l2=0.0, w_lpips=0.0, w_gram=0.0, w_ssim=1.0, on_references=False))
    module.configure_model()
    g = torch.Generator().manual_seed(0)
    target = torch.rand(1, 3, 32, 32, generator=g)
    batch = {"image": torch.rand(1, 3, 32, 32, generator=g), "target": target, "refs": target[:, None].clone()}
    losses = module.compute_losses(batch)
    with torch.no_grad():
        pred = module.net(batch["image"], batch["refs"]).clamp(0, 1)
    expected = 1 - structural_similarity_index_measure(pred, target, data_range=1.0)
    torch.testing.assert_close(losses["loss_ssim"], expected, **CROSS_PATH)
    torch.testing.assert_close(losses["loss"], losses["loss_ssim"])
    losses["loss"].backward()
    grads = [p.grad for p in module.net.parameters() if p.requires_grad and p.grad is not None]
    assert grads and any(bool(g.abs().sum() > 0) for g in grads)
    assert DifixModule().loss_settings == FixerLoss(w_l2=1.0, w_lpips=1.0, w_gram=0.5, w_ssim=0.0)  # the paper's


@pytest.mark.slow
def test_demo_config_fixer_beats_raw_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CPU demo (~1 min): fixed val PSNR above the degraded input's, checkpoint and logs written."""
    from difix3d.cli import cli_main

    config = REPO / "configs" / "demo" / "difix.yaml"
    monkeypatch.chdir(tmp_path)  # lightning_logs/ and outputs/ land here
    cli = cli_main(["fit", "--config", str(config), "--trainer.enable_progress_bar=false"])
    metrics = cli.trainer.callback_metrics
    assert metrics["val/psnr"] > metrics["val/psnr_input"] + 1.0
    assert metrics["val/ssim"] > metrics["val/ssim_input"]
    run_dir = Path(cli.trainer.logger.log_dir)
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert list(run_dir.glob("events.out.tfevents.*"))
