"""Opens a trained scene in the browser, with the Difix3D+ post-render fix as a switch.

    python scripts/view.py lightning_logs/difix3d_demo/version_0/checkpoints/last.ckpt --fixer outputs/demo/fixer/best.ckpt
    python scripts/view.py outputs/scene/point_cloud.ply                     # a 3DGS .ply (no fixer references)
    python scripts/view.py run.ckpt --module-class lightning_modules.scene.nerf.NerfSceneModule
    python scripts/view.py ckpts/ckpt_29999_rank0.pt --data /path/to/colmap_scene --fixer nvidia/difix_ref

Then open the printed address (http://127.0.0.1:8080 by default). The page is served on this
machine only unless ``--host`` names another interface (e.g. 0.0.0.0 for the network).
References for the fix are the nearest training views of the checkpoint's scene (its
datamodule is rebuilt from the checkpoint; run from the directory training ran in), or none
for a reconstruction file (.ply, gsplat ckpt_*.pt, splatfacto step-*.ckpt) on its own. With
``--data``, such a file is opened with the scene it was trained on, as ``init.file`` opens it
in a fit (``--units`` says its world): the fix gets that scene's training views as references
and the viewer starts at a training camera.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scene", help="a scene checkpoint (.ckpt), a Gaussian .ply, a gsplat ckpt_*.pt or a splatfacto step-*.ckpt")
    p.add_argument("--data", default=None, help="the scene folder a reconstruction file was trained on (its references)")
    p.add_argument("--units", default="original", choices=["original", "normalised", "gsplat", "gsplat_1.5.1", "nerfstudio", "auto"],
                   help="with --data: the world the file's Gaussians are in (GaussiansFile.units)")
    p.add_argument("--downscale", type=int, default=None, help="with --data: image downscale (default: the reader's)")
    p.add_argument("--fixer", default=None,
                   help="fixer name (lightning_modules/difix/fixers/sources.py): nvidia/difix_ref, nvidia/difix, a folder "
                        "of either, a reference model_*.pkl, a DifixModule .ckpt, exported weights, or 'tiny'")
    p.add_argument("--num-refs", type=int, default=1, help="reference views per fixed frame")
    p.add_argument("--fix", action="store_true", help="start with the fix switched on")
    p.add_argument("--fix-mode", default="auto", choices=["at rest", "every frame", "auto"])
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default: this machine only)")
    p.add_argument("--port", type=int, default=8080, help="TCP port (0: a free one)")
    p.add_argument("--move-resolution", type=int, default=256, help="longer image side while moving")
    p.add_argument("--rest-resolution", type=int, default=512, help="longer image side at rest")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="fixer weights' dtype (auto: bfloat16 on CUDA, float32 on the CPU)")
    p.add_argument("--module-class", default=None, help="dotted class path of a non-Gaussian scene module")
    p.add_argument("--no-references", action="store_true", help="do not read the training views")
    return p.parse_args(argv)


def build_viewer(args: argparse.Namespace) -> Any:
    """Loads the scene (and fixer references) and starts serving it; returns the SceneViewer."""
    from callbacks.post_render_fix import NearestViewFix, reference_views_from_checkpoint
    from callbacks.viewer.server import SceneViewer
    from lightning_modules.difix.fixers.ready import ReadyFixer
    from lightning_modules.difix.fixers.spec import FixerSpec
    from lightning_modules.scene.open_scene import open_scene, scene_device

    fixer = None
    if args.fixer is not None:  # before serving: a bad fixer must not wait for the first fixed frame
        fixer = ReadyFixer(FixerSpec(name=args.fixer, dtype=args.dtype))
        fixer.check()
    refs = None
    if args.data is not None:
        scene, refs = _with_scene_data(args)
    else:
        scene = open_scene(args.scene, args.module_class, args.device)
        if Path(args.scene).suffix == ".ckpt" and not args.no_references:
            refs = reference_views_from_checkpoint(args.scene)  # None for a splatfacto checkpoint
    fix = None
    if fixer is not None:
        if fixer.needs_trial:  # code we cannot inspect (TorchScript): one tiny call before serving
            fixer.try_once(scene_device(args.device))
        fix = NearestViewFix(fixer, refs, num_refs=args.num_refs if refs is not None else 0)
    initial = refs.cameras[[0]] if refs is not None else None
    return SceneViewer(scene, fix, host=args.host, port=args.port, move_resolution=args.move_resolution,
                       rest_resolution=args.rest_resolution, fix_enabled=args.fix and fix is not None,
                       fix_mode=args.fix_mode, initial_camera=initial, label=f"difix3d: {Path(args.scene).name}")


def _with_scene_data(args: argparse.Namespace) -> tuple[Any, Any]:
    """A reconstruction file in the normalised world of ``--data``, and that scene's training views."""
    from callbacks.post_render_fix import training_views
    from datamodules.readers.scene_data import ReadOptions
    from datamodules.scene.datamodule import SceneDataModule
    from lightning_modules.scene.gaussians.initial import InitSettings
    from lightning_modules.scene.gaussians.module import GaussianSceneModule
    from lightning_modules.scene.gaussians.reconstruction import GaussiansFile
    from lightning_modules.scene.open_scene import scene_device

    read = ReadOptions() if args.downscale is None else ReadOptions(downscale=args.downscale)
    data = SceneDataModule(path=args.data, read=read)
    data.setup("fit")
    scene = GaussianSceneModule(init=InitSettings(file=GaussiansFile(path=args.scene, units=args.units)))
    scene.setup_scene(data.scene_setup())
    scene.require_ready()
    refs = None if args.no_references else training_views(data)
    return scene.to(scene_device(args.device)).eval(), refs


def main(argv: list[str] | None = None) -> None:
    from lightning_modules.console import console_logging

    args = parse_args(argv)
    console_logging()
    viewer = build_viewer(args)
    print(f"viewer: {viewer.url}  (Ctrl-C to stop)", flush=True)
    try:
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C while stopping: no traceback
        viewer.stop()


if __name__ == "__main__":
    try:
        main()
    except (OSError, ValueError, TypeError, KeyError) as err:  # said in one line, not a traceback
        sys.exit(f"view: {err}")
