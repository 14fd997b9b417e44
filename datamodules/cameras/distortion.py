"""Radial-tangential (OpenCV / COLMAP ``OPENCV``) lens distortion, removed in torch.

Parameters are ``[k1, k2, k3, k4, p1, p2]`` in nerfstudio's order; on normalised camera
coordinates ``(x, y)`` with ``r2 = x^2 + y^2``:

    radial = 1 + k1 r2 + k2 r2^2 + k3 r2^3 + k4 r2^4
    x_d = x radial + 2 p1 x y + p2 (r2 + 2 x^2)
    y_d = y radial + p1 (r2 + 2 y^2) + 2 p2 x y

COLMAP's SIMPLE_RADIAL (k), RADIAL (k1, k2) and OPENCV (k1, k2, p1, p2) are special cases.

Undistorting an image only needs the forward model: each output (pinhole) pixel is
distorted and the input sampled there with ``grid_sample``. Undistorting points (the
inverse) uses fixed-point iterations.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["distort_normalized", "undistort_normalized", "undistort_image", "undistort_points"]


def distort_normalized(xy: Tensor, params: Tensor) -> Tensor:
    """Applies the distortion to normalised coordinates.

    Args:
        xy: (..., 2) undistorted normalised coordinates.
        params: (6,) ``[k1, k2, k3, k4, p1, p2]``.

    Returns:
        (..., 2) distorted normalised coordinates.
    """
    k1, k2, k3, k4, p1, p2 = params.to(xy).unbind(-1)
    x, y = xy.unbind(-1)
    r2 = x * x + y * y
    radial = 1 + r2 * (k1 + r2 * (k2 + r2 * (k3 + r2 * k4)))
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return torch.stack([xd, yd], dim=-1)


def undistort_normalized(xy_d: Tensor, params: Tensor, iterations: int = 20) -> Tensor:
    """Inverts the distortion by fixed-point iteration ``x <- x_d - (distort(x) - x)``.

    Converges for the mild distortion of ordinary lenses (not fisheye).

    Args:
        xy_d: (..., 2) distorted normalised coordinates.
        params: (6,).

    Returns:
        (..., 2) undistorted normalised coordinates.
    """
    xy = xy_d.clone()
    for _ in range(iterations):
        xy = xy_d - (distort_normalized(xy, params) - xy)
    return xy


def undistort_points(uv: Tensor, K: Tensor, params: Tensor, iterations: int = 20) -> Tensor:
    """Pixel coordinates in the distorted image -> pixel coordinates of the pinhole image.

    Args:
        uv: (P, 2) pixels (pixel-corner convention: centres at ``i + 0.5``).
        K: (3, 3) intrinsics shared by both images.
        params: (6,).
    """
    f = torch.stack([K[0, 0], K[1, 1]]).to(uv)
    c = torch.stack([K[0, 2], K[1, 2]]).to(uv)
    return undistort_normalized((uv - c) / f, params, iterations) * f + c


def undistort_image(image: Tensor, K: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
    """Resamples a distorted image into the pinhole image with the same intrinsics ``K``.

    Args:
        image: (C, H, W) float image taken with intrinsics ``K`` and distortion ``params``.
        K: (3, 3) intrinsics at this image's size.
        params: (6,) ``[k1, k2, k3, k4, p1, p2]``.

    Returns:
        image: (C, H, W) undistorted (bilinear).
        valid: (1, H, W) float, 1 where the source pixel lies inside the input image; 0 in
            the border that the lens never saw (use it as a loss mask).
    """
    _, h, w = image.shape
    dtype = torch.float64
    v, u = torch.meshgrid(
        torch.arange(h, dtype=dtype, device=image.device) + 0.5,
        torch.arange(w, dtype=dtype, device=image.device) + 0.5,
        indexing="ij",
    )
    K = K.to(dtype)
    xy = torch.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1]], dim=-1)
    xy_d = distort_normalized(xy, params.to(dtype))
    u_d = xy_d[..., 0] * K[0, 0] + K[0, 2]
    v_d = xy_d[..., 1] * K[1, 1] + K[1, 2]
    # grid_sample with align_corners=False uses the same pixel-corner convention.
    grid = torch.stack([2 * u_d / w - 1, 2 * v_d / h - 1], dim=-1)[None].to(image.dtype)
    out = F.grid_sample(image[None], grid, mode="bilinear", padding_mode="border", align_corners=False)[0]
    valid = ((u_d >= 0) & (u_d <= w) & (v_d >= 0) & (v_d <= h)).to(image.dtype)[None]
    return out, valid
