"""DL3DV and Nerfbusters as their users download them (fixtures: tests/helpers/dataset_layouts.py,
built from those projects' own files), the name-pattern split of the reference's protocol,
and what is refused, with messages that say what to do."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from datamodules.readers.read_scene import read_scene
from datamodules.readers.scene_data import ReadOptions, SceneFormatError
from helpers.dataset_layouts import (DL3DV_DISTORTION, DL3DV_H, DL3DV_W, write_dl3dv_960p_scene,
                                     write_dl3dv_benchmark_gaussian_splat, write_dl3dv_benchmark_scene,
                                     write_nerfbusters_capture)

HASH = "0a1b7c20a92c43c6b8954b1ac909fb2f0fa8b2997b80604bc8bbec80a1cb2da3"  # a DL3DV scene name (64 hex digits)


def test_dl3dv_benchmark_level4_download_reads_at_downscale_4_and_8(tmp_path: Path) -> None:
    scene = write_dl3dv_benchmark_scene(tmp_path, HASH)
    s = read_scene(scene / "nerfstudio", downscale=4)
    assert len(s) == 6 and all(p.parent.name == "images_4" for p in s.image_paths)
    assert s.cameras.width.tolist() == [DL3DV_W // 4] * 6 and s.cameras.height.tolist() == [DL3DV_H // 4] * 6
    assert torch.allclose(s.cameras.K[0, 0, 0], torch.tensor(0.8 * DL3DV_W / 4))  # fl_x given at full size
    assert s.distortion is not None and torch.allclose(
        s.distortion[0], torch.tensor([DL3DV_DISTORTION[k] for k in ("k1", "k2")] + [0.0, 0.0]
                                      + [DL3DV_DISTORTION[k] for k in ("p1", "p2")]))
    eighth = read_scene(scene / "nerfstudio", downscale=8)  # images_4 shrunk by 2 more on load
    assert eighth.image_paths[0].parent.name == "images_4" and eighth.cameras.width[0] == DL3DV_W // 8


def test_dl3dv_refusals_say_which_folder_or_level_to_use(tmp_path: Path) -> None:
    scene = write_dl3dv_benchmark_scene(tmp_path, HASH)
    with pytest.raises(SceneFormatError, match=r"only pre-shrunk copies exist \(images_4/\).*downscale: 4"):
        read_scene(scene / "nerfstudio")  # the originals were never downloaded
    with pytest.raises(SceneFormatError, match=r"subfolders hold a scene: \['nerfstudio'\]"):
        read_scene(scene)  # the hash folder itself: the scene is one level down
    doc = json.loads((scene / "nerfstudio" / "transforms.json").read_text())
    del doc["w"], doc["h"]
    (scene / "nerfstudio" / "transforms.json").write_text(json.dumps(doc))
    with pytest.raises(SceneFormatError, match=r"'w' and 'h' \(the original size\) must be given"):
        read_scene(scene / "nerfstudio", downscale=4)


def test_dl3dv_benchmark_gaussian_splat_copy_reads_as_colmap_at_downscale_4(tmp_path: Path) -> None:
    scene = write_dl3dv_benchmark_gaussian_splat(tmp_path, HASH)
    s = read_scene(scene / "gaussian_splat", downscale=4)
    assert s.format == "colmap" and s.image_paths[0].parent.name == "images_4" and s.points is not None
    assert s.cameras.width[0] == DL3DV_W // 4 and s.cameras.height[0] == DL3DV_H // 4
    with pytest.raises(SceneFormatError, match=r"no image folder for downscale 1.*images_4"):
        read_scene(scene / "gaussian_splat")
    with pytest.raises(SceneFormatError, match=r"subfolders hold a scene: \['gaussian_splat'\]"):
        read_scene(scene)


def test_dl3dv_full_download_and_960p_release(tmp_path: Path) -> None:
    full = write_dl3dv_benchmark_scene(tmp_path / "full", HASH, only_level4=False)
    assert read_scene(full / "nerfstudio").image_paths[0].parent.name == "images"
    assert read_scene(full / "nerfstudio", downscale=8).image_paths[0].parent.name == "images_8"
    p960 = write_dl3dv_960p_scene(tmp_path / "960P", HASH)
    s = read_scene(p960, downscale=4)
    assert s.format == "nerfstudio" and s.cameras.width[0] == DL3DV_W // 4
    # The same cameras as the benchmark layout: one reader for both.
    bench = read_scene(full / "nerfstudio", downscale=4)
    assert torch.allclose(s.cameras.K, bench.cameras.K) and torch.allclose(s.cameras.world_to_camera, bench.cameras.world_to_camera)


def test_nerfbusters_capture_splits_by_frame_name(tmp_path: Path) -> None:
    scene = write_nerfbusters_capture(tmp_path, n_train=5, n_eval=3)
    options = ReadOptions(name_split=("_train_", "_eval_"), downscale=4)
    s = read_scene(scene, options)
    names = [p.name for p in s.image_paths]
    assert [names[i] for i in s.split["train"]] == [f"frame_train_{i:05d}.png" for i in range(1, 6)]
    assert [names[i] for i in s.split["test"]] == [f"frame_eval_{i:05d}.png" for i in range(1, 4)]
    assert s.image_paths[0].parent.name == "images_4" and s.points is not None
    # applied_transform is folded into the data transform (exports go back to COLMAP's world).
    assert torch.allclose(s.transform[:3, :3] / s.scale, torch.tensor([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]], dtype=torch.float64))
    # Without the option the LLFF rule (every 8th view) would test on a training frame.
    assert read_scene(scene).split["test"] == [0]
    # Thinning applies to the training frames only.
    sparse = read_scene(scene, options, train_every=2)
    assert [names[i] for i in sparse.split["train"]] == ["frame_train_00001.png", "frame_train_00003.png", "frame_train_00005.png"]


def test_name_split_refuses_names_without_or_with_both_patterns(tmp_path: Path) -> None:
    scene = write_nerfbusters_capture(tmp_path, n_train=3, n_eval=2)
    doc = json.loads((scene / "transforms.json").read_text())
    doc["frames"][0]["file_path"] = "images/frame_00001.png"
    (scene / "images" / "frame_train_00001.png").rename(scene / "images" / "frame_00001.png")
    (scene / "transforms.json").write_text(json.dumps(doc))
    with pytest.raises(SceneFormatError, match=r"neither pattern \(\['frame_00001.png'\]\)"):
        read_scene(scene, name_split=("_train_", "_eval_"))
    with pytest.raises(SceneFormatError, match=r"no image name contains '_test_'"):
        read_scene(scene, name_split=("frame", "_test_"))
    with pytest.raises(ValueError, match="two different non-empty patterns"):
        ReadOptions(name_split=("_train_", "_train_"))
