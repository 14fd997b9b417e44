"""Which world a reconstruction file's Gaussians are in, as the scene's training photos tell it.

The geometric check (``world_units.check_against_cameras``) catches a file of another scene or
one off by orders of magnitude; a flip, a rotation or a 3x scale passes it and trains from a
scrambled start. The photos do not pass it: before step 1, a few training views are rendered
from the file in each candidate world (small, degree-0 colours, with the project's rasterizer)
and compared with the photos. A file in its right world reproduces them (a 3DGS of the scene
tests near its training PSNR); in a wrong one it shows other things or nothing.
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from datamodules.cameras.cameras import Cameras
from datamodules.scene.scene_setup import SceneSetup

from lightning_modules.scene.gaussians.rasterize import render
from lightning_modules.scene.gaussians.similarity import transform_splats

__all__ = ["PhotoViews", "photo_views", "world_psnrs", "judge_world", "FAR_BETTER_DB"]

log = logging.getLogger(__name__)

FAR_BETTER_DB = 3.0
"""A world this many dB better than the declared one over the same views is "far better": the
same Gaussians cannot be that much closer to the photos by chance (a real 3DGS declared in the
wrong world tests 9-11 dB below its right one)."""


@dataclass(frozen=True)
class PhotoViews:
    """A few training views at a small size: what the worlds are judged on.

    Attributes:
        cameras: V single cameras (each resized with its photo).
        images: V photos (3, h, w) in [0, 1], area-downsampled.
        background: (1, 3) the colour the photos were composited on (black for opaque scenes).
    """

    cameras: list[Cameras]
    images: list[Tensor]
    background: Tensor

    def describe(self) -> str:
        sizes = sorted({f"{int(c.width[0])}x{int(c.height[0])}" for c in self.cameras})
        return f"{len(self.cameras)} training view(s) at {', '.join(sizes)}"


def photo_views(setup: SceneSetup, views: int = 4, size: int = 64) -> PhotoViews | None:
    """Up to ``views`` training views, evenly spaced, their longer side at most ``size`` pixels.

    Returns:
        The views, or None when the setup carries no training photos.
    """
    images = setup.train_images
    if not images:
        return None
    n = len(images)
    picks = torch.linspace(0, n - 1, min(views, n)).round().long().unique().tolist()
    cams, photos = [], []
    for i in picks:  # at most ``views`` iterations; the photos may differ in size
        cam = setup.train_cameras[[i]].to("cpu")
        factor = min(1.0, size / float(max(int(cam.width[0]), int(cam.height[0]))))
        cam = cam.scaled(factor)
        h, w = int(cam.height[0]), int(cam.width[0])
        photo = images[i].float().cpu()
        if photo.shape[-2:] != (h, w):
            photo = F.interpolate(photo[None], size=(h, w), mode="area")[0]
        cams.append(cam)
        photos.append(photo.clamp(0, 1))
    background = torch.tensor([setup.background or (0.0, 0.0, 0.0)], dtype=torch.float32)
    return PhotoViews(cams, photos, background)


@torch.no_grad()
def world_psnrs(splats: dict[str, Tensor], worlds: dict[str, Tensor], views: PhotoViews,
                device: torch.device | str = "cpu") -> dict[str, float]:
    """Mean PSNR of ``views`` rendered from the Gaussians mapped by each world's transform.

    Degree-0 colours only: where things are decides the world, not their view-dependent sheen,
    and the higher SH coefficients cost most to rotate. Worlds with the same transform (gsplat
    and gsplat_1.5.1 when gsplat's flip does not apply) are rendered once.

    Args:
        splats: raw Gaussians in the file's world (means (N, 3), scales (N, 3) log, quats (N, 4),
            opacities (N,) logit, sh0 (N, 1, 3)).
        worlds: {units: (4, 4) float64 ``normalised = M @ file's world``}.
        views: the photos and their cameras (normalised world).
        device: where to render (gsplat's kernels on CUDA, the torch backend elsewhere).

    Returns:
        {units: PSNR in dB}, in the order of ``worlds``.
    """
    base = {k: splats[k] for k in ("means", "scales", "quats", "opacities", "sh0")}
    base["shN"] = splats["sh0"].new_zeros(len(splats["means"]), 0, 3)
    done: list[tuple[Tensor, float]] = []
    out: dict[str, float] = {}
    for units, M in worlds.items():  # at most five worlds
        same = [p for T, p in done if torch.allclose(T, M, atol=1e-9)]
        if same:
            out[units] = same[0]
            continue
        s = {k: v.to(device) for k, v in transform_splats(base, M).items()}
        quats, scales, opacities = s["quats"], s["scales"].exp(), torch.sigmoid(s["opacities"])
        psnrs = []
        for cam, photo in zip(views.cameras, views.images):
            rgb, _, _ = render(s["means"], quats, scales, opacities, s["sh0"], cam.world_to_camera.to(device),
                               cam.K.to(device), int(cam.width[0]), int(cam.height[0]), sh_degree=0,
                               backgrounds=views.background.to(device))
            mse = (rgb[0].permute(2, 0, 1).clamp(0, 1).cpu() - photo).square().mean()
            psnrs.append(float(-10 * torch.log10(mse.clamp_min(1e-10))))
        out[units] = sum(psnrs) / len(psnrs)
        done.append((M, out[units]))
    return out


def judge_world(declared: str, psnrs: dict[str, float], where: str, views: PhotoViews) -> str:
    """The world to use: the best one for "auto", else ``declared`` (with a warning that gives
    every PSNR when another world explains the photos by more than ``FAR_BETTER_DB``).

    Args:
        declared: ``init.file.units``.
        psnrs: ``world_psnrs``'s result (ties go to the first).
        where: the file, for the messages.
        views: the views judged on (their number and size go into the messages).
    """
    best = max(psnrs, key=lambda u: psnrs[u])
    table = ", ".join(f"{u} {p:.2f} dB" for u, p in psnrs.items())
    if declared == "auto":
        log.info("%s: init.file.units=auto: %s (%s rendered from the file in each world: %s)",
                 where, best, views.describe(), table)
        return best
    if psnrs[best] - psnrs[declared] > FAR_BETTER_DB:
        warnings.warn(
            f"{where}: init.file.units={declared}, but the training photos say {best}: {views.describe()} rendered "
            f"from the file in each world match them at {table}. Set init.file.units: {best} (or auto); with "
            f"{declared} the Gaussians start scrambled against the cameras.",
            stacklevel=3,
        )
    return declared
