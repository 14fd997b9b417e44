"""Scene readers on bad input: each error names the file, field or step (and the .ply reader)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules.readers.point_ply import PlyFormatError, read_point_ply, write_point_ply
from datamodules.readers.read_scene import detect_format, read_scene
from datamodules.readers.scene_data import ReadOptions, SceneFormatError
from helpers.scene_writers import (BAD_PLY_HEADERS, Rig, make_rig, write_bad_ply, write_blender, write_colmap, write_llff,
                                   write_nerfstudio)


# ---------------------------------------------------------------------------- bad input
def test_colmap_bad_input(rig: Rig, tmp_path: Path) -> None:
    root = write_colmap(rig, tmp_path / "c")
    model = root / "sparse" / "0"
    data = (model / "images.bin").read_bytes()
    (model / "images.bin").write_bytes(data[:-30])
    with pytest.raises(SceneFormatError, match=rf"images\.bin: file truncated at byte {len(data) - 30}"):
        read_scene(root)
    (model / "images.bin").write_bytes(data)
    cams = (model / "cameras.bin").read_bytes()
    bad = bytearray(cams)
    bad[8 + 4 : 8 + 8] = (99).to_bytes(4, "little")  # model id of the first camera
    (model / "cameras.bin").write_bytes(bytes(bad))
    with pytest.raises(SceneFormatError, match=r"cameras\.bin.*unknown camera model id 99"):
        read_scene(root)
    (model / "cameras.bin").write_bytes(cams)
    (root / "images" / "img_03.png").unlink()
    with pytest.raises(SceneFormatError, match=r"images\.bin.*img_03\.png.*missing"):
        read_scene(root)

    txt = write_colmap(rig, tmp_path / "t", binary=False)
    cam_txt = txt / "sparse" / "0" / "cameras.txt"
    cam_txt.write_text(cam_txt.read_text().replace("PINHOLE", "FANCY_LENS", 1))
    with pytest.raises(SceneFormatError, match=r"cameras\.txt: line \d+: unknown camera model 'FANCY_LENS'"):
        read_scene(txt)
    nan = write_colmap(make_rig(), tmp_path / "n", binary=False)
    img_txt = nan / "sparse" / "0" / "images.txt"
    lines = img_txt.read_text().splitlines()
    first = next(i for i, line in enumerate(lines) if line and not line.startswith("#"))
    parts = lines[first].split()
    parts[5] = "nan"
    lines[first] = " ".join(parts)
    img_txt.write_text("\n".join(lines) + "\n")
    with pytest.raises(SceneFormatError, match=r"images\.txt: pose of image 'img_00\.png' is not finite"):
        read_scene(nan)


def test_other_formats_bad_input(rig: Rig, tmp_path: Path) -> None:
    ll = write_llff(rig, tmp_path / "l")
    (ll / "images" / "IMG_0002.png").unlink()
    with pytest.raises(SceneFormatError, match=r"poses_bounds\.npy: 6 poses but 5 images"):
        read_scene(ll)
    ll2 = write_llff(rig, tmp_path / "l2")
    arr = np.load(ll2 / "poses_bounds.npy")
    arr[2, 3] = np.inf
    np.save(ll2 / "poses_bounds.npy", arr)
    with pytest.raises(SceneFormatError, match=r"poses_bounds\.npy: row 2 .*IMG_0002.*non-finite"):
        read_scene(ll2)

    ns = write_nerfstudio(rig, tmp_path / "n")
    doc = json.loads((ns / "transforms.json").read_text())
    doc["frames"][1]["transform_matrix"][0][3] = float("nan")
    (ns / "transforms.json").write_text(json.dumps(doc))
    with pytest.raises(SceneFormatError, match=r"transforms\.json: frame 1: transform_matrix is not finite"):
        read_scene(ns)
    doc["frames"][1]["transform_matrix"][0][3] = 0.0
    doc["camera_model"] = "PINHOLE"
    doc["k1"] = 0.1
    (ns / "transforms.json").write_text(json.dumps(doc))
    with pytest.raises(SceneFormatError, match=r"PINHOLE but distortion parameters are non-zero"):
        read_scene(ns)
    doc["camera_model"] = "OPENCV_FISHEYE"
    (ns / "transforms.json").write_text(json.dumps(doc))
    with pytest.raises(SceneFormatError, match=r"transforms\.json: frame 0: camera_model 'OPENCV_FISHEYE' is not supported"):
        read_scene(ns)
    doc["camera_model"] = "OPENCV"
    (ns / "transforms.json").write_text(json.dumps(doc))
    assert read_scene(ns).distortion[0, 0] == pytest.approx(0.1)  # OPENCV + k1: undistorted on load
    (ns / "images" / "frame_004.png").unlink()
    with pytest.raises(SceneFormatError, match=r"transforms\.json: image 'images/frame_004\.png' is missing"):
        read_scene(ns)
    with pytest.raises(SceneFormatError, match=r"transforms\.json: transforms file is missing"):
        read_scene(tmp_path / "l", format="nerfstudio")

    bl = write_blender(rig, tmp_path / "b")
    (bl / "transforms_train.json").unlink()
    with pytest.raises(SceneFormatError, match=r"transforms_train\.json: transforms file is missing"):
        read_scene(bl, format="blender")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SceneFormatError, match="cannot tell the scene format"):
        detect_format(empty)
    with pytest.raises(SceneFormatError, match="scene folder not found"):
        read_scene(tmp_path / "absent")


def test_point_ply_round_trip_and_errors(tmp_path: Path) -> None:
    pts = torch.randn(50, 3)
    cols = torch.rand(50, 3)
    write_point_ply(tmp_path / "p.ply", pts, cols)
    p, c = read_point_ply(tmp_path / "p.ply")
    assert torch.allclose(p, pts) and torch.allclose(c, cols, atol=1 / 255)
    ascii_ply = "ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\nproperty float y\nproperty float z\nproperty uint8 red\nproperty uint8 green\nproperty uint8 blue\nend_header\n0 1 2 255 0 0\n3 4 5 0 0 255\n"
    (tmp_path / "a.ply").write_text(ascii_ply)
    p, c = read_point_ply(tmp_path / "a.ply")
    assert p.tolist() == [[0, 1, 2], [3, 4, 5]] and c.tolist() == [[1, 0, 0], [0, 0, 1]]
    data = (tmp_path / "p.ply").read_bytes()
    (tmp_path / "t.ply").write_bytes(data[:-10])
    with pytest.raises(PlyFormatError, match=r"t\.ply: truncated"):
        read_point_ply(tmp_path / "t.ply")


# ---------------------------------------------------------------------------- bad downscale
@pytest.mark.parametrize("fmt", ["colmap", "blender", "nerfstudio", "llff"])
def test_negative_downscale_fails_in_every_reader(rig: Rig, tmp_path: Path, fmt: str) -> None:
    writer = {"colmap": write_colmap, "blender": write_blender, "nerfstudio": write_nerfstudio, "llff": write_llff}[fmt]
    root = writer(rig, tmp_path / fmt)
    with pytest.raises(SceneFormatError, match="downscale must be an integer >= 1"):
        read_scene(root, downscale=-2)


def test_downscale_too_small_to_evaluate_names_downscale(rig: Rig, tmp_path: Path) -> None:
    from datamodules.scene.datamodule import SceneDataModule

    root = write_nerfstudio(rig, tmp_path / "ns")
    dm = SceneDataModule(str(root), read=ReadOptions(downscale=8))  # 40x30 -> 5x4 pixels
    with pytest.raises(SceneFormatError, match=r"downscale 8 leaves 6 image\(s\) smaller than 11x11"):
        dm.setup("fit")


@pytest.mark.parametrize("case", list(BAD_PLY_HEADERS))
@pytest.mark.parametrize("fmt", ["binary_little_endian", "ascii"])
def test_point_ply_with_a_bad_header_is_named(tmp_path: Path, case: str, fmt: str) -> None:
    header, says = BAD_PLY_HEADERS[case]
    path = write_bad_ply(tmp_path / "bad.ply", header, fmt)
    with pytest.raises(PlyFormatError, match=rf"{tmp_path}/bad\.ply.*{says}"):
        read_point_ply(path)


def test_point_ply_with_a_word_among_its_ascii_numbers_is_named(tmp_path: Path) -> None:
    path = tmp_path / "words.ply"
    path.write_text("ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\nproperty float y\nproperty float z\n"
                    "end_header\n0 1 2\n3 four 5\n")
    with pytest.raises(PlyFormatError, match=r"words\.ply: vertex 1 holds 'four'"):
        read_point_ply(path)


def test_a_greyscale_frame_among_colour_ones_is_said_once_by_name(rig: Rig, tmp_path: Path) -> None:
    root = write_nerfstudio(rig, tmp_path / "n")
    import warnings

    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_scene(root)  # all colour: silent
    frame = sorted((root / "images").iterdir())[2]
    Image.open(frame).convert("L").save(frame)
    with pytest.warns(UserWarning, match=rf"1 of {len(rig)} images are greyscale \(mode L\).*{frame.name}") as caught:
        read_scene(root)
    assert sum("greyscale" in str(w.message) for w in caught) == 1
    for other in (root / "images").iterdir():  # all greyscale: a greyscale capture, nothing to say
        Image.open(other).convert("L").save(other)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_scene(root)
