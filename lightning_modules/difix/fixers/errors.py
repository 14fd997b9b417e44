"""What a fixer raises when it fails while fixing: the message names the fixer (and callers add
the step and views)."""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["FixerError", "FixerOutputError", "check_finite"]


class FixerError(RuntimeError):
    """A fixer failed on images (raised, or gave an unusable output); the message names it."""


class FixerOutputError(FixerError):
    """A fixer's raw output is unusable: NaN / Inf (e.g. float16 overflow or broken weights), not
    floating point, or not one image per input."""


def check_finite(out: Tensor, name: str, what: str = "output") -> None:
    """Raises FixerOutputError naming the fixer and the batch indices whose `what` is not finite."""
    bad = ~torch.isfinite(out.flatten(1)).all(dim=1)
    if bool(bad.any()):
        idx = bad.nonzero().flatten().tolist()
        raise FixerOutputError(
            f"fixer {name}: non-finite {what} (NaN/Inf) for image(s) {idx[:10]} of {len(out)}; its weights hold "
            "NaN, or its dtype overflows (float16: try dtype bfloat16 or float32). Nothing was written for them.")
