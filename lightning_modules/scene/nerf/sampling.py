"""Rays, scene contraction and proposal sampling of the NeRF (nerfacto's scheme), pure torch.

Facts from nerfstudio (``model_components/ray_samplers.py``, ``field_components/
spatial_distortions.py``) and mip-NeRF 360: the first samples are spaced uniformly in the
"spacing" s in [0, 1] mapped to distance by ``spacing_to_distance``; each proposal level
re-samples from the (annealed) weights of the previous one (piecewise-constant PDF over the
bins, one jitter per ray); the final samples come from the last proposal's weights.
Hand-written: nerfacc's ``PropNetEstimator.sampling`` needs its CUDA extension.
"""
from __future__ import annotations

import torch
from torch import Tensor

from datamodules.cameras.cameras import Cameras

__all__ = ["camera_rays", "contract", "spacing_to_distance", "sample_pdf", "ray_aabb", "anneal_weights"]


def camera_rays(cameras: Cameras, pixels: Tensor, view: Tensor) -> tuple[Tensor, Tensor]:
    """World rays through pixel centres (OpenCV camera: +x right, +y down, +z forward).

    Args:
        cameras: C cameras.
        pixels: (R, 2) float pixel coordinates (x, y) of the pixel corners (centre = +0.5).
        view: (R,) index into ``cameras`` of each ray.

    Returns:
        origins (R, 3) and unit directions (R, 3).
    """
    K = cameras.K.to(pixels)[view]  # (R, 3, 3)
    c2w = cameras.camera_to_world.to(pixels)[view]  # (R, 4, 4)
    x = (pixels[:, 0] + 0.5 - K[:, 0, 2]) / K[:, 0, 0]
    y = (pixels[:, 1] + 0.5 - K[:, 1, 2]) / K[:, 1, 1]
    d_cam = torch.stack([x, y, torch.ones_like(x)], dim=-1)
    d = (c2w[:, :3, :3] @ d_cam[:, :, None])[:, :, 0]
    return c2w[:, :3, 3], d / d.norm(dim=-1, keepdim=True)


def contract(x: Tensor, unbounded: bool) -> Tensor:
    """Positions (in units of the scene box half-size) to the hash grid's [0, 1]^3.

    Unbounded: mip-NeRF 360 / nerfacto contraction with the L-inf norm (inside the unit box
    unchanged, outside ``(2 - 1/|x|) x/|x|``) into [-2, 2], then to [0, 1]. Bounded: the
    box [-1, 1] to [0, 1] (points outside are clamped by the encoding).

    Args:
        x: (..., 3).

    Returns:
        (..., 3) in [0, 1].
    """
    if not unbounded:
        return (x + 1) / 2
    mag = x.abs().amax(dim=-1, keepdim=True).clamp_min(1e-6)
    x = torch.where(mag <= 1, x, (2 - 1 / mag) * (x / mag))
    return (x + 2) / 4


def spacing_to_distance(s: Tensor, near: Tensor, far: Tensor, unbounded: bool) -> Tensor:
    """Maps spacing s in [0, 1] to ray distance.

    Unbounded: nerfacto's piecewise spacing (``UniformLinDispPiecewiseSampler``): linear for
    the first half up to distance 1 (scene-box units), then linear in disparity to ``far``.
    Bounded: uniform between near and far.

    Args:
        s: (R, S).
        near: (R, 1), far: (R, 1) distances (unbounded: near must be < 1 < far).
    """
    if not unbounded:
        return near + (far - near) * s
    # g(t) = t/2 for t < 1 and 1 - 1/(2t) beyond; s is uniform between g(near) and g(far).
    g_near = torch.where(near < 1, near / 2, 1 - 1 / (2 * near))
    g_far = torch.where(far < 1, far / 2, 1 - 1 / (2 * far))
    g = g_near + (g_far - g_near) * s
    return torch.where(g < 0.5, 2 * g, 1 / (2 - 2 * g).clamp_min(1e-6))


def ray_aabb(origins: Tensor, dirs: Tensor, bound: float, near_min: float) -> tuple[Tensor, Tensor, Tensor]:
    """Entry/exit distances of rays through the box [-bound, bound]^3.

    Returns:
        near (R, 1), far (R, 1) and hit (R,) bool; rays that miss get near = far = near_min.
    """
    inv = 1.0 / torch.where(dirs.abs() < 1e-9, torch.full_like(dirs, 1e-9), dirs)
    t0 = (-bound - origins) * inv
    t1 = (bound - origins) * inv
    near = torch.minimum(t0, t1).amax(dim=-1).clamp_min(near_min)
    far = torch.maximum(t0, t1).amin(dim=-1)
    hit = far > near
    far = torch.where(hit, far, near + 1e-4)
    return near[:, None], far[:, None], hit


def anneal_weights(weights: Tensor, step: int, slope: float, max_steps: int) -> Tensor:
    """nerfacto's proposal weight annealing: ``w ** a`` with a rising from 0 to 1 (Schlick bias)."""
    frac = min(max(step / max(max_steps, 1), 0.0), 1.0)
    power = (slope * frac) / ((slope - 1) * frac + 1)
    return weights.clamp_min(0) ** power


def sample_pdf(bins: Tensor, weights: Tensor, num: int, jitter: Tensor | None) -> Tensor:
    """Samples bin edges from a piecewise-constant PDF (inverse transform), sorted per ray.

    Args:
        bins: (R, S + 1) bin edges in spacing units, increasing.
        weights: (R, S) non-negative weights of the bins (no grad needed).
        num: samples per ray; returns num + 1 edges of the new bins.
        jitter: (R, 1) uniform offsets in [0, 1), one per ray (nerfacto's ``single_jitter``);
            None samples the bin centres (evaluation).

    Returns:
        (R, num + 1) new bin edges, sorted, within [bins[:, 0], bins[:, -1]].
    """
    r = bins.shape[0]
    w = weights.detach() + 1e-5  # nerfstudio's histogram padding: no empty PDF
    pdf = w / w.sum(dim=-1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[:, :1]), torch.cumsum(pdf, dim=-1).clamp(max=1.0)], dim=-1)  # (R, S+1)
    u = torch.linspace(0.0, 1.0 - 1.0 / (num + 1), num + 1, device=bins.device, dtype=bins.dtype)
    if jitter is not None:
        u = u + jitter.to(bins) / (num + 1)
    else:
        u = u + 0.5 / (num + 1)
    u = u.expand(r, num + 1).contiguous()
    idx = torch.searchsorted(cdf.detach(), u, right=True)
    below = (idx - 1).clamp(0, cdf.shape[-1] - 1)
    above = idx.clamp(0, cdf.shape[-1] - 1)
    cdf_lo, cdf_hi = cdf.gather(1, below), cdf.gather(1, above)
    bin_lo, bin_hi = bins.gather(1, below), bins.gather(1, above)
    t = ((u - cdf_lo) / (cdf_hi - cdf_lo).clamp_min(1e-8)).clamp(0, 1)
    edges = bin_lo + t * (bin_hi - bin_lo)
    edges = torch.cat([bins[:, :1], edges[:, 1:-1], bins[:, -1:]], dim=-1)
    return torch.sort(edges.detach(), dim=-1).values
