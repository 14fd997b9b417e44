"""Pair search for the CPU rasterizer: which Gaussians reach which pixels, in depth order.

Step 2 of ``rasterize_torch`` (no autograd): boxes from the projection are enumerated band by
band into (pixel, Gaussian) pairs above gsplat's alpha threshold, sorted per pixel by depth,
and cut at gsplat's early stop. The segmented helpers are shared with the compositing step.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lightning_modules.scene.gaussians.rasterize_project import ALPHA_MAX, ALPHA_THRESHOLD, TRANSMITTANCE_MIN

INT32_KEYS_MAX = 2**31 - 1  # a band sorts int32 keys while (band pixels x Gaussians) fits


def segment_runs(keys: Tensor, num_keys: int) -> tuple[Tensor, Tensor]:
    """Index of the first and of the last element of each key's run of sorted keys.

    Args:
        keys: Sorted keys (pixel ids) in ``[0, num_keys)``. (M,) int32 or int64, M > 0
        num_keys: Exclusive upper bound of the keys.

    Returns:
        first (num_keys,), last (num_keys,) int64; clamped into ``[0, M)`` for keys that do
        not occur (nothing reads those).
    """
    # Run lengths by counting (one pass over the elements, then a cumsum over the keys)
    # rather than marking run starts with a nonzero and a cumsum over the elements.
    counts = torch.bincount(keys, minlength=num_keys)
    stop = torch.cumsum(counts, dim=0)  # one past each key's last element
    return (stop - counts).clamp_(max=keys.numel() - 1), (stop - 1).clamp_(min=0)


def segment_cumsum(values: Tensor, keys: Tensor, first: Tensor) -> Tensor:
    """Inclusive cumulative sum within runs of equal keys, in float64.

    One cumsum runs over every pixel's pairs, so float32 would lose the small
    per-pixel differences once the running total is large.

    Args:
        values: Per-element values, grouped by run. (M,)
        keys: Sorted run keys. (M,)
        first: First element of each key's run, from :func:`segment_runs`. (num_keys,)

    Returns:
        Inclusive per-run cumulative sums. (M,) float64
    """
    v = values.to(torch.float64)
    cs = torch.cumsum(v, dim=0)
    before = cs.index_select(0, first) - v.index_select(0, first)  # the total ahead of each run
    return cs - before.index_select(0, keys)


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
    # Sort keys in int32 where (band pixel, depth rank) fits: torch sorts them twice as fast
    # as int64, and the keys are unique, so the order is the same.
    n_pix = (r1 - r0) * width
    key_dtype = torch.int32 if n_pix * V <= INT32_KEYS_MAX else torch.int64
    base, rg = base.to(key_dtype), rg.to(key_dtype)
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
            # Unique integer key (band pixel, depth rank): sorting it orders pairs by
            # pixel, then front to back.
            col_hit = (hit & (cap - 1)).to(key_dtype)
            keys.append((base.index_select(0, rr) + col_hit) * V + rg.index_select(0, rr))
            alphas.append(alpha.reshape(-1).index_select(0, hit))
        lo, cap = cap, cap * 2
    key, perm = torch.sort(torch.cat(keys))
    if key.numel() == 0:
        empty = torch.zeros(0, dtype=torch.int64, device=device)
        return empty, empty, m2.new_zeros(0), m2.new_zeros(0)
    alpha = torch.cat(alphas).index_select(0, perm)
    pix = torch.div(key, V, rounding_mode="floor")
    gid = (key - pix * V).long()
    pix = pix.long()

    first, _ = segment_runs(pix, n_pix)
    log1m = torch.log1p(-alpha)
    incl = segment_cumsum(log1m, pix, first)
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

