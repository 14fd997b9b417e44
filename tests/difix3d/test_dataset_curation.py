"""The dataset command's curation job: pairs from a list of scenes into one pairs.json, the
held-out scenes in the test split, per-scene placeholders in the stage overrides."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import REPO


def test_curation_over_a_list_of_scenes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from datamodules.procedural.scene import make_procedural_scene
    from difix3d.dataset.command import run_dataset
    from difix3d.dataset.engine import EngineOptions
    from difix3d.dataset.jobs import CurationJob, CurationStage

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    for seed in (1, 2):
        make_procedural_scene(tmp_path / "scenes" / f"s{seed}", num_views=8, size=24, seed=seed)
    (tmp_path / "list.txt").write_text("scenes/s2\nscenes/s1\n")
    stage = CurationStage(str(REPO / "configs/demo/curate_sparse.yaml"),
                          ["--trainer.max_steps=4", "--data.init_args.read.test_every=4",
                           "--data.init_args.read.train_every=2", "--trainer.logger.init_args.name=curate_{name}"])
    doc = run_dataset(str(tmp_path / "list.txt"), curation=CurationJob([stage], test_scenes=["s2"]),
                      engine=EngineOptions(max_parallel=2, poll_s=0.2), out=str(tmp_path / "out"))
    assert doc["failed"] == [] and doc["job_kind"] == "curation"
    per = doc["pairs"]["per_scene"]
    assert list(per) == ["s2", "s1"] and per["s2"]["split"] == "test" and per["s1"]["split"] == "train"
    pairs = json.loads((Path(doc["pairs"]["folder"]) / "pairs.json").read_text())
    # sparse: the 3 training views dropped by train_every=2 and the 2 test views are rendered per scene
    assert {item["scene"] for item in pairs["train"]} == {"s1"} and {item["scene"] for item in pairs["test"]} == {"s2"}
    assert per["s1"]["pairs"] == len(pairs["train"]) == 5 and per["s2"]["pairs"] == len(pairs["test"]) == 5
    run = Path(doc["pairs"]["folder"]).parent
    assert (run / "scenes" / "s1" / "logs" / "curate_s1").is_dir()  # {name} filled per scene
    assert "| s2 | test | 5 |" in (run / "table.md").read_text()
