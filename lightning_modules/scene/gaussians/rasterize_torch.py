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
   integer key (pixel, depth rank; int32 where it fits), transmittance is a
   segmented cumulative sum of ``log(1 - alpha)`` (float64: one cumsum spans all
   pixels; runs found by counting pairs per pixel), and pairs past
   gsplat's early stop (transmittance after the pair <= 1e-4) are dropped.
3. Compositing (:class:`_CompositePairs`): ``index_add_`` of ``alpha * T`` times
   the features into pixels, with a hand-written backward (gsplat's formulas:
   suffix sums per pixel by a segmented cumsum), run in chunks of whole pixels.
   Gradients reach the 2D means (pixel units, as gsplat's strategies expect),
   conics, opacities and features; autograd carries them on to the 3D inputs
   through the projection and SH evaluation.

Step 1 lives in ``rasterize_project.py``, step 2 in ``rasterize_pairs.py``; this file holds
step 3 and ``rasterization_torch``, which runs the three.
"""

from __future__ import annotations

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from gsplat.cuda._torch_impl import _spherical_harmonics

from lightning_modules.scene.gaussians.rasterize_pairs import _find_pairs, segment_cumsum, segment_runs
from lightning_modules.scene.gaussians.rasterize_project import ALPHA_MAX, project_gaussians

__all__ = ["RENDER_MODES", "TILE_SIZE", "project_gaussians", "rasterization_torch"]

TILE_SIZE = 16  # reported in meta like gsplat; the CPU backend does not use tiles

RENDER_MODES = ("RGB", "D", "ED", "RGB+D", "RGB+ED")


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
            centres = _pixel_centres(grad_out.shape[1] // (ctx.width * ctx.height), ctx.width, ctx.height, alpha)
            for a, b in zip(cuts[:-1], cuts[1:]):
                grads = _composite_vjp(params, pixel_ids[a:b], flat_ids[a:b], alpha[a:b], trans[a:b],
                                       grad_out, centres)
                for k, g in enumerate(grads):
                    g_params[k].index_add_(0, flat_ids[a:b], g)
        return g_params, None, None, None, None, None, None, None, None


def _pixel_centres(n_images: int, width: int, height: int, like: Tensor) -> tuple[Tensor, Tensor]:
    """x + 0.5 and y + 0.5 of every flat pixel id, each (n_images * height * width,).

    Exact in float32 for any image size below 2**23 pixels a side, so a gather from these
    tables gives the pair's pixel centre at the cost of one read (no integer division)."""
    xs = torch.arange(width, dtype=like.dtype, device=like.device) + 0.5
    ys = torch.arange(height, dtype=like.dtype, device=like.device) + 0.5
    return xs.repeat(n_images * height), ys.repeat_interleave(width).repeat(n_images)


def _composite_vjp(
    params: Tensor, pixel_ids: Tensor, flat_ids: Tensor, alpha: Tensor, trans: Tensor,
    grad_out: Tensor, centres: tuple[Tensor, Tensor],
) -> list[Tensor]:
    """Per-pair gradients w.r.t. the Gaussian attributes, for whole pixels.

    Args:
        params: (6 + D, G) as in :class:`_CompositePairs`.
        pixel_ids, flat_ids, alpha, trans: The pairs of a run of whole pixels. (P,)
        grad_out: dL/d[sum w * feature..., sum w] per pixel. (D + 1, n_pix)
        centres: Pixel centre x and y per flat pixel id, from :func:`_pixel_centres`. (n_pix,) each

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
    first, last = segment_runs(pixel_ids, grad_out.shape[1])
    # Behind-sums: sum over the pixel's later pairs of w_j c_j . dL/dC.
    incl = segment_cumsum(w * cg, pixel_ids, first)
    behind = (incl.index_select(0, last).index_select(0, pixel_ids) - incl).to(alpha.dtype)
    one_m = 1.0 - alpha
    t_final = (trans.index_select(0, last) * one_m.index_select(0, last)).index_select(0, pixel_ids)
    g_alpha = trans * cg + (g_acc * t_final - behind) / one_m

    px = centres[0].index_select(0, pixel_ids)
    py = centres[1].index_select(0, pixel_ids)
    mx, my, c0, c1, c2, o = (params[k].index_select(0, flat_ids) for k in range(6))
    # In-place arithmetic on fresh tensors, with the operations of the plain expressions in
    # the comments in the same order (the same bits): fewer P-sized temporaries.
    dx = mx.sub_(px)
    dy = my.sub_(py)
    sigma = (c0 * dx).mul_(dx).add_((c2 * dy).mul_(dy)).mul_(0.5).add_((c1 * dx).mul_(dy))
    vis = sigma.neg_().exp_()  # exp(-(0.5 * (c0 dx dx + c2 dy dy) + c1 dx dy))
    # Clamped alphas (0.999) pass no gradient to opacity or shape, as in gsplat.
    g_o = torch.where(o * vis <= ALPHA_MAX, vis.mul_(g_alpha), 0.0)
    g_sigma = o.neg_().mul_(g_o)  # -o * g_o
    return [
        (c0 * dx).add_(c1 * dy).mul_(g_sigma),  # (c0 dx + c1 dy) g_sigma
        c1.mul_(dx).add_(c2 * dy).mul_(g_sigma),  # (c1 dx + c2 dy) g_sigma
        (0.5 * dx).mul_(dx).mul_(g_sigma),  # 0.5 dx dx g_sigma
        (dx * dy).mul_(g_sigma),
        (0.5 * dy).mul_(dy).mul_(g_sigma),
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
