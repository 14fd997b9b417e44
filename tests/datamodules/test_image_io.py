"""load_image / save_image: the disk edge of the [0, 1] (3, H, W) convention."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules.files.image_io import list_images, load_image, read_image_size, save_image


def test_save_load_round_trip_is_exact_to_8_bits(tmp_path):
    torch.manual_seed(0)
    image = torch.rand(3, 20, 30)
    path = save_image(image, tmp_path / "deep" / "folder" / "x.png")  # creates parents
    loaded = load_image(path)
    assert loaded.shape == (3, 20, 30) and loaded.dtype == torch.float32
    assert torch.allclose(loaded, image, atol=0.5 / 255 + 1e-6)
    assert read_image_size(path) == (30, 20)  # (width, height)


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path, monkeypatch):
    path = tmp_path / "x.png"
    save_image(torch.zeros(3, 8, 8), path)
    before = path.read_bytes()

    def broken_save(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_image(torch.ones(3, 8, 8), path)
    assert path.read_bytes() == before  # the old file is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.png"]  # no temp file left


def test_save_jpeg_and_overwrite(tmp_path):
    path = tmp_path / "x.jpg"
    save_image(torch.full((3, 16, 16), 0.5), path)
    save_image(torch.full((3, 16, 16), 0.25), path)
    assert abs(load_image(path).mean().item() - 0.25) < 0.02


def test_save_rejects_bad_shape_and_suffix(tmp_path):
    with pytest.raises(ValueError, match=r"x\.png.*\(3, H, W\)"):
        save_image(torch.zeros(4, 8, 8), tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"x\.nope.*unknown image suffix"):
        save_image(torch.zeros(3, 8, 8), tmp_path / "x.nope")


def test_rgba_is_composited_over_background_else_alpha_dropped(tmp_path):
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 0] = 255  # red everywhere
    rgba[0, 0, 3] = 0  # transparent
    rgba[0, 1, 3] = 255  # opaque
    rgba[1, :, 3] = 128  # half
    path = tmp_path / "a.png"
    Image.fromarray(rgba, "RGBA").save(path)

    over_green = load_image(path, background=(0.0, 1.0, 0.0))
    assert over_green[:, 0, 0].tolist() == [0.0, 1.0, 0.0]
    assert over_green[:, 0, 1].tolist() == [1.0, 0.0, 0.0]
    assert torch.allclose(over_green[:, 1, 0], torch.tensor([128 / 255, 127 / 255, 0.0]), atol=1e-6)
    dropped = load_image(path)
    assert dropped.shape == (3, 2, 2) and torch.all(dropped[0] == 1.0)


def test_greyscale_and_16_bit(tmp_path):
    Image.fromarray(np.full((4, 5), 100, np.uint8), "L").save(tmp_path / "g.png")
    grey = load_image(tmp_path / "g.png")
    assert grey.shape == (3, 4, 5) and torch.allclose(grey, torch.full_like(grey, 100 / 255))
    Image.fromarray(np.full((4, 5), 1000, np.uint16)).save(tmp_path / "g16.png")
    deep = load_image(tmp_path / "g16.png")
    assert torch.allclose(deep, torch.full_like(deep, 1000 / 65535), atol=1e-7)  # not clipped to 8 bits


def test_resize_takes_width_height(tmp_path):
    save_image(torch.rand(3, 30, 40), tmp_path / "x.png")
    out = load_image(tmp_path / "x.png", size=(20, 10))
    assert out.shape == (3, 10, 20) and out.min() >= 0 and out.max() <= 1


def test_errors_name_the_file(tmp_path):
    missing = tmp_path / "missing.png"
    with pytest.raises(FileNotFoundError, match="missing.png"):
        load_image(missing)
    with pytest.raises(FileNotFoundError, match="missing.png"):
        read_image_size(missing)
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match="garbage.png.*not a readable image"):
        load_image(garbage)
    with pytest.raises(ValueError, match="garbage.png"):
        read_image_size(garbage)


def test_list_images_sorted_and_errors(tmp_path):
    for name in ("b.png", "a.jpg", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in list_images(tmp_path)] == ["a.jpg", "b.png"]
    with pytest.raises(FileNotFoundError, match="nowhere"):
        list_images(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty.*no image files"):
        list_images(tmp_path / "empty")
