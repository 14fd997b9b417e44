"""The world a reconstruction file's Gaussians are in, mapped into the datamodule's normalised one.

Every scene here is trained in ``normalised = T @ original`` (``SceneSetup.transform``), the
dataset's original world centred and scaled by its cameras. Other tools store Gaussians in
their own worlds: the 3DGS code and gsplat with ``--no-normalize-world-space`` in the
original one, gsplat by default in the world its COLMAP parser normalises to, nerfstudio in
its dataparser's (``dataparser_transforms.json``). ``file_to_normalised`` gives the similarity
from the file's world to ours; ``check_against_cameras`` warns when the result and the cameras
disagree by far (a file of another scene, units off by orders of magnitude), and
``world_photos`` tells the world from the training photos (a flip, a rotation, a 3x scale).
"""
from __future__ import annotations

import json
import logging
import math
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from datamodules.cameras.cameras import Cameras
from datamodules.readers.scene_data import env_path
from datamodules.scene.scene_setup import SceneSetup

from lightning_modules.scene.gaussians.reconstruction import WORLDS, GaussiansFile, read_gaussians_file
from lightning_modules.scene.gaussians.similarity import decompose_similarity, transform_splats
from lightning_modules.scene.gaussians.world_photos import judge_world, photo_views, world_psnrs

__all__ = ["splats_in_scene", "candidate_worlds", "file_to_normalised", "gsplat_parser_transform",
           "nerfstudio_transform", "check_against_cameras"]

log = logging.getLogger(__name__)


def splats_in_scene(spec: GaussiansFile, setup: SceneSetup,
                    device: torch.device | str | None = None) -> dict[str, Tensor]:
    """``spec``'s Gaussians read, checked, mapped into the normalised world and checked against
    the cameras and the training photos; one log line says what was loaded.

    When the setup carries training photos, a few of them are rendered from the file in every
    world this scene can build (``world_photos``): "auto" takes the best, any other ``units``
    is kept, with a warning giving the PSNRs when another world explains the photos far better.

    Args:
        spec: the file and its world.
        setup: the scene (cameras, points, transform, training photos).
        device: where the photo check renders; None: torch's default device (inside Lightning's
            ``configure_model``, the trainer's device).

    Returns:
        Raw gsplat tensors (see ``LoadedGaussians.splats``) in the normalised world, on the CPU.

    Raises:
        ValueError: "auto" without training photos, or the errors of ``file_to_normalised``.
    """
    render_on = torch.get_default_device() if device is None else device
    with torch.device("cpu"):  # the mapping is CPU math, whatever the default device is
        loaded = read_gaussians_file(spec.path, spec.sh_degree)
        worlds = candidate_worlds(spec, setup)
        units = spec.units
        views = photo_views(setup)
        if views is not None:
            units = judge_world(spec.units, world_psnrs(loaded.splats, worlds, views, render_on), str(loaded.path),
                                views)
        elif units == "auto":
            raise ValueError(f"{loaded.path}: init.file.units=auto needs the scene's training photos (a SceneSetup "
                             f"with train_images) to tell the world; name it ({', '.join(WORLDS)})")
        to_world = worlds[units]
        splats = loaded.splats
        if not torch.allclose(to_world, torch.eye(4, dtype=torch.float64)):
            splats = transform_splats(splats, to_world)
        check_against_cameras(splats["means"], setup.train_cameras, float(setup.scene_scale), str(loaded.path))
    log.info("Gaussians from %s: %s, %d Gaussians, SH degree %d, units %s; densification %s",
             loaded.path, loaded.layout, len(loaded), loaded.sh_degree,
             units if units == spec.units else f"{spec.units} -> {units}",
             "on (its state from step 0)" if spec.densify else "off (their number is kept)")
    return splats


def candidate_worlds(spec: GaussiansFile, setup: SceneSetup) -> dict[str, Tensor]:
    """Every world of ``WORLDS`` this scene can map from: {units: ``file_to_normalised``'s matrix}.

    The declared world comes first and its errors are raised; the others are skipped where the
    scene cannot build them (gsplat without points, nerfstudio without its transforms file).
    """
    worlds: dict[str, Tensor] = {}
    if spec.units != "auto":
        worlds[spec.units] = _to_normalised(spec.units, spec, setup)
    for units in WORLDS:
        if units not in worlds:
            try:
                worlds[units] = _to_normalised(units, spec, setup)
            except ValueError:
                continue
    return worlds


def file_to_normalised(spec: GaussiansFile, setup: SceneSetup) -> Tensor:
    """(4, 4) float64 similarity on the CPU: ``normalised world = M @ file's world``.

    Raises:
        ValueError: "auto" units (``splats_in_scene`` resolves them), "gsplat" units without
            the scene's cameras and points, "nerfstudio" units without a readable
            ``dataparser_transforms.json``.
    """
    if spec.units == "auto":
        raise ValueError("init.file.units=auto is decided by the training photos (splats_in_scene)")
    return _to_normalised(spec.units, spec, setup)


def _to_normalised(units: str, spec: GaussiansFile, setup: SceneSetup) -> Tensor:
    # Explicit CPU tensors: inside Lightning's configure_model the default device is the GPU.
    eye = torch.eye(4, dtype=torch.float64, device="cpu")
    to_ours = eye if setup.transform is None else setup.transform.double().cpu()
    if units == "normalised":
        return eye
    if units == "original":
        return to_ours
    if units == "nerfstudio":
        return to_ours @ torch.linalg.inv(nerfstudio_transform(_dataparser_file(spec)))
    cameras = setup.all_cameras if setup.all_cameras is not None else setup.train_cameras
    if setup.points is None or len(setup.points) < 4:
        raise ValueError(f"init.file.units={units}: gsplat normalises by the COLMAP points too, and this scene "
                         "has none; use a scene read from the COLMAP folder gsplat trained on")
    back = torch.linalg.inv(to_ours)
    s, R, _ = decompose_similarity(back)
    c2w = cameras.camera_to_world.double().cpu()
    original = torch.eye(4, dtype=torch.float64, device="cpu").repeat(len(cameras), 1, 1)
    original[:, :3, :3] = R @ c2w[:, :3, :3]  # rotations stay orthonormal
    original[:, :3, 3] = c2w[:, :3, 3] @ (s * R).T + back[:3, 3]
    points = setup.points.double().cpu() @ (s * R).T + back[:3, 3]
    gsplat = gsplat_parser_transform(original, points, flip=units == "gsplat")
    return to_ours @ torch.linalg.inv(gsplat)


def gsplat_parser_transform(c2w: Tensor, points: Tensor, flip: bool = True) -> Tensor:
    """The world transform gsplat's COLMAP parser applies with ``normalize=True``.

    ``T2 @ T1`` (then ``T3 @``): T1 rotates the mean camera up vector, centres the scene on the
    median of the points nearest the origin along each camera's viewing ray and scales the
    median camera distance to 1; T2 moves the points' median to the origin and their principal
    axes onto x, y, z (largest variance first); T3 (gsplat >= 1.5.2, ``flip``) turns the
    world upside down when the points' median height exceeds their mean. Re-implemented from
    gsplat's ``examples/datasets/normalize.py`` (``similarity_from_cameras``,
    ``align_principal_axes``) and ``examples/datasets/colmap.py`` (``Parser``), which are not
    part of the installed package; in numpy float64 as there, so that the eigenvector signs of
    the principal axes come from the same routine.

    Args:
        c2w: (N, 4, 4) every COLMAP image's camera-to-world (OpenCV axes), original world.
        points: (P, 3) every COLMAP point, original world.
        flip: apply T3's test (gsplat >= 1.5.2).

    Returns:
        (4, 4) float64 ``gsplat world = T @ original``.
    """
    c2w_np = c2w.double().cpu().numpy()
    pts = points.double().cpu().numpy()
    t, R = c2w_np[:, :3, 3], c2w_np[:, :3, :3]
    world_up = (R @ np.array([0.0, -1.0, 0.0])).mean(axis=0)
    world_up /= np.linalg.norm(world_up)
    down = np.array([0.0, -1.0, 0.0])
    c = float(down @ world_up)
    v = np.cross(world_up, down)
    skew = np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])
    # Rodrigues' rotation of world_up onto the camera-space up; gsplat's own fallback when opposite.
    align = np.eye(3) + skew + skew @ skew / (1 + c) if c > -1 else np.diag([-1.0, 1.0, 1.0])
    fwds = (align @ R)[:, :, 2]
    t = t @ align.T
    nearest = t + ((fwds * -t).sum(-1))[:, None] * fwds
    translate = -np.median(nearest, axis=0)
    T1 = np.eye(4)
    T1[:3, :3], T1[:3, 3] = align, translate
    T1[:3, :] *= 1.0 / np.median(np.linalg.norm(t + translate, axis=-1))
    pts = pts @ T1[:3, :3].T + T1[:3, 3]
    centroid = np.median(pts, axis=0)
    values, vectors = np.linalg.eigh(np.cov(pts - centroid, rowvar=False))
    vectors = vectors[:, values.argsort()[::-1]]
    if np.linalg.det(vectors) < 0:
        vectors[:, 0] *= -1
    T2 = np.eye(4)
    T2[:3, :3], T2[:3, 3] = vectors.T, -vectors.T @ centroid
    transform = T2 @ T1
    pts = pts @ T2[:3, :3].T + T2[:3, 3]
    if flip and np.median(pts[:, 2]) > np.mean(pts[:, 2]):
        transform = np.diag([1.0, -1.0, -1.0, 1.0]) @ transform
    return torch.from_numpy(transform)


def nerfstudio_transform(path: Path) -> Tensor:
    """(4, 4) float64 ``nerfstudio world = T @ original`` from ``dataparser_transforms.json``
    (``{"transform": 3x4, "scale": s}``: ``p_ns = s * (transform @ [p, 1])``)."""
    try:
        doc = json.loads(Path(path).read_text())
        M = torch.tensor(doc["transform"], dtype=torch.float64)
        scale = float(doc["scale"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: not a nerfstudio dataparser_transforms.json ({type(err).__name__}: {err}); it "
                         "holds {\"transform\": 3x4, \"scale\": s}") from err
    if M.shape != (3, 4) or not math.isfinite(scale) or scale <= 0 or not torch.isfinite(M).all():
        raise ValueError(f"{path}: 'transform' must be a finite 3x4 matrix and 'scale' positive")
    T = torch.eye(4, dtype=torch.float64)
    T[:3] = M
    return torch.diag(torch.tensor([scale, scale, scale, 1.0], dtype=torch.float64)) @ T


def _dataparser_file(spec: GaussiansFile) -> Path:
    if spec.dataparser_transforms is not None:
        return env_path(spec.dataparser_transforms)
    here = env_path(spec.path).resolve().parent
    for folder in (here, here.parent, here.parent.parent):
        if (folder / "dataparser_transforms.json").is_file():
            return folder / "dataparser_transforms.json"
    raise ValueError(f"init.file.units=nerfstudio: no dataparser_transforms.json beside {spec.path} or above it; "
                     "name it (init.file.dataparser_transforms: the run's outputs/<exp>/splatfacto/<time>/...)")


def check_against_cameras(means: Tensor, cameras: Cameras, scene_scale: float, where: str,
                          max_points: int = 20_000) -> float:
    """Warns when mapped Gaussians and the cameras disagree by far; returns the share seen.

    Two numbers: the share of Gaussians (a fixed subset of ``max_points``) in front of and
    inside at least one camera, and the Gaussians' extent (median distance from their median)
    over the scene scale. A reconstruction of this scene in the right units has most of its
    Gaussians in view and an extent within a factor 30 of the cameras'.

    Args:
        means: (N, 3) Gaussian centres in the normalised world.
        cameras: the training cameras (normalised world).
        scene_scale: the cameras' extent.
        where: the file, for the message.
    """
    gen = torch.Generator().manual_seed(0)
    pts = means.detach().float().cpu()
    if len(pts) > max_points:
        pts = pts[torch.randperm(len(pts), generator=gen)[:max_points]]
    cams = cameras.to("cpu")
    seen = torch.zeros(len(pts), dtype=torch.bool)
    for i in range(0, len(cams), 64):  # chunks of cameras bound memory at 64 x P
        part = cams[i:i + 64]
        uv, z = part.project(pts)
        w, h = part.width[:, None].float(), part.height[:, None].float()
        inside = (z > 0) & (uv[..., 0] >= 0) & (uv[..., 0] < w) & (uv[..., 1] >= 0) & (uv[..., 1] < h)
        seen |= inside.any(dim=0)
    share = float(seen.float().mean()) if len(pts) else 0.0
    centre = pts.median(dim=0).values
    extent = float((pts - centre).norm(dim=-1).median()) / max(scene_scale, 1e-12)
    if share < 0.5 or not 1 / 30 < extent < 30:
        lo, hi = pts.quantile(0.05, dim=0), pts.quantile(0.95, dim=0)
        centres = cams.centers
        warnings.warn(
            f"{where}: the Gaussians and the cameras disagree: {share:.0%} of the Gaussians are in view of a camera, "
            f"their extent is {extent:.3g} x the cameras' (Gaussians' 5-95 % box {lo.tolist()} .. {hi.tolist()}, "
            f"camera centres {centres.min(0).values.tolist()} .. {centres.max(0).values.tolist()}, normalised world). "
            "Wrong init.file.units, or a reconstruction of another scene?",
            stacklevel=2,
        )
    return share
