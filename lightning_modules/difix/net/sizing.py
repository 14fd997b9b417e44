"""How an image of any size reaches a fixer network and comes back: one `SizePolicy` per fixer.

A fixer network runs at sizes its architecture allows (a Difix VAE: multiples of 8; this
project's padded Difix nets: multiples of 64; NVIDIA's TorchScript Fixer: fixed sizes). The
policy is chosen once, when a fixer is made ready (`FixerNet.size_policy`, from the `size` of a
`FixerSpec`), and applied once, to renders and their references alike:

- "reference": Lanczos (Pillow's weights) to the size rounded down to a multiple (8), and back,
  as the reference `DifixPipeline`; the published models' and reference pkls' default.
- "pad": reflect-pad to a multiple (64 for SD), crop back; this project's own nets' default.
- "resize": bilinear to the nearest multiple, and back.
- "fixed": a given (height, width), with Lanczos (the reference `inference_difix.py` at 576 x
  1024) or bilinear (NVIDIA Fixer's scripts, Pillow's BILINEAR) there and back.
- "native": the image as it is (a fixer that takes any size: the identity).

References that are not of the render's size are resampled with the policy's filter straight to
the size the render runs at (for "pad", to the render's size, then padded the same way).
Images are float in [0, 1], (..., 3, H, W); resampled images are clamped to [0, 1] (Lanczos
overshoots, and the reference resizes 8-bit images, which clip).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch.nn.functional as F
from torch import Tensor

from lightning_modules.difix.net.lanczos import lanczos_resize, round_down_size

Mode = Literal["reference", "pad", "resize", "fixed", "native"]
SizeSpec = Literal["auto", "reference", "pad", "resize"] | tuple[int, int]
"""What a config says: "auto" (the net's own default), a mode, or [height, width]."""

__all__ = ["SizePolicy", "SizeSpec"]


@dataclass(frozen=True)
class SizePolicy:
    """How images reach a net of fixed size constraints (see the module docstring).

    Args:
        mode: "reference", "pad", "resize", "fixed" or "native".
        multiple: what H and W must be multiples of ("reference" rounds down to it, "pad" up,
            "resize" to the nearest; "fixed" checks its size against it).
        size: (height, width) for "fixed".
        filter: "lanczos" or "bilinear": how "fixed" resamples (the other modes have their own).
    """

    mode: Mode = "native"
    multiple: int = 1
    size: tuple[int, int] | None = None
    filter: Literal["lanczos", "bilinear"] = "lanczos"

    def __post_init__(self) -> None:
        if self.multiple <= 0:
            raise ValueError(f"SizePolicy: multiple must be positive, got {self.multiple}")
        if self.mode == "fixed":
            if self.size is None or len(self.size) != 2 or min(self.size) <= 0:
                raise ValueError(f"SizePolicy: a fixed size needs [height, width] > 0, got {self.size}")
            if any(s % self.multiple for s in self.size):
                raise ValueError(f"size {list(self.size)}: this fixer runs at multiples of {self.multiple} "
                                 f"(e.g. {[max(self.multiple, s // self.multiple * self.multiple) for s in self.size]})")

    def describe(self) -> str:
        """The load line's pre-processing part."""
        return {
            "reference": f"reference (Lanczos to a multiple of {self.multiple} and back)",
            "pad": f"reflect-pad to a multiple of {self.multiple}",
            "resize": f"bilinear resize to a multiple of {self.multiple}",
            "fixed": f"runs at {self.size[0]}x{self.size[1]} ({self.filter} there and back)" if self.size else "",
            "native": "the input size",
        }[self.mode]

    def model_size(self, h: int, w: int) -> tuple[int, int]:
        """(H, W) the net runs at for an (h, w) render."""
        m = self.multiple
        if self.mode == "fixed":
            return self.size  # type: ignore[return-value]
        if self.mode == "reference":
            return round_down_size(h, w, m)
        if self.mode == "pad":
            return -(-h // m) * m, -(-w // m) * m
        if self.mode == "resize":
            return max(m, round(h / m) * m), max(m, round(w / m) * m)
        return h, w

    def _resample(self, x: Tensor, size: tuple[int, int], lanczos: bool) -> Tensor:
        if tuple(x.shape[-2:]) == tuple(size):
            return x
        if lanczos:
            return lanczos_resize(x, size).clamp(0, 1)
        lead = x.shape[:-3]
        y = F.interpolate(x.reshape(-1, *x.shape[-3:]), size=size, mode="bilinear", antialias=True,
                          align_corners=False)
        return y.reshape(*lead, *y.shape[-3:]).clamp(0, 1)

    @property
    def _lanczos(self) -> bool:
        return self.mode == "reference" or (self.mode == "fixed" and self.filter == "lanczos")

    def to_model(self, x: Tensor) -> Tensor:
        """(..., 3, h, w) -> (..., 3, H, W) at `model_size(h, w)`."""
        h, w = x.shape[-2:]
        mh, mw = self.model_size(h, w)
        if (mh, mw) == (h, w):
            return x
        if self.mode != "pad":
            return self._resample(x, (mh, mw), self._lanczos)
        lead = x.shape[:-3]
        flat = x.reshape(-1, *x.shape[-3:])
        mode = "reflect" if mh - h < h and mw - w < w else "replicate"  # reflect needs pad < size
        return F.pad(flat, (0, mw - w, 0, mh - h), mode=mode).reshape(*lead, 3, mh, mw)

    def refs_to_model(self, refs: Tensor, render_size: tuple[int, int]) -> Tensor:
        """References (..., 3, h', w') of any size -> the size a render of `render_size` runs at."""
        if self.mode == "pad":
            return self.to_model(self._resample(refs, render_size, lanczos=False))
        target = self.model_size(*render_size)
        return self._resample(refs, target, self._lanczos)

    def to_input(self, y: Tensor, size: tuple[int, int]) -> Tensor:
        """The net's output (..., 3, H, W) back to the render's (h, w)."""
        if tuple(y.shape[-2:]) == tuple(size):
            return y
        if self.mode == "pad":
            return y[..., : size[0], : size[1]]
        return self._resample(y, size, self._lanczos)
