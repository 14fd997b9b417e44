"""NerfSceneModule: training, weights/masks, chunked renders, exact resume, CLI and callbacks."""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from datamodules.procedural.scene import make_procedural_scene
from datamodules.readers.scene_data import ReadOptions
from datamodules.scene.datamodule import SceneDataModule, collate_views
from lightning_modules.scene.evaluation import EvalSettings
from lightning_modules.scene.nerf.field import FieldSettings
from lightning_modules.scene.nerf.model import SamplingSettings
from lightning_modules.scene.nerf.module import NerfSceneModule
from lightning_modules.scene.path_video import PathSettings
from difix3d.cli import cli_main
from helpers import REPO

TINY = ["--model.init_args.field.num_levels=4", "--model.init_args.field.max_res=32", "--model.init_args.field.log2_hashmap_size=10",
        "--model.init_args.field.proposal_max_res=[16, 32]", "--model.init_args.field.proposal_num_levels=2",
        "--model.init_args.field.proposal_log2_hashmap_size=8", "--model.init_args.num_rays=128",
        "--model.init_args.sampling.num_proposal_samples=[16, 8]", "--model.init_args.sampling.num_nerf_samples=8"]


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_procedural_scene(tmp_path_factory.mktemp("scene") / "proc", num_views=12, size=24, seed=0)


def tiny_nerf(tmp_path: Path, **kw) -> NerfSceneModule:
    args = dict(field=FieldSettings(num_levels=4, max_res=32, log2_hashmap_size=10, appearance_embed_dim=4,
                                    proposal_max_res=(16, 32), proposal_num_levels=2, proposal_log2_hashmap_size=8),
                num_rays=128, eval_chunk=1000,
                sampling=SamplingSettings(num_proposal_samples=(16, 8), num_nerf_samples=8, anneal_steps=10),
                evaluation=EvalSettings(pretrained_metrics=False, compute_fid=False, num_log_images=1),
                predict=PathSettings(frames=0), output_dir=str(tmp_path / "out"))
    args.update(kw)
    return NerfSceneModule(**args)


def data(scene_dir: Path) -> SceneDataModule:
    return SceneDataModule(path=str(scene_dir), read=ReadOptions(test_every=4), steps_per_epoch=1000, max_val_views=1)


def trainer(tmp_path: Path, max_steps: int, **kw) -> pl.Trainer:
    args = dict(accelerator="cpu", max_steps=max_steps, limit_val_batches=0, num_sanity_val_steps=0, logger=False,
                enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                default_root_dir=tmp_path)
    args.update(kw)
    return pl.Trainer(**args)


def test_training_improves_renders_and_renders_are_chunk_invariant(scene_dir: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    module, dm = tiny_nerf(tmp_path, num_rays=256), data(scene_dir)
    dm.setup("fit")
    module.setup_scene(dm.scene_setup())

    def psnr() -> float:
        rgb, _ = module.render_views(dm.train_cameras[:4])
        return float(-10 * torch.log10(((rgb - torch.stack(dm.train_images[:4])) ** 2).mean()))

    before = psnr()
    trainer(tmp_path, 40).fit(module, dm)
    assert psnr() > before + 1.0
    cams = dm.test_cameras[[0, 1]]
    rgb, alpha = module.render_views(cams)
    assert rgb.shape == (2, 3, 24, 24) and alpha.shape == (2, 1, 24, 24)
    module.hparams.eval_chunk = 7  # many small chunks: same picture
    rgb2, alpha2 = module.render_views(cams)
    torch.testing.assert_close(rgb2, rgb, atol=1e-5, rtol=0)
    torch.testing.assert_close(alpha2, alpha, atol=1e-5, rtol=0)


def test_zero_weight_trains_nothing_and_mask_hides_pixels(scene_dir: Path, tmp_path: Path) -> None:
    module, dm = tiny_nerf(tmp_path), data(scene_dir)
    dm.setup("fit")
    module.setup_scene(dm.scene_setup())
    module.log = lambda *a, **k: None  # no trainer attached
    batch = collate_views([dm.draw_train_view(0)])
    batch["weight"] = torch.zeros(1)
    module.training_step(batch, 0).backward()
    assert all(p.grad is None or not bool(p.grad.any()) for p in module.parameters())
    # Masked-out pixels: changing their target changes nothing.
    batch["weight"] = torch.ones(1)
    batch["mask"][..., 12:, :] = 0
    a = module.training_step(batch, 0)
    batch["image"][..., 12:, :] = torch.rand(1, 3, 12, 24)
    b = module.training_step(batch, 0)
    torch.testing.assert_close(a, b)
    batch["image"][..., :12, :] = torch.rand(1, 3, 12, 24)
    assert not torch.allclose(a, module.training_step(batch, 0))


def _fit(tmp_path: Path, scene_dir: Path, steps: int, ckpt: str | None = None) -> tuple[NerfSceneModule, pl.Trainer]:
    torch.manual_seed(0)
    module = tiny_nerf(tmp_path, lr_decay_steps=10)
    t = trainer(tmp_path, steps)
    t.fit(module, data(scene_dir), ckpt_path=ckpt)
    return module, t


def test_resume_matches_uninterrupted_run(scene_dir: Path, tmp_path: Path) -> None:
    full, _ = _fit(tmp_path / "full", scene_dir, 8)
    half, t = _fit(tmp_path / "half", scene_dir, 4)
    ckpt = tmp_path / "half.ckpt"
    t.save_checkpoint(ckpt)
    resumed, t2 = _fit(tmp_path / "resumed", scene_dir, 8, str(ckpt))
    assert t2.global_step == 8
    for (name, p), q in zip(full.named_parameters(), resumed.parameters()):
        torch.testing.assert_close(q, p, atol=1e-6, rtol=0, msg=name)
    assert not torch.allclose(half.model.field.encoding.table, full.model.field.encoding.table)
    torch.testing.assert_close(resumed.box_center, full.box_center)
    loaded = NerfSceneModule.load_from_checkpoint(ckpt)  # no datamodule: sized from the checkpoint
    assert loaded.is_initialised and loaded.model.field.appearance.num_embeddings == len(half.train_cameras)
    torch.testing.assert_close(loaded.model.field.encoding.table, half.model.field.encoding.table)
    assert loaded.scene_scale == pytest.approx(half.scene_scale)


def test_difix3d_nerf_demo_config_fixes_tests_and_predicts(scene_dir: Path, tmp_path: Path) -> None:
    """configs/demo/difix3d_nerf.yaml through main.py: progressive fixes with a NeRF, then
    test with plain + post-render-fixed metrics, then the path video."""
    logs, out = tmp_path / "logs", tmp_path / "out"
    common = ["--config", str(REPO / "configs/demo/difix3d_nerf.yaml"), "--trainer.enable_progress_bar=false",
              f"--trainer.logger.init_args.save_dir={logs}", "--trainer.logger.init_args.version=0",
              "--trainer.callbacks.fixer=tiny", "--trainer.callbacks.start_step=2", "--trainer.callbacks.fix_every_n_steps=2",
              f"--data.init_args.path={scene_dir}", "--data.init_args.read.test_every=4", "--data.init_args.read.train_every=1",
              "--data.init_args.steps_per_epoch=3", "--data.init_args.max_val_views=1",
              "--model.init_args.predict.frames=2", f"--model.init_args.output_dir={out}", "--trainer.log_every_n_steps=1",
              *TINY]
    with contextlib.redirect_stdout(io.StringIO()):
        cli_main(["fit", *common, "--trainer.max_steps=5"])
        ckpt = logs / "difix3d_nerf_demo" / "version_0" / "checkpoints" / "last.ckpt"
        assert ckpt.is_file()
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        events = EventAccumulator(str(ckpt.parents[1]))
        events.Reload()
        assert [e.step for e in events.Scalars("fix/num_views")] == [2, 4]
        assert {"train/psnr", "train/interlevel", "val/psnr"} <= set(events.Tags()["scalars"])
        cli_main(["test", *common, f"--ckpt_path={ckpt}"])
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["stage"] == "test" and metrics["step"] == 5
        assert {"psnr", "ssim"} <= set(metrics["mean"]) and {"psnr", "ssim"} <= set(metrics["mean_fixed"])
        cli_main(["predict", *common, f"--ckpt_path={ckpt}"])
    assert len(list((out / "predict" / "path" / "frames").glob("*.png"))) == 2
    assert (out / "predict" / "path" / "video.mp4").stat().st_size > 0


def test_pair_writer_curates_from_a_nerf(scene_dir: Path, tmp_path: Path) -> None:
    from callbacks.curation.pair_writer import PairWriter

    pairs = tmp_path / "pairs"
    writer = PairWriter(out_dir=str(pairs), scene_name="proc", strategy="sparse", render="heldout", max_views=2)
    trainer(tmp_path, 3, callbacks=[writer]).fit(tiny_nerf(tmp_path), data(scene_dir))
    doc = json.loads((pairs / "pairs.json").read_text())
    assert len(doc["train"]) == 2
    item = doc["train"][0]
    assert (pairs / item["image"]).is_file() and (pairs / item["target_image"]).is_file()
    assert item["strategy"] == "sparse" and (pairs / item["ref_image"][0]).is_file()


def test_lego_demo_config_runs_a_step(shared_data: Path, tmp_path: Path) -> None:
    if not (shared_data / "lego_blender_400").is_dir():
        pytest.skip("lego_blender_400 is absent")
    with contextlib.redirect_stdout(io.StringIO()):
        cli_main(["fit", "--config", str(REPO / "configs/demo/nerf_lego.yaml"), "--trainer.max_steps=2",
                  f"--data.init_args.path={shared_data / 'lego_blender_400'}", "--trainer.limit_val_batches=0",
                  "--trainer.enable_progress_bar=false", f"--trainer.logger.init_args.save_dir={tmp_path}",
                  "--model.init_args.num_rays=256", "--data.init_args.read.max_train_views=4"])
    assert list(tmp_path.rglob("last.ckpt"))


@pytest.mark.slow
def test_lego_demo_config_reaches_28db(shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """configs/demo/nerf_lego.yaml as shipped (fit + test on all 200 test views): >= 28 dB."""
    if not (shared_data / "lego_blender_400").is_dir():
        pytest.skip("lego_blender_400 is absent")
    monkeypatch.chdir(REPO)
    common = ["--config", "configs/demo/nerf_lego.yaml", f"--trainer.logger.init_args.save_dir={tmp_path}",
              "--trainer.logger.init_args.version=0", "--trainer.enable_progress_bar=false"]
    cli_main(["fit", *common])
    run = tmp_path / "nerf_lego" / "version_0"
    cli_main(["test", *common, f"--ckpt_path={run / 'checkpoints' / 'last.ckpt'}"])
    doc = json.loads((run / "metrics.json").read_text())
    assert doc["stage"] == "test" and len(doc["per_view"]) == 200
    assert doc["mean"]["psnr"] >= 28.0


def test_empty_space_skipping_renders_the_same_and_skips_the_networks(scene_dir: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    module, dm = tiny_nerf(tmp_path, unbounded=False, bound=1.0), data(scene_dir)
    trainer(tmp_path, 20).fit(module, dm)
    cams = dm.test_cameras[[0]]
    plain, plain_alpha = module.render_views(cams)
    grid = module.model.occupancy
    calls: list[int] = []
    hook = module.model.field.register_forward_pre_hook(lambda m, args: calls.append(len(args[0])))
    # A grid that marks everything occupied changes nothing.
    grid.resolution = 8
    grid.density, grid.occupied = torch.ones(512), torch.ones(512, dtype=torch.bool)
    grid.updates.fill_(1)
    same, _ = module.render_views(cams)
    torch.testing.assert_close(same, plain, atol=1e-5, rtol=0)
    full = sum(calls)
    # An empty grid: every ray is background, and no network runs.
    calls.clear()
    grid.occupied.zero_()
    empty, empty_alpha = module.render_views(cams)
    hook.remove()
    assert sum(calls) == 0 < full
    bg = module.background_tensor(1)[0]
    torch.testing.assert_close(empty, bg.view(1, 3, 1, 1).expand_as(empty), atol=1e-6, rtol=0)
    assert float(empty_alpha.max()) == 0.0


def test_resume_with_the_occupancy_grid_matches_uninterrupted_run(scene_dir: Path, tmp_path: Path) -> None:
    sampling = SamplingSettings(num_proposal_samples=(16, 8), num_nerf_samples=8, anneal_steps=10,
                                occupancy_resolution=8, occupancy_warmup_steps=2, occupancy_update_every=2)

    def fit(folder: Path, steps: int, ckpt: str | None = None) -> tuple[NerfSceneModule, pl.Trainer]:
        torch.manual_seed(0)
        module = tiny_nerf(folder, lr_decay_steps=10, sampling=sampling, unbounded=False)
        t = trainer(folder, steps)
        t.fit(module, data(scene_dir), ckpt_path=ckpt)
        return module, t

    full, _ = fit(tmp_path / "full", 8)
    _, t = fit(tmp_path / "half", 5)
    ckpt = tmp_path / "half.ckpt"
    t.save_checkpoint(ckpt)
    resumed, _ = fit(tmp_path / "resumed", 8, str(ckpt))
    assert int(full.model.occupancy.updates) == int(resumed.model.occupancy.updates) == 3  # steps 2, 4, 6
    torch.testing.assert_close(resumed.model.occupancy.density, full.model.occupancy.density, atol=1e-6, rtol=0)
    for (name, p), q in zip(full.named_parameters(), resumed.parameters()):
        torch.testing.assert_close(q, p, atol=1e-6, rtol=0, msg=name)
