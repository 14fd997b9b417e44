"""A small scene the project makes itself, for demos and tests that must run offline.

Textured spheres and boxes (stripes, checkers, distinct colours) stand on a checkered
ground inside a striped dome, lit by a sun with hard shadows. Everything is ray-cast
analytically and vectorised in torch (2x2 supersampling against aliasing) by
``raycast.py``. Cameras sit on a ring at alternating heights looking at the centre. The scene is written in nerfstudio
``transforms.json`` format with PNGs and a coloured point cloud sampled on the surfaces
(``ply_file_path``, as ns-process-data writes it), so :func:`read_scene` reads it like any
capture. Deterministic for a given seed. With ``background`` the same objects stand alone on a
plain colour (no ground, no dome), like a NeRF-synthetic object on white.

CLI::

    python -m datamodules.procedural.scene OUT_DIR --num-views 24 --size 64 --seed 0
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import torch

from datamodules.files.image_io import save_image
from datamodules.readers.point_ply import write_point_ply
from datamodules.procedural.raycast import (
    ProceduralScene,
    first_hit,
    plain_background,
    procedural_cameras,
    render_procedural,
    sample_surface_points,
    trace,
)

__all__ = [
    "ProceduralOptions",
    "make_procedural_scene",
    "render_procedural",
    "procedural_cameras",
    "ProceduralScene",
    "is_complete",
    "first_hit",
    "trace",
]

VERSION = 2  # bump when the written scene changes (cached scenes are then rebuilt)
TRANSFORMS = "transforms.json"


# ---------------------------------------------------------------------------- writing
def _meta(num_views: int, size: int, seed: int, background: tuple[float, float, float] | None = None) -> dict:
    meta = {"num_views": int(num_views), "size": int(size), "seed": int(seed), "version": VERSION}
    if background is not None:  # only then: scenes cached before the option still match
        meta["background"] = [float(c) for c in background]
    return meta


def is_complete(out_dir: str | os.PathLike) -> bool:
    """True when ``out_dir`` holds a finished scene (transforms.json is written last)."""
    return (Path(out_dir) / TRANSFORMS).is_file()


def _write_scene(
    folder: Path, num_views: int, size: int, seed: int, num_points: int, background: tuple[float, float, float] | None
) -> None:
    scene = ProceduralScene.from_seed(seed, background)
    c2w, K = procedural_cameras(num_views, size)
    images = render_procedural(c2w, K, size, size, scene)
    frames = []
    gl = c2w.clone()
    gl[:, :3, 1:3] *= -1  # OpenCV -> OpenGL camera axes, as transforms.json stores them
    for i, image in enumerate(images):
        rel = f"images/frame_{i:05d}.png"
        save_image(image, folder / rel)
        frames.append({"file_path": rel, "transform_matrix": gl[i].tolist()})
    points, colors = sample_surface_points(scene, num_points, seed)
    write_point_ply(folder / "sparse_pc.ply", points, colors)
    doc = {
        "camera_model": "PINHOLE",
        "fl_x": float(K[0, 0]),
        "fl_y": float(K[1, 1]),
        "cx": float(K[0, 2]),
        "cy": float(K[1, 2]),
        "w": size,
        "h": size,
        "ply_file_path": "sparse_pc.ply",
        "procedural": _meta(num_views, size, seed, background),
        "frames": frames,
    }
    (folder / TRANSFORMS).write_text(json.dumps(doc, indent=1))


def make_procedural_scene(
    out_dir: str | os.PathLike,
    num_views: int = 24,
    size: int = 64,
    seed: int = 0,
    num_points: int = 2000,
    background: tuple[float, float, float] | None = None,
) -> Path:
    """Writes the procedural scene to ``out_dir`` unless it is already there.

    The scene is built in a temporary sibling folder and renamed into place, so a crash
    never leaves a half-written scene that a later call would take as complete.

    Args:
        out_dir: destination folder (must not exist, be empty, or hold this same scene).
        num_views: number of cameras on the ring.
        size: image width and height in pixels.
        seed: layout/colour jitter and point sampling seed.
        num_points: points in ``sparse_pc.ply``.
        background: None = ground and striped dome; an RGB triple = the objects alone on it.

    Returns:
        ``out_dir`` as a Path.

    Raises:
        ValueError: ``out_dir`` holds something else (another scene or unrelated files).
    """
    if num_views < 1 or size < 4:
        raise ValueError(f"make_procedural_scene: need num_views >= 1 and size >= 4, got {num_views}, {size}")
    background = plain_background(background)  # a bad colour fails before anything is written
    out = Path(out_dir)
    want = _meta(num_views, size, seed, background)

    def check_existing() -> bool:
        if not is_complete(out):
            return False
        try:
            have = json.loads((out / TRANSFORMS).read_text()).get("procedural")
        except (json.JSONDecodeError, AttributeError):
            have = None
        if have != want:
            raise ValueError(f"{out}: already holds a different scene ({have}); asked for procedural {want}")
        return True

    if check_existing():
        return out
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out}: exists and is not a procedural scene (no {TRANSFORMS}); choose an empty or new folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        _write_scene(tmp, num_views, size, seed, num_points, background)
        if out.is_dir():
            out.rmdir()  # empty (checked above); rename cannot replace a non-empty folder
        os.rename(tmp, out)
    except OSError:
        # Another process may have finished the same scene first: accept it if complete.
        shutil.rmtree(tmp, ignore_errors=True)
        if check_existing():
            return out
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


@dataclass
class ProceduralOptions:
    """The procedural scene a SceneDataModule writes when its folder holds no scene.

    Attributes:
        num_views: views around the scene.
        size: image size (square).
        seed: layout seed (None: the datamodule's seed); different seeds give different scenes
            (curation sources vs a held-out test scene).
        background: None = objects on a checkered ground in a striped dome; an RGB triple in
            [0, 1] = the objects alone on that colour (NeRF-synthetic-like).
    """

    num_views: int = 24
    size: int = 64
    seed: int | None = None
    background: tuple[float, float, float] | None = None

    def __post_init__(self) -> None:
        if self.num_views < 2 or self.size < 8:
            raise ValueError(f"procedural: need num_views >= 2 and size >= 8, got {self.num_views}, {self.size}")
        self.background = plain_background(self.background)


# Part of SceneDataModule's hyperparameters, so checkpoints hold it; allow it in weights-only loading.
torch.serialization.add_safe_globals([ProceduralOptions])



def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write the procedural demo scene (nerfstudio transforms.json + PNGs).")
    parser.add_argument("out_dir")
    parser.add_argument("--num-views", type=int, default=24)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-points", type=int, default=2000)
    parser.add_argument("--background", type=float, nargs=3, default=None, metavar=("R", "G", "B"),
                        help="objects alone on this plain colour in [0, 1] (default: ground and dome)")
    args = parser.parse_args(argv)
    out = make_procedural_scene(args.out_dir, args.num_views, args.size, args.seed, args.num_points, args.background)
    print(f"procedural scene: {out} ({args.num_views} views, {args.size}x{args.size})")


if __name__ == "__main__":
    main()
