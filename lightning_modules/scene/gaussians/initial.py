"""Initial Gaussians of a scene: from its sparse points, random around what the cameras see, or a
trained 3DGS file (``InitSettings``, YAML ``init:``)."""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal

import torch

from datamodules.cameras.cameras import look_at_center
from datamodules.scene.scene_setup import SceneSetup

from lightning_modules.options import check_number
from lightning_modules.scene.gaussians.reconstruction import GaussiansFile
from lightning_modules.scene.gaussians.splats import Gaussians

__all__ = ["InitSettings", "initial_gaussians"]


@dataclass
class InitSettings:
    """Where the Gaussians start (gsplat's ``simple_trainer`` defaults).

    Attributes:
        type: "points" (the scene's sparse points, e.g. COLMAP) or "random" (uniform in a cube
            of half-size ``extent * scene_scale``); "points" falls back to "random" with a
            warning when the scene has no points (Blender scenes). Ignored with ``file``.
        num_points: number of Gaussians of a random start.
        extent: random-start cube half-size in units of the scene scale.
        center: random-start cube centre (normalised world); None: the point the training
            cameras look at when they converge (object captures), else the origin.
        opacity: initial opacity (gsplat: 0.1; 0.5 for MCMC).
        scale: multiplier on the initial (nearest-neighbour) scales (gsplat: 1.0; 0.1 MCMC).
        max_points: randomly keep at most this many of the scene's points (None: all).
        file: start from a trained 3DGS instead (`GaussiansFile`: path, units of its world, SH
            degree, whether to densify); the fields above are then unused. In YAML
            ``init: {file: {path: .../point_cloud.ply}}``; on the command line
            ``--model.init_args.init.file.path=...``.
    """

    type: Literal["points", "random"] = "points"
    num_points: int = 100_000
    extent: float = 3.0
    center: tuple[float, float, float] | None = None
    opacity: float = 0.1
    scale: float = 1.0
    max_points: int | None = None
    file: GaussiansFile | None = None

    def __post_init__(self) -> None:
        owner = "GaussianSceneModule"
        if self.type not in ("points", "random"):
            raise ValueError(f"{owner}: init.type must be points or random, got {self.type!r}")
        check_number(owner, "init.num_points", self.num_points, low=1, integer=True)
        check_number(owner, "init.extent", self.extent, above=0.0)
        check_number(owner, "init.opacity", self.opacity)
        if not 0.0 < self.opacity < 1.0:  # a logit is taken
            raise ValueError(f"{owner}: init.opacity must be in (0, 1), got {self.opacity!r}")
        check_number(owner, "init.scale", self.scale, above=0.0)
        check_number(owner, "init.max_points", self.max_points, low=1, integer=True, optional=True)
        if self.center is not None:
            if len(self.center) != 3:
                raise ValueError(f"{owner}: init.center must be 3 values (x, y, z), got {self.center}")
            for value in self.center:
                check_number(owner, "init.center", value)
            self.center = tuple(float(c) for c in self.center)  # type: ignore[assignment]
        if isinstance(self.file, dict):  # a checkpoint's hyperparameters hold the fields
            self.file = GaussiansFile(**self.file)


# Settings are hyperparameters, so checkpoints hold them; allow them in weights-only loading.
torch.serialization.add_safe_globals([InitSettings])


def initial_gaussians(
    setup: SceneSetup, scene_scale: float, sh_degree: int, init: InitSettings, generator: torch.Generator,
) -> Gaussians:
    """Gaussians from ``setup.points`` ("points") or uniform in a cube ("random").

    Args:
        setup: the scene (its sparse points and training cameras).
        scene_scale: the scene extent the random cube is measured in.
        sh_degree: SH degree of the Gaussians.
        init: the start (``file`` is not read here).
        generator: draws the random subset of points, the random positions and the colours.
    """
    points, colors = setup.points, setup.point_colors
    kind = init.type
    if kind == "points" and (points is None or len(points) == 0):
        warnings.warn(
            "init.type='points' but the scene has no sparse points: initialising "
            f"{init.num_points} random Gaussians instead (set init.type: random to silence this)",
            stacklevel=3,
        )
        kind = "random"
    if kind == "points":
        points = torch.as_tensor(points, dtype=torch.float32).cpu()
        colors = None if colors is None else torch.as_tensor(colors, dtype=torch.float32).cpu()
        if init.max_points is not None and len(points) > init.max_points:
            keep = torch.randperm(len(points), generator=generator)[: init.max_points]
            points = points[keep]
            colors = None if colors is None else colors[keep]
        return Gaussians.from_points(points, colors, sh_degree, init.opacity, init.scale, generator)
    center = init.center if init.center is not None else look_at_center(setup.train_cameras, scene_scale)
    return Gaussians.random(
        init.num_points,
        init.extent * scene_scale,
        center=tuple(float(c) for c in center),
        sh_degree=sh_degree,
        init_opacity=init.opacity,
        init_scale=init.scale,
        generator=generator,
    )
