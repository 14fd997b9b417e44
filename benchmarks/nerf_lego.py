"""NeRF on lego 100x100: test PSNR / SSIM and the fit and test seconds of ``configs/demo/nerf_lego.yaml``.

Runs ``main.py fit`` then ``main.py test`` on the last checkpoint, each in its own process with
``OMP_NUM_THREADS`` threads (the target: 2 idle cores), and prints one line plus the load
average before and after (a busy machine inflates both times). Needs the research scene
``../shared/data/lego_blender_400`` (or ``--scene``).

    python benchmarks/nerf_lego.py                         # the config as shipped
    python benchmarks/nerf_lego.py --out outputs/nerf_lego/bench.json -- --trainer.max_steps=1000
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from datamodules.files.json_io import write_json_atomic  # noqa: E402


def _run(args: list[str], threads: int, log: Path) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OMP_WAIT_POLICY": "PASSIVE", "PYTHONPATH": str(REPO)}
    start = time.perf_counter()
    with open(log, "a") as out:
        done = subprocess.run([sys.executable, str(REPO / "main.py"), *args], cwd=REPO, env=env, stdout=out,
                              stderr=subprocess.STDOUT)
    if done.returncode != 0:
        sys.exit(f"nerf_lego: {' '.join(args[:3])} failed (exit {done.returncode}); see {log}")
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/demo/nerf_lego.yaml")
    p.add_argument("--scene", default=None, help="lego folder (default: the config's)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--name", default="nerf_lego_bench", help="run name under lightning_logs/")
    p.add_argument("--out", type=Path, default=None, help="also write the numbers as JSON here")
    p.add_argument("overrides", nargs="*", help="after --: extra LightningCLI arguments for both commands")
    a = p.parse_args(argv)
    out_dir = REPO / "outputs" / a.name
    common = ["--config", a.config, "--trainer.logger.init_args.name=" + a.name, "--trainer.logger.init_args.version=0",
              f"--model.init_args.output_dir={out_dir}", "--trainer.enable_progress_bar=false", *a.overrides]
    if a.scene:
        common.append(f"--data.init_args.path={a.scene}")
    log = out_dir / "bench.log"
    out_dir.mkdir(parents=True, exist_ok=True)
    log.write_text("")
    load_before = os.getloadavg()
    fit_s = _run(["fit", *common], a.threads, log)
    ckpt = REPO / "lightning_logs" / a.name / "version_0" / "checkpoints" / "last.ckpt"
    test_s = _run(["test", *common, f"--ckpt_path={ckpt}"], a.threads, log)
    metrics = json.loads((out_dir / "metrics.json").read_text())
    row = {"psnr": metrics["mean"]["psnr"], "ssim": metrics["mean"]["ssim"], "views": len(metrics["per_view"]),
           "steps": metrics["step"], "fit_s": round(fit_s, 1), "test_s": round(test_s, 1),
           "load_before": [round(x, 2) for x in load_before], "load_after": [round(x, 2) for x in os.getloadavg()],
           "threads": a.threads}
    print(f"NeRF lego 100x100 ({row['views']} test views, {row['steps']} steps, {a.threads} threads): "
          f"PSNR {row['psnr']:.2f} dB  SSIM {row['ssim']:.3f}  fit {fit_s:.0f} s  test {test_s:.0f} s  "
          f"(load {row['load_before'][0]:.1f} before, {row['load_after'][0]:.1f} after)")
    if a.out is not None:
        write_json_atomic(a.out, row, indent=2)
    return row


if __name__ == "__main__":
    main()
