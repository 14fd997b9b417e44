"""Colour-corrected PSNR (``cc_psnr``): PSNR after fitting the render's colours to the target's.

The reference's gsplat example (nv-tlabs/Difix3D ``examples/gsplat``: ``color_correct`` in
``lib_bilagrid.py``, which that file credits to "Bilateral Guided Radiance Field Processing")
reports ``cc_psnr`` beside PSNR: a render whose colours are off by a global tone curve is not
penalised for it. The fit, per
image and per output channel ``c``:

* features of every pixel of the render: the quadratic terms ``x_i * x_j`` (i <= j), the
  channels ``x_i`` and 1: 10 features for RGB (so the fit is quadratic, not only affine);
* rows (pixels) are used only where the render's channel ``c`` and the target's channel ``c``
  are unclipped (in ``[eps, 1 - eps]``), and the render's channel was unclipped at the start;
* least squares (``torch.linalg.lstsq``) for the 10 weights of channel ``c``; the corrected
  render is the clipped product; repeated ``num_iters`` (5) times, each time from the last
  corrected render, so the set of saturated pixels follows the correction.

Written by hand because no library has it; here batched over images and channels (one
``lstsq`` call per iteration) instead of the reference's loop over channels, on (B, 3, H, W)
images (the project's convention) instead of (..., H, W, 3).
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["color_correct", "cc_psnr"]


def _unclipped(x: Tensor, eps: float) -> Tensor:
    return (x >= eps) & (x <= 1 - eps)


def _features(x: Tensor) -> Tensor:
    """(B, N, C) pixels -> (B, N, C (C + 1) / 2 + C + 1): quadratic, linear and bias terms,
    in the reference's column order (for each i: x_i * x_i, ..., x_i * x_{C-1}; then x; then 1)."""
    c = x.shape[-1]
    i, j = torch.triu_indices(c, c, device=x.device)  # row-major: (0,0), (0,1), ..., (1,1), ...
    return torch.cat([x[..., i] * x[..., j], x, torch.ones_like(x[..., :1])], dim=-1)


def color_correct(img: Tensor, ref: Tensor, num_iters: int = 5, eps: float = 0.5 / 255) -> Tensor:
    """Maps the colours of ``img`` onto those of ``ref`` (see module doc).

    Args:
        img: (B, C, H, W) renders in [0, 1].
        ref: (B, C, H, W) targets in [0, 1].
        num_iters: fits, each from the previous corrected render.
        eps: pixels within ``eps`` of 0 or 1 count as clipped.

    Returns:
        (B, C, H, W) corrected renders in [0, 1].

    Raises:
        ValueError: shapes differ; RuntimeError: a fit is not finite.
    """
    if img.shape != ref.shape or img.ndim != 4:
        raise ValueError(f"color_correct: img and ref must both be (B, C, H, W), got {tuple(img.shape)} and {tuple(ref.shape)}")
    b, c, h, w = img.shape
    x = img.reshape(b, c, h * w).transpose(1, 2)  # (B, N, C)
    y = ref.reshape(b, c, h * w).transpose(1, 2)
    mask0 = _unclipped(x, eps)
    target_ok = _unclipped(y, eps)
    for _ in range(num_iters):
        a = _features(x)  # (B, N, F)
        keep = (mask0 & _unclipped(x, eps) & target_ok).transpose(1, 2)  # (B, C, N): rows per output channel
        a_masked = torch.where(keep[..., None], a[:, None], torch.zeros((), dtype=a.dtype, device=a.device))
        y_masked = torch.where(keep, y.transpose(1, 2), torch.zeros((), dtype=y.dtype, device=y.device))
        # One batched solve for all images and channels: (B, C, N, F) \ (B, C, N, 1).
        weights = torch.linalg.lstsq(a_masked, y_masked[..., None], rcond=-1 if a.device.type == "cpu" else None)[0]
        if not bool(torch.isfinite(weights).all()):
            raise RuntimeError("color_correct: the colour fit is not finite (an image with almost no unclipped pixels?)")
        x = torch.clip(a @ weights[..., 0].transpose(1, 2), 0, 1)  # (B, N, F) @ (B, F, C)
    return x.transpose(1, 2).reshape(b, c, h, w)


def cc_psnr(img: Tensor, ref: Tensor, data_range: float = 1.0) -> Tensor:
    """PSNR per image after ``color_correct(img, ref)``, as the reference's gsplat example reports it.

    Args:
        img: (B, 3, H, W) renders in [0, 1].
        ref: (B, 3, H, W) targets in [0, 1].

    Returns:
        (B,) PSNR in dB of the corrected renders against the targets.
    """
    from torchmetrics.functional.image import peak_signal_noise_ratio

    corrected = color_correct(img.float(), ref.float())
    return peak_signal_noise_ratio(corrected, ref.float(), data_range=data_range, reduction="none", dim=(1, 2, 3))
