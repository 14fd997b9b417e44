"""Tolerances for comparing floats that come from different code paths.

On CPU the same weights give outputs that differ by ~1e-6 depending on the load path, the
attention processor or whether a weight has requires_grad (PITFALLS.md, 2026-11-29), so an
exact comparison fails on a package upgrade without any bug. A real mapping or loading bug
(a dropped skip conv, a wrong LoRA scale) moves [0, 1] outputs by 1e-3 or more.
"""
from __future__ import annotations

CROSS_PATH = dict(
    rtol=0,
    atol=1e-5,
    msg=lambda m: f"{m}\n(same weights through another code path: allowed 1e-5, a real bug moves outputs >1e-3)",
)
