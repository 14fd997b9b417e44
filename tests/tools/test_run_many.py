"""scripts/run_many.py: several main.py commands in one process, as make demo curates its scenes."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from datamodules.files.image_io import load_image
from helpers import REPO

sys.path.insert(0, str(REPO / "scripts"))

import run_many  # noqa: E402


def _curate(tmp_path: Path, seed: int, out: Path, *extra: str) -> list[str]:
    """main.py arguments that curate sparse pairs from a tiny procedural scene `seed` into `out`."""
    return ["fit", "--config", str(REPO / "configs/demo/curate_sparse.yaml"), "--trainer.logger=false",
            "--trainer.enable_progress_bar=false", f"--trainer.default_root_dir={tmp_path}",
            "--trainer.max_steps=4", "--model.init_args.sh.degree=0", "--model.init_args.init.max_points=200",
            f"--trainer.callbacks.out_dir={out}", f"--trainer.callbacks.scene_name=scene_{seed}",
            f"--model.init_args.output_dir={tmp_path / f'fit_{seed}'}",
            f"--data.init_args.path={tmp_path / f'scene_{seed}'}", f"--data.init_args.procedural.seed={seed}",
            "--data.init_args.procedural.num_views=8", "--data.init_args.procedural.size=24", *extra]


def _renders(out: Path, scene: str) -> dict[str, object]:
    items = [it for it in json.loads((out / "pairs.json").read_text())["train"] if it["scene"] == scene]
    return {it["view"]: load_image(out / it["image"]) for it in items}


def test_commands_run_in_order_and_each_as_if_alone(tmp_path: Path) -> None:
    """A command's pairs do not depend on what ran before it in the same process."""
    both, alone = tmp_path / "both", tmp_path / "alone"
    assert run_many.main(["--say", "first", *_curate(tmp_path, 1, both), "--next",
                          "--say", "second", *_curate(tmp_path, 2, both)]) == 0
    assert run_many.main(_curate(tmp_path, 2, alone)) == 0
    after, fresh = _renders(both, "scene_2"), _renders(alone, "scene_2")
    assert after.keys() == fresh.keys() and len(after) > 0
    for view in after:
        assert (after[view] == fresh[view]).all(), view  # bit for bit: the seed is set per command
    assert _renders(both, "scene_1")


def test_a_failing_command_stops_the_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "pairs"
    code = run_many.main([*_curate(tmp_path, 1, out), "--next", *_curate(tmp_path, 2, out, "--model.init_args.no_such_option=1"),
                          "--next", *_curate(tmp_path, 3, out)])
    assert code == 2  # jsonargparse's exit status for a config error
    assert "command 2 of 3 stopped" in capsys.readouterr().err
    scenes = {it["scene"] for it in json.loads((out / "pairs.json").read_text())["train"]}
    assert scenes == {"scene_1"}  # the first one's pairs kept, the third never ran
    assert not (tmp_path / "scene_3").exists()


@pytest.mark.parametrize("argv", [[], ["--next", "fit"], ["fit", "--next"], ["--say"]])
def test_empty_commands_are_usage_errors(argv: list[str]) -> None:
    with pytest.raises(SystemExit, match="run_many: command"):
        run_many.split_commands(argv)
