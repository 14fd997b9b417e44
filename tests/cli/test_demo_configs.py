"""The CPU demo configs run through main.py (shrunk: a few steps, tiny data, tmp_path).

configs/demo/scene.yaml, difix.yaml (full length, `slow`) and the curate_* configs have their
own CLI tests; the lego configs need ../shared/data and are exercised by `slow` tests and the benchmarks.
"""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import torch

from difix3d.cli import cli_main
from helpers import REPO



def run(args: list[str]) -> None:
    with contextlib.redirect_stdout(io.StringIO()):
        cli_main(args)


def test_difix_demo_config_fits_and_checkpoints(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    run(["fit", "--config", str(REPO / "configs/demo/difix.yaml"), "--trainer.max_steps=3",
         "--trainer.enable_progress_bar=false", f"--trainer.logger.init_args.save_dir={logs}",
         "--data.init_args.source.init_args.num_train=3", "--data.init_args.source.init_args.num_val=2", "--data.init_args.resolution=32",
         "--data.init_args.crop_size=32"])
    # last.ckpt is the final step's, even when val/psnr did not improve there (best.ckpt).
    (last,) = logs.rglob("last.ckpt")
    (best,) = logs.rglob("best.ckpt")
    assert torch.load(last, map_location="cpu", weights_only=False)["global_step"] == 3
    assert torch.load(best, map_location="cpu", weights_only=False)["global_step"] <= 3
    assert list(logs.rglob("events.out.tfevents.*"))


def test_difix3d_demo_config_fixes_and_reports_plain_and_fixed(tmp_path: Path) -> None:
    logs, scene, out = tmp_path / "logs", tmp_path / "scene", tmp_path / "out"
    common = ["--config", str(REPO / "configs/demo/difix3d.yaml"), "--trainer.enable_progress_bar=false",
              f"--trainer.logger.init_args.save_dir={logs}", "--trainer.logger.init_args.version=0",
              "--trainer.callbacks.fixer=tiny", "--trainer.callbacks.start_step=2",
              "--trainer.callbacks.fix_every_n_steps=2", f"--data.init_args.path={scene}",
              "--data.init_args.procedural.num_views=8", "--data.init_args.procedural.size=24",
              "--data.init_args.read.test_every=4", "--data.init_args.read.train_every=1",
              "--data.init_args.steps_per_epoch=3", "--data.init_args.max_val_views=1",
              "--model.init_args.init.max_points=300", "--model.init_args.predict.frames=0",
              f"--model.init_args.output_dir={out}"]
    run(["fit", *common, "--trainer.max_steps=6"])
    ckpt = logs / "difix3d_demo" / "version_0" / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(ckpt.parents[1]))
    events.Reload()
    assert [e.value for e in events.Scalars("fix/num_fixes")] == [1.0, 2.0]  # steps 2 and 4
    assert "fix/render_fixed_reference" in events.Tags()["images"]
    run(["test", *common, f"--ckpt_path={ckpt}"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["stage"] == "test" and metrics["step"] == 6
    assert {"psnr", "ssim"} <= set(metrics["mean"]) and {"psnr", "ssim"} <= set(metrics["mean_fixed"])
    assert (out / "point_cloud.ply").is_file()


def test_fixer_demo_config_fine_tunes_and_exports_nvidias_layout(tmp_path: Path) -> None:
    from lightning_modules.difix.cosmos.files import find_fixer_files
    from lightning_modules.difix.cosmos.load import load_fixer_net

    logs, out = tmp_path / "logs", tmp_path / "fixer"
    run(["fit", "--config", str(REPO / "configs/demo/fixer.yaml"), "--trainer.max_steps=2",
         "--trainer.enable_progress_bar=false", f"--trainer.logger.init_args.save_dir={logs}",
         "--data.init_args.source.init_args.num_train=2", "--data.init_args.source.init_args.num_val=1",
         "--data.init_args.resolution=32",
         "--data.init_args.crop_size=32", f"--model.init_args.export_dir={out}"])
    files = find_fixer_files(str(out))
    assert files is not None and files.pretrained is not None and files.tokenizer is not None
    assert load_fixer_net(files)(torch.rand(1, 3, 32, 32)).shape == (1, 3, 32, 32)
    assert list(logs.rglob("last.ckpt"))
