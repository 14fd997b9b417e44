"""Lanczos resampling in torch, with Pillow's weights: the reference Difix pipeline's resize.

The reference `DifixPipeline` resizes every render and reference to its size rounded down to a
multiple of 8 with PIL's `Image.LANCZOS` (diffusers' `VaeImageProcessor`, `resample="lanczos"`)
and the fixed image back with `Image.LANCZOS` (nv-tlabs/Difix3D `examples/gsplat/
simple_trainer_difix3d.py`). Neither torch nor torchvision resizes tensors with Lanczos, and
going through PIL would mean a host copy and 8-bit images per call, so the weights are computed
here the way Pillow computes them (`src/libImaging/Resample.c`, `precompute_coeffs`: support 3
scaled by the downscale factor, centres at (i + 0.5) * scale, taps normalised to sum 1) and
applied as two matrix products, which run on any device, batch, and carry gradients.
`tests/lightning_modules/difix/test_published_layout.py` compares the result with Pillow's own
float ("F" mode) resize.
"""
from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch import Tensor

SUPPORT = 3.0  # Pillow's LANCZOS filter: sinc(x) * sinc(x / 3) on [-3, 3)


def _lanczos(x: Tensor) -> Tensor:
    def sinc(t: Tensor) -> Tensor:
        return torch.where(t == 0, torch.ones_like(t), torch.sin(math.pi * t) / (math.pi * t))

    return torch.where((x >= -SUPPORT) & (x < SUPPORT), sinc(x) * sinc(x / SUPPORT), torch.zeros_like(x))


@lru_cache(maxsize=64)
def _weights_cpu(in_size: int, out_size: int) -> Tensor:
    """(out_size, in_size) float64 resampling matrix, Pillow's coefficients row by row."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = SUPPORT * filterscale
    centre = (torch.arange(out_size, dtype=torch.float64) + 0.5) * scale  # (out,)
    xmin = (centre - support + 0.5).floor().clamp(min=0)
    xmax = (centre + support + 0.5).floor().clamp(max=in_size)
    x = torch.arange(in_size, dtype=torch.float64)  # (in,)
    inside = (x[None] >= xmin[:, None]) & (x[None] < xmax[:, None])
    w = torch.where(inside, _lanczos((x[None] - centre[:, None] + 0.5) / filterscale), torch.zeros(()))
    total = w.sum(dim=1, keepdim=True)
    return torch.where(total != 0, w / total, w)


def resample_matrix(in_size: int, out_size: int, device: torch.device | str = "cpu",
                    dtype: torch.dtype = torch.float32) -> Tensor:
    """(out_size, in_size) Lanczos matrix M: `M @ signal` resamples a 1-D signal as Pillow does."""
    if in_size <= 0 or out_size <= 0:
        raise ValueError(f"lanczos: sizes must be positive, got {in_size} -> {out_size}")
    return _weights_cpu(int(in_size), int(out_size)).to(device=device, dtype=dtype)


def lanczos_resize(images: Tensor, size: tuple[int, int]) -> Tensor:
    """Resizes images with Pillow's Lanczos weights (no clamping: Lanczos overshoots edges).

    Args:
        images: (..., C, H, W) float tensor.
        size: (height, width) of the output.

    Returns:
        (..., C, height, width), same dtype and device (computed in at least float32).
    """
    h, w = int(size[0]), int(size[1])
    if tuple(images.shape[-2:]) == (h, w):
        return images  # Pillow too returns an unchanged copy for the same size
    work = images.float() if images.dtype in (torch.float16, torch.bfloat16) else images
    out = work
    if out.shape[-1] != w:  # Pillow resamples horizontally first
        out = out @ resample_matrix(out.shape[-1], w, out.device, out.dtype).T
    if out.shape[-2] != h:
        out = resample_matrix(out.shape[-2], h, out.device, out.dtype) @ out
    return out.to(images.dtype)


def round_down_size(h: int, w: int, multiple: int) -> tuple[int, int]:
    """(h, w) rounded down to `multiple` (at least `multiple`), as diffusers' VaeImageProcessor."""
    return max(multiple, h - h % multiple), max(multiple, w - w % multiple)
