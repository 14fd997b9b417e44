"""Speed of one DifixNet forward (inference) in ms per image.

Random weights from constructor configs (`lightning_modules/difix/net/architectures.py`): "tiny" or
"sd-turbo" (SD-Turbo's architecture, nothing downloaded). K = number of reference views.

    python benchmarks/bench_fixer.py --config tiny --sizes 64 128 256 --refs 0 1
    python benchmarks/bench_fixer.py --config sd-turbo --sizes 512 --device cuda --dtype bfloat16
    # the paper's number (76 ms on an A100): SD-Turbo size, 576x1024, bf16, one reference
    python benchmarks/bench_fixer.py --config sd-turbo --sizes 576x1024 --refs 1 --device cuda \
        --dtype bfloat16 --compile both
    python benchmarks/bench_fixer.py --fixer nvidia/difix_ref --sizes 576x1024 --refs 1 --device cuda --dtype bfloat16

Prints one table (and with `--json`, writes its rows after each one, so a run stopped during
compilation keeps the eager rows). ms per image = wall time of one forward (batch of `--batch`
renders, each with K references) / batch; on CUDA the timing synchronises the device.
`--encode` adds a row per size and compile setting: the VAE encoding of one view alone, the
most that caching a reference view's encoding could save per call (DifixNet has no such cache:
the reference goes through the encoder and, jointly with the render, the UNet at every call).

On a CPU shared with other jobs, run with OMP_WAIT_POLICY=PASSIVE (or --threads 1): OpenMP's
default spin-waiting made 2-thread tiny forwards ~50x slower here under load (2.5 s vs 55 ms).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.console_table import print_rows  # noqa: E402
from lightning_modules.difix.net.net import DifixNet  # noqa: E402
from lightning_modules.difix.loading.base_models import net_from_config  # noqa: E402

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def parse_size(text: str) -> tuple[int, int]:
    """"256" -> (256, 256); "576x1024" -> (576, 1024) as (height, width)."""
    h, _, w = text.lower().partition("x")
    return int(h), int(w or h)


def compile_net(net: DifixNet, backend: str = "inductor") -> DifixNet:
    """torch.compile (in place, state-dict keys unchanged) of the UNet and the VAE encoder/decoder."""
    for module in (net.unet, net.vae.encoder, net.vae.decoder):
        module.compile(backend=backend)
    return net


def time_calls(call: Callable[[], object], warmup: int, iters: int, device: torch.device,
               dtype: torch.dtype) -> list[float]:
    """Per-iteration wall times (s) of call() under inference mode and autocast to `dtype`, after `warmup` calls."""
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
    times = []
    with torch.inference_mode(), autocast:
        for i in range(warmup + iters):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            call()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return times


def time_encode(net: DifixNet, size: tuple[int, int], warmup: int, iters: int, device: torch.device,
                dtype: torch.dtype) -> list[float]:
    """Per-iteration wall times (s) of the VAE encoding of one view at `size` (latent mean, as the net)."""
    image = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(0)).to(device) * 2 - 1
    image = image.to(next(net.vae.parameters()).dtype)
    return time_calls(lambda: net.vae.encode(image).latent_dist.mode(), warmup, iters, device, dtype)


def time_forward(net: DifixNet, size: tuple[int, int], k: int, batch: int, warmup: int, iters: int, device: torch.device,
                 dtype: torch.dtype) -> list[float]:
    """Per-iteration wall times (s) of net(images, refs) at size x size."""
    g = torch.Generator().manual_seed(0)
    images = torch.rand(batch, 3, *size, generator=g).to(device)
    refs = torch.rand(batch, k, 3, *size, generator=g).to(device) if k else None
    return time_calls(lambda: net(images, refs), warmup, iters, device, dtype)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", nargs="+", default=["tiny"], choices=["tiny", "sd-turbo"])
    parser.add_argument("--sizes", nargs="+", type=parse_size, default=["64", "128", "256"],
                        help="resolutions: 256 (square) or HxW, e.g. 576x1024")
    parser.add_argument("--fixer", default=None, help="a real fixer spec (e.g. nvidia/difix_ref) instead of --config")
    parser.add_argument("--compile", choices=["off", "on", "both"], default="off",
                        help="torch.compile the UNet and VAE (both: time without and with)")
    parser.add_argument("--compile-backend", default="inductor", help="torch.compile backend (eager: trace only)")
    parser.add_argument("--encode", action="store_true", help="also time the VAE encoding of one view alone")
    parser.add_argument("--json", type=Path, default=None, help="write the rows here, after each one")
    parser.add_argument("--refs", nargs="+", type=int, default=[0, 1], help="numbers of reference views K")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES),
                        help="autocast dtype (float32 = no autocast)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = DTYPES[args.dtype]
    rows: list[tuple] = []
    header = ("config", "params", "size", "K", "device", "dtype", "compile", "ms/image", "min", "std")
    meta = {"torch": torch.__version__, "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "batch": args.batch, "iters": args.iters, "warmup": args.warmup, "compile_backend": args.compile_backend}

    def add_row(row: tuple) -> None:
        rows.append(row)
        if args.json is not None:
            from datamodules.files.json_io import write_json_atomic

            write_json_atomic(args.json, {**meta, "rows": [dict(zip(header, r)) for r in rows]}, indent=2)

    sizes = [parse_size(s) if isinstance(s, str) else s for s in args.sizes]
    compiled = {"off": [False], "on": [True], "both": [False, True]}[args.compile]
    for config in [args.fixer] if args.fixer else args.config:
        start = time.perf_counter()
        if args.fixer:
            from lightning_modules.difix.fixers.sources import build_difix_net

            net = build_difix_net(args.fixer).eval().requires_grad_(False).to(device)
        else:
            net = net_from_config(config, seed=0).eval().to(device)
        build_s = time.perf_counter() - start
        n_params = sum(p.numel() for p in net.parameters()) / 1e6
        for use_compile in compiled:
            if use_compile:
                compile_net(net, args.compile_backend)  # the first warm-up iterations include compilation
            for size in sizes:
                for k in args.refs:
                    t = time_forward(net, size, k, args.batch, args.warmup, args.iters, device, dtype)
                    add_row(_row(config, n_params, size, k, args, use_compile, [1000 * x / args.batch for x in t]))
                if args.encode:
                    t = time_encode(net, size, args.warmup, args.iters, device, dtype)
                    add_row(_row(config, n_params, size, "encode 1 view", args, use_compile, [1000 * x for x in t]))
        print(f"# built {config} in {build_s:.1f} s", file=sys.stderr)
        del net

    print_rows(("config", "params", "size", "K", "device", "dtype", "compile", "ms/image", "min", "std"), rows,
               f"batch {args.batch}, {args.iters} iters after {args.warmup} warm-up")


def _row(config: str, n_params: float, size: tuple[int, int], k: int | str, args: argparse.Namespace,
         compiled: bool, ms: list[float]) -> tuple:
    return (config, f"{n_params:.1f}M", f"{size[0]}x{size[1]}", k, args.device, args.dtype, "yes" if compiled else "no",
            f"{statistics.mean(ms):.1f}", f"{min(ms):.1f}", f"{statistics.pstdev(ms):.1f}")


if __name__ == "__main__":
    main()
