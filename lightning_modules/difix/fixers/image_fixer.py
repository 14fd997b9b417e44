"""The fixer as the scene side, predict and scripts use it: images of any size in, same size out.

`ImageFixer` wraps a net (`forward(images (B,3,H,W), refs (B,K,3,H',W') | None)`): it moves it
to its device and dtype at the first call, optionally runs it at a fixed resolution (Lanczos
there and back, as the reference `Difix.sample` / `inference_difix.py` at 576 x 1024), and
refuses a non-finite output, naming the fixer and the images, instead of passing on NaN (which
becomes a black image once written).
"""
from __future__ import annotations

import logging

import torch
from torch import Tensor, nn

from lightning_modules.difix.net.lanczos import lanczos_resize

log = logging.getLogger("difix3d.fixer")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class FixerOutputError(RuntimeError):
    """A fixer produced NaN / Inf (e.g. float16 overflow or broken weights)."""


def resize(images: Tensor, size: tuple[int, int]) -> Tensor:
    """(..., 3, H, W) in [0, 1] -> (..., 3, h, w) with Pillow's Lanczos weights, clamped (Lanczos overshoots)."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    return lanczos_resize(images, size).clamp(0, 1)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """"auto": bfloat16 on CUDA (float16 where bfloat16 is missing), float32 elsewhere."""
    if dtype != "auto":
        return DTYPES[dtype]
    if device.type != "cuda":
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def check_finite(out: Tensor, name: str, what: str = "output") -> None:
    """Raises FixerOutputError naming the fixer and the batch indices whose `what` is not finite."""
    bad = ~torch.isfinite(out.flatten(1)).all(dim=1)
    if bool(bad.any()):
        idx = bad.nonzero().flatten().tolist()
        raise FixerOutputError(
            f"fixer {name}: non-finite {what} (NaN/Inf) for image(s) {idx[:10]} of {len(out)}; its weights hold "
            "NaN, or its dtype overflows (float16: try dtype bfloat16 or float32). Nothing was written for them.")


class ImageFixer(nn.Module):
    """A fixer ready for renders: device, dtype, optional fixed resolution, finite check.

    Args:
        net: a DifixNet (or any module with the same forward).
        name: what the config called it (for messages).
        resize_to: (height, width) the net runs at, e.g. (576, 1024) as the reference code;
            None: the input size (the net's own size handling).
        dtype: "auto", "float32", "bfloat16", "float16", or None to leave the net as it is
            (a training module's net, whose precision Lightning manages).
        device: where the net runs; None: where the images are.
    """

    def __init__(self, net: nn.Module, name: str = "fixer", resize_to: tuple[int, int] | None = None,
                 dtype: str | None = None, device: str | None = None) -> None:
        super().__init__()
        if resize_to is not None and (len(resize_to) != 2 or min(resize_to) <= 0):
            raise ValueError(f"ImageFixer: resize_to must be (height, width) > 0, got {resize_to}")
        if dtype is not None and dtype != "auto" and dtype not in DTYPES:
            raise ValueError(f"ImageFixer: dtype must be auto, {', '.join(DTYPES)} or None, got {dtype!r}")
        self.net = net
        self.name = name
        self.resize_to = tuple(int(s) for s in resize_to) if resize_to is not None else None
        self.dtype = dtype
        self.device = torch.device(device) if device is not None else None
        self._ready_on: torch.device | None = None

    def describe(self) -> str:
        """One line: the fixer, its layout and how it runs (logged at the first call)."""
        inner = self.net.describe() if hasattr(self.net, "describe") else type(self.net).__name__
        size = f" | runs at {self.resize_to[0]}x{self.resize_to[1]} (Lanczos there and back)" if self.resize_to else ""
        return f"fixer {self.name}: {inner}{size}"

    def _ready(self, device: torch.device) -> None:
        if self._ready_on == device:
            return
        self.net.to(device)
        if self.dtype is not None:
            dtype = resolve_dtype(self.dtype, device)
            if hasattr(self.net, "to_dtype"):
                self.net.to_dtype(dtype)
            else:
                self.net.to(dtype)
        if self._ready_on is None:
            log.info(self.describe())
        self._ready_on = device

    def forward(self, images: Tensor, refs: Tensor | None = None) -> Tensor:
        """Fixes renders.

        Args:
            images: (B, 3, H, W) in [0, 1].
            refs: (B, K, 3, H', W') references in [0, 1], or None.

        Returns:
            (B, 3, H, W) in [0, 1], float32, on the images' device.

        Raises:
            FixerOutputError: the fixer's output is not finite (names the fixer and the images).
        """
        device = self.device or images.device
        self._ready(device)
        x = images.to(device)
        r = refs.to(device) if refs is not None and refs.shape[1] > 0 else None
        if self.resize_to is not None:
            h, w = x.shape[-2:]
            r = resize(r, self.resize_to) if r is not None else None
            out = resize(self.net(resize(x, self.resize_to), r).float(), (h, w))
        else:
            out = self.net(x, r).float()
        check_finite(out, self.name)
        return out.to(images.device)


class IdentityFixer(nn.Module):
    """The ablation control for a fixer: returns the renders unchanged (fixer spec "identity").

    Fed to ProgressiveFixCallback, the novel views are still rendered and added to training,
    but as the model's own renders; the difference between a Difix3D row and this row is what
    Difix itself contributes, the rest is the schedule (extra views, their weights).
    """

    name = "identity"

    def describe(self) -> str:
        return "fixer identity: renders pass through unchanged (the schedule's control)"

    def forward(self, images: Tensor, refs: Tensor | None = None) -> Tensor:
        """(B, 3, H, W) in [0, 1] -> the same tensor; `refs` is ignored."""
        return images
