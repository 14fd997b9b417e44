"""The parts of the prepared GPU check, each with its own time limit, and their one merged JSON.

Run through ``benchmarks/gpu_check.sh`` on the device machine (it installs the carried wheels
first), or here:

    python benchmarks/gpu_check.py --scene SCENE --out OUT --parts "tests scene train" --budget 400
    python benchmarks/gpu_check.py --scene TINY_SCENE --out OUT --dry-run    # CPU, tiny sizes

Parts (``--parts``; "train" is the four train_* parts; difix_ref runs when a part needs it):

    tests      pytest -m gpu (gsplat against the CPU rasterizer, ...; the first gsplat call builds
               its CUDA kernels, ~70 s)
    scene      gpu_scene_check.py: 3DGS on lego 400x400, 7,000 steps, main.py vs a bare gsplat loop
    difix_ref  random_difix_ref.py: a random SD-Turbo-size fixer in nvidia/difix_ref's layout (reused
               when already written in --work)
    user       gpu_user_path.py: configs/scene.yaml shortened (3DGS to 2,000 steps, a progressive fix
               every 500 steps to 4,000) with that fixer, then test and predict
    realtime   bench_realtime.py: render + fix fps at 1024x576 (SD-Turbo size, random weights, eager)
    fixer      bench_fixer.py: SD-Turbo size at 576x1024, one reference, bf16, eager and compiled,
               and one view's VAE encoding alone
    train_full, train_lora8, train_gc, train_lora8_gc
               gpu_train_step.py: one DifixModule step at 576x1024, bf16-mixed, per setting
    nerf       nerf_lego.py at 400x400 on CUDA, training capped at 4 minutes (not in the two runs)

Each part runs in its own process, killed (with its children) at its limit or when ``--budget``
seconds have passed since the start; its exit code (124: stopped at its limit, or not started
when too little budget was left), seconds, result and the end of its log land in
OUT/gpu_check.json, rewritten after every part; OUT/gpu_check.log gets every part's whole log.
With ``--dry-run`` every part runs in this process on the CPU, its GPU command line with options
appended that shrink it (the ``--smoke`` of each script), which is what
tests/tools/test_gpu_check.py does: a GPU run does not fail on a typo, a missing file or a
renamed option.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from datamodules.files.json_io import write_json_atomic  # noqa: E402

TRAIN_SETTINGS = ("full", "lora8", "gc", "lora8_gc")
PACKAGES = ("torch", "torchvision", "lightning", "diffusers", "transformers", "peft", "gsplat", "jsonargparse",
            "lpips", "imageio-ffmpeg", "huggingface-hub", "safetensors")


@dataclass
class Context:
    scene: str
    work: Path
    dry_run: bool

    @property
    def results(self) -> Path:
        """The parts' own result files (merged into OUT/gpu_check.json)."""
        return self.work / "results"

    def fixer_dir(self) -> Path:
        return self.work / ("difix_ref_tiny" if self.dry_run else "difix_ref_sd-turbo")


@dataclass
class Part:
    """One part: a script, its GPU arguments, what the dry run appends to them, a limit, a result file.

    The dry run parses the GPU arguments themselves; the options it appends (argparse and the
    CLI keep the last of a repeated option) only shrink the sizes and move the part to the CPU.
    """

    name: str
    limit_s: int
    script: str
    gpu: Callable[[Context], list[str]]
    dry: Callable[[Context], list[str]] = lambda c: []
    result: str | None = None  # a JSON file the part writes in OUT
    needs_fixer: bool = False


def _train(setting: str) -> Part:
    return Part(f"train_{setting}", 80, "gpu_train_step.py",
                lambda c: ["--fixer-dir", str(c.fixer_dir()), "--setting", setting,
                           "--out", str(c.results / f"train_{setting}.json")],
                lambda c: ["--smoke"], result=f"train_{setting}.json", needs_fixer=True)


def _parts() -> dict[str, Part]:
    parts = [
        Part("tests", 240, "pytest", lambda c: ["-m", "gpu", "-q", "-p", "no:cacheprovider",
                                                f"--junitxml={c.results / 'tests.xml'}"]),
        Part("scene", 270, "gpu_scene_check.py",
             lambda c: ["--scene", c.scene, "--steps", "7000", "--out", str(c.results / "scene.json")],
             lambda c: ["--smoke"], result="scene.json"),
        Part("difix_ref", 150, "random_difix_ref.py",
             lambda c: ["--config", "sd-turbo", "--out", str(c.fixer_dir()), "--json", str(c.results / "difix_ref.json")],
             lambda c: ["--config", "tiny"], result="difix_ref.json"),
        Part("user", 240, "gpu_user_path.py",
             lambda c: ["--scene", c.scene, "--fixer-dir", str(c.fixer_dir()), "--work", str(c.work / "user"),
                        "--out", str(c.results / "user.json")],
             lambda c: ["--smoke"], result="user.json", needs_fixer=True),
        Part("realtime", 100, "bench_realtime.py",
             lambda c: ["--device", "cuda", "--sizes", "1024x576", "--fixer", "arch:sd-turbo"],
             lambda c: ["--device", "cpu", "--sizes", "24x16", "--fixer", "arch:tiny", "--gaussians", "300",
                        "--frames", "1", "--warmup", "0"]),
        Part("fixer", 240, "bench_fixer.py",
             lambda c: ["--config", "sd-turbo", "--sizes", "576x1024", "--refs", "1", "--device", "cuda", "--dtype",
                        "bfloat16", "--compile", "both", "--encode", "--json", str(c.results / "fixer.json")],
             lambda c: ["--config", "tiny", "--sizes", "32x64", "--device", "cpu", "--compile-backend", "eager",
                        "--iters", "1"], result="fixer.json"),
        *[_train(s) for s in TRAIN_SETTINGS],
        Part("nerf", 420, "nerf_lego.py",
             lambda c: ["--scene", c.scene, "--threads", "8", "--name", "nerf_lego_gpu", "--out", str(c.results / "nerf.json"),
                        "--", "--trainer.accelerator=gpu", "--data.init_args.read.downscale=1",
                        "--model.init_args.num_rays=8192", "--model.init_args.eval_chunk=65536",
                        "--trainer.max_steps=20000", "--trainer.max_time=00:00:04:00"],
             lambda c: ["--trainer.accelerator=cpu", "--trainer.max_steps=2", "--data.init_args.read.downscale=8",
                        "--model.init_args.num_rays=256", "--model.init_args.eval_chunk=4096"], result="nerf.json"),
    ]
    return {p.name: p for p in parts}


PARTS = _parts()
DEFAULT_PARTS = ["tests", "scene", "train", "user", "realtime", "fixer"]  # a-e of issue 31; nerf on request


def expand(names: list[str]) -> list[str]:
    """Part names in order, "train" expanded, difix_ref inserted before the first part that needs it."""
    out: list[str] = []
    for name in names:
        for part in ([f"train_{s}" for s in TRAIN_SETTINGS] if name == "train" else [name]):
            if part not in PARTS:
                raise SystemExit(f"gpu_check: unknown part {part!r}; known: {', '.join(['train', *PARTS])}")
            if PARTS[part].needs_fixer and "difix_ref" not in out:
                out.append("difix_ref")
            if part not in out:
                out.append(part)
    return out


def device_info() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"python": sys.version.split()[0], "torch": torch.__version__,
                            "cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available()}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update({"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1)})
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {**info, "packages": versions, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def command(part: Part, ctx: Context) -> list[str]:
    if part.script == "pytest":
        return [sys.executable, "-m", "pytest", *part.gpu(ctx)]
    return [sys.executable, str(REPO / "benchmarks" / part.script), *part.gpu(ctx)]


def run_process(cmd: list[str], log: Path, timeout: float) -> int:
    """Runs cmd in its own process group, output to log; at the timeout the whole group is killed (124)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    with open(log, "w") as stream:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=stream, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return 124


@contextlib.contextmanager
def output_to(log: Path) -> Iterator[None]:
    """This process's stdout and stderr (the file descriptors: logging handlers that an earlier
    part bound to sys.stderr write there too) go to `log` inside the block."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log, "w") as stream:
        os.dup2(stream.fileno(), 1)
        os.dup2(stream.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def run_in_process(part: Part, ctx: Context, log: Path) -> int:
    """The dry run: the script's main(argv) in this process, its output to log."""
    with output_to(log):
        try:
            if part.script == "pytest":
                print("dry run: `pytest -m gpu` is not run here (the default suite collects every test file)")
                return 0
            spec = importlib.util.spec_from_file_location(Path(part.script).stem, REPO / "benchmarks" / part.script)
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module  # as for `python script.py`: its dataclasses find their module
            spec.loader.exec_module(module)
            module.main([*part.gpu(ctx), *part.dry(ctx)])
            return 0
        except SystemExit as err:
            return err.code if isinstance(err.code, int) else 1
        except Exception:  # noqa: BLE001 - a failing part is recorded and the next one runs
            traceback.print_exc()
            return 1


def part_result(part: Part, ctx: Context, log: Path) -> Any:
    """What the part measured: its JSON file, the test counts, else the last lines of its log."""
    if part.result and (ctx.results / part.result).is_file():
        return json.loads((ctx.results / part.result).read_text())
    if part.name == "tests" and (ctx.results / "tests.xml").is_file():
        import xml.etree.ElementTree as ET

        root = ET.parse(ctx.results / "tests.xml").getroot()
        suite = root.find("testsuite") if root.tag == "testsuites" else root
        return {k: suite.get(k) for k in ("tests", "failures", "errors", "skipped", "time")}
    return log_tail(log, 12)


def log_tail(log: Path, n: int) -> list[str]:
    lines = log.read_text(errors="replace").splitlines() if log.is_file() else []
    return [line[-400:] for line in lines if line.strip()][-n:]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scene", required=True, help="lego_blender_400 (or a part of it; see docs/RESULTS.md)")
    p.add_argument("--out", type=Path, required=True, help="gpu_check.json and gpu_check.log, nothing else (what "
                                                         "comes back from the device: 8 files at most)")
    p.add_argument("--work", type=Path, default=Path("/tmp/gpu_check"), help="the fixer folder, runs, the parts' "
                                                                             "own results and logs")
    p.add_argument("--parts", default=" ".join(DEFAULT_PARTS), help="space- or comma-separated part names")
    p.add_argument("--budget", type=float, default=None, help="seconds for all parts together")
    p.add_argument("--min-part-s", type=float, default=30.0, help="a part with less budget left is not started")
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes, every part in this process")
    a = p.parse_args(argv)
    ctx = Context(a.scene, a.work, a.dry_run)
    for folder in (a.out, ctx.results, a.work / "logs"):
        folder.mkdir(parents=True, exist_ok=True)
    (a.out / "gpu_check.log").write_text("")
    names = expand(a.parts.replace(",", " ").split())
    merged: dict[str, Any] = {"device": device_info(), "dry_run": a.dry_run, "parts": {}}
    start = time.monotonic()
    for name in names:
        part = PARTS[name]
        log = a.work / "logs" / f"{name}.log"
        left = None if a.budget is None else a.budget - (time.monotonic() - start)
        limit = part.limit_s if left is None else min(part.limit_s, left - 5)
        if part.needs_fixer and merged["parts"].get("difix_ref", {}).get("exit"):
            entry = {"exit": None, "seconds": 0, "result": "not run: difix_ref failed"}
        elif not a.dry_run and limit < a.min_part_s:
            entry = {"exit": 124, "seconds": 0, "result": f"not run: {max(left or 0, 0):.0f} s of the budget left"}
        else:
            print(f"=== {name} (limit {limit:.0f} s)", flush=True)
            for stale in (part.result, "tests.xml" if name == "tests" else None):  # an earlier run's
                if stale:
                    (ctx.results / stale).unlink(missing_ok=True)
            t0 = time.monotonic()
            rc = run_in_process(part, ctx, log) if a.dry_run else run_process(command(part, ctx), log, limit)
            entry = {"exit": rc, "seconds": round(time.monotonic() - t0, 1), "limit_s": round(limit),
                     "result": part_result(part, ctx, log), "log_tail": log_tail(log, 40 if rc else 4)}
            with open(a.out / "gpu_check.log", "a") as merged_log:  # every part's whole log, in one file
                merged_log.write(f"===== {name}: exit {rc}\n{log.read_text(errors='replace')}\n")
            print(f"=== {name}: exit {rc} after {entry['seconds']} s", flush=True)
        merged["parts"][name] = entry
        write_json_atomic(a.out / "gpu_check.json", merged, indent=2)
    print(json.dumps(merged, indent=2))
    return merged


if __name__ == "__main__":
    main()
