"""ProgressiveFixCallback: pose stepping, references, data isolation, weights/masks, resume."""
from __future__ import annotations

import json
import math
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from callbacks.progressive_fix import ProgressiveFixCallback
from datamodules.cameras.cameras import Cameras
from datamodules.cameras.poses import look_at, pose_distance
from datamodules.procedural.scene import make_procedural_scene
from datamodules.readers.scene_data import ReadOptions
from datamodules.scene.datamodule import SceneDataModule
from lightning_modules.scene.gaussians.losses import photometric_loss
from lightning_modules.scene.evaluation import EvalSettings
from lightning_modules.scene.gaussians.initial import InitSettings
from lightning_modules.scene.gaussians.module import GaussianSceneModule
from lightning_modules.scene.gaussians.settings import RasterSettings, SHSchedule
from lightning_modules.scene.path_video import PathSettings
from lightning_modules.scene.gaussians.strategy import DefaultStrategy


def ring(n: int, radius: float, height: float = 0.0) -> torch.Tensor:
    angles = torch.arange(n) * (2 * math.pi / n)
    eyes = torch.stack([radius * angles.cos(), radius * angles.sin(), torch.full((n,), height)], dim=1)
    return look_at(eyes, torch.zeros(3))


def cams(c2w: torch.Tensor, prefix: str) -> Cameras:
    k = torch.tensor([[20.0, 0, 8], [0, 20.0, 8], [0, 0, 1]])
    return Cameras.from_c2w(c2w, k, 16, 16, [f"{prefix}{i}" for i in range(len(c2w))])


def test_novel_cameras_reach_targets_in_expected_number_of_fixes() -> None:
    train = cams(ring(6, 1.0), "train")
    # Targets straight out from three training cameras, 1.3 world units further away.
    target_c2w = train.camera_to_world[[0, 2, 4]].clone()
    target_c2w[:, :3, 3] *= 2.3
    targets = cams(target_c2w, "target")
    cb = ProgressiveFixCallback(fixer="tiny", step_size=0.5)
    distances = []
    for _ in range(3):
        novel, moved = cb.advance_novel_cameras(train, targets, step=0.5)
        distances.append(pose_distance(novel.camera_to_world, target_c2w).diagonal())
    # 1.3 units in steps of 0.5: 0.8 left, then 0.3, then snapped onto the target.
    torch.testing.assert_close(distances[0], torch.full((3,), 0.8), atol=1e-4, rtol=0)
    torch.testing.assert_close(distances[1], torch.full((3,), 0.3), atol=1e-4, rtol=0)
    torch.testing.assert_close(distances[2], torch.zeros(3), atol=1e-4, rtol=0)
    assert novel.names == [f"novel_target{i}" for i in range(3)]
    # Each novel camera started from its nearest training pose (0, 2, 4), so its rotation is kept.
    torch.testing.assert_close(novel.camera_to_world[:, :3, :3], target_c2w[:, :3, :3], atol=1e-5, rtol=0)


class FakeData:
    """The GrowsTrainingSet protocol over synthetic training views."""

    def __init__(self, train: Cameras) -> None:
        self.train_cameras = train
        # Image i is filled with value i / 10 so references can be identified by value.
        self.train_images = [torch.full((3, 16, 16), i / 10) for i in range(len(train))]

    def target_cameras(self, kind: str = "test") -> Cameras:
        return self.train_cameras

    def set_fixed_views(self, images, cameras, weights, masks, real_view_weight=None) -> None:  # pragma: no cover
        raise AssertionError("not used")


def test_references_are_the_closest_training_views() -> None:
    from callbacks.post_render_fix import training_views

    train = cams(ring(8, 1.0), "train")
    views = training_views(FakeData(train))
    # Query cameras slightly off training cameras 5 and 2.
    query_c2w = train.camera_to_world[[5, 2]].clone()
    query_c2w[:, 2, 3] += 0.05
    idx = views.nearest(cams(query_c2w, "q"), 2)
    assert idx.shape == (2, 2) and idx[:, 0].tolist() == [5, 2]
    assert idx[0, 1] in (4, 6) and idx[1, 1] in (1, 3)  # the second reference is a ring neighbour of the first
    seen = []
    cb = ProgressiveFixCallback(fixer="identity", num_refs=2)
    fixer = cb.fixer
    real = fixer._run
    fixer._run = lambda images, refs: seen.append(refs) or real(images, refs)  # the references the net is given
    cb.fixer.fix_views(torch.rand(2, 3, 8, 12), cams(query_c2w, "q"), views, cb.num_refs)
    assert seen == [None]  # the identity takes none
    tiny = ProgressiveFixCallback(fixer="tiny", num_refs=2).fixer
    real_tiny = tiny._run
    tiny._run = lambda images, refs: seen.append(refs) or real_tiny(images, refs)
    tiny.fix_views(torch.rand(2, 3, 8, 12), cams(query_c2w, "q"), views, 2)
    refs = seen[-1]
    assert refs.shape == (2, 2, 3, 16, 16)  # at the size the renders run at (padded to 16), both references
    torch.testing.assert_close(refs[:, 0, 0, 0, 0], torch.tensor([0.5, 0.2]))


@pytest.fixture
def scene_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_procedural_scene(tmp_path_factory.mktemp("scene") / "proc", num_views=12, size=32, seed=0)


def small_module(tmp_path: Path) -> GaussianSceneModule:
    return GaussianSceneModule(
        sh=SHSchedule(degree=0), strategy=DefaultStrategy(refine_start_iter=1000, refine_stop_iter=1000),
        init=InitSettings(max_points=300), evaluation=EvalSettings(pretrained_metrics=False, num_log_images=1),
        predict=PathSettings(frames=0), output_dir=str(tmp_path / "out"), rasterizer=RasterSettings(backend="torch"),
    )


def small_data(scene_dir: Path) -> SceneDataModule:
    return SceneDataModule(path=str(scene_dir), read=ReadOptions(test_every=4), steps_per_epoch=1000, max_val_views=1)


def make_trainer(tmp_path: Path, max_steps: int, callbacks: list) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu", max_steps=max_steps, limit_val_batches=0, num_sanity_val_steps=0,
        logger=pl.loggers.TensorBoardLogger(tmp_path / "logs", name="t"), callbacks=callbacks,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
    )


def test_fix_sets_weighted_masked_fixed_views_without_reading_test_images(scene_dir: Path, tmp_path: Path) -> None:
    pl.seed_everything(0)
    data = small_data(scene_dir)
    data.setup("fit")
    # Poison the held-out images: if the fix or training used them, losses/outputs turn NaN.
    data.test_images = [torch.full_like(im, float("nan")) for im in data.test_images]
    data.setup = lambda stage=None: None  # keep the poisoned images
    cb = ProgressiveFixCallback(fixer="tiny", start_step=2, fix_every_n_steps=3, step_size=0.3,
                                fixed_view_weight=0.3, real_view_weight=1.5, batch_size=2)
    module = small_module(tmp_path)
    trainer = make_trainer(tmp_path, 9, [cb])
    trainer.fit(module, datamodule=data)

    assert cb.num_fixes == 3 and cb.last_fix_step == 8  # steps 2, 5, 8
    n_test = len(data.test_cameras)
    assert data.num_fixed_views == n_test
    torch.testing.assert_close(data.fixed_weights, torch.full((n_test,), 0.3))
    assert data.real_view_weight == 1.5
    for image, mask in zip(data.fixed_images, data.fixed_masks):
        assert torch.isfinite(image).all()
        assert set(mask.unique().tolist()) <= {0.0, 1.0}
    # The masks are the rendered alpha > 0.5 of the novel cameras (one more fix, no training after).
    cb.run_fix(trainer, module)
    with torch.no_grad():
        _, alpha = module.render_views(data.fixed_cameras[[0]])
    torch.testing.assert_close(data.fixed_masks[0], (alpha[0] > 0.5).float())
    assert all(torch.isfinite(p).all() for p in module.parameters())
    # The fix scalars and the render | fixed | reference grid reach TensorBoard.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(trainer.logger.log_dir))
    acc.Reload()
    assert [e.value for e in acc.Scalars("fix/num_views")] == [float(n_test)] * 4
    assert "fix/render_fixed_reference" in acc.Tags()["images"]

    # Difix3D+: test reports plain and post-render-fixed metrics (the fix never sees the
    # poisoned test images, only the metrics do, so give them real images back first).
    data.test_images = [torch.rand(3, 32, 32) for _ in data.test_images]
    trainer.test(module, datamodule=data, verbose=False)
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert set(metrics["mean"]) >= {"psnr", "ssim"} and set(metrics["mean_fixed"]) >= {"psnr", "ssim"}
    assert all("psnr_fixed" in v for v in metrics["per_view"]) and len(metrics["per_view"]) == n_test
    assert not module.has_post_render_fix  # only during test


def test_identity_fixer_feeds_back_the_renders_unchanged(scene_dir: Path, tmp_path: Path) -> None:
    """The ablation control ("identity"): the novel views go into training as the model's own renders."""
    pl.seed_everything(0)
    data = small_data(scene_dir)
    cb = ProgressiveFixCallback(fixer="identity", start_step=2, fix_every_n_steps=100, step_size=0.3)
    module = small_module(tmp_path)
    trainer = make_trainer(tmp_path, 3, [cb])
    trainer.fit(module, datamodule=data)
    assert cb.num_fixes == 1 and data.num_fixed_views == len(data.test_cameras)
    cb.run_fix(trainer, module)  # a fix after training: the renders of the current model
    with torch.no_grad():
        rgb, _ = module.render_views(data.fixed_cameras)
    for i, image in enumerate(data.fixed_images):
        torch.testing.assert_close(image, rgb[i].clamp(0, 1), atol=1e-6, rtol=0)


def test_fixed_view_loss_uses_weight_and_mask(scene_dir: Path, tmp_path: Path) -> None:
    pl.seed_everything(0)
    data = small_data(scene_dir)
    data.setup("fit")
    module = small_module(tmp_path)
    trainer = make_trainer(tmp_path, 1, [])
    trainer.fit(module, datamodule=data)  # builds the Gaussians
    cam = data.test_cameras[[0]]
    with torch.no_grad():
        rgb, _ = module.render_views(cam)
    target = rgb[0].clone()
    target[:, :, :8] = 1.0 - target[:, :, :8]  # wrong only on the left strip

    def loss_for(weight: float, mask: torch.Tensor) -> float:
        return float(photometric_loss(rgb, target[None], mask[None], torch.tensor([weight]))["loss"])

    full = torch.ones(1, 32, 32)
    right_only = full.clone()
    right_only[:, :, :8] = 0
    assert loss_for(0.3, full) == pytest.approx(0.3 * loss_for(1.0, full), rel=1e-5)
    assert loss_for(1.0, right_only) < 0.05 * loss_for(1.0, full)


def test_resume_restores_novel_cameras_and_fixed_views(scene_dir: Path, tmp_path: Path) -> None:
    pl.seed_everything(0)
    ckpt_cb = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=4, save_top_k=-1)
    cb = ProgressiveFixCallback(fixer="tiny", start_step=2, fix_every_n_steps=4, step_size=0.3)
    data = small_data(scene_dir)
    make_trainer(tmp_path, 4, [cb, ckpt_cb]).fit(small_module(tmp_path), datamodule=data)
    ckpt = next((tmp_path / "ckpt").glob("*.ckpt"))
    saved_c2w, saved_images = cb.novel_c2w.clone(), [im.clone() for im in data.fixed_images]

    cb2 = ProgressiveFixCallback(fixer="tiny", start_step=2, fix_every_n_steps=4, step_size=0.3)
    data2 = small_data(scene_dir)
    trainer = make_trainer(tmp_path, 5, [cb2])
    trainer.fit(small_module(tmp_path), datamodule=data2, ckpt_path=ckpt)
    assert cb2.num_fixes == 1 and cb2.last_fix_step == 2  # no new fix before step 6
    torch.testing.assert_close(cb2.novel_c2w, saved_c2w)
    assert len(data2.fixed_images) == len(saved_images)
    for a, b in zip(data2.fixed_images, saved_images):
        torch.testing.assert_close(a, b)
    assert trainer.global_step == 5


def test_predict_writes_the_fixed_views_beside_the_plain_ones(scene_dir: Path, tmp_path: Path) -> None:
    data = small_data(scene_dir)
    module = small_module(tmp_path)
    make_trainer(tmp_path, 2, []).fit(module, datamodule=data)
    module.set_post_render_fix(lambda rgb, cameras: 1 - rgb)  # a stand-in fixer, easy to check
    batches = make_trainer(tmp_path, 2, []).predict(module, datamodule=data)
    names = [n for b in batches for n in b["name"]]
    assert names
    views, fixed = tmp_path / "out" / "predict" / "views", tmp_path / "out" / "predict" / "views_fixed"
    assert sorted(p.stem for p in fixed.glob("*.png")) == sorted(names) == sorted(p.stem for p in views.glob("*.png"))
    for b in batches:
        torch.testing.assert_close(b["rgb_fixed"], 1 - b["rgb"])
