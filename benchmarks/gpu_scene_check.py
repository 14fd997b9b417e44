"""3DGS on lego through the framework and through a bare gsplat loop: steps/s, memory, test PSNR.

(b) ``GaussianSceneModule`` through ``main.py`` (``configs/scene.yaml``'s schedule shortened
to ``--steps``, the fixer off: plain 3DGS), timed in this process so the peak GPU memory is
read; (c) the same steps in a loop written here: the same initial Gaussians
(``initial_gaussians``), learning rates and decay, gsplat's ``rasterization`` and its own
``DefaultStrategy``, six Adams, the images on the device from the start, no Lightning. The
ratio of their steps/s is the framework's overhead; their PSNR difference says the module
trains the same model. Writes one JSON.

    python benchmarks/gpu_scene_check.py --scene /data/lego_blender_400 --out $OUT/scene.json
    python benchmarks/gpu_scene_check.py --scene ../shared/data/lego_blender_400 --smoke   # CPU, tiny
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

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from datamodules.files.json_io import write_json_atomic  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def framework_run(scene: str, steps: int, downscale: int, device: torch.device, tmp: str, extra: list[str]) -> dict:
    """(b): fit + test through the CLI, in this process."""
    from difix3d.cli import cli_main

    args = ["--config", str(REPO / "configs/scene.yaml"), f"--trainer.max_steps={steps}",
            f"--trainer.accelerator={'gpu' if device.type == 'cuda' else 'cpu'}", "--trainer.enable_progress_bar=false",
            f"--trainer.logger.init_args.save_dir={tmp}", "--trainer.callbacks.fixer=identity",
            f"--data.init_args.path={scene}", "--data.init_args.read.format=blender",
            f"--data.init_args.read.downscale={downscale}", "--data.init_args.background=[1.0, 1.0, 1.0]",
            "--data.init_args.read.test_every=8", f"--model.init_args.output_dir={tmp}/out",
            "--model.init_args.init.type=random", "--model.init_args.predict.frames=0",
            "--model.init_args.evaluation.pretrained_metrics=false", *extra]
    with contextlib.redirect_stdout(io.StringIO()):
        cli = cli_main(args, run=False)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    _sync(device)
    fit_s = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)
    metrics = json.loads((Path(tmp) / "out" / "metrics.json").read_text())
    return {"steps": steps, "fit_s": round(fit_s, 1), "steps_per_s": round(steps / fit_s, 2),
            "peak_gpu_gib": round(peak, 2), "num_gaussians": metrics.get("num_gaussians"),
            "test_psnr": metrics["mean"]["psnr"], "test_ssim": metrics["mean"]["ssim"],
            "test_views": len(metrics["per_view"])}


def bare_run(scene: str, steps: int, downscale: int, device: torch.device, num_points: int = 100_000) -> dict:
    """(c): the same model and schedule in a plain loop on gsplat (the torch rasterizer on CPU)."""
    from datamodules.readers.scene_data import ReadOptions
    from datamodules.scene.datamodule import SceneDataModule
    from lightning_modules.scene.gaussians.initial import InitSettings, initial_gaussians
    from lightning_modules.scene.gaussians.losses import photometric_loss
    from lightning_modules.scene.gaussians.rasterize import render
    from lightning_modules.scene.metrics import ImageMetrics

    data = SceneDataModule(path=scene, read=ReadOptions(format="blender", downscale=downscale, test_every=8),
                           background=(1.0, 1.0, 1.0))
    data.setup("fit")
    setup = data.scene_setup()
    scale = float(setup.scene_scale)
    g = initial_gaussians(setup, scale, 3, InitSettings(type="random", num_points=num_points),
                          torch.Generator().manual_seed(0))
    splats = torch.nn.ParameterDict({k: torch.nn.Parameter(v.to(device)) for k, v in g.raw().items()})
    lrs = {"means": 1.6e-4 * scale, "scales": 5e-3, "quats": 1e-3, "opacities": 5e-2, "sh0": 2.5e-3, "shN": 1.25e-4}
    optimizers = {k: torch.optim.Adam([{"params": splats[k], "lr": lr, "name": k}], eps=1e-15) for k, lr in lrs.items()}
    decay = torch.optim.lr_scheduler.ExponentialLR(optimizers["means"], gamma=0.01 ** (1.0 / steps))
    from gsplat.strategy import DefaultStrategy  # gsplat's own (it runs on the CPU too)

    strategy = DefaultStrategy(refine_start_iter=500, refine_stop_iter=15_000, refine_every=100, reset_every=3000,
                               grow_grad2d=2e-4, verbose=False)
    state = strategy.initialize_state(scene_scale=scale)
    images = torch.stack(list(data.train_images)).to(device)  # (N, 3, H, W), once
    cams = data.train_cameras.to(device)
    w, h = cams.common_size("bare loop")
    white = torch.ones(1, 3, device=device)
    gen = torch.Generator(device="cpu").manual_seed(0)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for step in range(steps):
        i = int(torch.randint(0, len(images), (1,), generator=gen))
        degree = min(step // 1000, 3)
        colors = torch.cat([splats["sh0"], splats["shN"]], dim=1)
        rgb, _, info = render(splats["means"], splats["quats"], torch.exp(splats["scales"]),
                              torch.sigmoid(splats["opacities"]), colors, cams.world_to_camera[i:i + 1],
                              cams.K[i:i + 1], w, h, sh_degree=degree, backgrounds=white, backend="auto")
        strategy.step_pre_backward(splats, optimizers, state, step, info)
        loss = photometric_loss(rgb.permute(0, 3, 1, 2), images[i:i + 1])["loss"]
        loss.backward()
        for opt in optimizers.values():
            opt.step()
            opt.zero_grad(set_to_none=True)
        decay.step()
        strategy.step_post_backward(splats, optimizers, state, step, info, packed=False)
    _sync(device)
    fit_s = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    metrics, test = ImageMetrics(pretrained=False), data.test_cameras.to(device)
    psnr, ssim = [], []
    with torch.no_grad():
        colors = torch.cat([splats["sh0"], splats["shN"]], dim=1)
        for j in range(len(test)):
            rgb, _, _ = render(splats["means"], splats["quats"], torch.exp(splats["scales"]),
                               torch.sigmoid(splats["opacities"]), colors, test.world_to_camera[j:j + 1],
                               test.K[j:j + 1], w, h, sh_degree=3, backgrounds=white, backend="auto")
            m = metrics(rgb.permute(0, 3, 1, 2).clamp(0, 1), data.test_images[j][None].to(device))
            psnr.append(float(m["psnr"][0]))
            ssim.append(float(m["ssim"][0]))
    return {"steps": steps, "fit_s": round(fit_s, 1), "steps_per_s": round(steps / fit_s, 2),
            "peak_gpu_gib": round(peak, 2), "num_gaussians": int(len(splats["means"])),
            "test_psnr": sum(psnr) / len(psnr), "test_ssim": sum(ssim) / len(ssim), "test_views": len(psnr)}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scene", required=True, help="a NeRF-synthetic folder (lego_blender_400)")
    p.add_argument("--steps", type=int, default=7000)
    p.add_argument("--downscale", type=int, default=1)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--smoke", action="store_true", help="CPU, 20 steps at 1/8 size: checks the script, not speed")
    p.add_argument("--parts", default="framework,bare")
    a = p.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() and not a.smoke else "cpu")
    steps, downscale = (20, 8) if a.smoke else (a.steps, a.downscale)
    num_points = 2000 if a.smoke else 100_000  # InitSettings' default num_points
    extra = [f"--model.init_args.init.num_points={num_points}"]
    result: dict = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                    "torch": torch.__version__}
    for part in a.parts.split(","):
        try:
            if part == "framework":
                with tempfile.TemporaryDirectory() as tmp:
                    result["framework"] = framework_run(a.scene, steps, downscale, device, tmp, extra)
            elif part == "bare":
                result["bare"] = bare_run(a.scene, steps, downscale, device, num_points)
        except Exception as err:  # noqa: BLE001 - one part failing must not lose the others' figures
            result[part] = {"error": f"{type(err).__name__}: {err}"}
    if "steps_per_s" in result.get("framework", {}) and "steps_per_s" in result.get("bare", {}):
        result["overhead_ratio"] = round(result["bare"]["steps_per_s"] / result["framework"]["steps_per_s"], 3)
        result["psnr_difference"] = round(result["framework"]["test_psnr"] - result["bare"]["test_psnr"], 3)
    print(json.dumps(result, indent=2))
    if a.out is not None:
        write_json_atomic(a.out, result, indent=2)
    return result


if __name__ == "__main__":
    main()
