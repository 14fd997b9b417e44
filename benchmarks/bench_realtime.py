"""Frames per second of a scene's render alone and render + Difix3D+ fix (the paper's
real-time claim), along an orbit around the scene.

    python benchmarks/bench_realtime.py --sizes 128x128 256x256                # CPU, random 3DGS, tiny fixer
    python benchmarks/bench_realtime.py --scene run/checkpoints/last.ckpt --fixer tiny
    python benchmarks/bench_realtime.py --device cuda --dtype bfloat16 --sizes 576x1024 --fixer arch:sd-turbo

Scene: a scene checkpoint or .ply (``--scene``), or ``--gaussians N`` random Gaussians.
Fixer: a fixer name for ``ReadyFixer`` (nvidia/difix_ref, DifixModule .ckpt, exported weights, "tiny"), or
``arch:tiny`` / ``arch:sd-turbo`` (random weights in that architecture: the speed of the real
thing without its download). References: the checkpoint's nearest training views, else
``--refs`` random images on a ring of cameras. On CUDA the scene renders with gsplat and
every timing synchronises the device. Prints one table; ms are per frame (batch 1).
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks.console_table import print_rows  # noqa: E402
from callbacks.post_render_fix import NearestViewFix, reference_views_from_checkpoint  # noqa: E402
from datamodules.cameras.cameras import Cameras  # noqa: E402
from datamodules.cameras.poses import look_at  # noqa: E402
from lightning_modules.difix.fixers.ready import ReadyFixer, ReferenceViews  # noqa: E402
from lightning_modules.difix.loading.base_models import net_from_config  # noqa: E402
from lightning_modules.scene.gaussians.module import GaussianSceneModule  # noqa: E402

DTYPES = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


def random_scene(num: int, device: torch.device):
    """A GaussianSceneModule of ``num`` random Gaussians in the unit cube (SH degree 0)."""
    from lightning_modules.scene.gaussians.splats import Gaussians

    g = Gaussians.random(num, 1.0, center=(0.0, 0.0, 0.0), sh_degree=0, init_opacity=0.5, init_scale=1.0,
                         generator=torch.Generator().manual_seed(0))
    return GaussianSceneModule.from_splats(g.raw(), sh_degree=0, scene_scale=1.0).to(device).eval()


def orbit(n: int, radius: float, width: int, height: int, fov_deg: float = 50.0) -> Cameras:
    """``n`` cameras on a horizontal circle (z up) looking at the origin."""
    angles = torch.arange(n) * (2 * math.pi / max(n, 1))
    eyes = torch.stack([radius * angles.cos(), radius * angles.sin(), torch.full((n,), 0.3 * radius)], dim=1)
    focal = height / 2 / math.tan(math.radians(fov_deg) / 2)
    K = torch.tensor([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]])
    return Cameras.from_c2w(look_at(eyes, torch.zeros(3)), K, width, height)


def build_fixer(spec: str, dtype: str, seed: int = 0) -> ReadyFixer:
    """The fixer a spec names, in `dtype` on the renders' device (arch:NAME: random weights)."""
    from lightning_modules.difix.fixers.spec import FixerSpec

    if spec.startswith("arch:"):
        return ReadyFixer.around(net_from_config(spec.split(":", 1)[1], seed=seed), name=spec, dtype=dtype)
    return ReadyFixer(FixerSpec(name=spec, dtype=dtype))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_path(scene, fix: NearestViewFix | None, cameras: Cameras, warmup: int, device: torch.device) -> tuple[list[float], list[float]]:
    """Per-frame render ms and fix ms (empty without a fix) over the path, after warm-up frames."""
    render_ms, fix_ms = [], []
    with torch.inference_mode():
        for i in range(len(cameras)):
            cam = cameras[i].to(device)
            sync(device)
            start = time.perf_counter()
            rgb, _ = scene.render_views(cam)
            sync(device)
            mid = time.perf_counter()
            if fix is not None:
                fix(rgb, cam)
                sync(device)
            end = time.perf_counter()
            if i >= warmup:
                render_ms.append((mid - start) * 1e3)
                if fix is not None:
                    fix_ms.append((end - mid) * 1e3)
    return render_ms, fix_ms


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scene", default=None, help="scene .ckpt or .ply (default: random Gaussians)")
    p.add_argument("--module-class", default=None, help="dotted class of a non-Gaussian scene checkpoint")
    p.add_argument("--gaussians", type=int, default=20_000, help="random Gaussians when no --scene")
    p.add_argument("--sizes", nargs="+", default=None, help="WxH sizes (default: 128x128 256x256 on CPU, "
                                                            "576x1024 on CUDA)")
    p.add_argument("--fixer", default=None, help="fixer spec or arch:tiny / arch:sd-turbo (default: tiny on CPU, "
                                                 "arch:sd-turbo on CUDA)")
    p.add_argument("--refs", type=int, default=1, help="reference views per frame")
    p.add_argument("--frames", type=int, default=6, help="timed frames per size")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto", choices=["auto", *sorted(DTYPES)],
                   help="fixer weights' dtype (auto: bfloat16 on CUDA, float32 on the CPU)")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from lightning_modules.scene.open_scene import open_scene, scene_device

    device = scene_device(args.device)
    cuda = device.type == "cuda"
    sizes = args.sizes or (["1024x576"] if cuda else ["128x128", "256x256"])
    fixer_spec = args.fixer or ("arch:sd-turbo" if cuda else "tiny")
    dtype_name = args.dtype

    start = time.perf_counter()
    scene = open_scene(args.scene, args.module_class, device) if args.scene else random_scene(args.gaussians, device)
    refs = reference_views_from_checkpoint(args.scene) if args.scene and args.scene.endswith(".ckpt") else None
    if refs is None:
        ring = orbit(8, 2.5 * float(scene.scene_scale), 64, 64)
        gen = torch.Generator().manual_seed(0)
        refs = ReferenceViews(ring, [torch.rand(3, 64, 64, generator=gen) for _ in range(len(ring))])
    fix = NearestViewFix(build_fixer(fixer_spec, dtype_name), refs, num_refs=args.refs)
    size_note = f" ({len(scene.gaussians)} Gaussians)" if isinstance(scene, GaussianSceneModule) else ""
    print(f"# scene {args.scene or 'random'}{size_note} on {device}, fixer {fixer_spec} "
          f"({sum(q.numel() for q in fix.fixer.net.parameters()) / 1e6:.1f} M params, {dtype_name}), "
          f"K={args.refs}, set up in {time.perf_counter() - start:.1f} s", file=sys.stderr)

    rows = []
    for size in sizes:
        w, h = (int(v) for v in size.lower().split("x"))
        cameras = orbit(args.frames + args.warmup, 2.5 * float(scene.scene_scale), w, h)
        render_only, _ = time_path(scene, None, cameras, args.warmup, device)
        render_ms, fix_ms = time_path(scene, fix, cameras, args.warmup, device)
        r, f = statistics.median(render_only), statistics.median(fix_ms)
        rows.append((f"{w}x{h}", device.type, f"{r:.1f}", f"{f:.1f}", f"{1e3 / r:.1f}",
                     f"{1e3 / (statistics.median(render_ms) + f):.1f}"))
    print_rows(("size", "device", "render ms", "fix ms", "fps render", "fps render+fix"), rows,
               f"median of {args.frames} frames after {args.warmup} warm-up")


if __name__ == "__main__":
    main()
