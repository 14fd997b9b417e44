"""Scene folders laid out as DL3DV and Nerfbusters users download them, built from those
projects' own facts (each writer says where each fact comes from). Sizes are shrunk: what is
kept is the layout, the file and folder names, the JSON fields and the size ratios.

Sources:

* [ns] nerfstudio-project/nerfstudio: ``process_data/colmap_utils.py`` (``colmap_to_json``:
  global ``w``, ``h``, ``fl_x``, ``fl_y``, ``cx``, ``cy``, ``k1``, ``k2``, ``p1``, ``p2`` and
  ``camera_model`` from the COLMAP camera; per frame ``file_path`` ``images/<name>``,
  ``transform_matrix`` (camera-to-world, OpenGL axes) and ``colmap_im_id``;
  ``applied_transform`` [[1,0,0,0],[0,0,1,0],[0,-1,0,0]]; ``ply_file_path`` "sparse_pc.ply"),
  ``process_data/process_data_utils.py`` (pre-shrunk copies in ``images_2``, ``images_4``,
  ``images_8`` with the same file names), ``process_data/video_to_nerfstudio_dataset.py``
  (with an evaluation video, frames are named ``frame_train_%05d`` and ``frame_eval_%05d``),
  ``data/dataparsers/nerfstudio_dataparser.py`` (``_get_fname``: with a downscale factor k the
  image is ``images_<k>/<file name>``, the original need not exist).
* [nb] ethanweber/nerfbusters ``README.md``: the processed dataset is ``ns-process-data video
  --data X.mp4 X-eval.mp4`` output (a training and an evaluation video per capture), under
  ``data/nerfbusters-dataset/<capture>``; ``README_NERF_EXPERIMENTS.md`` trains on the
  training frames and evaluates on the evaluation frames.
* [dl-card] Hugging Face dataset cards: DL3DV-10K-Sample (``<hash>/colmap/{images, images_2,
  images_4, images_8, transforms.json, colmap/sparse/0/...}``, frames ``frame_00001.png``);
  DL3DV-Benchmark (140 scenes in nerfstudio and 3DGS formats; "images_4 level used in the
  paper", 960P; its download script's ``--only_level4`` skips every other ``images*`` folder).
* [dl-scripts] DL3DV download scripts as used by others: ShuzhaoXie/gsplat_dl3dv
  ``donwload_benchmark.py`` (the ``--only_level4`` filter) and ``datasets/dl3dv.py`` (a
  DL3DV-ALL-960P scene is ``<hash>/transforms.json`` + ``<hash>/images_4/<basename of
  file_path>``, ``camera_model`` OPENCV with ``k1 k2 p1 p2``, ``w``/``h`` at full size,
  ``colmap_im_id`` per frame); cvg/depthsplat ``src/scripts/convert_dl3dv_test.py``
  (``<hash>/nerfstudio/transforms.json`` with top-level ``w h fl_x fl_y cx cy``, the frame
  number after the last ``_`` of the file name, ``nerfstudio/images_8`` 270x480 and
  ``images_4`` 540x960, i.e. w x h = 3840 x 2160 / 4 and / 8); a DL3DV intrinsics check script
  (``<hash>/gaussian_splat/transforms.json`` OPENCV with ``k1 k2 p1 p2``; COLMAP PINHOLE model
  in ``gaussian_splat/sparse/0``) and a DL3DV converter for feature-3dgs (reads
  ``gaussian_splat/sparse/`` and the images of ``gaussian_splat/images_4/``).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from datamodules.files.image_io import save_image
from datamodules.readers.point_ply import write_point_ply
from helpers.scene_writers import Rig, make_rig, write_colmap

# DL3DV's 4K frames (3840 x 2160) shrunk by 10: images_4 and images_8 keep exact sizes (96x54, 48x27).
DL3DV_W, DL3DV_H = 384, 216
# [ns] colmap_to_json's applied_transform (world y <-> z swap, z negated).
NS_APPLIED_TRANSFORM = [[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, -1.0, 0.0, 0.0]]
# OPENCV distortion of the kind DL3DV's transforms.json carries (values made up, small).
DL3DV_DISTORTION = {"k1": 0.012, "k2": -0.004, "p1": 0.0005, "p2": -0.0003}


def _rig(n: int, width: int, height: int, seed: int) -> Rig:
    return make_rig(n=n, width=width, height=height, focal=0.8 * width, seed=seed)


def _opengl(c2w: torch.Tensor) -> list:
    gl = c2w.clone()
    gl[:3, 1:3] *= -1  # [ns] OpenCV -> OpenGL camera axes
    return gl.tolist()


def _images(rig: Rig, folder: Path, names: list[str], factor: int) -> None:
    small = torch.nn.functional.avg_pool2d(rig.images, factor) if factor > 1 else rig.images
    for i, name in enumerate(names):
        save_image(small[i], folder / name)


def _transforms(rig: Rig, names: list[str], extra: dict | None = None) -> dict:
    """[ns] colmap_to_json's document for one shared OPENCV camera."""
    doc = {"w": rig.width, "h": rig.height, "fl_x": rig.focal, "fl_y": rig.focal, "cx": rig.width / 2,
           "cy": rig.height / 2, **DL3DV_DISTORTION, "camera_model": "OPENCV",
           "frames": [{"file_path": f"images/{name}", "transform_matrix": _opengl(rig.c2w[i]), "colmap_im_id": i + 1}
                      for i, name in enumerate(names)]}
    doc.update(extra or {})
    return doc


def write_dl3dv_benchmark_scene(root: Path, scene_hash: str, n: int = 6, only_level4: bool = True, seed: int = 0) -> Path:
    """A DL3DV-Benchmark scene: ``<root>/<hash>/nerfstudio/{transforms.json, images_4/, images_8/}``
    ([dl-scripts] depthsplat), ``frame_%05d.png`` names from 1 ([dl-card]); with ``only_level4``
    only ``images_4/`` (the download script's ``--only_level4``), else also ``images/`` and
    ``images_8/``. Returns the scene root ``<root>/<hash>`` (what a user lists)."""
    rig = _rig(n, DL3DV_W, DL3DV_H, seed)
    names = [f"frame_{i + 1:05d}.png" for i in range(n)]
    ns = root / scene_hash / "nerfstudio"
    ns.mkdir(parents=True, exist_ok=True)
    (ns / "transforms.json").write_text(json.dumps(_transforms(rig, names)))
    _images(rig, ns / "images_4", names, 4)
    if not only_level4:
        _images(rig, ns / "images", names, 1)
        _images(rig, ns / "images_8", names, 8)
    return root / scene_hash


def write_dl3dv_benchmark_gaussian_splat(root: Path, scene_hash: str, n: int = 6, seed: int = 0) -> Path:
    """The benchmark's 3DGS-format copy of a scene after ``--only_level4``: ``<root>/<hash>/
    gaussian_splat/{sparse/0/*.bin, images_4/}`` ([dl-scripts]: a COLMAP PINHOLE model at full
    size, images in ``images_4`` only). Returns the scene root ``<root>/<hash>``."""
    rig = _rig(n, DL3DV_W, DL3DV_H, seed)
    names = [f"frame_{i + 1:05d}.png" for i in range(n)]
    gs = root / scene_hash / "gaussian_splat"
    write_colmap(rig, gs, names=names, per_image_camera=False)
    _images(rig, gs / "images_4", names, 4)
    for name in names:  # [dl-card] --only_level4: no full-size images
        (gs / "images" / name).unlink()
    (gs / "images").rmdir()
    return root / scene_hash


def write_dl3dv_960p_scene(root: Path, scene_hash: str, n: int = 6, seed: int = 0) -> Path:
    """A DL3DV-ALL-960P scene as unzipped: ``<root>/<hash>/transforms.json`` and ``images_4/``
    only ([dl-scripts] gsplat_dl3dv ``datasets/dl3dv.py``)."""
    rig = _rig(n, DL3DV_W, DL3DV_H, seed)
    names = [f"frame_{i + 1:05d}.png" for i in range(n)]
    scene = root / scene_hash
    scene.mkdir(parents=True, exist_ok=True)
    (scene / "transforms.json").write_text(json.dumps(_transforms(rig, names)))
    _images(rig, scene / "images_4", names, 4)
    return scene


def write_nerfbusters_capture(root: Path, capture: str = "aloe", n_train: int = 5, n_eval: int = 3, seed: int = 0) -> Path:
    """A Nerfbusters capture as its processed dataset ships it ([nb]): ns-process-data output of
    a training and an evaluation video ([ns]): ``images/frame_train_%05d.png`` and
    ``images/frame_eval_%05d.png`` (each numbered from 1), the same names in ``images_2``,
    ``images_4`` and ``images_8``, ``transforms.json`` with ``applied_transform`` and
    ``ply_file_path`` ``sparse_pc.ply``. Frames are listed train first, then eval (the order
    ns-process-data extracts them in)."""
    rig = _rig(n_train + n_eval, 64, 48, seed)
    names = [f"frame_train_{i + 1:05d}.png" for i in range(n_train)] + [f"frame_eval_{i + 1:05d}.png" for i in range(n_eval)]
    scene = root / capture
    for k in (1, 2, 4, 8):
        _images(rig, scene / ("images" if k == 1 else f"images_{k}"), names, k)
    write_point_ply(scene / "sparse_pc.ply", rig.points.float(), rig.colors)
    extra = {"applied_transform": NS_APPLIED_TRANSFORM, "ply_file_path": "sparse_pc.ply", "k1": 0.0, "k2": 0.0,
             "p1": 0.0, "p2": 0.0}
    (scene / "transforms.json").write_text(json.dumps(_transforms(rig, names, extra)))
    return scene
