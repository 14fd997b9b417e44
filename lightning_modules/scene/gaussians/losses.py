"""The photometric loss of 3DGS / Difix3D: 0.8 L1 + 0.2 (1 - SSIM), with masks and weights.

SSIM is the usual 11x11 Gaussian-window (sigma 1.5) SSIM with "valid" padding, as
gsplat's simple_trainer calls ``fused_ssim(..., padding="valid")``; computed with two
separable convolutions so it is differentiable and cheap on CPU.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["ssim_map", "photometric_loss"]

_C1 = 0.01**2
_C2 = 0.03**2


def _gaussian_kernel(size: int, sigma: float, device: torch.device, dtype: torch.dtype) -> Tensor:
    x = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim_map(x: Tensor, y: Tensor, window_size: int = 11, sigma: float = 1.5) -> Tensor:
    """Per-pixel SSIM over the valid region (no padding) for images in [0, 1].

    Args:
        x: (B, C, H, W).
        y: (B, C, H, W).
        window_size: Gaussian window size (odd); shrunk (odd) for images smaller than it.
        sigma: Gaussian window standard deviation.

    Returns:
        (B, C, H - window_size + 1, W - window_size + 1) SSIM values.
    """
    if x.shape != y.shape or x.dim() != 4:
        raise ValueError(f"ssim_map: expected two equal (B, C, H, W) tensors, got {tuple(x.shape)}, {tuple(y.shape)}")
    window_size = min(window_size, x.shape[-1], x.shape[-2])
    window_size -= 1 - window_size % 2  # keep it odd
    c = x.shape[1]
    g = _gaussian_kernel(window_size, sigma, x.device, x.dtype)
    kh = g.view(1, 1, 1, -1).expand(c, 1, 1, window_size)
    kv = g.view(1, 1, -1, 1).expand(c, 1, window_size, 1)

    def blur(t: Tensor) -> Tensor:
        return F.conv2d(F.conv2d(t, kh, groups=c), kv, groups=c)

    # One batched blur of the five moments instead of five calls.
    stacked = blur(torch.cat([x, y, x * x, y * y, x * y], dim=0))
    mu_x, mu_y, xx, yy, xy = stacked.chunk(5, dim=0)
    sigma_x = xx - mu_x**2
    sigma_y = yy - mu_y**2
    sigma_xy = xy - mu_x * mu_y
    num = (2 * mu_x * mu_y + _C1) * (2 * sigma_xy + _C2)
    den = (mu_x**2 + mu_y**2 + _C1) * (sigma_x + sigma_y + _C2)
    return num / den


def photometric_loss(
    render: Tensor,
    target: Tensor,
    mask: Tensor | None = None,
    weight: Tensor | None = None,
    ssim_lambda: float = 0.2,
) -> dict[str, Tensor]:
    """``(1 - ssim_lambda) * L1 + ssim_lambda * (1 - SSIM)`` per view, weighted, averaged.

    Masked pixels (mask 0) are zeroed in render and target, so they contribute nothing to
    L1 or SSIM (whose map is averaged over the mask cropped to the valid region) and get no
    gradient; a view of weight 0 contributes nothing to the loss or its gradient.

    Args:
        render: (B, 3, H, W) rendered images in [0, 1].
        target: (B, 3, H, W) ground truth in [0, 1].
        mask: (B, 1, H, W) in [0, 1], or None (all pixels).
        weight: (B,) per-view loss weights, or None (all 1).
        ssim_lambda: weight of the SSIM term (0.2 in 3DGS and Difix3D).

    Returns:
        "loss": scalar weighted mean over views; "l1", "ssim": unweighted scalar means (for
        logging); "per_view": (B,) weighted per-view losses.
    """
    b = render.shape[0]
    if mask is None:
        mask = torch.ones_like(render[:, :1])
    mask = mask.to(render.dtype)
    if weight is None:
        weight = torch.ones(b, device=render.device, dtype=render.dtype)
    weight = weight.to(render.dtype).reshape(b)
    eps = 1e-8
    # Masked-out pixels are zeroed in both images (as Difix3D masks fixed views), so SSIM
    # windows that straddle the mask edge never see the excluded target pixels.
    render = render * mask
    target = target * mask
    l1 = (render - target).abs().sum(dim=(1, 2, 3)) / (mask.sum(dim=(1, 2, 3)) * render.shape[1]).clamp_min(eps)
    smap = ssim_map(render, target)
    crop_h = (mask.shape[-2] - smap.shape[-2]) // 2
    crop_w = (mask.shape[-1] - smap.shape[-1]) // 2
    m = mask[..., crop_h : crop_h + smap.shape[-2], crop_w : crop_w + smap.shape[-1]]
    ssim = (smap * m).sum(dim=(1, 2, 3)) / (m.sum(dim=(1, 2, 3)) * smap.shape[1]).clamp_min(eps)
    # A view whose valid region is fully masked has no SSIM term (its ssim reads 1).
    ssim = torch.where(m.sum(dim=(1, 2, 3)) > 0, ssim, torch.ones_like(ssim))
    per_view = (1 - ssim_lambda) * l1 + ssim_lambda * (1 - ssim)
    per_view = per_view * weight
    return {"loss": per_view.mean(), "l1": l1.detach().mean(), "ssim": ssim.detach().mean(), "per_view": per_view}
