"""Jobs on submitit: SLURM on a cluster, its local executor on one machine; one job per scene.

submitit (facebookincubator) pickles a function call, submits it (an ``sbatch`` array on SLURM,
a subprocess locally), and gives back the result or the job's error with its log files. On
SLURM the array's own throttle (``slurm_array_parallelism``) keeps at most ``max_parallel``
scenes running; submitit's local executor starts every job at once, so locally jobs are
submitted as slots free up, each slot with its own GPU when jobs take one.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = ["EngineOptions", "JobOutcome", "run_jobs", "queued_on_slurm"]


@dataclass
class EngineOptions:
    """Where and with what the jobs run.

    Attributes:
        cluster: "slurm" (sbatch through submitit) or "local" (subprocesses on this machine).
        max_parallel: scenes running at once (local: processes; SLURM: array parallelism).
        gpus_per_job: GPUs per job (the scene modules use one). Locally each running job gets
            its own device of ``visible_gpus``.
        visible_gpus: local: the GPU indices jobs are spread over (None: 0 .. max_parallel - 1).
        cpus_per_job: CPU cores per job (SLURM ``--cpus-per-task``), None: the cluster's default.
        mem_gb: memory per job, None: the cluster's default.
        timeout_min: a job running longer is stopped (and listed as failed).
        partition: SLURM partition, None: the cluster's default.
        options: any other submitit parameter, e.g. ``{"slurm_account": "proj", "slurm_qos": "high",
            "slurm_additional_parameters": {"constraint": "a100"}}``.
        poll_s: seconds between checks of running jobs.
    """

    cluster: Literal["local", "slurm"] = "local"
    max_parallel: int = 1
    gpus_per_job: int = 0
    visible_gpus: list[int] | None = None
    cpus_per_job: int | None = None
    mem_gb: float | None = None
    timeout_min: int = 24 * 60
    partition: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    poll_s: float = 1.0


@dataclass
class JobOutcome:
    """How one scene's job ended: its result document, or the error and the logs to read."""

    key: str
    result: dict[str, Any] | None
    error: str | None = None
    stdout: Path | None = None
    stderr: Path | None = None


def _executor(options: EngineOptions, folder: Path, name: str) -> Any:
    import submitit

    if options.max_parallel < 1:
        raise ValueError(f"engine.max_parallel must be >= 1, got {options.max_parallel}")
    executor = submitit.AutoExecutor(folder=folder, cluster=options.cluster)
    params: dict[str, Any] = {"name": name, "timeout_min": options.timeout_min, "gpus_per_node": options.gpus_per_job,
                              "tasks_per_node": 1, "nodes": 1, "cpus_per_task": options.cpus_per_job,
                              "mem_gb": options.mem_gb, "slurm_partition": options.partition,
                              "slurm_array_parallelism": options.max_parallel}
    executor.update_parameters(**{k: v for k, v in params.items() if v is not None}, **options.options)
    return executor


def _outcome(key: str, job: Any) -> JobOutcome:
    try:
        return JobOutcome(key, job.result())
    except Exception as error:  # a failed or killed job: keep its message and where its logs are
        return JobOutcome(key, None, f"{type(error).__name__}: {str(error).strip().splitlines()[-1] if str(error).strip() else ''}",
                          job.paths.stdout, job.paths.stderr)


def _record(folder: Path, ids: dict[str, str]) -> None:
    """Adds {key: SLURM job id} to ``folder/submitted.json`` (read by `queued_on_slurm`)."""
    import json

    from datamodules.files.json_io import write_json_atomic

    path = folder / "submitted.json"
    doc = json.loads(path.read_text()) if path.is_file() else {}
    write_json_atomic(path, {**doc, **ids})


def queued_on_slurm(folder: Path, keys: Sequence[str]) -> dict[str, str]:
    """{key: state} of the keys whose SLURM job from an earlier command is still queued or running
    (a re-run must not submit them twice). Empty off a SLURM cluster."""
    import json

    path = folder / "submitted.json"
    if not path.is_file():
        return {}
    ids = json.loads(path.read_text())
    import submitit

    active = {}
    for key in keys:
        if key not in ids:
            continue
        try:
            state = submitit.SlurmJob(folder=folder, job_id=ids[key]).state
        except Exception:  # no sacct here: nothing known to be queued
            continue
        if state in ("PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED", "RESIZING"):
            active[key] = state
    return active


def run_jobs(fn: Callable[[Any], dict[str, Any]], tasks: Sequence[tuple[str, Any]], options: EngineOptions, folder: Path,
             name: str = "difix3d", on_done: Callable[[JobOutcome], None] | None = None) -> list[JobOutcome]:
    """Runs ``fn(task)`` for every task as a submitit job and waits for all of them.

    Args:
        fn: a module-level function (pickled by reference into each job).
        tasks: (key, task) pairs; the key names the job in messages (the scene id).
        options: engine and resources.
        folder: submitit's folder (pickles and the jobs' logs, ``<job id>_0_log.out|err``).
        name: the jobs' name on the cluster.
        on_done: called as each job ends (progress messages).

    Returns:
        One outcome per task, in the tasks' order.
    """
    executor = _executor(options, folder, name)
    report = on_done or (lambda outcome: None)
    if options.cluster == "slurm":
        jobs = executor.map_array(fn, [task for _, task in tasks])
        _record(folder, {key: job.job_id for (key, _), job in zip(tasks, jobs)})
        outcomes = []
        for (key, _), job in zip(tasks, jobs):
            outcomes.append(_outcome(key, job))
            report(outcomes[-1])
        return outcomes
    gpus = options.visible_gpus if options.visible_gpus is not None else list(range(options.max_parallel))
    if options.gpus_per_job and len(gpus) < options.max_parallel * options.gpus_per_job:
        raise ValueError(f"engine: {options.max_parallel} jobs of {options.gpus_per_job} GPU(s) need "
                         f"{options.max_parallel * options.gpus_per_job} visible GPUs, got {gpus}")
    pending = list(tasks)
    running: dict[int, tuple[str, Any]] = {}  # slot -> (key, job)
    done: dict[str, JobOutcome] = {}
    while pending or running:
        for slot in range(options.max_parallel):
            if slot not in running and pending:
                key, task = pending.pop(0)
                if options.gpus_per_job:
                    per = options.gpus_per_job
                    executor.update_parameters(local_visible_gpus=tuple(gpus[slot * per:(slot + 1) * per]))
                running[slot] = (key, executor.submit(fn, task))
        time.sleep(options.poll_s)
        for slot, (key, job) in list(running.items()):
            if job.done():
                done[key] = _outcome(key, job)
                report(done[key])
                del running[slot]
    return [done[key] for key, _ in tasks]
