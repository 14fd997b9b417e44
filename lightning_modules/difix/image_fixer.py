"""The fixer as the scene side, predict and scripts use it: images of any size in, same size out.

DifixNet itself pads (or resizes) to a multiple of its size factor. The reference code instead
resizes every render and reference to a fixed 576x1024 before the fixer and back afterwards
(PIL Lanczos); `resize_to` reproduces that with antialiased bicubic resampling, torch's closest
filter to Lanczos (both are antialiased cubic-family kernels; values differ by a few 1e-3).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


def resize(images: Tensor, size: tuple[int, int]) -> Tensor:
    """(..., 3, H, W) in [0, 1] -> (..., 3, h, w), antialiased bicubic, clamped (bicubic overshoots)."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    flat = images.reshape(-1, *images.shape[-3:])
    out = F.interpolate(flat.float(), size=tuple(size), mode="bicubic", antialias=True, align_corners=False)
    return out.clamp(0, 1).reshape(*images.shape[:-2], *size).to(images.dtype)


class ImageFixer(nn.Module):
    """Wraps a DifixNet: optional resize to a fixed model resolution and back.

    Args:
        net: a DifixNet (anything with `forward(images (B,3,H,W), refs (B,K,3,H',W') | None)`).
        resize_to: (height, width) the net runs at, e.g. (576, 1024) as the reference code;
            None runs at the input size (DifixNet pads to its size multiple).
    """

    def __init__(self, net: nn.Module, resize_to: tuple[int, int] | None = None) -> None:
        super().__init__()
        if resize_to is not None and (len(resize_to) != 2 or min(resize_to) <= 0):
            raise ValueError(f"ImageFixer: resize_to must be (height, width) > 0, got {resize_to}")
        self.net = net
        self.resize_to = tuple(int(s) for s in resize_to) if resize_to is not None else None

    def forward(self, images: Tensor, refs: Tensor | None = None) -> Tensor:
        """Fixes renders.

        Args:
            images: (B, 3, H, W) in [0, 1].
            refs: (B, K, 3, H', W') references in [0, 1], or None.

        Returns:
            (B, 3, H, W) in [0, 1].
        """
        if self.resize_to is None:
            return self.net(images, refs)
        h, w = images.shape[-2:]
        refs = resize(refs, self.resize_to) if refs is not None and refs.shape[1] > 0 else refs
        fixed = self.net(resize(images, self.resize_to), refs)
        return resize(fixed, (h, w))


class IdentityFixer(nn.Module):
    """The ablation control for a fixer: returns the renders unchanged (fixer spec "identity").

    Fed to ProgressiveFixCallback, the novel views are still rendered and added to training,
    but as the model's own renders; the difference between a Difix3D row and this row is what
    Difix itself contributes, the rest is the schedule (extra views, their weights).
    """

    def forward(self, images: Tensor, refs: Tensor | None = None) -> Tensor:
        """(B, 3, H, W) in [0, 1] -> the same tensor; `refs` is ignored."""
        return images
