"""Forward + backward speed and peak memory of `render` per backend.

Scene (fixed in world units, so a higher resolution means bigger footprints, as
when a trained scene is rendered larger): one pinhole camera at the origin looking
down +z with fx = fy = 0.9 * width (a ~58 degree field of view). N Gaussians are
uniform in the view frustum (1.1x wider than the image) between depths 2 and 6;
rotations are random; scales are log-normal (sigma 0.5 per axis) around
``s0 = (4 / 0.9) * sqrt(overlap / (4 pi N))``, the size at which the 2-sigma
discs of N Gaussians at depth 4 would cover the image ``overlap`` times
(default 10), so the depth complexity stays realistic whatever N is.
Opacities are uniform in [0.05, 1], colours degree-0 RGB uniform in [0, 1].
The loss is the sum of colours times fixed random weights plus the alpha sum.

Each case runs in its own subprocess so peak RSS (``ru_maxrss``) belongs to that
case; "+MB" is the peak minus the RSS measured just before the first render
(for gsplat: peak CUDA memory allocated). "pairs" counts the (pixel, Gaussian)
pairs the torch backend composited. On a shared machine, compare "cpu ms" at
``--threads 1``: with 2 threads on 2 busy cores, OpenMP barriers inflate wall time.

    python benchmarks/bench_render.py                      # N in {2k, 10k, 50k} x {64, 128, 256}
    python benchmarks/bench_render.py --n 10000 --res 128 --threads 2 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def make_scene(n: int, res: int, overlap: float, seed: int = 0, device: str = "cpu") -> dict:
    """The random scene described in the module docstring, as `render` keyword arguments."""
    import torch

    g = torch.Generator().manual_seed(seed)
    f = 0.9 * res
    z = torch.rand(n, generator=g) * 4.0 + 2.0
    half = 0.5 * res / f * 1.1
    x = (torch.rand(n, generator=g) * 2 - 1) * half * z
    y = (torch.rand(n, generator=g) * 2 - 1) * half * z
    s0 = (4.0 / 0.9) * math.sqrt(overlap / (4 * math.pi * n))
    scene = dict(
        means=torch.stack([x, y, z], -1),
        quats=torch.randn(n, 4, generator=g),
        scales=s0 * torch.exp(0.5 * torch.randn(n, 3, generator=g)),
        opacities=torch.rand(n, generator=g) * 0.95 + 0.05,
        colors=torch.rand(n, 3, generator=g),
        viewmats=torch.eye(4)[None],
        Ks=torch.tensor([[[f, 0, res / 2], [0, f, res / 2], [0, 0, 1]]]),
    )
    return {k: v.to(device) for k, v in scene.items()}


def run_case(backend: str, n: int, res: int, threads: int, repeats: int, overlap: float) -> dict:
    """Time fwd+bwd of one case in this process; returns a JSON-able dict."""
    import resource

    import torch

    sys.path.insert(0, str(REPO))
    from lightning_modules.scene.gaussians.rasterize import render

    torch.set_num_threads(threads)
    device = "cuda" if backend == "gsplat" else "cpu"
    scene = make_scene(n, res, overlap, device=device)
    leaves = {k: v.requires_grad_(k not in ("viewmats", "Ks")) for k, v in scene.items()}
    weights = torch.randn(1, res, res, 3, generator=torch.Generator().manual_seed(1)).to(device)

    def step() -> dict:
        for v in leaves.values():
            v.grad = None
        col, alp, info = render(**leaves, width=res, height=res, backend=backend)
        info["means2d"].retain_grad()
        ((col * weights).sum() + alp.sum()).backward()
        if device == "cuda":
            torch.cuda.synchronize()
        return info

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    info = step()  # warm-up (and gsplat's JIT build)
    times, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = {
        "backend": backend, "n": n, "res": res,
        "ms": 1000 * sorted(times)[len(times) // 2], "ms_min": 1000 * min(times),
        "cpu_ms": 1000 * sorted(cpu)[len(cpu) // 2],
        "visible": int((info["radii"] > 0).all(-1).sum()),
        "pairs": int(info.get("n_pairs", -1)),
        "peak_rss_mb": rss1, "extra_mb": rss1 - rss0,
    }
    if device == "cuda":
        out["extra_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, nargs="+", default=[2000, 10000, 50000], help="Gaussian counts")
    p.add_argument("--res", type=int, nargs="+", default=[64, 128, 256], help="square image sizes")
    p.add_argument("--backends", nargs="+", default=None, help="default: torch, plus gsplat with CUDA")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads for CPU cases")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per case (median reported)")
    p.add_argument("--overlap", type=float, default=10.0, help="depth complexity of the scene")
    p.add_argument("--case", default=None, help=argparse.SUPPRESS)  # internal: run one case
    args = p.parse_args()

    if args.case is not None:
        backend, n, res = args.case.split(",")
        print(json.dumps(run_case(backend, int(n), int(res), args.threads, args.repeats, args.overlap)))
        return

    backends = args.backends
    if backends is None:
        import torch

        backends = ["torch"] + (["gsplat"] if torch.cuda.is_available() else [])
    import os

    print(f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}; "
          f"threads={args.threads}; wall = median / min of {args.repeats} runs; cpu = process CPU time "
          "(all threads; with --threads 1 it is a contention-robust speed figure)")
    print(f"{'backend':8} {'N':>7} {'res':>5} {'wall ms':>9} {'min ms':>8} {'cpu ms':>8} {'visible':>8} "
          f"{'pairs':>9} {'peak RSS MB':>12} {'+MB':>7}")
    for backend in backends:
        for n in args.n:
            for res in args.res:
                cmd = [sys.executable, __file__, "--case", f"{backend},{n},{res}",
                       "--threads", str(args.threads), "--repeats", str(args.repeats),
                       "--overlap", str(args.overlap)]
                proc = subprocess.run(cmd, capture_output=True, text=True)
                if proc.returncode != 0:
                    print(f"{backend:8} {n:>7} {res:>5} failed: {proc.stderr.strip().splitlines()[-1:]}")
                    continue
                r = json.loads(proc.stdout.strip().splitlines()[-1])
                print(f"{backend:8} {n:>7} {res:>5} {r['ms']:>9.1f} {r['ms_min']:>8.1f} {r['cpu_ms']:>8.1f} {r['visible']:>8} "
                      f"{r['pairs']:>9} {r['peak_rss_mb']:>12.0f} {r['extra_mb']:>7.0f}", flush=True)


if __name__ == "__main__":
    main()
