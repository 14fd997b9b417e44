"""Similarity transforms of raw Gaussians (positions, log-scales, rotations and SH colours).

Scenes are trained in a normalised world (``normalised = T @ original``, T a similarity
``s R | t``). ``transform_splats`` maps Gaussians through any similarity: positions, log-scales
shifted by ``log s``, rotations left-multiplied by R, and the SH coefficients rotated per
degree so that view-dependent colour follows the world. Written by hand: gsplat has no
transform of Gaussians, only of points and cameras (``examples/datasets/normalize.py``).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from datamodules.cameras.poses import rotmat_to_quat

__all__ = ["transform_splats", "decompose_similarity", "rotate_sh"]


def decompose_similarity(transform: Tensor) -> tuple[float, Tensor, Tensor]:
    """Splits a (4, 4) similarity ``[s R | t]`` into (s, R (3, 3), t (3,)).

    Raises:
        ValueError: when the matrix is not a similarity (shear, anisotropic scale, reflection).
    """
    T = torch.as_tensor(transform, dtype=torch.float64).cpu()
    if T.shape != (4, 4):
        raise ValueError(f"transform must be (4, 4), got {tuple(T.shape)}")
    A = T[:3, :3]
    s = float(torch.linalg.det(A)) ** (1.0 / 3.0) if float(torch.linalg.det(A)) > 0 else float("nan")
    if not math.isfinite(s) or s <= 0:
        raise ValueError("transform is not a similarity: its 3x3 block has a non-positive determinant")
    R = A / s
    if not torch.allclose(R @ R.T, torch.eye(3, dtype=torch.float64), atol=1e-4):
        raise ValueError("transform is not a similarity: its 3x3 block is not a scaled rotation")
    return s, R, T[:3, 3].clone()


def _quat_mul(a: Tensor, b: Tensor) -> Tensor:
    """Hamilton product of wxyz quaternions (..., 4)."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        dim=-1,
    )


def rotate_sh(shN: Tensor, R: Tensor) -> Tensor:
    """Rotates higher SH coefficients so that colours follow a world rotation ``x' = R x``.

    After the call, evaluating the new coefficients at direction ``R d`` gives what the old
    ones gave at ``d``. Each degree l transforms by a (2l+1)^2 matrix, found exactly by least
    squares on sampled directions with gsplat's own SH basis (so its sign conventions hold).

    Args:
        shN: (N, K-1, 3) coefficients of degrees 1..d.
        R: (3, 3) rotation.

    Returns:
        (N, K-1, 3) rotated coefficients.
    """
    from gsplat.cuda._torch_impl import _eval_sh_bases_fast

    k = shN.shape[1] + 1
    if k == 1:
        return shN.clone()
    R = torch.as_tensor(R, dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    dirs = torch.nn.functional.normalize(torch.randn(256, 3, generator=gen, dtype=torch.float64), dim=-1)
    # Y_new(R d) must equal Y_old(d): with basis rows Y(d), Y(R^T d') = Y(d') @ X per degree.
    basis = _eval_sh_bases_fast(k, dirs)  # (S, K)
    basis_back = _eval_sh_bases_fast(k, dirs @ R)  # rows: Y(R^T d)
    out = torch.empty_like(shN)
    degree = int(round(math.sqrt(k))) - 1
    for l in range(1, degree + 1):  # loop over <= 4 degrees, not over Gaussians
        lo, hi = l * l, (l + 1) * (l + 1)
        X = torch.linalg.lstsq(basis[:, lo:hi], basis_back[:, lo:hi]).solution  # (2l+1, 2l+1)
        # c_new(d') = f_new . Y(d') = f_old . Y(R^T d') = f_old . (X^T Y(d'))  =>  f_new = X f_old
        block = shN[:, lo - 1 : hi - 1, :].double()
        out[:, lo - 1 : hi - 1, :] = torch.einsum("ij,njc->nic", X, block).to(shN.dtype)
    return out


def transform_splats(splats: dict[str, Tensor], transform: Tensor) -> dict[str, Tensor]:
    """Maps raw Gaussians through a similarity ``x' = s R x + t``.

    Args:
        splats: raw gsplat tensors (see ``write_ply``).
        transform: (4, 4) similarity.

    Returns:
        New raw tensors: means mapped, log-scales + log(s), quats left-multiplied by R,
        sh0 unchanged, shN rotated by R.
    """
    s, R, t = decompose_similarity(transform)
    means = splats["means"].double() @ (s * R).T + t
    q_r = rotmat_to_quat(R).to(torch.float64)
    quats = _quat_mul(q_r.expand_as(splats["quats"]), splats["quats"].double())
    return {
        "means": means.to(splats["means"].dtype),
        "scales": splats["scales"] + math.log(s),
        "quats": quats.to(splats["quats"].dtype),
        "opacities": splats["opacities"].clone(),
        "sh0": splats["sh0"].clone(),
        "shN": rotate_sh(splats["shN"], R),
    }
