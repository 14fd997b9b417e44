"""The offline Difix prior: corpus sources, training through main.py, loading as `pretrained:`."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from datamodules.pairs import prior_corpus
from datamodules.files.image_io import save_image
from datamodules.pairs.prior_corpus import PriorCorpusDataModule
from lightning_modules.difix.training.module import DifixModule
from lightning_modules.difix.training.net_spec import DifixNetSpec
from lightning_modules.difix.training.settings import FixerLoss
from lightning_modules.difix.net.net import DifixNet
from lightning_modules.difix.loading.from_prior import is_prior_checkpoint, read_prior
from helpers.tolerances import CROSS_PATH
from lightning_modules.difix.loading.builders import net_from_checkpoint
from helpers import REPO

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _photos(folder: Path, stems: list[str], size: int = 80) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    for stem in stems:
        save_image(torch.rand(3, size, size + 8, generator=g), folder / f"{stem}.png")


def test_corpus_skips_absent_sources_and_holds_photos_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prior_corpus, "package_data_images", lambda package, subdir: [])  # no scikit-image
    with pytest.warns(UserWarning, match="does not exist"):
        empty = PriorCorpusDataModule(sources=["skimage", "sklearn"], extra_image_dirs=[str(tmp_path / "absent")])
        with pytest.raises(ValueError, match="no training images"):
            empty.setup("fit")

    _photos(tmp_path / "photos" / "sub", ["a", "b", "held"])
    dm = PriorCorpusDataModule(sources=["patterns"], extra_image_dirs=[str(tmp_path / "photos")], num_patterns=4,
                               heldout_photos=["held"], short_sides=[32, 48], crop=32, batch_size=2,
                               steps_per_epoch=3, val_batch_size=4)
    dm.setup("fit")
    assert dm.counts["train_photos"] == 2 and dm.counts["heldout_photos"] == 1
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (2, 3, 32, 32) and 0 <= float(batch["image"].min()) <= float(batch["image"].max()) <= 1
    assert len(dm.train_dataloader()) == 3
    # held-out photo (2 levels x 3 crops) + 1 held-out pattern (3 crops)
    assert dm.val_images is not None and dm.val_images.shape == (9, 3, 32, 32)


def test_corpus_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="unknown"):
        PriorCorpusDataModule(sources=["imagenet"])
    with pytest.raises(ValueError, match="both trained on and held out"):
        PriorCorpusDataModule(scene_seeds=[1, 2], heldout_scene_seeds=[2])


def test_prior_trains_through_main_and_starts_difix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from difix3d.cli import cli_main

    out = tmp_path / "prior"
    cli_main(["fit", "--config", str(REPO / "configs/demo/prior.yaml"), "--trainer.logger=false",
              "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
              "--trainer.max_steps=2", "--trainer.val_check_interval=2", f"--trainer.callbacks.init_args.dirpath={out}",
              "--data.init_args.sources=[scenes, patterns]", "--data.init_args.scene_seeds=[100]",
              "--data.init_args.heldout_scene_seeds=[900]", "--data.init_args.scene_views=2",
              "--data.init_args.scene_size=64", "--data.init_args.num_patterns=4", "--data.init_args.batch_size=2",
              "--data.init_args.steps_per_epoch=2"])
    ckpt = out / "last.ckpt"
    assert is_prior_checkpoint(ckpt)
    info, state = read_prior(ckpt)
    assert info["config"]["vae"]["latent_channels"] == 4 and info["timestep"] == 199

    # DifixModule starts from it the way it starts from SD-Turbo: VAE, UNet, skips, prompt loaded.
    module = DifixModule(net=DifixNetSpec(pretrained=str(ckpt)), pretrained_backbone=False,
                         loss=FixerLoss(w_lpips=0.0, w_gram=0.0))
    module.configure_model()
    net = module.net
    assert net.build_config["base"]["kind"] == "prior"
    enc = dict(net.vae.encoder.named_parameters())
    for key in ("conv_in.weight", "down_blocks.0.resnets.0.conv1.weight"):
        torch.testing.assert_close(enc[key], state[f"vae.encoder.{key}"], rtol=0, atol=0)
    torch.testing.assert_close(net.skips.convs[3].weight, state["skips.convs.3.weight"], rtol=0, atol=0)
    torch.testing.assert_close(net.prompt_embeds, state["prompt_embeds"], rtol=0, atol=0)
    assert not is_prior_checkpoint(tmp_path / "nothing.ckpt")

    # A fixer fine-tuned from the prior is rebuilt from its own checkpoint (base = the prior).
    x, refs = torch.rand(1, 3, 64, 64), torch.rand(1, 1, 3, 64, 64)
    with torch.no_grad():
        for p in net.skips.parameters():
            p.add_(0.01)  # stands in for fine-tuning of a trained tensor
        expected = net.eval()(x, refs)
        exported = module.export_weights(tmp_path / "fixer.pt")
        torch.testing.assert_close(net_from_checkpoint(exported).eval()(x, refs), expected, **CROSS_PATH)

    # ... from any working directory (the prior's path is stored absolute), and a missing prior
    # is named with the way out.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    relative = DifixModule(net=DifixNetSpec(pretrained="../prior/last.ckpt"), pretrained_backbone=False,
                           loss=FixerLoss(w_lpips=0.0, w_gram=0.0))
    relative.configure_model()
    assert relative.net.build_config["base"]["path"] == str(ckpt.resolve())
    moved = tmp_path / "moved.ckpt"
    ckpt.rename(moved)
    with pytest.raises(FileNotFoundError, match="pretrained"):
        net_from_checkpoint(exported)
    with torch.no_grad():
        torch.testing.assert_close(net_from_checkpoint(exported, pretrained=str(moved)).eval()(x, refs),
                                   expected, **CROSS_PATH)
