"""Pair curation (issue 5): each strategy end to end on a tiny procedural scene, what it wrote.

Scene: 12 views at 32x32 (``test_every=4``: test views 0, 4, 8; training views 1 2 3 5 6 7
9 10 11). Fits are a few steps of 3DGS on CPU: the renders are degraded, which is the point.
"""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import lightning.pytorch as pl

from datamodules.pairs import store as pair_store
from callbacks.curation.pair_writer import CYCLE_STAGE1_DIR, PairWriter
from datamodules.cameras.poses import pose_distance
from datamodules.readers.colmap import ColmapCamera, ColmapImage, ColmapPoints, colmap_pose_from_c2w, write_colmap_binary
from datamodules.files.image_io import load_image, read_image_size, save_image
from datamodules.pairs.datamodule import JsonPairs, PairDataModule, read_pairs_json
from datamodules.procedural.scene import make_procedural_scene
from datamodules.readers.read_scene import read_scene
from datamodules.readers.scene_data import ReadOptions, SceneFormatError

READ_FIELDS = set(ReadOptions.__dataclass_fields__)
from datamodules.scene.datamodule import SceneDataModule
from lightning_modules.scene.gaussians.initial import InitSettings
from lightning_modules.scene.gaussians.module import GaussianSceneModule
from lightning_modules.scene.gaussians.settings import SHSchedule
from lightning_modules.scene.gaussians.strategy import DefaultStrategy
from helpers.scene_writers import make_rig
from helpers import REPO

SIZE = 32


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_procedural_scene(tmp_path_factory.mktemp("curate") / "scene", num_views=12, size=SIZE, seed=0, num_points=300)


def _fit(out: Path, scene: Path, steps: int = 6, fit_dir: Path | None = None, **kwargs: object) -> SceneDataModule:
    """One tiny fit with a PairWriter; kwargs starting with ``data_`` go to the datamodule."""
    data = {k[5:]: v for k, v in kwargs.items() if k.startswith("data_")}
    writer = {k: v for k, v in kwargs.items() if not k.startswith("data_")}
    writer.setdefault("scene_name", "proc")
    read = ReadOptions(**{"test_every": 4, **{k: v for k, v in data.items() if k in READ_FIELDS}})
    dm = SceneDataModule(str(scene), read=read, steps_per_epoch=1000, **{k: v for k, v in data.items() if k not in READ_FIELDS})
    model = GaussianSceneModule(sh=SHSchedule(degree=0), init=InitSettings(max_points=300),
                                strategy=DefaultStrategy(refine_start_iter=10**6),
                                output_dir=str(fit_dir or out.parent / "fit"))
    trainer = pl.Trainer(max_steps=steps, accelerator="cpu", logger=False, callbacks=[PairWriter(out_dir=str(out), **writer)],
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0, limit_val_batches=0)
    trainer.fit(model, dm)
    return dm


def _doc(out: Path) -> dict:
    return json.loads((out / "pairs.json").read_text())


def _check_files(out: Path, items: list[dict]) -> None:
    """Every file exists; render, target and references share the render's size."""
    for it in items:
        size = read_image_size(out / it["image"])
        assert read_image_size(out / it["target_image"]) == size
        assert all(read_image_size(out / r) == size for r in it["ref_image"])


def _nearest(dm: SceneDataModule, view: str, exclude_self: bool) -> str:
    """Name of the fitted view nearest (pose distance) to the scene view ``view``."""
    names = dm.scene.cameras.names
    c2w = dm.scene.cameras[[names.index(view)]].camera_to_world.double()
    dist = pose_distance(c2w, dm.train_cameras.camera_to_world.double())[0]
    if exclude_self and view in dm.train_cameras.names:
        dist[dm.train_cameras.names.index(view)] = float("inf")
    return dm.train_cameras.names[int(dist.argmin())]


def _files_under(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


# ---------------------------------------------------------------------------- strategies
def test_sparse_renders_every_unfitted_view_with_the_nearest_fitted_reference(scene: Path, tmp_path: Path) -> None:
    out = tmp_path / "pairs"
    dm = _fit(out, scene, strategy="sparse", render="heldout", data_train_every=2)
    assert dm.train_cameras.names == [f"frame_{i:05d}" for i in (1, 3, 6, 9, 11)]
    heldout = [f"frame_{i:05d}" for i in (0, 2, 4, 5, 7, 8, 10)]  # test views + dropped training views
    items = _doc(out)["train"]
    assert [it["view"] for it in items] == heldout and _doc(out)["test"] == []
    assert {(it["strategy"], it["scene"], it["step"], it["prompt"], it["source"]) for it in items} == {
        ("sparse", "proc", 6, "remove degradation", str(scene))}
    _check_files(out, items)
    assert read_image_size(out / items[0]["image"]) == (SIZE, SIZE)
    for it in items:
        assert it["ref_views"] == [_nearest(dm, it["view"], exclude_self=False)]
        # Targets and references are the real images (8-bit PNG round trip is exact).
        assert torch.equal(load_image(out / it["target_image"]), load_image(scene / "images" / f"{it['view']}.png"))
        assert torch.equal(load_image(out / it["ref_image"][0]), load_image(scene / "images" / f"{it['ref_views'][0]}.png"))
        assert not torch.equal(load_image(out / it["image"]), load_image(out / it["target_image"]))
    # PairDataModule's JSON reader takes the file as it is.
    read = read_pairs_json(out / "pairs.json", "train", num_refs=1)
    assert [p.target for p in read] == [out / it["target_image"] for it in items]


def test_underfit_writes_the_training_views_at_each_fraction(scene: Path, tmp_path: Path) -> None:
    out = tmp_path / "pairs"
    dm = _fit(out, scene, steps=8, strategy="underfit", render="train", at_fractions=[0.5, 0.25, 1.0], num_refs=2)
    items = _doc(out)["train"]
    train = dm.train_cameras.names
    by_fraction = {f: [it for it in items if it["fraction"] == f] for f in (0.25, 0.5, 1.0)}
    assert sum(len(v) for v in by_fraction.values()) == len(items) == 3 * len(train)
    for fraction, step in ((0.25, 2), (0.5, 4), (1.0, 8)):
        group = by_fraction[fraction]
        assert [it["view"] for it in group] == train
        assert {it["step"] for it in group} == {step} and {it["strategy"] for it in group} == {"underfit"}
        assert all(it["image"].startswith(f"proc/underfit_{fraction:g}/render/") for it in group)
    _check_files(out, items)
    for it in by_fraction[1.0]:
        assert len(it["ref_views"]) == 2 and it["view"] not in it["ref_views"]  # never its own target
        assert it["ref_views"][0] == _nearest(dm, it["view"], exclude_self=True)
        assert torch.equal(load_image(out / it["target_image"]), load_image(scene / "images" / f"{it['view']}.png"))
    # The model changed between the snapshots.
    early, late = (load_image(out / by_fraction[f][0]["image"]) for f in (0.25, 1.0))
    assert not torch.equal(early, late)


def test_cross_fits_one_group_and_renders_the_others(scene: Path, tmp_path: Path) -> None:
    out = tmp_path / "pairs"
    # frame_000(\d): frames 0-9 -> "0", frames 10-11 -> "1".
    dm = _fit(out, scene, strategy="cross", data_test_every=0, data_train_group="1", data_group_by="pattern",
              data_group_pattern=r"frame_000(\d)")
    assert dm.train_cameras.names == ["frame_00010", "frame_00011"]
    items = _doc(out)["train"]
    assert [it["view"] for it in items] == [f"frame_{i:05d}" for i in range(10)]
    assert all(it["ref_views"][0] in ("frame_00010", "frame_00011") for it in items)
    assert all(it["ref_views"] == [_nearest(dm, it["view"], exclude_self=False)] for it in items)
    assert {it["strategy"] for it in items} == {"cross"}
    _check_files(out, items)


def _rig_scene(root: Path) -> Path:
    """A COLMAP scene of 6 images from two cameras (ids 1, 2) in folders front/ and left/."""
    rig = make_rig(n=6, width=24, height=16)
    names = [f"{'front' if i % 2 == 0 else 'left'}/img_{i}.png" for i in range(6)]
    for i, name in enumerate(names):
        save_image(rig.images[i], root / "images" / name)
    cams = [ColmapCamera(c, "PINHOLE", rig.width, rig.height, [rig.focal, rig.focal, rig.width / 2, rig.height / 2]) for c in (1, 2)]
    images = [ColmapImage(i + 1, *colmap_pose_from_c2w(rig.c2w[i]), 1 + i % 2, name) for i, name in enumerate(names)]
    write_colmap_binary(root / "sparse" / "0", cams, images, ColmapPoints.from_arrays(rig.points.numpy(), np.zeros((20, 3), np.uint8)))
    return root


def test_groups_by_colmap_camera_id_or_path_pattern(tmp_path: Path, scene: Path) -> None:
    root = _rig_scene(tmp_path / "rig")
    by_id = read_scene(root, test_every=0, train_group="2", group_by="camera_id")
    # COLMAP images are ordered by name: front/img_0, front/img_2, front/img_4, left/img_1, ...
    assert by_id.camera_ids == [1, 1, 1, 2, 2, 2]
    assert by_id.split["train"] == [3, 4, 5]
    by_pattern = read_scene(root, test_every=0, train_group="front", group_by="pattern", group_pattern=r"^images/(\w+)/", train_every=2)
    assert by_pattern.split["train"] == [0, 2]  # the 3 front images, thinned by train_every after grouping
    # The world does not depend on the chosen group.
    assert torch.allclose(by_id.transform, read_scene(root, test_every=0).transform)
    with pytest.raises(SceneFormatError, match=r"groups found: \['1', '2'\]"):
        read_scene(root, test_every=0, train_group="3")
    with pytest.raises(SceneFormatError, match="only COLMAP scenes"):
        read_scene(scene, train_group="1", group_by="camera_id")
    dm = SceneDataModule(str(root), read=ReadOptions(test_every=0, train_group="1"))
    dm.setup()
    assert dm.heldout_indices == [3, 4, 5] and len(dm.heldout_images) == 3
    assert dm.heldout_cameras.names == ["left/img_1", "left/img_3", "left/img_5"]


def _cli(config: str, root: Path, *args: str) -> None:
    from difix3d.cli import cli_main

    with contextlib.redirect_stdout(io.StringIO()):
        cli_main(["fit", "--config", str(REPO / config), "--trainer.logger=false", "--trainer.enable_progress_bar=false",
                  f"--trainer.default_root_dir={root}",  # where the CLI saves config.yaml
                  "--model.init_args.sh.degree=0", "--model.init_args.init.max_points=300", *args])


def test_cycle_two_stages_through_the_demo_configs(tmp_path: Path) -> None:
    scene, out = tmp_path / "scene", tmp_path / "pairs"
    common = ["--trainer.max_steps=6", f"--trainer.callbacks.init_args.out_dir={out}", "--model.init_args.strategy.init_args.refine_start_iter=1000"]
    _cli("configs/demo/curate_cycle_stage1.yaml", tmp_path, *common, f"--data.init_args.path={scene}",
         "--data.init_args.procedural.num_views=8", f"--data.init_args.procedural.size={SIZE}",
         f"--model.init_args.output_dir={tmp_path / 'fit1'}")
    stage1 = out / "procedural" / CYCLE_STAGE1_DIR
    assert not (out / "pairs.json").exists()  # stage 1 writes a scene, no pairs
    shifted = read_scene(stage1, normalize=False, test_every=0)
    manifest = json.loads((stage1 / "cycle_manifest.json").read_text())
    original = SceneDataModule(str(scene), read=ReadOptions(test_every=8))
    original.setup()
    assert len(shifted) == len(manifest["images"]) == len(original.train_cameras) == 7
    # Each shifted camera is its original moved sideways (camera +x) by shift x scene_scale, same orientation.
    orig_c2w = original.train_cameras.camera_to_world.double()
    delta = shifted.cameras.camera_to_world.double()[:, :3, 3] - orig_c2w[:, :3, 3]
    assert torch.allclose(delta, manifest["shift_distance"] * orig_c2w[:, :3, 0], atol=1e-5)
    assert manifest["shift_distance"] == pytest.approx(0.1 * original.scene_scale, rel=1e-5)
    assert torch.allclose(shifted.cameras.camera_to_world[:, :3, :3], orig_c2w[:, :3, :3].float(), atol=1e-5)
    assert shifted.points is not None and len(shifted.points) > 0

    _cli("configs/demo/curate_cycle_stage2.yaml", tmp_path, *common, f"--data.init_args.path={stage1}",
         f"--model.init_args.output_dir={tmp_path / 'fit2'}")
    items = _doc(out)["train"]
    assert [it["view"] for it in items] == original.train_cameras.names
    assert {(it["strategy"], it["scene"], it["step"]) for it in items} == {("cycle", "procedural", 6)}
    _check_files(out, items)
    names = original.train_cameras.names
    for it in items:
        i = names.index(it["view"])
        assert torch.equal(load_image(out / it["target_image"]), original.train_images[i])
        dist = pose_distance(orig_c2w[i : i + 1], orig_c2w)[0]
        dist[i] = float("inf")
        assert it["ref_views"] == [names[int(dist.argmin())]]


# ---------------------------------------------------------------------------- the pairs folder
def test_rerun_rebuilds_deterministically_and_other_items_are_kept(scene: Path, tmp_path: Path) -> None:
    out = tmp_path / "pairs"
    foreign = {"image": "/elsewhere/a.png", "target_image": "/elsewhere/b.png", "ref_image": "/elsewhere/c.png"}
    (out).mkdir()
    (out / "pairs.json").write_text(json.dumps({"train": [foreign], "test": []}))
    _fit(out, scene, strategy="sparse", data_train_every=2)
    first_json, first_files = (out / "pairs.json").read_text(), _files_under(out / "proc")
    _fit(out, scene, strategy="sparse", data_train_every=3)  # fitted 1, 5, 9 -> 9 held-out views
    items = _doc(out)["train"]
    assert items[0] == foreign  # items of other writers are kept
    assert len(items) == 1 + 9 and len({it["name"] for it in items[1:]}) == 9  # replaced, not appended
    referenced = {p for it in items[1:] for p in [it["image"], it["target_image"], *it["ref_image"]]}
    assert {f"proc/{f}" for f in _files_under(out / "proc")} == referenced  # the old run's files are gone
    _fit(out, scene, strategy="sparse", data_train_every=2)
    assert (out / "pairs.json").read_text() == first_json
    assert _files_under(out / "proc") == first_files
    assert not list(out.rglob(".*"))  # no staging, old or journal files left behind


class _Crash(RuntimeError):
    pass


def test_crash_mid_write_leaves_the_previous_pairs(scene: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "pairs"
    _fit(out, scene, strategy="sparse", data_train_every=2)
    before, files = (out / "pairs.json").read_text(), _files_under(out)
    import callbacks.curation.pair_writer as pw

    calls = {"n": 0}

    def failing_save(image: torch.Tensor, path: Path) -> Path:
        calls["n"] += 1
        if calls["n"] > 4:
            raise _Crash("disk full")
        return save_image(image, path)

    monkeypatch.setattr(pw, "save_image", failing_save)
    with pytest.raises(_Crash):
        _fit(out, scene, strategy="sparse", data_train_every=3)
    assert (out / "pairs.json").read_text() == before
    assert _files_under(out) == files  # no staging folder left, the old images untouched
    _check_files(out, _doc(out)["train"])


def test_interrupted_commit_is_rolled_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "pairs"

    def stage(value: float) -> tuple[dict[str, Path], list[dict]]:
        folder = pair_store.staging_dir(out / "s", "sparse")
        for name in ("render", "target", "ref"):
            save_image(torch.full((3, 4, 4), value), folder / "sparse" / name / "v.png")
        item = {"image": "s/sparse/render/v.png", "target_image": "s/sparse/target/v.png",
                "ref_image": ["s/sparse/ref/v.png"], "scene": "s", "strategy": "sparse", "step": int(value)}
        return {"s/sparse": folder / "sparse"}, [item]

    pair_store.commit(out, "s", "sparse", "train", *stage(0.0))
    before = (out / "pairs.json").read_text()
    real_write = pair_store.write_json_atomic

    def crash_on_pairs_json(path: Path, doc: object) -> str:
        if path.name == pair_store.PAIRS_JSON:
            raise _Crash("killed between the folder swap and the JSON write")
        return real_write(path, doc)

    monkeypatch.setattr(pair_store, "write_json_atomic", crash_on_pairs_json)
    with pytest.raises(_Crash):
        pair_store.commit(out, "s", "sparse", "train", *stage(1.0))
    monkeypatch.setattr(pair_store, "write_json_atomic", real_write)
    with pair_store.locked(out):
        pair_store.recover(out)  # what the next writer does first
    assert (out / "pairs.json").read_text() == before
    assert float(load_image(out / "s/sparse/render/v.png").max()) == 0.0  # the old images are back
    assert [p.name for p in (out / "s").iterdir() if ".old-" in p.name] == []
    assert not (out / ".pairs-commit-journal.json").exists()

    # Killed after the new pairs.json landed but before the old folders were removed: roll forward.
    real_recover, calls = pair_store.recover, {"n": 0}

    def killed_before_cleanup(folder: Path) -> None:
        calls["n"] += 1
        if calls["n"] == 2:  # commit calls recover first (no journal) and last (cleanup)
            raise _Crash("killed before cleanup")
        real_recover(folder)

    monkeypatch.setattr(pair_store, "recover", killed_before_cleanup)
    with pytest.raises(_Crash):
        pair_store.commit(out, "s", "sparse", "train", *stage(1.0))
    monkeypatch.setattr(pair_store, "recover", real_recover)
    assert [p.name for p in (out / "s").iterdir() if ".old-" in p.name]  # the old folder still exists
    with pair_store.locked(out):
        pair_store.recover(out)
    assert _doc(out)["train"][0]["step"] == 1
    assert float(load_image(out / "s/sparse/render/v.png").min()) == 1.0
    assert [p.name for p in (out / "s").iterdir() if ".old-" in p.name] == []
    assert not (out / ".pairs-commit-journal.json").exists()


def test_splits_by_scene_and_pair_datamodule_reads_them(scene: Path, tmp_path: Path) -> None:
    out = tmp_path / "pairs"
    _fit(out, scene, strategy="sparse", scene_name="a", split="train", data_train_every=2)
    _fit(out, scene, strategy="sparse", scene_name="b", split="test", data_train_every=3)
    doc = _doc(out)
    assert {it["scene"] for it in doc["train"]} == {"a"} and {it["scene"] for it in doc["test"]} == {"b"}
    # A scene lives in one split: train pairs of scene b would leak the test scene.
    with pytest.raises(ValueError, match="scene 'b' already has test pairs"):
        pair_store.commit(out, "b", "underfit", "train", {}, [])
    data = PairDataModule(JsonPairs(str(out / "pairs.json")), num_refs=1, batch_size=2)
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    assert batch["image"].shape == batch["target"].shape == (2, 3, SIZE, SIZE)
    assert batch["refs"].shape == (2, 1, 3, SIZE, SIZE)
    assert batch["prompt"] == ["remove degradation"] * 2
    assert len(data.val_dataloader().dataset) == len(doc["test"]) == 9
    assert len(data.train_dataloader().dataset) == len(doc["train"]) == 7


def test_bad_writer_settings_are_named() -> None:
    with pytest.raises(ValueError, match="at_fractions"):
        PairWriter("o", "s", "underfit", render="train", at_fractions=[0.0, 0.5])
    with pytest.raises(ValueError, match="belongs to strategy 'cycle'"):
        PairWriter("o", "s", "sparse", render="cycle_back")
    with pytest.raises(ValueError, match="scene_name"):
        PairWriter("o", "a/b", "sparse")


def test_stale_staging_and_temp_files_of_killed_writers_are_removed(tmp_path: Path) -> None:
    import os
    import subprocess

    from datamodules.pairs import store as pair_store

    dead = subprocess.Popen(["true"])
    dead.wait()
    out = tmp_path / "pairs"
    stale_dir = out / "scene" / f".sparse.{dead.pid}.0a1b2c3d.new"
    live_dir = out / "scene" / f".underfit.{os.getpid()}.0a1b2c3d.new"
    stale_tmp = out / f".pairs.json.{dead.pid}.deadbeef.tmp"
    for folder in (stale_dir, live_dir):
        (folder / "images").mkdir(parents=True)
    stale_tmp.write_text("{")
    kept = out / "scene" / "sparse"
    kept.mkdir()
    removed = pair_store.remove_stale(out)
    assert sorted(removed) == sorted([stale_dir, stale_tmp])
    assert not stale_dir.exists() and not stale_tmp.exists()
    assert live_dir.is_dir() and kept.is_dir()  # a running writer's staging and real output stay
