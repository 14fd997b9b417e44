"""Path videos: plain, Difix3D+ and side by side, streamed; `predict` writes them with a fixer."""
from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules.cameras.cameras import Cameras
from helpers.fakes import FakeScene, decode, orbit_cameras
from lightning_modules.scene.path_video import VideoStream, label_image, render_path
from helpers import REPO



def test_plain_fixed_and_compare_videos_decode_with_every_frame(tmp_path: Path) -> None:
    scene, n = FakeScene(), 5
    fixes: list[int] = []

    def fix(rgb: torch.Tensor, cameras: Cameras) -> torch.Tensor:
        fixes.append(len(cameras))
        return 1 - rgb

    out = render_path(scene.render_views, orbit_cameras(n), tmp_path / "path", fps=10, fix=fix,
                             labels=("3DGS", "Difix3D+"), batch_size=2, progress=False)
    assert set(out) == {"video", "video_fixed", "video_compare"}
    plain, fixed, compare = (decode(out[k]) for k in ("video", "video_fixed", "video_compare"))
    assert len(plain) == len(fixed) == len(compare) == n
    assert scene.calls == [2, 2, 1] and fixes == [2, 2, 1]  # small batches, never the whole path
    assert plain[0].shape == (22, 30, 3) and compare[0].shape == (22, 60, 3)
    for i in range(n):  # lossy H.264: compare means, not bits
        assert abs(plain[i].mean() / 255 - i / 10) < 0.03
        assert abs(fixed[i].mean() / 255 - (1 - i / 10)) < 0.03
        # The right half of the comparison is the fixed frame (away from the label box).
        assert abs(compare[i][12:, 30 + 20:].mean() / 255 - (1 - i / 10)) < 0.04
    assert len(list((tmp_path / "path" / "frames").glob("*.png"))) == n
    assert len(list((tmp_path / "path" / "frames_fixed").glob("*.png"))) == n
    assert not list((tmp_path / "path").glob(".*tmp*"))


def test_without_fix_only_the_plain_video_and_failures_leave_nothing_half_written(tmp_path: Path) -> None:
    scene = FakeScene()
    out = render_path(scene.render_views, orbit_cameras(3), tmp_path, fps=5, progress=False, save_frames=False)
    assert set(out) == {"video"} and len(decode(out["video"])) == 3
    assert not (tmp_path / "frames").exists()
    before = out["video"].read_bytes()

    def broken(rgb: torch.Tensor, cameras: Cameras) -> torch.Tensor:
        raise RuntimeError("fixer failed")

    with pytest.raises(RuntimeError, match="fixer failed"):
        render_path(scene.render_views, orbit_cameras(3), tmp_path, fix=broken, progress=False)
    assert out["video"].read_bytes() == before  # the earlier video is not replaced by a partial one
    assert not (tmp_path / "video_fixed.mp4").exists() and not list(tmp_path.glob(".*tmp*"))
    with pytest.raises(ValueError, match="render_path: no cameras"):
        render_path(scene.render_views, Cameras.empty(), tmp_path)


def test_label_draws_text_in_the_corner() -> None:
    image = np.full((40, 80, 3), 128, np.uint8)
    labelled = label_image(image, "Difix3D+")
    assert labelled.shape == image.shape
    corner = labelled[:8, :30]
    assert corner.min() == 0 and corner.max() > 200  # dark box with (anti-aliased) white text
    np.testing.assert_array_equal(labelled[20:, 40:], image[20:, 40:])


def test_predict_on_the_difix3d_demo_writes_plain_fixed_and_compare_videos(tmp_path: Path) -> None:
    from difix3d.cli import cli_main

    logs, out = tmp_path / "logs", tmp_path / "out"
    common = ["--config", str(REPO / "configs/demo/difix3d.yaml"), "--trainer.enable_progress_bar=false",
              f"--trainer.logger.init_args.save_dir={logs}", "--trainer.logger.init_args.version=0",
              "--trainer.callbacks.fixer=tiny", "--trainer.callbacks.start_step=100",
              f"--data.init_args.path={tmp_path / 'scene'}", "--data.init_args.procedural.num_views=8",
              "--data.init_args.procedural.size=24", "--data.init_args.read.test_every=4",
              "--data.init_args.read.train_every=1", "--data.init_args.steps_per_epoch=2",
              "--data.init_args.max_val_views=1", "--model.init_args.init.max_points=200",
              "--model.init_args.predict.frames=4", f"--model.init_args.output_dir={out}"]
    with contextlib.redirect_stdout(io.StringIO()):
        cli_main(["fit", *common, "--trainer.max_steps=2"])
        ckpt = logs / "difix3d_demo" / "version_0" / "checkpoints" / "last.ckpt"
        cli_main(["predict", *common, f"--ckpt_path={ckpt}"])
    path = out / "predict" / "path"
    for name in ("video", "video_fixed", "video_compare"):
        frames = decode(path / f"{name}.mp4")
        assert len(frames) == 4, name
    assert frames[0].shape[1] == 2 * decode(path / "video.mp4")[0].shape[1]
    assert len(list((path / "frames_fixed").glob("*.png"))) == 4


def test_a_video_on_a_full_disk_fails_naming_it_and_leaves_nothing(tmp_path: Path) -> None:
    from helpers.small_disk import nearly_full

    with nearly_full(tmp_path / "fs", leave=0, size="1m") as fs:
        gen = np.random.default_rng(0)
        with pytest.raises(OSError, match=rf"video {fs / 'v.mp4'} not written at frame \d+"):
            with VideoStream(fs / "v.mp4", 10) as video:
                for _ in range(200):
                    video.append(gen.integers(0, 255, (128, 128, 3), dtype=np.uint8))
        assert sorted(p.name for p in fs.iterdir()) == ["filler"]
