"""SceneDataModule: loading, sampling real vs fixed views, evaluation loaders, exact resume."""
from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch

from datamodules.cameras.cameras import Cameras
from datamodules.procedural.scene import ProceduralOptions, make_procedural_scene
from datamodules.readers.scene_data import ReadOptions

READ_FIELDS = set(ReadOptions.__dataclass_fields__)
from datamodules.scene.datamodule import SceneDataModule, collate_views
from helpers.scene_writers import make_rig, write_colmap

SIZE = 24


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_procedural_scene(tmp_path_factory.mktemp("dm") / "scene", num_views=12, size=SIZE, seed=0, num_points=300)


def _dm(path: Path, **kwargs: object) -> SceneDataModule:
    read = ReadOptions(**{k: v for k, v in kwargs.items() if k in READ_FIELDS})
    dm = SceneDataModule(str(path), read=read, **{k: v for k, v in kwargs.items() if k not in READ_FIELDS})
    dm.setup("fit")
    return dm


def _extras(dm: SceneDataModule, n: int = 3, value: float = 0.25, real_view_weight: float | None = None) -> None:
    cams = dm.test_cameras[[0] * n]
    cams.names = [f"novel_{i}" for i in range(n)]
    images = [torch.full((3, SIZE, SIZE), value + 0.1 * i) for i in range(n)]
    masks = [torch.zeros(1, SIZE, SIZE) for _ in range(n)]
    dm.set_fixed_views(images, cams, torch.full((n,), 0.5), masks, real_view_weight=real_view_weight)


def _train_batches(dm: SceneDataModule) -> list[dict]:
    """The training batches as the model gets them (Lightning's transfer hook picks the views)."""
    return [dm.on_before_batch_transfer(b, 0) for b in dm.train_dataloader()]


def test_signature_is_fully_typed() -> None:
    params = list(inspect.signature(SceneDataModule.__init__).parameters.values())[1:]
    assert all(p.annotation is not inspect.Parameter.empty for p in params)
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_class_arguments(SceneDataModule, "data")
    cfg = parser.parse_args(["--data.path", "x", "--data.background", "[0, 0, 0]", "--data.read.max_train_views", "3"])
    assert cfg.data.background == (0.0, 0.0, 0.0) and cfg.data.read.max_train_views == 3


def test_setup_caches_images_and_cameras(scene_dir: Path) -> None:
    dm = _dm(scene_dir)
    assert len(dm.train_images) == 10 and len(dm.test_images) == 2  # 12 views, test_every 8
    assert len(dm.train_cameras) == 10 and dm.test_cameras.names == ["frame_00000", "frame_00008"]
    assert all(im.shape == (3, SIZE, SIZE) and im.dtype == torch.float32 for im in dm.train_images)
    assert 0.0 <= min(float(im.min()) for im in dm.train_images) and max(float(im.max()) for im in dm.train_images) <= 1.0
    assert dm.points is not None and dm.points.shape[1] == 3 and dm.point_colors.shape == dm.points.shape
    centers = dm.train_cameras.centers
    assert dm.scene_scale == pytest.approx(1.1 * float((centers - centers.mean(0)).norm(dim=-1).max()), rel=1e-5)
    assert 1.0 < dm.scene_scale < 1.5  # normalised world: all cameras within radius 1 of their mean
    assert dm.target_cameras().names == dm.test_cameras.names
    assert len(dm.target_cameras("train")) == 10
    with pytest.raises(ValueError, match="unknown kind"):
        dm.target_cameras("nope")
    sparse = _dm(scene_dir, train_every=3, max_train_views=2)
    assert sparse.train_cameras.names == ["frame_00001", "frame_00004"]


def test_train_draws_never_include_test_images(scene_dir: Path) -> None:
    dm = _dm(scene_dir, steps_per_epoch=150)
    _extras(dm)
    test_names = set(dm.test_cameras.names)
    test_pixels = torch.stack(dm.test_images)
    seen = []
    for batch in _train_batches(dm):
        assert batch["image"].shape == (1, 3, SIZE, SIZE) and batch["mask"].shape == (1, 1, SIZE, SIZE)
        assert isinstance(batch["camera"], Cameras) and len(batch["camera"]) == 1
        assert batch["name"][0] not in test_names
        assert not (batch["image"] == test_pixels).flatten(1).all(dim=1).any()
        seen.append(batch)
    assert len(seen) == 150
    extra = torch.cat([b["is_fixed"] for b in seen])
    # with probability 0.7 real: ~45 extra draws of 150
    assert 25 <= int(extra.sum()) <= 65
    for b in seen:
        if b["is_fixed"].item():
            assert b["name"][0].startswith("novel_") and b["weight"].item() == 0.5 and b["mask"].sum() == 0
        else:
            assert b["weight"].item() == 1.0 and b["mask"].min() == 1.0
    assert [int(b["draw"]) for b in seen] == list(range(150)) and all("index" not in b for b in seen)
    assert len({b["name"][0] for b in seen if not b["is_fixed"].item()}) == 10  # every train view drawn


def test_real_view_probability_extremes(scene_dir: Path) -> None:
    dm = _dm(scene_dir, steps_per_epoch=30, real_view_probability=0.0)
    assert not any(b["is_fixed"].item() for b in _train_batches(dm))  # no extras: always real
    _extras(dm)
    assert all(b["is_fixed"].item() for b in _train_batches(dm))
    dm.clear_fixed_views()
    assert dm.num_fixed_views == 0 and not any(b["is_fixed"].item() for b in _train_batches(dm))
    with pytest.raises(ValueError, match="real_view_probability"):
        SceneDataModule(str(scene_dir), real_view_probability=1.5)


def test_draws_are_deterministic_and_state_dict_resumes_exactly(scene_dir: Path) -> None:
    def names(dm: SceneDataModule) -> list[str]:
        return [b["name"][0] for b in _train_batches(dm)]

    a, b = _dm(scene_dir, steps_per_epoch=20), _dm(scene_dir, steps_per_epoch=20)
    assert names(a) == names(b)
    assert names(a) != names(_dm(scene_dir, steps_per_epoch=20, seed=1))
    _extras(a, real_view_weight=0.8)
    state = a.state_dict()
    continued = [(x["name"][0], float(x["weight"]), float(x["image"].mean())) for x in _train_batches(a)]
    fresh = _dm(scene_dir, steps_per_epoch=20)
    fresh.load_state_dict(state)
    assert fresh.num_fixed_views == 3 and fresh.real_view_weight == 0.8
    resumed = [(x["name"][0], float(x["weight"]), float(x["image"].mean())) for x in _train_batches(fresh)]
    assert resumed == continued
    assert torch.equal(fresh.fixed_cameras.world_to_camera, a.fixed_cameras.world_to_camera)


def test_batches_hold_draw_indices_and_take_the_views_current_when_used(scene_dir: Path) -> None:
    """A loader that fetches ahead holds only draw indices: the transfer hook picks the views
    when the batch is used (after a fix in between), and the checkpoint counts only the draws
    that reached the model."""
    dm = _dm(scene_dir, steps_per_epoch=10, real_view_probability=0.0)
    it = iter(dm.train_dataloader())
    first = dm.on_before_batch_transfer(next(it), 0)
    prefetched = next(it)  # index 1, fetched before the fix
    assert set(prefetched) == {"draw"} and dm.state_dict()["draws"] == 1
    _extras(dm)
    got = dm.on_before_batch_transfer(prefetched, 0)
    assert got["is_fixed"].item() and int(got["draw"]) == 1 and not first["is_fixed"].item()
    assert dm.state_dict()["draws"] == 2
    next(it)  # a further prefetch does not move the saved counter
    assert dm.state_dict()["draws"] == 2


def test_set_fixed_views_validates(scene_dir: Path) -> None:
    dm = _dm(scene_dir)
    cams = dm.test_cameras
    with pytest.raises(ValueError, match="2 images but 2 cameras, 3 weights"):
        dm.set_fixed_views([torch.rand(3, SIZE, SIZE)] * 2, cams, torch.ones(3))
    with pytest.raises(ValueError, match=f"image 0 is 8x8 but its camera says {SIZE}x{SIZE}"):
        dm.set_fixed_views([torch.rand(3, 8, 8)] * 2, cams, torch.ones(2))


def test_evaluation_loaders_iterate_test_views_in_order(scene_dir: Path) -> None:
    dm = _dm(scene_dir, test_every=3, max_val_views=2)
    assert len(dm.test_images) == 4
    batches = list(dm.test_dataloader())
    assert [b["name"][0] for b in batches] == dm.test_cameras.names
    assert all(torch.equal(b["image"][0], im) for b, im in zip(batches, dm.test_images))
    assert [int(b["index"]) for b in batches] == [0, 1, 2, 3] and not any(b["is_fixed"].item() for b in batches)
    assert all("draw" not in b for b in batches)
    assert [b["name"][0] for b in dm.val_dataloader()] == [dm.test_cameras.names[0], dm.test_cameras.names[3]]
    assert len(list(dm.predict_dataloader())) == 4


def test_collate_and_device_transfer(scene_dir: Path) -> None:
    from lightning.fabric.utilities.apply_func import move_data_to_device

    dm = _dm(scene_dir)
    batch = collate_views([dm.draw_train_view(0), dm.draw_train_view(1)])
    assert batch["image"].shape == (2, 3, SIZE, SIZE) and len(batch["camera"]) == 2 and len(batch["name"]) == 2
    moved = move_data_to_device(batch, torch.device("cpu"))
    assert isinstance(moved["camera"], Cameras) and moved["camera"].names == batch["name"]


def test_procedural_flag_writes_the_scene(tmp_path: Path) -> None:
    dm = SceneDataModule(str(tmp_path / "made"), procedural=ProceduralOptions(num_views=4, size=16))
    dm.prepare_data()
    dm.setup("fit")
    assert (tmp_path / "made" / "transforms.json").is_file()
    assert len(dm.train_images) == 3 and dm.train_images[0].shape == (3, 16, 16)
    white = SceneDataModule(str(tmp_path / "white"),
                            procedural=ProceduralOptions(num_views=4, size=16, background=(1.0, 1.0, 1.0)))
    white.setup("fit")  # the objects alone on white: the top row sees only background
    assert (white.train_images[0][:, 0] == 1.0).all() and not (dm.train_images[0][:, 0] == 1.0).all()
    # the scene model's default background follows it (opaque dome scenes: none, i.e. black)
    assert white.scene_setup().background == (1.0, 1.0, 1.0) and dm.scene_setup().background is None
    with pytest.raises(ValueError, match="background must be an RGB triple"):  # at construction
        SceneDataModule(str(tmp_path / "bad"), procedural=ProceduralOptions(background=(2.0, 0.0, 0.0)))
    from datamodules.readers.scene_data import SceneFormatError

    with pytest.raises(SceneFormatError, match="scene folder not found"):
        SceneDataModule(str(tmp_path / "absent")).setup("fit")


def test_distorted_capture_is_undistorted_with_a_mask(tmp_path: Path) -> None:
    rig = make_rig(n=4, width=32, height=24, focal=30.0)
    root = write_colmap(rig, tmp_path / "c", model="OPENCV", params=[30.0, 30.0, 16.0, 12.0, 0.15, 0.0, 0.0, 0.0])
    dm = _dm(root, test_every=0)
    assert dm.train_masks is not None and len(dm.train_masks) == 4
    mask = dm.train_masks[0][0]
    assert mask[12, 16] == 1.0 and mask[0, 0] == 0.0  # pincushion: corners unseen
    assert not torch.allclose(dm.train_images[0], rig.images[0], atol=0.05)  # resampled
    drawn = dm.draw_train_view(0)
    assert drawn["mask"].min() == 0.0


def test_lightning_resume_continues_the_draws_exactly(scene_dir: Path, tmp_path: Path) -> None:
    """Fit 8 steps with a fix at step 2 and a mid-epoch checkpoint after it; resuming
    reproduces steps 3..7 (fixed views restored, draw counter continued)."""
    import lightning.pytorch as pl

    class Recorder(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.seen: list[tuple[int, str, float]] = []

        def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
            self.seen.append((self.global_step, batch["name"][0], round(float(batch["image"].mean()), 5)))
            return ((self.w - batch["image"].mean()) ** 2 * batch["weight"]).sum()

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    class FixAtStep(pl.Callback):
        def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: dict, batch_idx: int) -> None:
            if trainer.global_step == 2:
                _extras(trainer.datamodule, n=4, value=0.05)

    def trainer(max_steps: int, ckpt: bool) -> pl.Trainer:
        callbacks: list[pl.Callback] = [FixAtStep()]
        if ckpt:
            callbacks.append(pl.callbacks.ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=3, save_top_k=-1, filename="{step}"))
        return pl.Trainer(
            max_steps=max_steps, accelerator="cpu", logger=False, enable_checkpointing=ckpt, callbacks=callbacks,
            enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
        )

    first = Recorder()
    # probability 0: real views until the fix, fixed views after it (step 3 on)
    dm = SceneDataModule(str(scene_dir), steps_per_epoch=5, real_view_probability=0.0)
    trainer(8, True).fit(first, datamodule=dm)
    assert len(first.seen) == 8
    assert [name.startswith("novel_") for _, name, _ in first.seen] == [False] * 3 + [True] * 5
    ckpt = tmp_path / "step=3.ckpt"
    assert ckpt.is_file()
    second = Recorder()
    dm2 = SceneDataModule(str(scene_dir), steps_per_epoch=5, real_view_probability=0.0)
    trainer(8, False).fit(second, datamodule=dm2, ckpt_path=str(ckpt))
    assert dm2.num_fixed_views == 4
    assert second.seen == first.seen[3:]
