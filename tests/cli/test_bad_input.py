"""Bad input is named early, and NaN never becomes a black image: NaN fixers, damaged fixer
files, malformed camera JSON, NeRF options, predict folders reused by a shorter run."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers.fakes import FakeScene, decode, orbit_cameras
from helpers.runs import REPO, run

from datamodules.cameras.camera_json import read_cameras_json
from datamodules.files.image_io import save_image
from lightning_modules.difix.fixers.errors import FixerOutputError
from lightning_modules.difix.fixers.ready import ReadyFixer


def check_fixer(name: str) -> None:
    ReadyFixer(name).check()
from lightning_modules.difix.net.net import DifixNet
from lightning_modules.difix.loading.base_models import tiny_net

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")


@pytest.fixture(scope="module")
def nan_fixer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny fixer whose skip convs hold NaN (as broken weights or a float16 overflow would)."""
    net = tiny_net(seed=0)
    with torch.no_grad():
        net.skips.convs[0].weight.fill_(float("nan"))
    return net.export_weights(tmp_path_factory.mktemp("nan") / "nan_fixer.safetensors")


def test_a_nan_fixer_makes_fix_images_fail_naming_it_and_write_nothing(nan_fixer: Path, tmp_path: Path) -> None:
    save_image(torch.rand(3, 24, 32), tmp_path / "in" / "a.png")
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "fix_images.py"), "--fixer", str(nan_fixer),
                           "--images", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--device", "cpu"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert f"fixer {nan_fixer}: non-finite output" in done.stderr and "Traceback" not in done.stderr
    assert not list((tmp_path / "out").glob("*")) if (tmp_path / "out").exists() else True


def test_a_nan_fixer_stops_a_scene_fit_naming_the_fixer_and_the_views(nan_fixer: Path, tmp_path: Path) -> None:
    args = ["fit", "--config", str(REPO / "configs/demo/difix3d.yaml"), "--trainer.enable_progress_bar=false",
            f"--trainer.logger.init_args.save_dir={tmp_path / 'logs'}", f"--trainer.callbacks.fixer={nan_fixer}",
            "--trainer.callbacks.start_step=2", f"--data.init_args.path={tmp_path / 'scene'}",
            "--data.init_args.procedural.num_views=8", "--data.init_args.procedural.size=24",
            "--data.init_args.read.test_every=4", "--trainer.max_steps=4", f"--model.init_args.output_dir={tmp_path / 'out'}"]
    with pytest.raises(FixerOutputError, match=rf"fixer {nan_fixer}: non-finite.*novel view\(s\) \['novel_") as err:
        run(args)
    assert "learning rate" not in str(err.value)


def _truncate(path: Path, keep: float = 0.6) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def test_damaged_fixer_files_fail_the_check_before_anything_loads(tmp_path: Path) -> None:
    import shutil

    from helpers.difix_artefacts import trained_tiny, write_published_folder

    net = tiny_net(seed=0)
    for name in ("fixer.safetensors", "fixer.pt"):
        path = _truncate(net.export_weights(tmp_path / name))
        with pytest.raises(ValueError, match=rf"{name}.*(truncated|cannot be read)"):
            check_fixer(str(path))
    folder = write_published_folder(trained_tiny(0), tmp_path / "difix_ref", multiview=True)
    no_tokenizer = Path(shutil.copytree(folder, tmp_path / "no_tokenizer"))
    shutil.rmtree(no_tokenizer / "tokenizer")
    with pytest.raises(FileNotFoundError, match="no_tokenizer has no tokenizer/"):
        check_fixer(str(no_tokenizer))
    cut = Path(shutil.copytree(folder, tmp_path / "cut_unet"))
    _truncate(cut / "unet" / "diffusion_pytorch_model.safetensors")
    with pytest.raises(ValueError, match=r"cut_unet/unet/diffusion_pytorch_model\.safetensors: .*truncated"):
        check_fixer(str(cut))
    broken = Path(shutil.copytree(folder, tmp_path / "broken_json"))
    (broken / "model_index.json").write_text('{"_class_name": "DifixPipeline",')
    with pytest.raises(ValueError, match=r"broken_json/model_index\.json: broken JSON"):
        check_fixer(str(broken))


def test_a_scene_checkpoint_is_not_a_fixer_and_fails_before_step_1(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    base = ["--config", str(REPO / "configs/demo/scene.yaml"), "--trainer.enable_progress_bar=false",
            f"--trainer.logger.init_args.save_dir={logs}", "--trainer.logger.init_args.version=0",
            f"--data.init_args.path={tmp_path / 'scene'}", "--data.init_args.procedural.num_views=8",
            "--data.init_args.procedural.size=24", "--data.init_args.read.test_every=4", "--trainer.max_steps=2",
            "--model.init_args.predict.frames=0", f"--model.init_args.output_dir={tmp_path / 'out'}"]
    run(["fit", *base])
    scene_ckpt = next(logs.rglob("last.ckpt"))
    with pytest.raises(ValueError, match="GaussianSceneModule.*not a fixer"):
        check_fixer(str(scene_ckpt))
    from lightning_modules.scene.open_scene import open_scene

    fixer_ckpt = tiny_net(seed=0).export_weights(tmp_path / "fixer.ckpt")
    with pytest.raises(ValueError, match="fixer checkpoint, not a scene"):
        open_scene(fixer_ckpt)  # the viewer's scene argument


@pytest.mark.parametrize(("doc", "error"), [
    ([], "top level must be an object"),
    ({"cameras": [1, 2]}, "camera 0: must be an object"),
    ({"cameras": [{"width": "64px"}]}, "lacks key"),
    ({"cameras": [{"width": "64px", "height": 48, "fx": 50, "fy": 50, "cx": 32, "cy": 24,
                   "camera_to_world": torch.eye(4).tolist()}]}, "'width' must be a positive integer"),
    ({"cameras": [{"width": 0, "height": 48, "fx": 50, "fy": 50, "cx": 32, "cy": 24,
                   "camera_to_world": torch.eye(4).tolist()}]}, "'width' must be a positive integer"),
    ({"cameras": [{"width": 64, "height": 48, "fx": float("nan"), "fy": 50, "cx": 32, "cy": 24,
                   "camera_to_world": torch.eye(4).tolist()}]}, "'fx' must be a finite number"),
    ({"cameras": [{"width": 64, "height": 48, "fx": 0, "fy": 0, "cx": 32, "cy": 24,
                   "camera_to_world": torch.eye(4).tolist()}]}, "'fx' must be positive"),
    ({"cameras": [{"width": 64, "height": 48, "fx": 50, "fy": 50, "cx": 32, "cy": 24,
                   "camera_to_world": torch.zeros(4, 4).tolist()}]}, "not a rotation"),
])  # fmt: skip
def test_malformed_camera_json_is_named(doc: object, error: str, tmp_path: Path) -> None:
    path = tmp_path / "cams.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=rf"cams\.json.*{error}"):
        read_cameras_json(path)


def test_a_nan_render_is_not_written_as_a_black_frame(tmp_path: Path) -> None:
    from lightning_modules.scene.path_video import render_path

    def nan_render(cameras):
        rgb, alpha = FakeScene().render_views(cameras)
        return rgb * float("nan"), alpha

    with pytest.raises(ValueError, match="frame 0 .* NaN/Inf"):
        render_path(nan_render, orbit_cameras(3), tmp_path / "path", progress=False)
    with pytest.raises(ValueError, match="a.png: the image holds .* NaN"):
        save_image(torch.full((3, 4, 4), float("nan")), tmp_path / "a.png")
    assert not list(tmp_path.rglob("*.png")) and not list(tmp_path.rglob("*.mp4"))


def test_a_shorter_rerun_into_the_same_folder_leaves_only_its_own_frames(tmp_path: Path) -> None:
    from lightning_modules.scene.path_video import render_path

    out = tmp_path / "predict"
    render_path(FakeScene().render_views, orbit_cameras(6), out, fix=lambda rgb, cams: 1 - rgb, progress=False)
    assert len(list((out / "frames_fixed").glob("*.png"))) == 6
    render_path(FakeScene().render_views, orbit_cameras(3, w=16, h=12), out, progress=False)
    assert len(list((out / "frames").glob("*.png"))) == len(decode(out / "video.mp4")) == 3
    assert not (out / "frames_fixed").exists() and not (out / "video_fixed.mp4").exists()
    assert sorted(p.name for p in out.iterdir()) == ["frames", "video.mp4"]  # no temporaries
    stale = out / ".video.mp4.999999.0123abcd.tmp.mp4"  # what a killed run (pid gone) leaves
    stale.write_bytes(b"x")
    render_path(FakeScene().render_views, orbit_cameras(2), out, progress=False)
    assert not stale.exists()


def test_nerf_options_that_make_no_sense_are_refused_by_name() -> None:
    from lightning_modules.scene.nerf.field import FieldSettings
    from lightning_modules.scene.nerf.model import SamplingSettings
    from lightning_modules.scene.nerf.module import NerfSceneModule

    for kwargs, name in (({"num_levels": 0}, "num_levels"), ({"hidden_dim": -4}, "hidden_dim"),
                         ({"log2_hashmap_size": 40}, "log2_hashmap_size"), ({"proposal_num_levels": 0},
                                                                             "proposal_num_levels")):
        with pytest.raises(ValueError, match=name):
            FieldSettings(**kwargs)
    for kwargs, name in (({"num_nerf_samples": 0}, "num_nerf_samples"), ({"near_plane": -1.0}, "near_plane"),
                         ({"anneal_steps": 0}, "anneal_steps")):
        with pytest.raises(ValueError, match=name):
            SamplingSettings(**kwargs)
    for kwargs, name in (({"lr_decay_steps": 0}, "lr_decay_steps"), ({"lr": 1e38}, "lr"), ({"num_rays": -1}, "num_rays")):
        with pytest.raises(ValueError, match=rf"NerfSceneModule: {name}"):
            NerfSceneModule(**kwargs)


def test_option_groups_refuse_values_that_make_no_sense_by_their_yaml_names() -> None:
    from datamodules.pairs.sources import JsonPairs, SyntheticPairs
    from lightning_modules.difix.training.settings import AdamWSettings, FixerLoss
    from lightning_modules.scene.gaussians.initial import InitSettings
    from lightning_modules.scene.gaussians.module import GaussianSceneModule
    from lightning_modules.scene.gaussians.settings import LearningRates, LossSettings, RasterSettings, SHSchedule

    refused = [
        (LearningRates, {"means": 1e38}, "GaussianSceneModule: lr.means"),
        (LearningRates, {"shN": 0.0}, "GaussianSceneModule: lr.shN"),
        (LearningRates, {"means_final_factor": 1.5}, "GaussianSceneModule: lr.means_final_factor"),
        (LearningRates, {"decay_steps": 0}, "GaussianSceneModule: lr.decay_steps"),
        (InitSettings, {"opacity": 1.0}, "GaussianSceneModule: init.opacity"),
        (InitSettings, {"num_points": 0}, "GaussianSceneModule: init.num_points"),
        (InitSettings, {"center": (0.0, 1.0)}, "GaussianSceneModule: init.center"),
        (InitSettings, {"type": "grid"}, "GaussianSceneModule: init.type"),
        (SHSchedule, {"degree": 5}, "GaussianSceneModule: sh.degree"),
        (SHSchedule, {"interval": 0}, "GaussianSceneModule: sh.interval"),
        (LossSettings, {"ssim_lambda": 1.5}, "GaussianSceneModule: loss.ssim_lambda"),
        (LossSettings, {"scale_reg": -0.1}, "GaussianSceneModule: loss.scale_reg"),
        (RasterSettings, {"near_plane": 1.0, "far_plane": 0.5}, "GaussianSceneModule: rasterizer.far_plane"),
        (RasterSettings, {"backend": "warp"}, "GaussianSceneModule: rasterizer.backend"),
        (GaussianSceneModule, {"global_scale": 0.0}, "GaussianSceneModule: global_scale"),
        (FixerLoss, {"w_gram": -1.0}, "DifixModule: loss.w_gram"),
        (FixerLoss, {"gram_crop_size": 0}, "DifixModule: loss.gram_crop_size"),
        (AdamWSettings, {"lr": 0.0}, "DifixModule: optimizer.lr"),
        (AdamWSettings, {"betas": (0.9, 1.5)}, "DifixModule: optimizer.betas"),
        (JsonPairs, {"path": "p.json", "bad_images": "ignore"}, "PairDataModule: source.bad_images"),
        (SyntheticPairs, {"num_val": -1}, "PairDataModule: source.num_val"),
        (SyntheticPairs, {"degradations": ("blur", "sparkles")}, "unknown degradation"),
    ]
    for cls, kwargs, message in refused:
        with pytest.raises(ValueError, match=re.escape(message)):
            cls(**kwargs)


def test_other_options_named(tmp_path: Path) -> None:
    from lightning_modules.scene.path_video import PathSettings

    with pytest.raises(ValueError, match="predict.frames"):
        PathSettings(frames=-5)
    (tmp_path / "a_file").write_text("")
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "fix_images.py"), "--fixer", "tiny", "--images",
                           str(tmp_path / "a_file"), "--out", str(tmp_path / "a_file")], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode != 0 and "is a file" in done.stderr


def test_fix_images_says_what_it_drops(tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    Image.fromarray(np.zeros((16, 16, 4), np.uint8), "RGBA").save(tmp_path / "alpha.png")
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "fix_images.py"), "--fixer", "tiny", "--images",
                           str(tmp_path / "alpha.png"), "--out", str(tmp_path / "out")], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "alpha channel" in done.stderr


def test_a_scene_output_dir_that_cannot_be_written_fails_before_step_1(tmp_path: Path) -> None:
    (tmp_path / "a_file").write_text("")
    args = ["fit", "--config", str(REPO / "configs/demo/scene.yaml"), "--trainer.enable_progress_bar=false",
            f"--trainer.logger.init_args.save_dir={tmp_path / 'logs'}", f"--data.init_args.path={tmp_path / 'scene'}",
            "--data.init_args.procedural.num_views=8", "--data.init_args.procedural.size=24",
            "--data.init_args.read.test_every=4", "--trainer.max_steps=2",
            f"--model.init_args.output_dir={tmp_path / 'a_file' / 'out'}"]
    with pytest.raises(OSError, match="output_dir .*a_file/out cannot be written"):
        run(args)
    assert not list((tmp_path / "logs").rglob("*.ckpt"))
