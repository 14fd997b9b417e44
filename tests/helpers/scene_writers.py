"""Writes one small synthetic camera rig in every scene format (for reader tests).

The rig: ``N`` OpenCV cameras looking at the origin, one shared pinhole (fx = fy, centred
principal point, which every format can express), tiny PNG images, a few 3D points.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from datamodules.cameras.poses import look_at
from datamodules.readers.colmap import ColmapCamera, ColmapImage, ColmapPoints, colmap_pose_from_c2w, write_colmap_binary, write_colmap_text
from datamodules.files.image_io import save_image
from datamodules.readers.llff import opencv_to_llff_c2w
from datamodules.readers.point_ply import write_point_ply


@dataclass
class Rig:
    c2w: torch.Tensor  # (N, 4, 4) float64 OpenCV
    width: int
    height: int
    focal: float
    points: torch.Tensor  # (P, 3) float64
    colors: torch.Tensor  # (P, 3) float32 in [0, 1]
    images: torch.Tensor  # (N, 3, H, W)

    @property
    def K(self) -> torch.Tensor:
        return torch.tensor(
            [[self.focal, 0.0, self.width / 2], [0.0, self.focal, self.height / 2], [0.0, 0.0, 1.0]], dtype=torch.float64
        )

    def __len__(self) -> int:
        return self.c2w.shape[0]


def make_rig(n: int = 6, width: int = 40, height: int = 30, focal: float = 35.0, seed: int = 0) -> Rig:
    g = torch.Generator().manual_seed(seed)
    ang = torch.linspace(0, 2 * math.pi, n + 1, dtype=torch.float64)[:-1]
    eye = torch.stack([3 * torch.cos(ang), 3 * torch.sin(ang), 1.0 + 0.3 * torch.sin(3 * ang)], dim=-1) + torch.tensor([0.5, -0.2, 0.1], dtype=torch.float64)
    c2w = look_at(eye, torch.tensor([0.4, -0.1, 0.2], dtype=torch.float64), up=(0.0, 0.0, 1.0))
    points = torch.rand(20, 3, generator=g, dtype=torch.float64) - 0.5
    colors = torch.rand(20, 3, generator=g)
    images = torch.rand(n, 3, height, width, generator=g)
    return Rig(c2w, width, height, focal, points, colors, images)


def write_colmap(rig: Rig, root: Path, binary: bool = True, model: str = "PINHOLE", params: list[float] | None = None, per_image_camera: bool = True, names: list[str] | None = None) -> Path:
    names = names or [f"img_{i:02d}.png" for i in range(len(rig))]
    (root / "images").mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        save_image(rig.images[i], root / "images" / name)
    f = rig.focal
    if params is None:
        params = {"PINHOLE": [f, f, rig.width / 2, rig.height / 2], "SIMPLE_PINHOLE": [f, rig.width / 2, rig.height / 2]}[model]
    cams = [ColmapCamera(i + 1, model, rig.width, rig.height, list(params)) for i in range(len(rig) if per_image_camera else 1)]
    images = []
    for i, name in enumerate(names):
        q, t = colmap_pose_from_c2w(rig.c2w[i])
        images.append(ColmapImage(i + 1, q, t, (i + 1) if per_image_camera else 1, name, np.array([[1.5, 2.5]]), np.array([1])))
    pts = ColmapPoints.from_arrays(rig.points.numpy(), (rig.colors.numpy() * 255).round().astype(np.uint8))
    pts.tracks[0] = np.array([[1, 0]])
    writer = write_colmap_binary if binary else write_colmap_text
    writer(root / "sparse" / "0", cams, images, pts)
    return root


def write_blender(rig: Rig, root: Path, n_train: int | None = None) -> Path:
    n_train = len(rig) // 2 if n_train is None else n_train
    gl = rig.c2w.clone()
    gl[:, :3, 1:3] *= -1
    fov = 2 * math.atan(rig.width / (2 * rig.focal))
    for kind, idx in (("train", range(n_train)), ("test", range(n_train, len(rig)))):
        frames = []
        for j, i in enumerate(idx):
            rgba = torch.cat([rig.images[i], torch.ones(1, rig.height, rig.width)])
            rgba[3, :2, :2] = 0.0  # a transparent corner to composite
            path = root / kind / f"r_{j}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            from PIL import Image

            Image.fromarray((rgba.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8), "RGBA").save(path)
            frames.append({"file_path": f"./{kind}/r_{j}", "rotation": 0.0, "transform_matrix": gl[i].tolist()})
        (root / f"transforms_{kind}.json").write_text(json.dumps({"camera_angle_x": fov, "frames": frames}))
    return root


def write_nerfstudio(rig: Rig, root: Path, per_frame: bool = False, extra: dict | None = None, ply: bool = True) -> Path:
    gl = rig.c2w.clone()
    gl[:, :3, 1:3] *= -1
    intr = {"fl_x": rig.focal, "fl_y": rig.focal, "cx": rig.width / 2, "cy": rig.height / 2, "w": rig.width, "h": rig.height}
    frames = []
    for i in range(len(rig)):
        rel = f"images/frame_{i:03d}.png"
        save_image(rig.images[i], root / rel)
        frame = {"file_path": rel, "transform_matrix": gl[i].tolist()}
        if per_frame:
            frame.update(intr)
        frames.append(frame)
    doc: dict = {"camera_model": "OPENCV", "frames": frames}
    if not per_frame:
        doc.update(intr)
    if ply:
        write_point_ply(root / "sparse_pc.ply", rig.points.float(), rig.colors)
        doc["ply_file_path"] = "sparse_pc.ply"
    doc.update(extra or {})
    root.mkdir(parents=True, exist_ok=True)
    (root / "transforms.json").write_text(json.dumps(doc))
    return root


def write_llff(rig: Rig, root: Path, folder: str = "images", scale: int = 1) -> Path:
    """LLFF with full-res hwf; images (possibly a pre-shrunk folder) written at size / scale."""
    llff = opencv_to_llff_c2w(rig.c2w)
    hwf = torch.tensor([rig.height * scale, rig.width * scale, rig.focal * scale], dtype=torch.float64)
    rows = torch.cat([llff, hwf.expand(len(rig), 3)[..., None]], dim=-1).reshape(len(rig), 15)
    bounds = torch.tensor([1.0, 10.0], dtype=torch.float64).expand(len(rig), 2)
    root.mkdir(parents=True, exist_ok=True)
    np.save(root / "poses_bounds.npy", torch.cat([rows, bounds], dim=-1).numpy())
    for i in range(len(rig)):
        save_image(rig.images[i], root / folder / f"IMG_{i:04d}.png")
    return root


# Malformed PLY headers (what a hand-edited or badly exported file holds) and what the error must
# say besides the file's name: one table for both .ply readers (points and Gaussians).
BAD_PLY_HEADERS = {
    "count not a number": (["element vertex abc"], r"'element vertex abc'.*count"),
    "negative count": (["element vertex -2"], r"'element vertex -2'.*count"),
    "no count": (["element vertex"], r"'element vertex'.*count"),
    "duplicated property": (["element vertex 1", "property float x", "property float x"], r"property 'x' twice"),
    "property without a name": (["element vertex 1", "property float"], r"'property float'"),
    "format without a name": (["format"], r"'format'"),
}


def write_bad_ply(path: Path, header: list[str], fmt: str = "binary_little_endian") -> Path:
    """A .ply with the header lines ``header`` (after ``ply`` and the format line, before x y z
    and ``end_header``) and 64 zero bytes of data."""
    lines = ["ply"] + ([] if header == ["format"] else [f"format {fmt} 1.0"]) + header
    if not any(line.startswith("property") for line in header):
        lines += [f"property float {c}" for c in "xyz"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(("\n".join(lines) + "\nend_header\n").encode("ascii") + bytes(64))
    return path
