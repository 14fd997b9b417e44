"""Difix3D+ the way a user runs it: ``configs/scene.yaml`` shortened, then ``test`` and ``predict``.

``configs/scene.yaml`` as shipped (gsplat's 3DGS, the progressive fix with a fixer folder in
NVIDIA's published ``nvidia/difix_ref`` layout, the Difix3D+ post-render fix at test and in the
predict videos), shortened: 3DGS alone for ``--gsplat-steps`` (densifying until then), then a
progressive fix every ``--fix-every`` steps until ``--max-steps``. The three stages run through
the CLI's own parser and trainer in this process (``fit``, then ``test`` and ``predict`` from the
last checkpoint), so the times are read here without changing the callback: the callback's
``run_fix`` and the post-render fix the scene module is handed are wrapped by timers that
synchronise the device. Writes one JSON after each stage: seconds per progressive round (the
first includes loading the fixer) and per fixed view (render + fix), post-render fix ms per
view and per video frame, peak GPU memory per stage, test metrics, the videos written.

    python benchmarks/random_difix_ref.py --out /tmp/difix_ref_sd-turbo
    python benchmarks/gpu_user_path.py --scene data/lego --fixer-dir /tmp/difix_ref_sd-turbo --out user.json
    python benchmarks/gpu_user_path.py --scene SCENE --fixer-dir /tmp/difix_ref_tiny --smoke   # CPU, tiny

With random fixer weights the metrics of the fixed renders mean nothing; the times are those of
the real fixer's size.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from datamodules.files.json_io import write_json_atomic  # noqa: E402


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _peak_gib() -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None


def _reset_peak() -> None:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def cli_args(a: argparse.Namespace, work: Path, cuda: bool) -> list[str]:
    """``configs/scene.yaml`` with the shortened schedule, the fixer folder and the scene."""
    return ["--config", str(REPO / "configs" / "scene.yaml"), f"--trainer.max_steps={a.max_steps}",
            f"--trainer.accelerator={'gpu' if cuda else 'cpu'}", "--trainer.enable_progress_bar=false",
            f"--trainer.logger.init_args.save_dir={work}", f"--trainer.callbacks.fixer={a.fixer_dir}",
            f"--trainer.callbacks.start_step={a.gsplat_steps}", f"--trainer.callbacks.fix_every_n_steps={a.fix_every}",
            f"--data.init_args.path={a.scene}", "--data.init_args.read.format=blender",
            f"--data.init_args.read.downscale={a.downscale}", "--data.init_args.background=[1.0, 1.0, 1.0]",
            f"--model.init_args.output_dir={work / 'out'}", "--model.init_args.init.type=random",
            f"--model.init_args.strategy.init_args.refine_stop_iter={a.gsplat_steps}",
            "--model.init_args.evaluation.pretrained_metrics=false", *a.extra]


class Timers:
    """Wall times of the progressive rounds and of every post-render fix call (device synchronised)."""

    def __init__(self) -> None:
        self.rounds: list[dict[str, Any]] = []
        self.fix_calls: list[tuple[int, float]] = []
        self.first_round_at: float | None = None

    def wrap_rounds(self, callback: Any) -> None:
        run_fix = callback.run_fix

        def timed(trainer: Any, pl_module: Any) -> None:
            _sync()
            start = time.perf_counter()
            self.first_round_at = self.first_round_at or start
            run_fix(trainer, pl_module)
            _sync()
            novel = getattr(callback, "novel_c2w", None)
            self.rounds.append({"step": int(trainer.global_step), "seconds": round(time.perf_counter() - start, 3),
                                "views": None if novel is None else int(len(novel))})

        callback.run_fix = timed

    def wrap_post_render_fix(self, module: Any) -> None:
        install = module.set_post_render_fix

        def set_fix(fix: Callable | None) -> None:
            if fix is None:
                return install(None)

            def timed(images: torch.Tensor, cameras: Any) -> torch.Tensor:
                _sync()
                start = time.perf_counter()
                out = fix(images, cameras)
                _sync()
                self.fix_calls.append((len(images), time.perf_counter() - start))
                return out

            return install(timed)

        module.set_post_render_fix = set_fix

    def take_fix_ms_per_view(self) -> tuple[int, float | None]:
        """(views fixed, ms per view) since the last call."""
        n, seconds = sum(c[0] for c in self.fix_calls), sum(c[1] for c in self.fix_calls)
        self.fix_calls = []
        return n, (round(1e3 * seconds / n, 2) if n else None)


def run(a: argparse.Namespace, work: Path, out: Path | None) -> dict:
    from lightning.pytorch.callbacks import ModelCheckpoint

    from difix3d.cli import cli_main

    cuda = torch.cuda.is_available() and not a.smoke
    result: dict[str, Any] = {"device": torch.cuda.get_device_name() if cuda else "cpu", "torch": torch.__version__,
                              "schedule": {"gsplat_steps": a.gsplat_steps, "fix_every": a.fix_every,
                                           "max_steps": a.max_steps, "downscale": a.downscale},
                              "fixer_dir": str(a.fixer_dir)}

    def save() -> None:
        if out is not None:
            write_json_atomic(out, result, indent=2)

    with contextlib.redirect_stdout(io.StringIO()):
        cli = cli_main(cli_args(a, work, cuda), run=False)
    trainer, model, data = cli.trainer, cli.model, cli.datamodule
    timers = Timers()
    fix_callbacks = [c for c in trainer.callbacks if type(c).__name__ == "ProgressiveFixCallback"]
    if len(fix_callbacks) != 1:
        raise RuntimeError(f"configs/scene.yaml should hold one ProgressiveFixCallback, found {len(fix_callbacks)}")
    timers.wrap_rounds(fix_callbacks[0])
    timers.wrap_post_render_fix(model)

    _reset_peak()
    start = time.perf_counter()
    trainer.fit(model, datamodule=data)
    _sync()
    fit_s = time.perf_counter() - start
    rounds = timers.rounds
    later = [r["seconds"] for r in rounds[1:]] or [r["seconds"] for r in rounds]
    views = sum(r["views"] or 0 for r in rounds[1:]) or sum(r["views"] or 0 for r in rounds)
    result["fit"] = {"seconds": round(fit_s, 1), "peak_gpu_gib": _peak_gib(), "rounds": rounds,
                     "gsplat_phase_s": round(timers.first_round_at - start, 1) if timers.first_round_at else None,
                     "seconds_per_round": round(sum(later) / len(later), 2) if later else None,
                     "seconds_per_fixed_view": round(sum(later) / views, 4) if views else None,
                     "note": "rounds after the first (the first includes loading the fixer); a view = render + fix"}
    save()

    checkpoint = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)), None)
    ckpt = checkpoint.last_model_path if checkpoint is not None else ""
    if not ckpt:  # a run shorter than the config's checkpoint interval (the CPU smoke run)
        ckpt = str(work / "last.ckpt")
        trainer.save_checkpoint(ckpt)
    result["checkpoint"] = ckpt

    _reset_peak()
    start = time.perf_counter()
    trainer.test(model, datamodule=data, ckpt_path=ckpt, verbose=False)
    _sync()
    n, ms = timers.take_fix_ms_per_view()
    metrics = json.loads((work / "out" / "metrics.json").read_text())
    result["test"] = {"seconds": round(time.perf_counter() - start, 1), "peak_gpu_gib": _peak_gib(),
                      "views_fixed": n, "post_render_fix_ms_per_view": ms, "num_gaussians": metrics.get("num_gaussians"),
                      "mean": metrics.get("mean"), "mean_fixed": metrics.get("mean_fixed")}
    save()

    _reset_peak()
    start = time.perf_counter()
    trainer.predict(model, datamodule=data, ckpt_path=ckpt, return_predictions=False)
    _sync()
    n, ms = timers.take_fix_ms_per_view()
    videos = {p.name: p.stat().st_size for p in sorted((work / "out").rglob("*.mp4"))}
    result["predict"] = {"seconds": round(time.perf_counter() - start, 1), "peak_gpu_gib": _peak_gib(),
                         "images_fixed": n, "post_render_fix_ms_per_image": ms, "videos_bytes": videos}
    save()
    return result


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scene", required=True, help="a NeRF-synthetic folder (lego)")
    p.add_argument("--fixer-dir", type=Path, required=True, help="a fixer folder in the published layout")
    p.add_argument("--gsplat-steps", type=int, default=2000, help="3DGS alone (and densifying) until this step")
    p.add_argument("--fix-every", type=int, default=500)
    p.add_argument("--max-steps", type=int, default=4000)
    p.add_argument("--downscale", type=int, default=1)
    p.add_argument("--work", type=Path, default=None, help="logs, checkpoints, renders (default: a temporary folder)")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--smoke", action="store_true", help="CPU, 40 steps at half size, 4 video frames: checks the "
                                                        "script, not speed")
    p.add_argument("extra", nargs="*", help="after --: more LightningCLI arguments")
    a = p.parse_args(argv)
    if a.smoke:
        a.gsplat_steps, a.fix_every, a.max_steps, a.downscale = 20, 10, 40, 2
        a.extra = ["--model.init_args.init.num_points=500", "--model.init_args.predict.frames=4", *a.extra]
    with contextlib.ExitStack() as stack:
        work = a.work or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        result = run(a, work, a.out)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
