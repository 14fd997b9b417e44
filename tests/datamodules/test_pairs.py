"""PairDataModule: the pairs JSON (list and dict layouts), synthetic pairs, predict folders."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from datamodules.pairs.degradations import DEGRADATIONS, Degrader, make_generator, procedural_image, shift_image
from datamodules.files.image_io import load_image, save_image
from datamodules.pairs.datamodule import PairDataError, PairDataModule
from datamodules.pairs.sources import JsonPairs, RenderFolder, SyntheticPairs

H, W = 24, 32


def _rand(seed: int, h: int = H, w: int = W) -> torch.Tensor:
    return torch.rand(3, h, w, generator=torch.Generator().manual_seed(seed))


def _write_pairs(root: Path, n: int = 3, layout: str = "list", n_refs: int = 1, size=(H, W)) -> Path:
    """n triplets under root/images (paths relative to the JSON), plus root/pairs.json."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    items = {}
    for i in range(n):
        save_image(_rand(100 + i, *size), root / "images" / f"render_{i}.png")
        save_image(_rand(200 + i, *size), root / "images" / f"clean_{i}.png")
        refs = []
        for k in range(n_refs):
            save_image(_rand(300 + 10 * i + k, *size), root / "images" / f"ref_{i}_{k}.png")
            refs.append(f"images/ref_{i}_{k}.png")
        items[f"frame_{i}"] = {
            "image": f"images/render_{i}.png",
            "target_image": f"images/clean_{i}.png",
            "ref_image": refs[0] if n_refs == 1 else refs,
            "prompt": "remove degradation",
        }
    split = items if layout == "dict" else list(items.values())
    path = root / "pairs.json"
    path.write_text(json.dumps({"train": split, "test": split}))
    return path


def _batch(dm: PairDataModule, split: str = "val") -> dict:
    dm.setup({"train": "fit", "val": "validate", "test": "test", "predict": "predict"}[split])
    loader = {"train": dm.train_dataloader, "val": dm.val_dataloader, "test": dm.test_dataloader, "predict": dm.predict_dataloader}[split]()
    return next(iter(loader))


# ------------------------------------------------------------------ JSON
@pytest.mark.parametrize("layout", ["list", "dict"])
def test_json_layouts_relative_paths_and_batch_layout(tmp_path, layout):
    path = _write_pairs(tmp_path, layout=layout)
    batch = _batch(PairDataModule(JsonPairs(str(path)), batch_size=2, val_batch_size=3))
    assert set(batch) == {"image", "target", "refs", "prompt", "name"}
    assert batch["image"].shape == (3, 3, H, W) and batch["target"].shape == (3, 3, H, W)
    assert batch["refs"].shape == (3, 1, 3, H, W)
    assert batch["prompt"] == ["remove degradation"] * 3
    expected_names = ["frame_0", "frame_1", "frame_2"] if layout == "dict" else ["render_0", "render_1", "render_2"]
    assert batch["name"] == expected_names
    for i in range(3):  # the right files, resolved against the JSON's folder
        assert torch.equal(batch["image"][i], load_image(tmp_path / "images" / f"render_{i}.png"))
        assert torch.equal(batch["target"][i], load_image(tmp_path / "images" / f"clean_{i}.png"))
        assert torch.equal(batch["refs"][i, 0], load_image(tmp_path / "images" / f"ref_{i}_0.png"))
    assert batch["image"].dtype == torch.float32 and 0 <= batch["image"].min() and batch["image"].max() <= 1


def test_k_references_pad_by_repeating_and_truncate(tmp_path):
    path = _write_pairs(tmp_path, n=2, n_refs=3)
    data = json.loads(path.read_text())
    data["test"][0]["ref_image"] = data["test"][0]["ref_image"][:1]  # fewer than K
    path.write_text(json.dumps(data))
    refs = _batch(PairDataModule(JsonPairs(str(path)), num_refs=2, val_batch_size=2))["refs"]
    assert refs.shape == (2, 2, 3, H, W)
    first = load_image(tmp_path / "images" / "ref_0_0.png")
    assert torch.equal(refs[0, 0], first) and torch.equal(refs[0, 1], first)  # repeated
    assert torch.equal(refs[1, 1], load_image(tmp_path / "images" / "ref_1_1.png"))  # third dropped


def test_zero_references_need_no_ref_key(tmp_path):
    path = _write_pairs(tmp_path, n=2)
    data = json.loads(path.read_text())
    for item in data["test"]:
        del item["ref_image"]
    path.write_text(json.dumps(data))
    assert _batch(PairDataModule(JsonPairs(str(path)), num_refs=0, val_batch_size=2))["refs"].shape == (2, 0, 3, H, W)


def test_resize_and_aligned_random_crops(tmp_path):
    path = _write_pairs(tmp_path, n=1)
    # image == target == ref (same pixels, different files): any misaligned crop would show.
    clean = tmp_path / "images" / "clean_0.png"
    for name in ("render_0.png", "ref_0_0.png"):
        (tmp_path / "images" / name).write_bytes(clean.read_bytes())
    dm = PairDataModule(JsonPairs(str(path)), resolution=(48, 64), crop_size=(16, 20), seed=3)
    dm.setup("fit")
    full = load_image(clean, size=(64, 48))
    corners = set()
    for _ in range(6):
        item = dm.datasets["train"][0]
        assert item["image"].shape == (3, 16, 20)
        assert torch.equal(item["image"], item["target"]) and torch.equal(item["refs"][0], item["target"])
        windows = full.unfold(1, 16, 1).unfold(2, 20, 1)  # (3, 33, 45, 16, 20)
        match = (windows == item["target"][:, None, None]).all(-1).all(-1).all(0).nonzero()
        corners.add(tuple(match[0].tolist()))  # the crop is a real window of the resized image
    assert len(corners) > 1  # training crops move
    val = dm.datasets["val"][0]
    assert torch.equal(val["target"], full[:, 16:32, 22:42])  # centred crop


def test_augment_mirrors_and_shuffles_channels_the_same_way_for_every_view(tmp_path):
    path = _write_pairs(tmp_path, n=1)
    images = tmp_path / "images"
    clean = load_image(images / "clean_0.png")
    save_image(1 - clean, images / "render_0.png")  # render = 1 - target, ref = target mirrored
    save_image(clean.flip(-1), images / "ref_0_0.png")
    dm = PairDataModule(JsonPairs(str(path), augment=True), seed=3)
    dm.setup("fit")
    seen = set()
    for _ in range(24):
        item = dm.datasets["train"][0]
        torch.testing.assert_close(item["image"], 1 - item["target"], atol=1 / 255, rtol=0)
        torch.testing.assert_close(item["refs"][0], item["target"].flip(-1))
        # Which transform it was: the target is clean with its channels reordered, maybe mirrored
        # (the dataset loads through another path than `clean`: compare with a tolerance).
        for mirrored in (False, True):
            base = clean.flip(-1) if mirrored else clean
            for order in ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)):
                if torch.allclose(item["target"], base[list(order)], atol=1e-6, rtol=0):
                    seen.add((mirrored, order))
    assert len(seen) >= 8  # both mirrors and several channel orders (12 possible)
    torch.testing.assert_close(dm.datasets["val"][0]["target"], clean, atol=1e-6, rtol=0)  # never augmented


def test_train_order_regroups_curations_and_names_bad_lists(tmp_path):
    path = _write_pairs(tmp_path, n=5)
    doc = json.loads(path.read_text())
    groups = [("b", "sparse"), ("b", "sparse"), ("a", "sparse"), ("b", "underfit"), ("b", "underfit")]
    for item, (scene, strategy) in zip(doc["train"], groups):
        item.update(scene=scene, strategy=strategy)
    path.write_text(json.dumps(doc))

    def train_images(order):
        dm = PairDataModule(JsonPairs(str(path), train_order=order))
        dm.setup("fit")
        return [it.image.stem for it in dm.datasets["train"].items], [it.image.stem for it in dm.datasets["val"].items]

    file_order = [f"render_{i}" for i in range(5)]
    assert train_images(None) == (file_order, file_order)
    # Groups in the listed order, file order inside each; validation keeps file order.
    assert train_images(["a/sparse", "b/underfit", "b/sparse"]) == (
        ["render_2", "render_3", "render_4", "render_0", "render_1"], file_order)
    for order, message in [(["a/sparse", "b/sparse"], r"not listed \['b/underfit'\]"),
                           (["a/sparse", "b/sparse", "b/underfit", "c/sparse"], r"not in the split \['c/sparse'\]"),
                           (["a/sparse", "b/sparse", "b/underfit", "a/sparse"], r"listed twice \['a/sparse'\]")]:
        with pytest.raises(PairDataError, match=message):
            train_images(order)
    del doc["train"][1]["strategy"]
    path.write_text(json.dumps(doc))
    with pytest.raises(PairDataError, match=r"train entry train\[1\] has no \"scene\" and \"strategy\""):
        train_images(["a/sparse", "b/underfit", "b/sparse"])


def test_int_resolution_keeps_aspect(tmp_path):
    path = _write_pairs(tmp_path, n=1)
    assert _batch(PairDataModule(JsonPairs(str(path)), resolution=12))["image"].shape == (1, 3, 12, 16)


def _break(path: Path, how: str) -> tuple[str, str]:
    """Damages one entry of the pairs JSON; returns (entry label, file/key the message names)."""
    data = json.loads(path.read_text())
    root = path.parent
    if how == "missing_file":
        (root / "images" / "clean_1.png").unlink()
        return "train[1]", "clean_1.png"
    if how == "unreadable":
        (root / "images" / "ref_2_0.png").write_bytes(b"\x89PNG garbage")
        return "train[2]", "ref_2_0.png"
    if how == "size_mismatch":
        save_image(_rand(0, H, W + 2), root / "images" / "render_1.png")
        return "train[1]", "render_1.png"
    if how == "missing_key":
        del data["train"][2]["target_image"]
        path.write_text(json.dumps(data))
        return "train[2]", "'target_image'"
    if how == "empty_split":
        data["train"] = []
        path.write_text(json.dumps(data))
        return "'train'", "is empty"
    raise AssertionError(how)


@pytest.mark.parametrize("how", ["missing_file", "unreadable", "size_mismatch", "missing_key", "empty_split"])
def test_bad_input_names_json_entry_and_file(tmp_path, how):
    path = _write_pairs(tmp_path)
    entry, culprit = _break(path, how)
    dm = PairDataModule(JsonPairs(str(path)))
    with pytest.raises(PairDataError) as info:
        dm.setup("fit")  # validated up front, not at the first bad batch
    message = str(info.value)
    assert str(path) in message and entry in message and culprit in message


def test_bad_input_in_dict_layout_names_the_id(tmp_path):
    path = _write_pairs(tmp_path, layout="dict")
    (tmp_path / "images" / "render_2.png").unlink()
    with pytest.raises(PairDataError, match=r"pairs\.json.*train\['frame_2'\].*render_2\.png"):
        PairDataModule(JsonPairs(str(path))).setup("fit")


def test_missing_split_and_mixed_sizes_in_a_batch(tmp_path):
    path = _write_pairs(tmp_path, n=2)
    data = json.loads(path.read_text())
    path.write_text(json.dumps({"train": data["train"]}))
    with pytest.raises(PairDataError, match=r"pairs\.json.*no 'test' split"):
        PairDataModule(JsonPairs(str(path))).setup("validate")
    root = _write_pairs(tmp_path / "mixed", n=1, size=(H, W)).parent
    _write_pairs(root / "other", n=1, size=(H + 8, W))
    data = json.loads((root / "pairs.json").read_text())
    extra = json.loads((root / "other" / "pairs.json").read_text())["train"][0]
    data["train"].append({k: f"other/{v}" if k != "prompt" else v for k, v in extra.items()})
    (root / "pairs.json").write_text(json.dumps(data))
    with pytest.raises(PairDataError, match=r"batch_size 2 needs one image size.*train\[1\]"):
        PairDataModule(JsonPairs(str(root / "pairs.json")), batch_size=2).setup("fit")
    PairDataModule(JsonPairs(str(root / "pairs.json")), batch_size=2, crop_size=16).setup("fit")  # a crop fixes it


# -------------------------------------------------------------- synthetic
def _synthetic(**kwargs) -> PairDataModule:
    source = dict(num_train=6, num_val=4, max_ref_shift=3)
    source.update({k: kwargs.pop(k) for k in list(kwargs) if k in ("degradations", "max_ref_shift", "clean_dir")})
    args = dict(crop_size=32, num_refs=2, batch_size=3, val_batch_size=4)
    args.update(kwargs)
    return PairDataModule(SyntheticPairs(**source), **args)


def test_synthetic_shapes_ranges_and_deterministic_val():
    first, second = _batch(_synthetic()), _batch(_synthetic())
    assert first["image"].shape == (4, 3, 32, 32) and first["refs"].shape == (4, 2, 3, 32, 32)
    assert first["name"] == ["val_00000", "val_00001", "val_00002", "val_00003"]
    for key in ("image", "target", "refs"):
        assert torch.equal(first[key], second[key])
        assert first[key].dtype == torch.float32 and first[key].min() >= 0 and first[key].max() <= 1
    assert (first["image"] - first["target"]).abs().mean(dim=(1, 2, 3)).min() > 1e-3  # all degraded
    assert not torch.equal(_batch(_synthetic(seed=1))["target"], first["target"])
    test = _batch(_synthetic(), "test")
    assert not torch.equal(test["target"], first["target"])  # test items differ from val items


def test_synthetic_training_draws_fresh_but_reproducible_samples():
    dm = _synthetic()
    dm.setup("fit")
    torch.manual_seed(0)
    a = dm.datasets["train"][0]
    b = dm.datasets["train"][0]
    torch.manual_seed(0)
    c = dm.datasets["train"][0]
    assert not torch.equal(a["image"], b["image"])
    assert torch.equal(a["image"], c["image"]) and torch.equal(a["refs"], c["refs"])


def test_synthetic_identity_degradation_and_shifted_references():
    dm = _synthetic(degradations=(), num_refs=3, max_ref_shift=3)
    dm.setup("fit")
    for split in ("train", "val"):
        item = dm.datasets[split][1]
        assert torch.equal(item["image"], item["target"])  # input and target crops aligned
        for ref in item["refs"]:
            assert not torch.equal(ref, item["target"])
            # A reference is the same scene moved by a few pixels: some shift within
            # max_ref_shift makes it agree with the target on their overlap.
            errors = [
                (shift_image(ref, dy, dx) - item["target"])[:, 3:-3, 3:-3].abs().max().item()
                for dy in range(-3, 4) for dx in range(-3, 4)
            ]
            assert min(errors) == 0.0


def test_synthetic_from_clean_dir(tmp_path):
    for i in range(4):
        save_image(procedural_image(40, 48, make_generator(9, i)), tmp_path / f"clean_{i}.png")
    dm = PairDataModule(SyntheticPairs(clean_dir=str(tmp_path), num_train=5, num_val=2), crop_size=(24, 32), val_batch_size=2)
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 5 and dm.datasets["train"].clean_files[-1].name == "clean_2.png"
    assert [p.name for p in dm.datasets["val"].clean_files] == ["clean_3.png"]  # held out
    batch = next(iter(dm.val_dataloader()))
    assert batch["image"].shape == (2, 3, 24, 32)
    full = load_image(tmp_path / "clean_3.png")
    assert torch.allclose(batch["target"][0], full[:, 8:32, 8:40])  # centred crop of the held-out file
    with pytest.raises(PairDataError, match="nowhere"):
        PairDataModule(SyntheticPairs(clean_dir=str(tmp_path / "nowhere")), crop_size=8).setup("fit")


def test_degrader_validates_and_is_seeded():
    with pytest.raises(ValueError, match="unknown degradation"):
        Degrader(["blur", "sparkles"])
    image = procedural_image(32, 32, make_generator(0))
    for name in DEGRADATIONS:
        out = Degrader([name], probability=1.0)(image, make_generator(1))
        assert out.shape == image.shape and 0 <= out.min() and out.max() <= 1
        assert 1e-4 < (out - image).abs().mean() < 0.2, name  # visible but moderate
    every = Degrader()
    assert torch.equal(every(image, make_generator(5)), every(image, make_generator(5)))


# ---------------------------------------------------------------- predict
def test_predict_folder_with_refs_matched_by_name(tmp_path):
    renders, refs = tmp_path / "renders", tmp_path / "refs"
    for name in ("b", "a"):
        save_image(_rand(ord(name), 20, 30), renders / f"{name}.png")
        save_image(_rand(ord(name) + 1, 20, 30), refs / f"{name}.jpg")
    batch = _batch(PairDataModule(predict=RenderFolder(str(renders), str(refs)), resolution=(16, 24), val_batch_size=2),
                   "predict")
    assert batch["name"] == ["a", "b"] and "target" not in batch
    assert batch["image"].shape == (2, 3, 16, 24) and batch["refs"].shape == (2, 1, 3, 16, 24)  # resized, not cropped
    assert batch["orig_size"].tolist() == [[20, 30], [20, 30]]
    (refs / "b.jpg").unlink()
    with pytest.raises(PairDataError, match=r"b\.png.*refs"):
        PairDataModule(predict=RenderFolder(str(renders), str(refs))).setup("predict")
    with pytest.raises(ValueError, match="'train' split needs a source"):
        PairDataModule(predict=RenderFolder(str(renders))).setup("fit")
    with pytest.raises(ValueError, match="needs a source"):
        PairDataModule()


def test_predict_from_json_test_split_keeps_targets_uncropped(tmp_path):
    path = _write_pairs(tmp_path, n=2)
    batch = _batch(PairDataModule(JsonPairs(str(path)), crop_size=8, val_batch_size=2), "predict")
    assert batch["image"].shape == (2, 3, H, W) and batch["target"].shape == (2, 3, H, W)
    assert batch["name"] == ["render_0", "render_1"]


# -------------------------------------------------------------- config
def test_signature_builds_from_a_cli_config(tmp_path):
    """A source is chosen by class_path or by its fields (a path: a pairs JSON)."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(PairDataModule, "data")
    config = parser.parse_args(
        ["--data.source=datamodules.pairs.sources.SyntheticPairs", "--data.source.degradations=[blur, noise]",
         "--data.resolution=[48, 64]", "--data.crop_size=32"]
    )
    dm = parser.instantiate_classes(config).data
    assert isinstance(dm, PairDataModule) and dm.layout.resolution == (48, 64)
    assert isinstance(dm.source, SyntheticPairs) and dm.source.degrader.names == ["blur", "noise"]
    config = parser.parse_object({"data": {"source": {"path": "pairs.json", "augment": True},
                                           "predict": {"renders": "renders"}}})
    dm = parser.instantiate_classes(config).data
    assert dm.source == JsonPairs("pairs.json", augment=True) and dm.predict == RenderFolder("renders")


def test_truncated_image_fails_at_setup_or_is_skipped_with_a_count(tmp_path, caplog):
    path = _write_pairs(tmp_path, n=3)
    bad = tmp_path / "images" / "clean_1.png"
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])  # header intact, pixels cut
    with pytest.raises(PairDataError, match=r"do not decode.*clean_1.png"):
        PairDataModule(JsonPairs(str(path))).setup("fit")
    dm = PairDataModule(JsonPairs(str(path), bad_images="skip"), val_batch_size=3)
    with caplog.at_level("WARNING"):
        dm.setup("fit")
    assert "clean_1.png" in caplog.text and "skipped 1 of 3 train" in caplog.text
    assert len(dm.datasets["train"]) == 2 and dm.source.skipped == {"train": 1, "val": 1}


def test_a_greyscale_image_among_colour_ones_is_said_once_by_name(tmp_path):
    path = _write_pairs(tmp_path, n=3)
    grey = tmp_path / "images" / "clean_1.png"
    from PIL import Image

    Image.open(grey).convert("L").save(grey)
    with pytest.warns(UserWarning, match=r"1 of 9 images are greyscale.*clean_1.png") as caught:
        PairDataModule(source=JsonPairs(path=str(path))).setup("fit")
    assert sum("greyscale" in str(w.message) for w in caught) == 1  # train and val share the files: said once
