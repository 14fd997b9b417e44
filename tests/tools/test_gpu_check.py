"""benchmarks/gpu_check.sh, the one GPU command, as a CPU dry run: every part runs its GPU command
line (only the sizes shrunk and the device moved to the CPU) on a tiny scene, so a GPU run does not
fail on a typo, a missing file or an option renamed since; and the budget stops parts before they
start. Runs in the default suite on purpose (about a minute on two idle cores)."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO
from helpers.scene_writers import make_rig, write_blender

TRAIN = ["train_full", "train_lora8", "train_gc", "train_lora8_gc"]


def _gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_every_part_of_the_gpu_check_runs_its_command_line_on_the_cpu(tmp_path: Path) -> None:
    scene = write_blender(make_rig(n=10, width=160, height=120, focal=140.0), tmp_path / "scene", n_train=6)
    out = tmp_path / "out"
    env = {**os.environ, "DRY_RUN": "1", "PY": sys.executable, "WORK": str(tmp_path / "work"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), str(scene), str(out)], env=env,
                          capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    parts = json.loads((out / "gpu_check.json").read_text())["parts"]
    assert list(parts) == ["tests", "scene", "difix_ref", *TRAIN, "user", "realtime", "fixer"]
    failed = {name: p["log_tail"] for name, p in parts.items() if p["exit"] != 0}
    assert not failed, failed
    assert sorted(f.name for f in out.iterdir()) == ["gpu_check.json", "gpu_check.log"]  # 8 files come back at most

    assert parts["scene"]["result"]["framework"]["test_views"] == 4 == parts["scene"]["result"]["bare"]["test_views"]
    assert parts["difix_ref"]["result"]["written"] and (tmp_path / "work" / "difix_ref_tiny" / "model_index.json").is_file()
    for name, (rank, checkpointing) in zip(TRAIN, [(0, False), (8, False), (0, True), (8, True)]):
        row = parts[name]["result"]
        assert (row["net_unet_lora_rank"], row["net_gradient_checkpointing"]) == (rank, checkpointing), name
        assert row["steps"] == 2 and row["s_per_step"] > 0
    user = parts["user"]["result"]
    assert [r["step"] for r in user["fit"]["rounds"]] == [20, 30] and {r["views"] for r in user["fit"]["rounds"]} == {4}
    assert user["test"]["views_fixed"] == 4 and user["test"]["post_render_fix_ms_per_view"] > 0
    assert {"video.mp4", "video_fixed.mp4", "video_compare.mp4"} <= set(user["predict"]["videos_bytes"])
    assert any("fps render+fix" in line for line in parts["realtime"]["result"])
    rows = parts["fixer"]["result"]["rows"]
    assert [(r["K"], r["compile"]) for r in rows] == [(1, "no"), ("encode 1 view", "no"), (1, "yes"), ("encode 1 view", "yes")]


def test_the_device_side_shell_scripts_parse() -> None:
    for script in ("gpu_check.sh", "gpu_prepare.sh"):  # the wheel installing and downloading branches
        done = subprocess.run(["bash", "-n", str(REPO / "benchmarks" / script)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr


def test_parts_expand_in_order_and_the_budget_stops_parts_before_they_start(tmp_path: Path) -> None:
    gpu_check = _gpu_check()
    assert gpu_check.expand(["tests", "user", "train"]) == ["tests", "difix_ref", "user", *TRAIN]
    with pytest.raises(SystemExit, match="unknown part 'fixr'"):
        gpu_check.expand(["fixr"])
    merged = gpu_check.main(["--scene", str(tmp_path), "--out", str(tmp_path / "out"), "--work", str(tmp_path / "w"),
                             "--parts", "scene,fixer", "--budget", "20"])
    assert {name: p["exit"] for name, p in merged["parts"].items()} == {"scene": 124, "fixer": 124}
    assert "not run" in merged["parts"]["fixer"]["result"]
    assert json.loads((tmp_path / "out" / "gpu_check.json").read_text())["parts"] == merged["parts"]
