"""What one job does for one scene: the table's rows, or a pair curation; and when a scene counts
as done.

A job works in ``<run>/scenes/<scene id>/``. It clears what an earlier, unfinished attempt left
there, runs, and writes ``result.json`` last, atomically: a job killed at any point leaves no
``result.json``, so the scene is redone on the next run, and nothing from the killed attempt is
mixed into it. ``result.json`` carries the hash of the resolved config; only a result with the
run's hash counts as complete.
"""
from __future__ import annotations

import os
import shutil
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from datamodules.files.json_io import write_json_atomic
from difix3d.dataset.scenes import Scene

__all__ = ["Protocol", "TableJob", "CurationStage", "CurationJob", "SceneTask", "run_scene", "read_result",
           "RESULT_FILE", "protocol_overrides", "running_elsewhere"]

RESULT_FILE = "result.json"


@dataclass
class Protocol:
    """The evaluation protocol every scene of a table is read and scored with.

    Attributes:
        name_split: split views by image file name, ``[train, test]`` patterns (the reference's
            ``["_train_", "_eval_"]``; Nerfbusters); None keeps the config's split.
        downscale: image downscale (DL3DV's paper level: 4, ``images_4``); None keeps the config's.
        cc_psnr: report colour-corrected PSNR beside PSNR.
        lpips_nets: LPIPS backbones reported as ``lpips_<net>`` (offline each is skipped with a
            warning naming its file).
        reference_vgg_input: LPIPS-VGG on unscaled [0, 1] images, as the reference computes it.
        fid: keep each scene's test renders and targets so that FID is computed over all the
            dataset's test images together.
    """

    name_split: tuple[str, str] | None = None
    downscale: int | None = None
    cc_psnr: bool = True
    lpips_nets: tuple[Literal["alex", "vgg"], ...] = ("alex", "vgg")
    reference_vgg_input: bool = True
    fid: bool = True


def protocol_overrides(protocol: Protocol) -> list[str]:
    """The protocol as CLI overrides of a scene config (data read options, evaluation settings)."""
    out = []
    if protocol.name_split is not None:
        out.append(f"--data.init_args.read.name_split=[{protocol.name_split[0]},{protocol.name_split[1]}]")
    if protocol.downscale is not None:
        out.append(f"--data.init_args.read.downscale={protocol.downscale}")
    nets = ",".join(protocol.lpips_nets)
    out += [f"--model.init_args.evaluation.cc_psnr={str(protocol.cc_psnr).lower()}",
            f"--model.init_args.evaluation.lpips_nets=[{nets}]",
            f"--model.init_args.evaluation.reference_vgg_input={str(protocol.reference_vgg_input).lower()}",
            f"--model.init_args.evaluation.save_views={str(protocol.fid).lower()}"]
    return out


@dataclass
class TableJob:
    """The paper's table rows for each scene (``difix3d.table_rows``).

    Attributes:
        config: a scene config with a ProgressiveFixCallback (configs/scene.yaml, configs/nerf.yaml,
            configs/demo/difix3d.yaml).
        rows: "plain" (3DGS or Nerfacto), "control" (No-op fix), "progressive" (Difix3D, Difix3D+).
        overrides: CLI arguments for every scene (``--trainer.max_steps=30000``, ...).
    """

    config: str
    rows: list[Literal["plain", "control", "progressive"]] = field(default_factory=lambda: ["plain", "progressive"])
    overrides: list[str] = field(default_factory=list)


@dataclass
class CurationStage:
    """One ``main.py fit`` of a curation: a config with a PairWriter, and its overrides.

    ``{scene}`` (the scene folder), ``{name}`` (its id), ``{pairs}`` (the pairs folder) and
    ``{work}`` (the scene's work folder) in an override are replaced per scene, e.g. cycle
    stage 2: ``--data.init_args.path={pairs}/{name}/cycle_stage1``.
    """

    config: str
    overrides: list[str] = field(default_factory=list)


@dataclass
class CurationJob:
    """Difix training pairs from each scene (configs/curate/*.yaml), merged into one pairs folder.

    Attributes:
        stages: the fits, in order (one for sparse / underfit / cross, two for cycle).
        test_scenes: scene ids whose pairs go to the test split (the fixer's held-out scenes).
    """

    stages: list[CurationStage]
    test_scenes: list[str] = field(default_factory=list)


@dataclass
class SceneTask:
    """Everything a job needs for one scene (pickled to the job's process)."""

    scene: Scene
    job: TableJob | CurationJob
    protocol: Protocol
    work_dir: Path
    pairs_dir: Path | None
    config_hash: str


def read_result(work_dir: Path, config_hash: str) -> dict[str, Any] | None:
    """The scene's result when it is complete for this config, else None."""
    import json

    path = work_dir / RESULT_FILE
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and doc.get("config_hash") == config_hash else None


def running_elsewhere(work_dir: Path) -> str | None:
    """Why the scene must not be started again: a job of an earlier command still runs it on this
    machine (its process is alive: the local executor's jobs outlive a killed command). None
    when it is free to run."""
    import json

    from datamodules.files.temp_files import pid_alive

    path = work_dir / "running.json"
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if info.get("host") == socket.gethostname() and isinstance(info.get("pid"), int) and pid_alive(info["pid"]) \
            and info["pid"] != os.getpid():
        return f"process {info['pid']} on this machine is still running it ({path})"
    return None


def _fresh(work_dir: Path) -> None:
    """Empties the scene's work folder: nothing of an earlier, unfinished attempt may count."""
    if work_dir.exists():
        shutil.rmtree(work_dir)
    work_dir.mkdir(parents=True)


def _table(task: SceneTask, common: list[str]) -> dict[str, Any]:
    from difix3d.table_rows import table_rows

    job: TableJob = task.job  # type: ignore[assignment]
    overrides = [*common, *protocol_overrides(task.protocol), *job.overrides]
    rows = table_rows(job.config, overrides, list(job.rows), output_dir=task.work_dir / "rows")
    out = {}
    for name, row in rows.items():
        fixed = name == "Difix3D+"
        per_view = [{k.removesuffix("_fixed"): v for k, v in r.items() if k == "name" or k.endswith("_fixed") == fixed}
                    for r in row["per_view"]]
        views = Path(row["output_dir"]) / "test_views"
        out[name] = {"metrics": row["metrics"], "per_view": per_view, "fit_s": row["fit_s"], "test_s": row["test_s"],
                     "fixes": row["fixes"], "checkpoint": row["checkpoint"],
                     "views": str(views) if task.protocol.fid and views.is_dir() else None,
                     "render_folder": "render_fixed" if fixed else "render"}
    return {"rows": out}


def _curation(task: SceneTask, common: list[str]) -> dict[str, Any]:
    from datamodules.pairs.store import read_pairs_doc
    from difix3d.cli import cli_main

    job: CurationJob = task.job  # type: ignore[assignment]
    assert task.pairs_dir is not None
    split = "test" if task.scene.id in job.test_scenes else "train"
    fill = {"scene": str(task.scene.path), "name": task.scene.id, "pairs": str(task.pairs_dir), "work": str(task.work_dir)}
    for i, stage in enumerate(job.stages):
        cli_main(["fit", "--config", stage.config, *common, f"--trainer.callbacks.out_dir={task.pairs_dir}",
                  f"--trainer.callbacks.scene_name={task.scene.id}", f"--trainer.callbacks.split={split}",
                  f"--model.init_args.output_dir={task.work_dir / f'stage{i + 1}'}",
                  *(o.format(**fill) for o in stage.overrides)])
    doc = read_pairs_doc(task.pairs_dir)
    counts = {s: sum(1 for item in doc.get(s, []) if item.get("scene") == task.scene.id) for s in ("train", "test")}
    return {"split": split, "pairs": counts[split]}


def run_scene(task: SceneTask) -> dict[str, Any]:
    """Runs one scene's job in this process (a submitit job) and writes its ``result.json``.

    Returns:
        The result document (also on disk).
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    _fresh(task.work_dir)
    started = time.time()
    write_json_atomic(task.work_dir / "running.json", {"pid": os.getpid(), "host": socket.gethostname(), "started": started})
    common = [f"--data.init_args.path={task.scene.path}", f"--trainer.logger.init_args.save_dir={task.work_dir / 'logs'}",
              "--trainer.enable_progress_bar=false"]
    t0 = time.perf_counter()
    body = _table(task, common) if isinstance(task.job, TableJob) else _curation(task, common)
    result = {"scene": task.scene.id, "path": str(task.scene.path), "config_hash": task.config_hash,
              "seconds": time.perf_counter() - t0, "started": started, "finished": time.time(), **body}
    write_json_atomic(task.work_dir / RESULT_FILE, result)  # last: only now does the scene count as done
    return result

