"""Pure-torch CPU rasterizer with gsplat 1.5.3's conventions (classic 3DGS).

gsplat's CUDA kernels do not run without a GPU. This backend reproduces
``gsplat.rasterization(..., packed=False, rasterize_mode="classic")`` in vectorised
torch so that a scene trains on CPU with the same numbers and the same ``meta``
dict that gsplat's densification strategies read.

How it works (memory grows with covered pixels, never with pixels x Gaussians):

1. Projection (:func:`project_gaussians`): EWA splatting with gsplat's clamped
   Jacobian, ``eps2d`` blur, near/far and opacity culling, and gsplat's
   opacity-aware box ``radius = ceil(min(3.33, sqrt(2 ln(255 o))) * sqrt(cov2d_ii))``
   per axis. Every pixel centre where a Gaussian reaches ``alpha >= 1/255`` lies
   inside that box, so enumerating box pixels finds exactly the pixel/Gaussian
   pairs gsplat's tile kernel composites (tiles only change the order of work).
2. Pair search (:func:`_find_pairs`, no autograd): Gaussians are ranked by
   (image, depth). Image rows are cut into bands of about ``pair_budget``
   candidate pairs (a pixel's pairs never straddle two bands). In a band, boxes
   are expanded to rows (``repeat_interleave``) and rows, grouped by width into
   power-of-two buckets, to dense (rows, width) grids evaluated by broadcasting.
   Pairs below gsplat's alpha threshold are dropped, the rest sorted on one
   int64 key (pixel, depth rank), transmittance is a segmented cumulative sum of
   ``log(1 - alpha)`` (float64: one cumsum spans all pixels), and pairs past
   gsplat's early stop (transmittance after the pair <= 1e-4) are dropped.
3. Compositing (:class:`_CompositePairs`): ``index_add_`` of ``alpha * T`` times
   the features into pixels, with a hand-written backward (gsplat's formulas:
   suffix sums per pixel by a segmented cumsum), run in chunks of whole pixels.
   Gradients reach the 2D means (pixel units, as gsplat's strategies expect),
   conics, opacities and features; autograd carries them on to the 3D inputs
   through the projection and SH evaluation.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

# The pure-torch reference helpers of gsplat import without CUDA; reusing them
# keeps quaternion and SH conventions identical to the CUDA kernels.
from gsplat.cuda._torch_impl import _quat_scale_to_covar_preci, _spherical_harmonics

ALPHA_THRESHOLD = 1.0 / 255.0  # gsplat include/Common.h
ALPHA_MAX = 0.999  # gsplat RasterizeToPixels3DGSFwd.cu clamps alpha here
TRANSMITTANCE_MIN = 1e-4  # gsplat stops a pixel when T would drop to this
EXTEND_MAX = 3.33  # gsplat's box half-size in standard deviations
TILE_SIZE = 16  # reported in meta like gsplat; the CPU backend does not use tiles

RENDER_MODES = ("RGB", "D", "ED", "RGB+D", "RGB+ED")


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


def _segment_bounds(keys: Tensor) -> tuple[Tensor, Tensor]:
    """First and last index of each element's run of equal sorted keys.

    Args:
        keys: Sorted keys (pixel ids). (M,)

    Returns:
        starts (M,), ends (M,) int64.
    """
    M = keys.shape[0]
    is_start = torch.ones(M, dtype=torch.bool, device=keys.device)
    if M > 1:
        is_start[1:] = keys[1:] != keys[:-1]
    first = torch.nonzero(is_start).squeeze(1)  # (S,) run starts
    seg = torch.cumsum(is_start, dim=0) - 1  # run id of each element
    last = torch.cat([first[1:], first.new_tensor([M])]) - 1
    return first.index_select(0, seg), last.index_select(0, seg)


def _segment_cumsum(values: Tensor, starts: Tensor) -> Tensor:
    """Inclusive cumulative sum within runs, in float64.

    One cumsum runs over every pixel's pairs, so float32 would lose the small
    per-pixel differences once the running total is large.

    Args:
        values: Per-pair values, grouped by run. (M,)
        starts: First index of each element's run. (M,)

    Returns:
        Inclusive per-run cumulative sums. (M,) float64
    """
    v = values.to(torch.float64)
    cs = torch.cumsum(v, dim=0)
    return cs - (cs.index_select(0, starts) - v.index_select(0, starts))


@torch.no_grad()
def _find_pairs(
    means2d: Tensor,
    conics: Tensor,
    opacities: Tensor,
    depths: Tensor,
    radii: Tensor,
    width: int,
    height: int,
    pair_budget: int,
) -> tuple[Tensor, Tensor, Tensor, Tensor, dict[str, int]]:
    """All (pixel, Gaussian) pairs gsplat composites, in (pixel, depth) order.

    Args:
        means2d: (I, N, 2); conics: (I, N, 3); opacities: (I, N); depths: (I, N);
        radii: (I, N, 2) int, 0 where culled. I is the number of images.
        width: Image width.
        height: Image height.
        pair_budget: Most candidate box pairs held at once (bounds peak memory).

    Returns:
        pixel_ids: Flat pixel index ``image * H * W + y * W + x``, sorted. (P,) int64
        flat_ids: Flat Gaussian index ``image * N + n`` of each pair. (P,) int64
        alphas: Alpha of each pair. (P,)
        trans: Transmittance in front of each pair (exclusive). (P,)
        stats: Candidate and kept pair counts and the number of row bands.
    """
    I, N = depths.shape
    device, dtype = means2d.device, means2d.dtype
    stats = {"candidate_pairs": 0, "pairs": 0, "bands": 0}
    empty_i = torch.zeros(0, dtype=torch.int64, device=device)
    empty_f = torch.zeros(0, dtype=dtype, device=device)
    nothing = (empty_i, empty_i, empty_f, empty_f, stats)

    valid = (radii > 0).all(dim=-1).reshape(-1)
    flat = torch.nonzero(valid).squeeze(1)  # (V,)
    if flat.numel() == 0:
        return nothing
    # Order Gaussians by (image, depth); ties keep index order like gsplat's stable
    # sort. From here a Gaussian's position in `flat` is its depth rank.
    img = flat // N
    order = torch.argsort(depths.reshape(-1).index_select(0, flat), stable=True)
    order = order.index_select(0, torch.argsort(img.index_select(0, order), stable=True))
    flat = flat.index_select(0, order)
    img = img.index_select(0, order)

    m2 = means2d.reshape(-1, 2).index_select(0, flat)
    r = radii.reshape(-1, 2).index_select(0, flat).to(dtype)
    # Pixel j has its centre at j + 0.5; keep the centres inside the box.
    x0 = torch.ceil(m2[:, 0] - r[:, 0] - 0.5).clamp(min=0).long()
    x1 = torch.floor(m2[:, 0] + r[:, 0] - 0.5).clamp(max=width - 1).long()
    y0 = torch.ceil(m2[:, 1] - r[:, 1] - 0.5).clamp(min=0).long()
    y1 = torch.floor(m2[:, 1] + r[:, 1] - 0.5).clamp(max=height - 1).long()
    bw = x1 - x0 + 1
    keep = torch.nonzero((bw > 0) & (y1 >= y0)).squeeze(1)
    if keep.numel() == 0:
        return nothing
    flat, img, m2, x0, bw = flat[keep], img[keep], m2[keep], x0[keep], bw[keep]
    V = flat.numel()
    gy0 = img * height + y0[keep]  # rows numbered across all images
    gy1 = img * height + y1[keep]
    con = conics.reshape(-1, 3).index_select(0, flat)
    opa = opacities.reshape(-1).index_select(0, flat)

    # Candidate pairs per global row (difference array), then rows cut into bands
    # of about pair_budget candidates: a pixel's pairs always share one band.
    n_rows = I * height
    diff = torch.zeros(n_rows + 1, dtype=torch.int64, device=device)
    diff.index_add_(0, gy0, bw)
    diff.index_add_(0, gy1 + 1, -bw)
    cum = torch.cumsum(torch.cumsum(diff[:-1], dim=0), dim=0)
    total = int(cum[-1])
    marks = torch.arange(pair_budget, max(total, pair_budget), pair_budget, device=device)
    edges = torch.unique(torch.cat([torch.searchsorted(cum, marks) + 1, cum.new_tensor([n_rows])]))
    edges = edges[(edges > 0) & (edges <= n_rows)].tolist()

    out: list[tuple[Tensor, Tensor, Tensor, Tensor]] = []
    r0 = 0
    for r1 in edges:  # a few row bands, not a loop over pixels or Gaussians
        sel = torch.nonzero((gy1 >= r0) & (gy0 < r1)).squeeze(1)
        if sel.numel() > 0:
            out.append(_band_pairs(sel, r0, r1, gy0, gy1, img, x0, bw, m2, con, opa, V, width, height, stats))
            stats["bands"] += 1
        r0 = r1
    if not out:
        return nothing
    pix, gid, alpha, trans = (torch.cat(t) for t in zip(*out))
    stats["pairs"] = int(pix.numel())
    return pix, flat.index_select(0, gid), alpha, trans, stats


def _band_pairs(
    sel: Tensor, r0: int, r1: int, gy0: Tensor, gy1: Tensor, img: Tensor, x0: Tensor, bw: Tensor,
    m2: Tensor, con: Tensor, opa: Tensor, V: int, width: int, height: int, stats: dict[str, int],
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Sorted, thresholded, early-stopped pairs of the global rows [r0, r1).

    Args:
        sel: Depth ranks of the Gaussians touching the band. (S,)
        Per-Gaussian (V,) arrays in depth-rank order: gy0/gy1 (first/last global
        row), img, x0 (first column), bw (box width), m2 (V, 2), con (V, 3), opa.
        V: Number of Gaussians with a non-empty box.

    Returns:
        pixel ids (global, sorted), depth ranks, alphas, exclusive transmittances.
    """
    device = sel.device
    # Gaussians -> box rows. Per row, sigma(dx) = dx * (A * dx + B) + E, so the
    # per-pixel work below needs no gathers.
    ry0 = gy0.index_select(0, sel).clamp(min=r0)
    nrows = gy1.index_select(0, sel).clamp(max=r1 - 1) - ry0 + 1
    rg = torch.repeat_interleave(sel, nrows)  # depth rank of each row
    row = torch.repeat_interleave(ry0 - (torch.cumsum(nrows, 0) - nrows), nrows)
    row = row + torch.arange(row.numel(), device=device)  # global row
    w = bw.index_select(0, rg)
    mx = m2[:, 0].index_select(0, rg)
    dy = m2[:, 1].index_select(0, rg) - ((row - img.index_select(0, rg) * height).to(m2.dtype) + 0.5)
    c = con.index_select(0, rg)
    A = 0.5 * c[:, 0]
    B = c[:, 1] * dy
    E = 0.5 * c[:, 2] * dy * dy
    xs = x0.index_select(0, rg)
    q = mx - 0.5 - xs.to(m2.dtype)  # dx at the row's first pixel
    o = opa.index_select(0, rg)
    base = (row - r0) * width + xs  # band pixel id of the row's first pixel

    # Rows grouped by width into power-of-two buckets: each bucket is a dense
    # (rows, cap) grid that wastes < half of its cells.
    keys, alphas = [], []
    cap = 1
    lo = 0
    w_max = int(w.max())
    while lo < w_max:
        rows = torch.nonzero((w > lo) & (w <= cap)).squeeze(1)
        if rows.numel() > 0:
            stats["candidate_pairs"] += int(w.index_select(0, rows).sum())
            col = torch.arange(cap, device=device)
            dx = q.index_select(0, rows)[:, None] - col.to(q.dtype)
            sigma = dx * (A.index_select(0, rows)[:, None] * dx + B.index_select(0, rows)[:, None])
            sigma = sigma + E.index_select(0, rows)[:, None]
            alpha = torch.clamp(o.index_select(0, rows)[:, None] * torch.exp(-sigma), max=ALPHA_MAX)
            ok = (alpha >= ALPHA_THRESHOLD) & (sigma >= 0) & (col < w.index_select(0, rows)[:, None])
            hit = torch.nonzero(ok.reshape(-1)).squeeze(1)
            shift = cap.bit_length() - 1
            rr = rows.index_select(0, hit >> shift)
            # Unique int64 key (band pixel, depth rank): sorting it orders pairs by
            # pixel, then front to back.
            keys.append((base.index_select(0, rr) + (hit & (cap - 1))) * V + rg.index_select(0, rr))
            alphas.append(alpha.reshape(-1).index_select(0, hit))
        lo, cap = cap, cap * 2
    key, perm = torch.sort(torch.cat(keys))
    alpha = torch.cat(alphas).index_select(0, perm)
    pix = torch.div(key, V, rounding_mode="floor")
    gid = key - pix * V

    starts, _ = _segment_bounds(pix)
    log1m = torch.log1p(-alpha)
    incl = _segment_cumsum(log1m, starts)
    # gsplat stops a pixel before the Gaussian that would take T to <= 1e-4.
    alive = torch.nonzero(incl > math.log(TRANSMITTANCE_MIN)).squeeze(1)
    trans = torch.exp(incl - log1m.to(torch.float64)).to(alpha.dtype)
    # Global row r0 of image i starts at pixel (r0 // H) * H * W + (r0 % H) * W = r0 * W.
    return (
        pix.index_select(0, alive) + r0 * width,
        gid.index_select(0, alive),
        alpha.index_select(0, alive),
        trans.index_select(0, alive),
    )


class _CompositePairs(torch.autograd.Function):
    """Front-to-back compositing of sorted pairs with a hand-written backward.

    The forward reuses the alphas and transmittances of the pair search; the
    backward recomputes the few per-pair terms it needs, whole pixels at a time,
    so memory holds four numbers per pair instead of a graph of per-pair tensors.
    Per-Gaussian attributes travel as rows of a (6 + D, G) block: gathering and
    scattering contiguous 1D rows is several times faster than (P, 6 + D) rows.
    """

    @staticmethod
    def forward(
        ctx: Any, params: Tensor, pixel_ids: Tensor, flat_ids: Tensor, alpha: Tensor,
        trans: Tensor, width: int, height: int, n_images: int, chunk: int,
    ) -> Tensor:
        """params (6 + D, G): rows mean x, mean y, conic xx, xy, yy, opacity, features.

        Returns per pixel [sum w * feature..., sum w] as (D + 1, n_pix)."""
        D = params.shape[0] - 6
        w = alpha * trans
        out = torch.zeros(D + 1, n_images * height * width, dtype=params.dtype, device=params.device)
        for k in range(D):  # channels, not pixels or Gaussians
            out[k].index_add_(0, pixel_ids, params[6 + k].index_select(0, flat_ids) * w)
        out[D].index_add_(0, pixel_ids, w)
        ctx.save_for_backward(params, pixel_ids, flat_ids, alpha, trans)
        ctx.width, ctx.height, ctx.chunk = width, height, chunk
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor):
        params, pixel_ids, flat_ids, alpha, trans = ctx.saved_tensors
        g_params = torch.zeros_like(params)
        P = pixel_ids.numel()
        if P > 0:
            grad_out = grad_out.contiguous()
            # Chunks of whole pixels bound the backward's per-pair temporaries.
            marks = pixel_ids.index_select(0, torch.arange(0, P, ctx.chunk, device=pixel_ids.device))
            cuts = torch.unique(torch.searchsorted(pixel_ids, marks)).tolist() + [P]
            for a, b in zip(cuts[:-1], cuts[1:]):
                grads = _composite_vjp(params, pixel_ids[a:b], flat_ids[a:b], alpha[a:b], trans[a:b],
                                       grad_out, ctx.width, ctx.height)
                for k, g in enumerate(grads):
                    g_params[k].index_add_(0, flat_ids[a:b], g)
        return g_params, None, None, None, None, None, None, None, None


def _composite_vjp(
    params: Tensor, pixel_ids: Tensor, flat_ids: Tensor, alpha: Tensor, trans: Tensor,
    grad_out: Tensor, width: int, height: int,
) -> list[Tensor]:
    """Per-pair gradients w.r.t. the Gaussian attributes, for whole pixels.

    Args:
        params: (6 + D, G) as in :class:`_CompositePairs`.
        pixel_ids, flat_ids, alpha, trans: The pairs of a run of whole pixels. (P,)
        grad_out: dL/d[sum w * feature..., sum w] per pixel. (D + 1, n_pix)
        width: Image width.
        height: Image height.

    Returns:
        6 + D per-pair gradients, one (P,) tensor per row of ``params``.
    """
    D = params.shape[0] - 6
    w = alpha * trans
    cg = torch.zeros_like(alpha)  # feature . dL/dC
    g_feats = []
    for k in range(D):
        g = grad_out[k].index_select(0, pixel_ids)
        cg += params[6 + k].index_select(0, flat_ids) * g
        g_feats.append(g * w)
    g_acc = grad_out[D].index_select(0, pixel_ids)  # dL/dA
    starts, ends = _segment_bounds(pixel_ids)
    # Behind-sums: sum over the pixel's later pairs of w_j c_j . dL/dC.
    incl = _segment_cumsum(w * cg, starts)
    behind = (incl.index_select(0, ends) - incl).to(alpha.dtype)
    one_m = 1.0 - alpha
    t_final = trans.index_select(0, ends) * one_m.index_select(0, ends)
    g_alpha = trans * cg + (g_acc * t_final - behind) / one_m

    # Pixel centres from flat ids in float64 (exact far beyond any image size);
    # integer division is several times slower on CPU.
    pf = pixel_ids.to(torch.float64)
    rows = torch.floor((pf + 0.5) / width)
    px = (pf - rows * width + 0.5).to(alpha.dtype)
    py = (rows - torch.floor((rows + 0.5) / height) * height + 0.5).to(alpha.dtype)
    mx, my, c0, c1, c2, o = (params[k].index_select(0, flat_ids) for k in range(6))
    dx = mx - px
    dy = my - py
    sigma = 0.5 * (c0 * dx * dx + c2 * dy * dy) + c1 * dx * dy
    vis = torch.exp(-sigma)
    # Clamped alphas (0.999) pass no gradient to opacity or shape, as in gsplat.
    g_o = torch.where(o * vis <= ALPHA_MAX, vis * g_alpha, torch.zeros_like(g_alpha))
    g_sigma = -o * g_o
    return [
        (c0 * dx + c1 * dy) * g_sigma,
        (c1 * dx + c2 * dy) * g_sigma,
        0.5 * dx * dx * g_sigma,
        dx * dy * g_sigma,
        0.5 * dy * dy * g_sigma,
        g_o,
        *g_feats,
    ]


def composite_pairs(
    pixel_ids: Tensor,
    flat_ids: Tensor,
    alphas: Tensor,
    trans: Tensor,
    means2d: Tensor,
    conics: Tensor,
    opacities: Tensor,
    colors: Tensor,
    width: int,
    height: int,
    backgrounds: Tensor | None = None,
    chunk: int = 1_000_000,
) -> tuple[Tensor, Tensor]:
    """Differentiable compositing of the pairs from :func:`_find_pairs`.

    Args:
        pixel_ids: Flat pixel index, sorted, pairs of a pixel front to back. (P,)
        flat_ids: Flat Gaussian index ``image * N + n``. (P,)
        alphas: Pair alphas. (P,)
        trans: Transmittance in front of each pair. (P,)
        means2d: (I, N, 2); conics: (I, N, 3); opacities: (I, N); colors: (I, N, D).
        width: Image width.
        height: Image height.
        backgrounds: Colour behind the Gaussians per image. (I, D) or None
        chunk: About this many pairs per backward chunk (bounds its memory).

    Returns:
        render_colors (I, H, W, D), render_alphas (I, H, W, 1).
    """
    I, N, D = colors.shape
    params = torch.cat(
        [means2d.reshape(-1, 2), conics.reshape(-1, 3), opacities.reshape(-1, 1), colors.reshape(-1, D)],
        dim=1,
    ).t().contiguous()  # (6 + D, I * N)
    out = _CompositePairs.apply(params, pixel_ids, flat_ids, alphas, trans, width, height, I, chunk)
    render_colors = out[:D].t().reshape(I, height, width, D)
    render_alphas = out[D].reshape(I, height, width, 1)
    if backgrounds is not None:
        render_colors = render_colors + (1.0 - render_alphas) * backgrounds[:, None, None, :]
    return render_colors, render_alphas


def rasterization_torch(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    radius_clip: float = 0.0,
    eps2d: float = 0.3,
    sh_degree: int | None = None,
    backgrounds: Tensor | None = None,
    render_mode: str = "RGB",
    rasterize_mode: str = "classic",
    pair_budget: int = 1_000_000,
) -> tuple[Tensor, Tensor, dict[str, Any]]:
    """``gsplat.rasterization`` (packed=False) in pure torch; see that function's docs.

    Args:
        means: (N, 3); quats: (N, 4) wxyz; scales: (N, 3) activated;
        opacities: (N,) activated; colors: (N, D) or (C, N, D), or SH (N, K, 3) or
            (C, N, K, 3) when ``sh_degree`` is set.
        viewmats: World-to-camera. (C, 4, 4)
        Ks: Intrinsics. (C, 3, 3)
        width: Image width.
        height: Image height.
        near_plane, far_plane, radius_clip, eps2d, sh_degree, backgrounds (C, D),
        render_mode, rasterize_mode: as in ``gsplat.rasterization``.
        pair_budget: About the most candidate (pixel, Gaussian) pairs, and pairs
            in a backward chunk, held at once: peak memory vs. per-chunk overhead.

    Returns:
        render_colors (C, H, W, X), render_alphas (C, H, W, 1), meta dict with
        gsplat's keys for packed=False (``means2d`` (C, N, 2), ``radii`` (C, N, 2)
        int32, ``depths`` (C, N), ``conics``, ``opacities`` (C, N), ``width``,
        ``height``, ``n_cameras``, ``gaussian_ids`` None, ...) plus ``n_pairs``.
    """
    if render_mode not in RENDER_MODES:
        raise ValueError(f"render_mode must be one of {RENDER_MODES}, got {render_mode!r}")
    if rasterize_mode not in ("classic", "antialiased"):
        raise ValueError(f"rasterize_mode must be 'classic' or 'antialiased', got {rasterize_mode!r}")
    C = viewmats.shape[0]
    radii, means2d, depths, conics, opac = project_gaussians(
        means, quats, scales, opacities, viewmats, Ks, width, height,
        eps2d=eps2d, near_plane=near_plane, far_plane=far_plane,
        radius_clip=radius_clip, antialiased=rasterize_mode == "antialiased",
    )

    if sh_degree is None:
        feats = colors if colors.dim() == 3 else colors[None].expand(C, -1, -1)  # (C, N, D)
    else:
        if (sh_degree + 1) ** 2 > colors.shape[-2]:
            raise ValueError(
                f"sh_degree={sh_degree} needs {(sh_degree + 1) ** 2} SH coefficients, "
                f"colors has {colors.shape[-2]}"
            )
        campos = torch.linalg.inv(viewmats)[:, :3, 3]  # (C, 3)
        dirs = means[None, :, :] - campos[:, None, :]  # (C, N, 3)
        shs = colors if colors.dim() == 4 else colors[None].expand(C, -1, -1, -1)
        feats = _spherical_harmonics(sh_degree, dirs, shs)  # (C, N, 3)
        # gsplat: "make it apple-to-apple with Inria's CUDA Backend".
        feats = torch.clamp_min(feats + 0.5, 0.0)

    bg = backgrounds
    if render_mode in ("RGB+D", "RGB+ED"):
        feats = torch.cat([feats, depths[..., None]], dim=-1)
        if bg is not None:
            bg = torch.cat([bg, torch.zeros_like(bg[:, :1])], dim=-1)
    elif render_mode in ("D", "ED"):
        feats = depths[..., None]
        if bg is not None:
            bg = torch.zeros_like(bg[:, :1])

    pixel_ids, flat_ids, pair_alphas, pair_trans, stats = _find_pairs(
        means2d.detach(), conics.detach(), opac.detach(), depths.detach(), radii,
        width, height, pair_budget,
    )
    render_colors, render_alphas = composite_pairs(
        pixel_ids, flat_ids, pair_alphas, pair_trans, means2d, conics, opac, feats,
        width, height, bg, chunk=pair_budget,
    )
    if render_mode in ("ED", "RGB+ED"):
        render_colors = torch.cat(
            [render_colors[..., :-1], render_colors[..., -1:] / render_alphas.clamp(min=1e-10)],
            dim=-1,
        )

    tile_width = math.ceil(width / TILE_SIZE)
    tile_height = math.ceil(height / TILE_SIZE)
    meta: dict[str, Any] = {
        "batch_ids": None,
        "camera_ids": None,
        "gaussian_ids": None,
        "radii": radii,
        "means2d": means2d,
        "depths": depths,
        "conics": conics,
        "opacities": opac,
        "tile_width": tile_width,
        "tile_height": tile_height,
        "width": width,
        "height": height,
        "tile_size": TILE_SIZE,
        "n_batches": 1,
        "n_cameras": C,
        "n_pairs": stats["pairs"],
        "n_candidate_pairs": stats["candidate_pairs"],
    }
    return render_colors, render_alphas, meta
