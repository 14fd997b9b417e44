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
