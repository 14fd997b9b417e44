"""Difix3D+ on a reconstruction made elsewhere, through the public commands: `test` on its file
gives its own metrics, and a fit from it runs the progressive and post-render fixes."""
from __future__ import annotations

import json
import sys
import urllib.request
from pathlib import Path

import pytest

from helpers.gaussian_files import write_gsplat_checkpoint
from helpers.runs import REPO, run, scene_args
from lightning_modules.scene.gaussians.ply import read_ply


def _metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


def test_test_and_fit_from_a_reconstruction_file(tmp_path: Path) -> None:
    # Another run: 3DGS on a tiny scene, its own test metrics, its point_cloud.ply (original units).
    logs, out = tmp_path / "logs", tmp_path / "out"
    run(["fit", *scene_args(tmp_path, logs, out, 60)])
    ckpt = logs / "scene_demo" / "version_0" / "checkpoints" / "last.ckpt"
    run(["test", *scene_args(tmp_path, logs, out, 60), f"--ckpt_path={ckpt}"])
    own = _metrics(out)
    ply = out / "point_cloud.ply"

    # The same Gaussians as gsplat's simple_trainer holds them (trained with --no-normalize-world-space).
    gsplat = write_gsplat_checkpoint(tmp_path / "gsplat" / "ckpts" / "ckpt_59_rank0.pt", read_ply(ply), step=59)
    # The gsplat file with units auto: its world told by the training photos (the original one).
    for name, file, units in (("ply", ply, "original"), ("gsplat", gsplat, "auto")):
        o = tmp_path / f"out_{name}"
        run(["test", *scene_args(tmp_path, tmp_path / f"logs_{name}", o, 60),
             f"--model.init_args.init.file.path={file}", f"--model.init_args.init.file.units={units}"])
        got = _metrics(o)
        assert got["num_gaussians"] == own["num_gaussians"]
        assert got["mean"]["psnr"] == pytest.approx(own["mean"]["psnr"], abs=0.01), name
        assert got["mean"]["ssim"] == pytest.approx(own["mean"]["ssim"], abs=1e-4), name

    # The viewer on the file and its scene: the fix gets the scene's training views as references.
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import view
    finally:
        sys.path.remove(str(REPO / "scripts"))
    viewer = view.build_viewer(view.parse_args([str(gsplat), "--data", str(tmp_path / "scene"), "--fixer", "tiny",
                                                "--port", "0", "--device", "cpu"]))
    try:
        assert viewer.fix is not None and viewer.fix.has_references
        assert len(viewer.scene.gaussians) == own["num_gaussians"]
        assert "<html" in urllib.request.urlopen(viewer.url, timeout=10).read().decode().lower()
    finally:
        viewer.stop()

    # Difix3D from that file: fixes from step 0, the Gaussians' number kept, Difix3D+ in test.
    fit_logs, fit_out = tmp_path / "fit_logs", tmp_path / "fit_out"
    common = ["--config", str(REPO / "configs/demo/difix3d.yaml"), "--trainer.enable_progress_bar=false",
              f"--trainer.logger.init_args.save_dir={fit_logs}", "--trainer.logger.init_args.version=0",
              "--trainer.callbacks.fixer=tiny", "--trainer.callbacks.start_step=0",
              "--trainer.callbacks.fix_every_n_steps=2", f"--data.init_args.path={tmp_path / 'scene'}",
              "--data.init_args.procedural=null", "--data.init_args.read.test_every=4",
              "--data.init_args.read.train_every=1", "--data.init_args.steps_per_epoch=3",
              "--data.init_args.max_val_views=1", "--model.init_args.predict.frames=0",
              f"--model.init_args.init.file.path={gsplat}", f"--model.init_args.output_dir={fit_out}"]
    # SH degree 3 asked of the module: the file's degree (1) is what the Gaussians get.
    run(["fit", *common, "--trainer.max_steps=4", "--model.init_args.sh.degree=3"])
    last = fit_logs / "difix3d_demo" / "version_0" / "checkpoints" / "last.ckpt"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(last.parents[1]))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("fix/num_fixes")] == [(0, 1.0), (2, 2.0)]
    # The checkpoint holds the Gaussians (degree 1): the file may be gone by the time it is tested.
    gsplat.rename(gsplat.with_suffix(".moved"))
    run(["test", *common, f"--ckpt_path={last}"])
    fixed = _metrics(fit_out)
    assert fixed["step"] == 4 and fixed["num_gaussians"] == own["num_gaussians"]
    assert {"psnr", "ssim"} <= set(fixed["mean_fixed"])
    # Four steps at the demo's learning rates on 60-step Gaussians: the plain renders stay close.
    assert fixed["mean"]["psnr"] > own["mean"]["psnr"] - 1.0
