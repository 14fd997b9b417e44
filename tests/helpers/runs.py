"""Running the project's CLI inside a test, and the demo scene config shrunk to a tiny scene."""
from __future__ import annotations

import contextlib
import io
from pathlib import Path

from difix3d.cli import cli_main
from helpers import REPO



def run(args: list[str]) -> None:
    with contextlib.redirect_stdout(io.StringIO()):
        cli_main(args)


def scene_args(tmp_path: Path, logs: Path, out: Path, max_steps: int, every: int = 10) -> list[str]:
    """configs/demo/scene.yaml shrunk to a tiny procedural scene."""
    return [
        "--config", str(REPO / "configs/demo/scene.yaml"), "--trainer.enable_progress_bar=false",
        f"--trainer.max_steps={max_steps}", f"--trainer.logger.init_args.save_dir={logs}",
        "--trainer.logger.init_args.version=0", f"--trainer.callbacks.init_args.every_n_train_steps={every}",
        f"--data.init_args.path={tmp_path / 'scene'}", "--data.init_args.procedural.num_views=8",
        "--data.init_args.procedural.size=24", "--data.init_args.read.test_every=4",
        "--data.init_args.steps_per_epoch=20", "--data.init_args.max_val_views=1",
        "--model.init_args.strategy.init_args.refine_start_iter=10",
        "--model.init_args.strategy.init_args.refine_every=10",
        "--model.init_args.predict.frames=0", f"--model.init_args.output_dir={out}",
    ]  # fmt: skip


def difix3d_args(tmp_path: Path, fixer: str, size: tuple[int, int], frames: int = 0) -> list[str]:
    """configs/demo/difix3d.yaml shrunk to a tiny procedural scene, with `fixer` run at `size` and
    progressive fixes every 2 steps from step 2; logs in tmp_path/logs (version 0), outputs in
    tmp_path/out."""
    return [
        "--config", str(REPO / "configs/demo/difix3d.yaml"), "--trainer.enable_progress_bar=false",
        f"--trainer.logger.init_args.save_dir={tmp_path / 'logs'}", "--trainer.logger.init_args.version=0",
        f"--trainer.callbacks.fixer.name={fixer}", f"--trainer.callbacks.fixer.size=[{size[0]}, {size[1]}]",
        "--trainer.callbacks.start_step=2", "--trainer.callbacks.fix_every_n_steps=2",
        f"--data.init_args.path={tmp_path / 'scene'}", "--data.init_args.procedural.num_views=8",
        "--data.init_args.procedural.size=24", "--data.init_args.read.test_every=4",
        "--data.init_args.read.train_every=1", "--data.init_args.steps_per_epoch=3",
        "--data.init_args.max_val_views=1", "--model.init_args.init.max_points=300",
        f"--model.init_args.predict.frames={frames}", f"--model.init_args.output_dir={tmp_path / 'out'}",
    ]  # fmt: skip

