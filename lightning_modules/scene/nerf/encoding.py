"""Pure-torch encodings of the NeRF field: multi-resolution hash grid, spherical harmonics.

Hand-written because the libraries that have them (tiny-cuda-nn, nerfacc's companions)
need CUDA. The eight-corner lookup is one ``embedding_bag`` (gather, weight and sum fused: 7x
faster on the CPU than gathering an (N, 8, F) tensor), with its table gradient by
``index_add_`` (``_CornerSum``: embedding_bag's own backward is 6x slower there).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["HashEncoding", "sh_encoding", "PRIMES"]


class _CornerSum(torch.autograd.Function):
    """``out[m] = sum_k w[m, k] * table[idx[m, k]]``; the gradient reaches the table only
    (positions are not optimised)."""

    @staticmethod
    def forward(ctx, table: Tensor, idx: Tensor, w: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(idx, w)
        ctx.rows = table.shape[0]
        return F.embedding_bag(idx, table, per_sample_weights=w, mode="sum")

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        idx, w = ctx.saved_tensors
        spread = (w[..., None] * grad[:, None, :]).reshape(-1, grad.shape[-1])  # (M * 8, F)
        table_grad = grad.new_zeros(ctx.rows, grad.shape[-1]).index_add_(0, idx.reshape(-1).long(), spread)
        return table_grad, None, None

# Instant-NGP's spatial-hash primes (Mueller et al. 2022, Eq. 4); the first is 1. Hashing runs
# in int32 with wrap-around (as tiny-cuda-nn's uint32), so the second is taken modulo 2**32.
PRIMES = (1, 2_654_435_761 - 2**32, 805_459_861)


class HashEncoding(nn.Module):
    """Multi-resolution hash encoding (Instant-NGP), trilinear, all levels in one gather.

    Level ``l`` has resolution ``floor(base_res * b**l)`` with ``b`` chosen so the last level
    is ``max_res``. Levels whose dense grid fits the table are indexed densely (no
    collisions, as tiny-cuda-nn does); finer levels use the spatial hash.

    Args:
        num_levels: resolution levels L.
        base_res: coarsest resolution.
        max_res: finest resolution.
        log2_hashmap_size: table entries per level T = 2**log2_hashmap_size.
        features_per_level: features F per level.
        init_scale: tables start uniform in [-init_scale, init_scale] (tiny-cuda-nn: 1e-4).
    """

    def __init__(self, num_levels: int = 16, base_res: int = 16, max_res: int = 2048,
                 log2_hashmap_size: int = 19, features_per_level: int = 2, init_scale: float = 1e-4) -> None:
        super().__init__()
        self.num_levels, self.features_per_level = num_levels, features_per_level
        self.table_size = 2**log2_hashmap_size
        growth = math.exp((math.log(max_res) - math.log(base_res)) / max(num_levels - 1, 1))
        res = torch.tensor([math.floor(base_res * growth**level) for level in range(num_levels)], dtype=torch.long)
        self.register_buffer("resolutions", res, persistent=False)
        self.num_dense = int(((res + 1) ** 3 <= self.table_size).sum())  # a prefix: resolutions grow
        self.register_buffer("offsets", torch.arange(num_levels, dtype=torch.long) * self.table_size, persistent=False)
        table = (torch.rand(num_levels * self.table_size, features_per_level) * 2 - 1) * init_scale
        self.table = nn.Parameter(table)

    @property
    def out_dim(self) -> int:
        return self.num_levels * self.features_per_level

    def forward(self, x: Tensor) -> Tensor:
        """Encodes positions.

        Args:
            x: (N, 3) in [0, 1] (values outside are clamped).

        Returns:
            (N, L * F) features.
        """
        x = x.clamp(0.0, 1.0)
        n = x.shape[0]
        res = self.resolutions
        scaled = x[:, None, :] * res.to(x.dtype)[None, :, None]  # (N, L, 3)
        base = torch.minimum(scaled.floor().int(), res.int()[None, :, None] - 1)
        frac = (scaled - base).detach()  # positions are not optimised: no gradient through them
        bx, by, bz = torch.stack([base, base + 1], dim=-1).unbind(dim=2)  # (N, L, 2): lower/upper corner
        # The 8 corners by broadcasting the axes: index [i, j, k] = corner (x_i, y_j, z_k). The
        # coarse levels (a prefix, resolutions grow) are dense, the others hashed.
        k = self.num_dense
        stride = (res[:k].int() + 1)[None, :, None]
        dense = bx[:, :k, :, None, None] + (by[:, :k] * stride)[..., None, :, None] + (bz[:, :k] * stride * stride)[..., None, None, :]
        hashed = ((bx[:, k:] * PRIMES[0])[..., :, None, None] ^ (by[:, k:] * PRIMES[1])[..., None, :, None]
                  ^ (bz[:, k:] * PRIMES[2])[..., None, None, :])
        # T is a power of two: & (T - 1) is the modulo, also for wrapped (negative) int32 hashes.
        idx = torch.cat([dense, hashed & (self.table_size - 1)], dim=1)  # (N, L, 2, 2, 2)
        idx = (idx + self.offsets.int()[None, :, None, None, None]).reshape(n * self.num_levels, 8)
        wx, wy, wz = torch.stack([1 - frac, frac], dim=-1).unbind(dim=2)  # (N, L, 2) each
        w = (wx[..., :, None, None] * wy[..., None, :, None] * wz[..., None, None, :]).reshape(n * self.num_levels, 8)
        return _CornerSum.apply(self.table, idx, w.to(self.table.dtype)).reshape(n, self.out_dim)


def sh_encoding(d: Tensor, degree: int = 4) -> Tensor:
    """Real spherical harmonics of unit directions up to ``degree`` (1..4) bands.

    Args:
        d: (N, 3) unit directions.

    Returns:
        (N, degree**2) basis values (nerfstudio's SHEncoding ordering and constants).
    """
    if not 1 <= degree <= 4:
        raise ValueError(f"sh_encoding: degree must be 1..4, got {degree}")
    x, y, z = d.unbind(-1)
    out = [torch.full_like(x, 0.28209479177387814)]
    if degree > 1:
        out += [0.4886025119029199 * y, 0.4886025119029199 * z, 0.4886025119029199 * x]
    if degree > 2:
        xx, yy, zz = x * x, y * y, z * z
        out += [1.0925484305920792 * x * y, 1.0925484305920792 * y * z, 0.9461746957575601 * zz - 0.31539156525251999,
                1.0925484305920792 * x * z, 0.5462742152960396 * (xx - yy)]
    if degree > 3:
        out += [0.5900435899266435 * y * (3 * xx - yy), 2.890611442640554 * x * y * z,
                0.4570457994644658 * y * (5 * zz - 1), 0.3731763325901154 * z * (5 * zz - 3),
                0.4570457994644658 * x * (5 * zz - 1), 1.445305721320277 * z * (xx - yy),
                0.5900435899266435 * x * (xx - 3 * yy)]
    return torch.stack(out, dim=-1)
