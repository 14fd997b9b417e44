"""Volume rendering weights and the nerfacto losses (interlevel, distortion), pure torch.

Weights follow the usual quadrature ``w_i = T_i (1 - exp(-sigma_i delta_i))``;
the interlevel ("proposal") loss and the distortion loss are mip-NeRF 360's (Barron et al.
2022, Eqs. 13 and 15) as nerfstudio uses them (``model_components/losses.py``). On CUDA,
when the optional ``[cuda]`` extra (nerfacc) is installed, the weights come from nerfacc's
``render_weight_from_density`` instead (``tests/lightning_modules/scene/test_nerf_cuda.py`` compares the two; it passed
on an H200). On the dense (R, S) samples used here nerfacc itself computes them with
``torch.cumsum`` (its CUDA scan kernels run only for packed samples), so the extra gives the
same numbers as the torch path, not a CUDA kernel: the NeRF on CUDA is pure torch either way.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["render_weights", "interlevel_loss", "distortion_loss", "composite"]


def _nerfacc() -> Any:
    """nerfacc when installed (the ``[cuda]`` extra), else None."""
    try:
        import nerfacc
    except ImportError:
        return None
    return nerfacc


def render_weights(sigmas: Tensor, t: Tensor, backend: str = "auto") -> tuple[Tensor, Tensor]:
    """Per-sample weights of the volume rendering quadrature.

    Args:
        sigmas: (R, S) densities.
        t: (R, S + 1) bin edges (distances).
        backend: "auto" (nerfacc on CUDA when installed, else torch), "torch" or "nerfacc".

    Returns:
        weights (R, S) and transmittance (R, S) at each bin's start.
    """
    use_nerfacc = backend == "nerfacc" or (backend == "auto" and sigmas.is_cuda and _nerfacc() is not None)
    if use_nerfacc:
        nerfacc = _nerfacc()
        if nerfacc is None:
            raise ImportError("render_weights: backend 'nerfacc' needs the optional extra: pip install -e '.[cuda]'")
        weights, trans, _ = nerfacc.render_weight_from_density(t[:, :-1], t[:, 1:], sigmas)
        return weights, trans
    sigma_delta = sigmas * (t[:, 1:] - t[:, :-1])
    alpha = 1 - torch.exp(-sigma_delta)
    trans = torch.exp(-torch.cat([torch.zeros_like(sigma_delta[:, :1]), torch.cumsum(sigma_delta[:, :-1], dim=-1)], dim=-1))
    return alpha * trans, trans


def composite(weights: Tensor, rgb: Tensor, background: Tensor) -> tuple[Tensor, Tensor]:
    """Colour and opacity of rays: ``sum w c + (1 - sum w) bg``.

    Args:
        weights: (R, S); rgb: (R, S, 3); background: (R, 3) or (3,).

    Returns:
        colour (R, 3), accumulation (R, 1).
    """
    acc = weights.sum(dim=-1, keepdim=True)
    return (weights[..., None] * rgb).sum(dim=1) + (1 - acc) * background, acc


def _outer(c: Tensor, cp: Tensor, wp: Tensor) -> Tensor:
    """Sum of the proposal weights ``wp`` (bins ``cp``) over each bin of ``c`` (upper envelope)."""
    cy = torch.cat([torch.zeros_like(wp[:, :1]), torch.cumsum(wp, dim=-1)], dim=-1)  # (R, Sp + 1)
    last = wp.shape[-1] - 1
    lo = (torch.searchsorted(cp[:, :-1].contiguous(), c[:, :-1].contiguous(), right=True) - 1).clamp(0, last)
    hi = torch.searchsorted(cp[:, 1:].contiguous(), c[:, 1:].contiguous(), right=True).clamp(0, last)
    return cy[:, 1:].gather(1, hi) - cy[:, :-1].gather(1, lo)


def interlevel_loss(weights: Tensor, spacing: Tensor, proposals: list[tuple[Tensor, Tensor]]) -> Tensor:
    """mip-NeRF 360 proposal loss: proposal weights must bound the final weights from above.

    Args:
        weights: (R, S) final weights (their gradient is stopped here).
        spacing: (R, S + 1) final bin edges in spacing units.
        proposals: per proposal level, (spacing edges (R, Sp + 1), weights (R, Sp)).

    Returns:
        Scalar: the sum over levels of the mean over rays.
    """
    w = weights.detach()
    loss = weights.new_zeros(())
    if weights.shape[0] == 0:  # every ray was empty space
        return loss
    for cp, wp in proposals:
        outer = _outer(spacing.detach(), cp.detach(), wp)
        loss = loss + (torch.clamp(w - outer, min=0) ** 2 / (w + 1e-7)).sum(dim=-1).mean()
    return loss


def distortion_loss(weights: Tensor, spacing: Tensor) -> Tensor:
    """mip-NeRF 360 distortion loss in O(S) (pairwise term by prefix sums).

    Args:
        weights: (R, S).
        spacing: (R, S + 1) bin edges in spacing units.

    Returns:
        Scalar mean over rays.
    """
    if weights.shape[0] == 0:  # every ray was empty space
        return weights.new_zeros(())
    mid = (spacing[:, 1:] + spacing[:, :-1]) / 2
    width = spacing[:, 1:] - spacing[:, :-1]
    w_cum = torch.cumsum(weights, dim=-1) - weights  # exclusive prefix sums
    wm_cum = torch.cumsum(weights * mid, dim=-1) - weights * mid
    pairwise = 2 * (weights * (mid * w_cum - wm_cum)).sum(dim=-1)
    intra = (weights**2 * width).sum(dim=-1) / 3
    return (pairwise + intra).mean()
