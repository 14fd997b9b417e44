"""Initial Gaussians of a scene: from its sparse points, or random around what the cameras see."""
from __future__ import annotations

import warnings
from typing import Literal

import torch

from datamodules.cameras.cameras import look_at_center
from datamodules.scene.scene_setup import SceneSetup

from lightning_modules.scene.gaussians.splats import Gaussians

__all__ = ["initial_gaussians"]


def initial_gaussians(
    setup: SceneSetup,
    scene_scale: float,
    sh_degree: int,
    init_type: Literal["points", "random"],
    init_num_points: int,
    init_extent: float,
    init_center: tuple[float, float, float] | None,
    init_opacity: float,
    init_scale: float,
    max_init_points: int | None,
    generator: torch.Generator,
) -> Gaussians:
    """Gaussians from ``setup.points`` ("points") or uniform in a cube ("random").

    "points" falls back to "random" with a warning when the scene has none (Blender scenes).
    Argument meanings: see ``GaussianSceneModule``.
    """
    points, colors = setup.points, setup.point_colors
    if init_type == "points" and (points is None or len(points) == 0):
        warnings.warn(
            "init_type='points' but the scene has no sparse points: initialising "
            f"{init_num_points} random Gaussians instead (set init_type: random to silence this)",
            stacklevel=3,
        )
        init_type = "random"
    if init_type == "points":
        points = torch.as_tensor(points, dtype=torch.float32).cpu()
        colors = None if colors is None else torch.as_tensor(colors, dtype=torch.float32).cpu()
        if max_init_points is not None and len(points) > max_init_points:
            keep = torch.randperm(len(points), generator=generator)[:max_init_points]
            points = points[keep]
            colors = None if colors is None else colors[keep]
        return Gaussians.from_points(points, colors, sh_degree, init_opacity, init_scale, generator)
    center = init_center if init_center is not None else look_at_center(setup.train_cameras, scene_scale)
    return Gaussians.random(
        init_num_points,
        init_extent * scene_scale,
        center=tuple(float(c) for c in center),
        sh_degree=sh_degree,
        init_opacity=init_opacity,
        init_scale=init_scale,
        generator=generator,
    )
