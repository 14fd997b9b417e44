"""scripts/dataset.py end to end on submitit's local executor: three tiny procedural scenes, two
jobs at once, one job killed midway; the re-run redoes that scene only and completes the table."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import REPO

TINY = ["--trainer.callbacks.fixer=tiny", "--trainer.max_steps=4", "--trainer.callbacks.start_step=2",
        "--trainer.callbacks.fix_every_n_steps=2", "--data.init_args.read.test_every=4",
        "--data.init_args.read.train_every=1", "--model.init_args.predict.frames=0"]


def _config(tmp_path: Path) -> Path:
    from datamodules.procedural.scene import make_procedural_scene

    for seed in (1, 2, 3):
        make_procedural_scene(tmp_path / "scenes" / f"p{seed}", num_views=8, size=24, seed=seed)
    config = tmp_path / "dataset.yaml"
    config.write_text(json.dumps({
        "scenes": str(tmp_path / "scenes"), "out": str(tmp_path / "out"),
        "table": {"config": str(REPO / "configs/demo/difix3d.yaml"), "overrides": TINY},
        "engine": {"cluster": "local", "max_parallel": 2, "poll_s": 0.2},
    }))
    return config


def _start(config: Path, tmp_path: Path, log: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TORCH_HOME": str(tmp_path / "torch_home"), "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, str(REPO / "scripts/dataset.py"), "--config", str(config)], cwd=tmp_path,
                            env=env, stdout=open(tmp_path / log, "w"), stderr=subprocess.STDOUT, text=True)


def _wait_for(path: Path, process: subprocess.Popen, timeout: float = 300) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, f"the command ended before {path} appeared"
        assert time.monotonic() < end, f"{path} did not appear in {timeout} s"
        time.sleep(0.05)


def test_killed_scene_is_redone_and_the_others_skipped(tmp_path: Path) -> None:
    config = _config(tmp_path)
    first = _start(config, tmp_path, "first.log")
    # The run folder (job.json last) appears once the config is resolved; p2 runs in the second slot.
    end = time.monotonic() + 300
    while not list((tmp_path / "out").glob("table-*/job.json")):
        assert first.poll() is None and time.monotonic() < end, (tmp_path / "first.log").read_text()[-3000:]
        time.sleep(0.05)
    run = next((tmp_path / "out").glob("table-*/job.json")).parent
    p2 = run / "scenes" / "p2"
    # Midway: its 3DGS row is tested, its Difix3D fit is under way. Kill the job's process.
    _wait_for(p2 / "rows" / "table_3dgs" / "metrics.json", first)
    pid = json.loads((p2 / "running.json").read_text())["pid"]
    os.kill(pid, signal.SIGKILL)
    assert first.wait(timeout=300) == 1  # some scene failed
    log = (tmp_path / "first.log").read_text()
    assert not (p2 / "result.json").exists(), log[-3000:]
    doc = json.loads((run / "table.json").read_text())
    assert [f["scene"] for f in doc["failed"]] == ["p2"] and Path(doc["failed"][0]["stderr"]).is_file()
    assert "p2: FAILED" in log and doc["table"]["scenes"] == ["p1", "p3"]
    done = {s: json.loads((run / "scenes" / s / "result.json").read_text()) for s in ("p1", "p3")}
    # Two jobs at once: the killed p2 started before p1 ended.
    started_p2 = json.loads((p2 / "running.json").read_text())["started"]
    assert started_p2 < done["p1"]["finished"]

    second = _start(config, tmp_path, "second.log")
    assert second.wait(timeout=300) == 0, (tmp_path / "second.log").read_text()[-3000:]
    log = (tmp_path / "second.log").read_text()
    assert "2 already complete (skipped), 0 still running from an earlier command, 1 to run" in log
    for s in ("p1", "p3"):  # untouched: the same result files, not rerun
        assert json.loads((run / "scenes" / s / "result.json").read_text()) == done[s]
    doc = json.loads((run / "table.json").read_text())
    assert doc["failed"] == [] and doc["skipped"] == ["p1", "p3"] and doc["table"]["scenes"] == ["p1", "p2", "p3"]
    rows = doc["table"]["rows"]
    assert list(rows) == ["3DGS", "Difix3D", "Difix3D+"]
    for row in rows.values():
        assert row["scenes"] == 3 and row["all_views"]["views"] == 6  # 2 test views per scene (8 views, every 4th)
        assert {"psnr", "ssim", "cc_psnr"} <= set(row["all_views"]) and "lpips_alex" not in row["all_views"]  # offline
        assert set(row["per_scene"]) == {"p1", "p2", "p3"}
    md = (run / "table.md").read_text()
    assert "| Difix3D+ |" in md and "| p2 |" in md


@pytest.mark.parametrize("bad", ["both", "neither"])
def test_one_job_kind_is_required(tmp_path: Path, bad: str) -> None:
    from difix3d.dataset.command import run_dataset
    from difix3d.dataset.jobs import CurationJob, CurationStage, TableJob

    (tmp_path / "scenes" / "a").mkdir(parents=True)
    kw = {"table": TableJob(str(REPO / "configs/demo/difix3d.yaml")),
          "curation": CurationJob([CurationStage(str(REPO / "configs/demo/curate_sparse.yaml"))])} if bad == "both" else {}
    with pytest.raises(SystemExit, match="exactly one job"):
        run_dataset(str(tmp_path / "scenes"), out=str(tmp_path / "out"), **kw)
