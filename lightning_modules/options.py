"""Range checks of numeric module options, so a bad value fails at construction naming the option
(instead of a raw torch error, an overflow, or a degenerate model that trains without a word)."""
from __future__ import annotations

import math

MAX_LR = 10.0  # far above any learning rate that trains these models; 1e38 overflowed inside torch


def check_number(owner: str, name: str, value: object, *, low: float | None = None, high: float | None = None,
                 above: float | None = None, integer: bool = False, optional: bool = False) -> None:
    """Raises ValueError("<owner>: <name> must be ...") unless `value` is a finite number in range.

    Args:
        low / high: inclusive bounds; above: exclusive lower bound.
        integer: must be an int (bools are not); optional: None is allowed.
    """
    if value is None and optional:
        return
    kind = "an integer" if integer else "a finite number"
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type or not math.isfinite(float(value)):  # type: ignore[arg-type]
        raise ValueError(f"{owner}: {name} must be {kind}, got {value!r}")
    v = float(value)  # type: ignore[arg-type]
    if (low is not None and v < low) or (high is not None and v > high) or (above is not None and v <= above):
        bounds = [f">= {low:g}" if low is not None else "", f"> {above:g}" if above is not None else "",
                  f"<= {high:g}" if high is not None else ""]
        raise ValueError(f"{owner}: {name} must be {' and '.join(b for b in bounds if b)}, got {value!r}")


def check_learning_rates(owner: str, **lrs: object) -> None:
    """Each learning rate finite, > 0 and <= MAX_LR."""
    for name, value in lrs.items():
        check_number(owner, name, value, above=0.0, high=MAX_LR)
