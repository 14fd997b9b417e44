"""What a 3DGS training step costs outside the rasterizer: the framework's overhead, on the CPU.

``GaussianSceneModule`` is fitted through the real ``main.py`` CLI (``configs/demo/scene.yaml``:
its datamodule, callbacks, finite guard, checkpointing and logging cadence) with the rasterizer
replaced by a stand-in that returns one precomputed render (its colours still depend on every
Gaussian parameter, so the backward pass, the six Adams and the densification strategy all run
on real gradients). What is left is everything a bare gsplat loop would not spend: data
drawing and collation, host-device copies, logging, the guard, Lightning's loop. A change to
that path shows here without a GPU.

    python benchmarks/bench_step_overhead.py                  # 300 steps, prints ms per step
    python benchmarks/bench_step_overhead.py --steps 500 --out outputs/overhead.json
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from lightning.pytorch import Callback  # noqa: E402

import lightning_modules.scene.gaussians.module as gaussian_module  # noqa: E402
from datamodules.files.json_io import write_json_atomic  # noqa: E402
from difix3d.cli import cli_main  # noqa: E402


class _StepClock(Callback):
    """Wall time of the steps after the first ``skip`` (start-up and the first allocations)."""

    def __init__(self, skip: int) -> None:
        self.skip, self.start, self.steps = skip, None, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # type: ignore[override]
        if trainer.global_step == self.skip:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # type: ignore[override]
        if self.start is not None:
            self.steps += 1

    @property
    def ms_per_step(self) -> float:
        return (time.perf_counter() - self.start) * 1000 / max(self.steps, 1)


def _stand_in(real_render):
    """A render function that rasterizes once, then returns that image on every call."""
    cache: dict[tuple, tuple[torch.Tensor, torch.Tensor, dict]] = {}

    def render(means, quats, scales, opacities, colors, viewmats, Ks, width, height, **kw):
        key = (len(viewmats), width, height)
        if key not in cache:
            with torch.no_grad():
                rgb, alpha, info = real_render(means, quats, scales, opacities, colors, viewmats, Ks, width, height, **kw)
            cache[key] = (rgb, alpha, info)
        rgb, alpha, info = cache[key]
        n = means.shape[0]
        # Every parameter reaches the output (zero-weighted) so that backward and the Adams run.
        tie = (means.sum() + quats.sum() + scales.sum() + opacities.sum() + colors.sum()) * 0.0
        means2d = torch.zeros(len(viewmats), n, 2, device=means.device, requires_grad=True)
        out = {**info, "means2d": means2d, "radii": torch.ones(len(viewmats), n, 2, dtype=torch.int32,
                                                                  device=means.device),
               "width": width, "height": height, "n_cameras": len(viewmats)}
        return rgb + tie + means2d.sum() * 0.0, alpha, out

    return render


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--skip", type=int, default=20, help="steps not timed (start-up)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--log-every", type=int, default=None, help="trainer.log_every_n_steps (default: the config's)")
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    gaussian_module.render = _stand_in(gaussian_module.render)
    clock = _StepClock(a.skip)
    with tempfile.TemporaryDirectory() as tmp:
        args = ["fit", "--config", "configs/demo/scene.yaml", f"--trainer.max_steps={a.steps}",
                "--trainer.enable_progress_bar=false", f"--trainer.logger.init_args.save_dir={tmp}",
                f"--data.init_args.path={tmp}/scene", "--data.init_args.procedural.num_views=12",
                "--data.init_args.procedural.size=64", f"--model.init_args.output_dir={tmp}/out",
                "--model.init_args.predict.frames=0", "--trainer.limit_val_batches=0"]
        if a.log_every is not None:
            args.append(f"--trainer.log_every_n_steps={a.log_every}")
        with contextlib.redirect_stdout(io.StringIO()):
            cli = cli_main(args[1:], run=False)
            cli.trainer.callbacks.append(clock)
            cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    row = {"ms_per_step_outside_render": round(clock.ms_per_step, 2), "steps_timed": clock.steps,
           "threads": a.threads, "log_every_n_steps": cli.trainer.log_every_n_steps, "num_gaussians": int(len(cli.model.gaussians)), "load": os.getloadavg()[0]}
    print(f"3DGS step outside the rasterizer: {row['ms_per_step_outside_render']:.2f} ms/step over {clock.steps} "
          f"steps ({a.threads} thread(s), logs every {row['log_every_n_steps']} steps, {row['num_gaussians']} Gaussians at the end, load {row['load']:.1f})")
    if a.out is not None:
        write_json_atomic(a.out, row, indent=2)
    return row


if __name__ == "__main__":
    os.chdir(Path(__file__).resolve().parents[1])
    main()
