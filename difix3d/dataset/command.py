"""The dataset command: one job per scene (the table's rows, or a pair curation), then the table.

    python scripts/dataset.py --config configs/dataset/dl3dv_table.yaml --scenes /data/DL3DV-10K-Benchmark
    python scripts/dataset.py --config configs/dataset/dl3dv_table.yaml --scenes ... --engine.cluster slurm \\
        --engine.max_parallel 16 --engine.gpus_per_job 1 --engine.partition gpu

Every option can come from the config (YAML) or the command line (jsonargparse, as main.py's).
Results live in ``<out>/<kind>-<hash>/``, keyed by a hash of the resolved scene config(s), the
rows or stages and the protocol: two different configs never share a folder, and a re-run of
the same command skips the scenes whose ``result.json`` is complete and redoes the others.
"""
from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from datamodules.files.json_io import write_json_atomic, write_text_atomic
from difix3d.dataset.engine import EngineOptions, JobOutcome, queued_on_slurm, run_jobs
from difix3d.dataset.jobs import (CurationJob, Protocol, SceneTask, TableJob, protocol_overrides, read_result, run_scene,
                                  running_elsewhere)
from difix3d.dataset.scenes import list_scenes

__all__ = ["run_dataset", "resolve_config", "run_folder", "main"]

# Per-scene values are the same placeholders in every resolution, so the hash does not depend on them.
_PLACEHOLDERS = ["--data.init_args.path=<scene>", "--trainer.logger.init_args.save_dir=<work>/logs",
                 "--trainer.enable_progress_bar=false"]


def resolve_config(args: list[str]) -> str:
    """The config that ``main.py`` would run with ``args`` (defaults filled in), as YAML text.

    Raises:
        SystemExit: the config does not parse (jsonargparse prints why), before any job starts.
    """
    from difix3d.cli import DifixCLI

    class _Resolve(DifixCLI):
        def instantiate_classes(self) -> None:  # only the parsed, checked config is wanted
            pass

    argv, sys.argv = sys.argv, sys.argv[:1]  # LightningCLI warns when sys.argv holds this command's own arguments
    try:
        cli = _Resolve(subclass_mode_model=True, subclass_mode_data=True, args=args, run=False)
    finally:
        sys.argv = argv
    text = cli.parser.dump(cli.config, skip_none=False)
    return "\n".join(line for line in text.splitlines() if not line.startswith("#"))  # no package-version comment


def _absolute(config: str) -> str:
    path = Path(config).expanduser()
    if not path.is_file():
        raise SystemExit(f"config {config}: file not found")
    return str(path.resolve())


def _spec(table: TableJob | None, curation: CurationJob | None, protocol: Protocol) -> tuple[str, dict[str, Any], str]:
    """(kind, JSON-able job spec, resolved config text) of the job; config paths made absolute."""
    if (table is None) == (curation is None):
        raise SystemExit("give exactly one job: --table.config ... (the paper's table) or --curation.stages ... (pairs)")
    if table is not None:
        table.config = _absolute(table.config)
        args = ["--config", table.config, *_PLACEHOLDERS, *protocol_overrides(protocol), *table.overrides]
        return "table", {"table": asdict(table), "protocol": asdict(protocol)}, resolve_config(args)
    assert curation is not None
    if not curation.stages:
        raise SystemExit("curation.stages is empty: give at least one curation config")
    texts = []
    for stage in curation.stages:
        stage.config = _absolute(stage.config)
        fill = {"scene": "<scene>", "name": "<name>", "pairs": "<pairs>", "work": "<work>"}
        texts.append(resolve_config(["--config", stage.config, *_PLACEHOLDERS, *(o.format(**fill) for o in stage.overrides)]))
    return "curation", {"curation": asdict(curation)}, "\n---\n".join(texts)


def run_folder(out: str | Path, kind: str, spec: dict[str, Any], resolved: str) -> tuple[Path, str]:
    """(``<out>/<kind>-<hash>``, hash): the hash covers the job spec and the resolved config text,
    so any change of either gives another folder and results never mix."""
    digest = hashlib.sha256(json.dumps({"spec": spec, "resolved": resolved}, sort_keys=True).encode()).hexdigest()[:12]
    return Path(out).expanduser().resolve() / f"{kind}-{digest}", digest


def run_dataset(
    scenes: str,
    table: TableJob | None = None,
    curation: CurationJob | None = None,
    protocol: Protocol | None = None,
    engine: EngineOptions | None = None,
    out: str = "outputs/datasets",
    scene_subdir: str | None = None,
    only: list[str] | None = None,
    title: str = "",
    fid_feature: int = 2048,
    fid_device: str = "cpu",
) -> dict[str, Any]:
    """Runs the job on every scene not yet complete, then writes the dataset's table.

    Args:
        scenes: a folder of scene folders, a glob, or a text file of scene folders.
        table: the paper's table rows per scene (one of ``table`` / ``curation``).
        curation: pair curation per scene, all pairs in one folder (``<run>/pairs``).
        protocol: how scenes are read and scored (table jobs; None: the defaults).
        engine: where jobs run and with what (None: one local job at a time).
        out: the folder of all runs; this run's is ``<out>/<kind>-<hash>``.
        scene_subdir: the folder inside each scene to read (DL3DV-Benchmark: ``nerfstudio``).
        only: run just these scene ids.
        title: the table's title (default: the scenes' folder).
        fid_feature: FID's Inception feature size (64, 192, 768, 2048).
        fid_device: where the dataset's FID features are computed.

    Returns:
        The table document (also written as ``table.json`` and ``table.md`` in the run's folder).
    """
    protocol = protocol or Protocol()
    engine = engine or EngineOptions()
    scene_list = list_scenes(scenes, scene_subdir, only)
    kind, spec, resolved = _spec(table, curation, protocol)
    run_dir, digest = run_folder(out, kind, spec, resolved)
    if not (run_dir / "job.json").is_file():
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(run_dir / "config.yaml", resolved)  # for people; job.json (last) marks the folder
        write_json_atomic(run_dir / "job.json", {"kind": kind, "config_hash": digest, **spec})
    pairs_dir = run_dir / "pairs" if kind == "curation" else None
    todo, skipped, busy = [], [], {}
    queued = queued_on_slurm(run_dir / "submitit", [s.id for s in scene_list]) if engine.cluster == "slurm" else {}
    for scene in scene_list:
        work = run_dir / "scenes" / scene.id
        if read_result(work, digest) is not None:
            skipped.append(scene.id)
            continue
        why = running_elsewhere(work) or (f"its SLURM job is {queued[scene.id]}" if scene.id in queued else None)
        if why:
            busy[scene.id] = why
            continue
        todo.append((scene.id, SceneTask(scene, table or curation, protocol, work, pairs_dir, digest)))  # type: ignore[arg-type]
    print(f"{kind} {digest}: {len(scene_list)} scene(s), {len(skipped)} already complete (skipped), "
          f"{len(busy)} still running from an earlier command, {len(todo)} to run on {engine.cluster} "
          f"({engine.max_parallel} at once) -> {run_dir}", flush=True)
    for scene_id, why in busy.items():
        print(f"  {scene_id}: not started again: {why}", flush=True)

    def report(outcome: JobOutcome) -> None:
        state = "done" if outcome.result is not None else f"FAILED ({outcome.error}; log: {outcome.stderr})"
        print(f"  {outcome.key}: {state}", flush=True)

    outcomes = run_jobs(run_scene, todo, engine, run_dir / "submitit", name=f"difix3d-{kind}", on_done=report) if todo else []
    failed = [{"scene": o.key, "error": o.error, "stdout": str(o.stdout), "stderr": str(o.stderr)}
              for o in outcomes if o.result is None]
    results = [r for s in scene_list if (r := read_result(run_dir / "scenes" / s.id, digest)) is not None]
    doc: dict[str, Any] = {"title": title or f"{kind}: {scenes}", "config_hash": digest, "job_kind": kind,
                           "scenes_listed": [s.id for s in scene_list], "skipped": skipped, "failed": failed,
                           "still_running": busy}
    if kind == "table":
        from difix3d.dataset.table import build_table, markdown_table

        doc["table"] = build_table(results, fid_feature, fid_device)
        text = markdown_table(doc)
    else:
        doc["pairs"] = {"folder": str(pairs_dir), "per_scene": {r["scene"]: {"split": r["split"], "pairs": r["pairs"]}
                                                                 for r in results}}
        text = _curation_markdown(doc)
    write_json_atomic(run_dir / "table.json", doc)
    write_text_atomic(run_dir / "table.md", text)
    print(text, flush=True)
    print(f"written {run_dir / 'table.json'} and table.md", flush=True)
    return doc


def _curation_markdown(doc: dict[str, Any]) -> str:
    per = doc["pairs"]["per_scene"]
    out = [f"# {doc['title']}", "", f"Pairs in {doc['pairs']['folder']} (config `{doc['config_hash']}`): "
           f"{sum(p['pairs'] for p in per.values())} from {len(per)} scene(s), {len(doc['failed'])} failed.", "",
           "| Scene | split | pairs |", "|---|---|---|", *[f"| {s} | {p['split']} | {p['pairs']} |" for s, p in per.items()]]
    out += [f"- FAILED {f['scene']}: {f['error']} (log: {f['stderr']})" for f in doc["failed"]]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    """The command line: exit status 0 when every scene is complete, 1 when some failed."""
    from jsonargparse import CLI

    doc = CLI(run_dataset, args=argv, as_positional=False)
    return 1 if doc["failed"] or doc["still_running"] else 0


if __name__ == "__main__":
    sys.exit(main())
