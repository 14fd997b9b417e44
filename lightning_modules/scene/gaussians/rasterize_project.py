"""Projection of 3D Gaussians to 2D for the CPU rasterizer (gsplat 1.5.3's conventions).

Step 1 of ``rasterize_torch``: EWA splatting with gsplat's clamped Jacobian, ``eps2d`` blur,
near/far and opacity culling, and gsplat's opacity-aware box radius. The constants are the
CUDA kernels' own (file named beside each), shared with the pair search and compositing.
"""

from __future__ import annotations


import torch
from torch import Tensor

# The pure-torch reference helpers of gsplat import without CUDA; reusing them
# keeps quaternion and SH conventions identical to the CUDA kernels.
from gsplat.cuda._torch_impl import _quat_scale_to_covar_preci

ALPHA_THRESHOLD = 1.0 / 255.0  # gsplat include/Common.h
ALPHA_MAX = 0.999  # gsplat RasterizeToPixels3DGSFwd.cu clamps alpha here
TRANSMITTANCE_MIN = 1e-4  # gsplat stops a pixel when T would drop to this
EXTEND_MAX = 3.33  # gsplat's box half-size in standard deviations


def project_gaussians(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    eps2d: float = 0.3,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    radius_clip: float = 0.0,
    antialiased: bool = False,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Project 3D Gaussians to every camera as gsplat's ``fully_fused_projection``.

    Args:
        means: Centres in world space. (N, 3)
        quats: Rotations, wxyz, not necessarily normalised. (N, 4)
        scales: Activated scales. (N, 3)
        opacities: Activated opacities in [0, 1]. (N,)
        viewmats: World-to-camera matrices (OpenCV axes). (C, 4, 4)
        Ks: Pinhole intrinsics in pixels. (C, 3, 3)
        width: Image width in pixels.
        height: Image height in pixels.
        eps2d: Added to the diagonal of the 2D covariance (low-pass filter).
        near_plane: Gaussians with camera depth below this are culled.
        far_plane: Gaussians with camera depth above this are culled.
        radius_clip: Gaussians whose radii are both <= this (pixels) are culled.
        antialiased: Mip-Splatting compensation (gsplat ``rasterize_mode="antialiased"``).

    Returns:
        radii: Box half-sizes in pixels, 0 where culled. (C, N, 2) int32
        means2d: Projected centres in pixels. (C, N, 2)
        depths: Camera-space z. (C, N)
        conics: Inverse 2D covariance (xx, xy, yy). (C, N, 3)
        opacities: Per-camera opacities (times the compensation if antialiased). (C, N)
    """
    C = viewmats.shape[0]
    covars, _ = _quat_scale_to_covar_preci(quats, scales, compute_preci=False)  # (N, 3, 3)
    R = viewmats[:, :3, :3]
    t = viewmats[:, :3, 3]
    means_c = torch.einsum("cij,nj->cni", R, means) + t[:, None, :]  # (C, N, 3)
    covars_c = torch.einsum("cij,njk,clk->cnil", R, covars, R)  # (C, N, 3, 3)

    x, y, z = means_c.unbind(-1)
    in_depth = (z >= near_plane) & (z <= far_plane)
    # A culled Gaussian may sit at z = 0; dividing by a safe z keeps its (unused)
    # values finite so that 0 * inf never turns a gradient into NaN.
    z_safe = torch.where(in_depth, z, torch.ones_like(z))

    fx = Ks[:, 0, 0, None]
    fy = Ks[:, 1, 1, None]
    cx = Ks[:, 0, 2, None]
    cy = Ks[:, 1, 2, None]
    tan_fovx = 0.5 * width / fx
    tan_fovy = 0.5 * height / fy
    lim_x_pos = (width - cx) / fx + 0.3 * tan_fovx
    lim_x_neg = cx / fx + 0.3 * tan_fovx
    lim_y_pos = (height - cy) / fy + 0.3 * tan_fovy
    lim_y_neg = cy / fy + 0.3 * tan_fovy
    # gsplat clamps the point used in the Jacobian to 1.3x the field of view.
    tx = z_safe * torch.minimum(lim_x_pos, torch.maximum(-lim_x_neg, x / z_safe))
    ty = z_safe * torch.minimum(lim_y_pos, torch.maximum(-lim_y_neg, y / z_safe))

    # J = [[a, 0, b], [0, c, d]]; cov2d = J cov J^T written out per entry.
    a = fx / z_safe
    c = fy / z_safe
    b = -fx * tx / z_safe**2
    d = -fy * ty / z_safe**2
    s00 = covars_c[..., 0, 0]
    s01 = covars_c[..., 0, 1]
    s02 = covars_c[..., 0, 2]
    s11 = covars_c[..., 1, 1]
    s12 = covars_c[..., 1, 2]
    s22 = covars_c[..., 2, 2]
    cov00 = a * a * s00 + 2 * a * b * s02 + b * b * s22
    cov01 = a * c * s01 + a * d * s02 + b * c * s12 + b * d * s22
    cov11 = c * c * s11 + 2 * c * d * s12 + d * d * s22

    means2d = torch.stack([fx * x / z_safe + cx, fy * y / z_safe + cy], dim=-1)  # (C, N, 2)

    det_orig = cov00 * cov11 - cov01 * cov01
    cov00 = cov00 + eps2d
    cov11 = cov11 + eps2d
    det = cov00 * cov11 - cov01 * cov01
    valid = in_depth & (det > 0)
    det_safe = torch.where(valid, det, torch.ones_like(det))
    conics = torch.stack([cov11 / det_safe, -cov01 / det_safe, cov00 / det_safe], dim=-1)

    opac = opacities[None, :].expand(C, -1)
    if antialiased:
        opac = opac * torch.sqrt(torch.clamp(det_orig / det_safe, min=0.0))

    with torch.no_grad():
        o = opac.detach()
        valid = valid & (o >= ALPHA_THRESHOLD)
        # Opacity-aware box (gsplat / arXiv:2402.00525 B.2): beyond it alpha < 1/255.
        extend = torch.sqrt(2.0 * torch.log(torch.clamp(o / ALPHA_THRESHOLD, min=1.0)))
        extend = torch.clamp(extend, max=EXTEND_MAX)
        radius_x = torch.ceil(extend * torch.sqrt(cov00.detach().clamp(min=0.0)))
        radius_y = torch.ceil(extend * torch.sqrt(cov11.detach().clamp(min=0.0)))
        valid = valid & ~((radius_x <= radius_clip) & (radius_y <= radius_clip))
        mx, my = means2d.detach().unbind(-1)
        valid = valid & (mx + radius_x > 0) & (mx - radius_x < width)
        valid = valid & (my + radius_y > 0) & (my - radius_y < height)
        radii = torch.stack([radius_x, radius_y], dim=-1)
        radii = torch.where(valid[..., None], radii, torch.zeros_like(radii)).to(torch.int32)

    return radii, means2d, z, conics, opac

