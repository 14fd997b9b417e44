"""The fixer "identity": the ablation control of the progressive schedule.

Fed to ProgressiveFixCallback, the novel views are still rendered and added to training, but as
the model's own renders; the difference between a Difix3D row and this row is what Difix itself
contributes, the rest is the schedule (extra views, their weights).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from lightning_modules.difix.net.sizing import SizePolicy, SizeSpec


class IdentityNet(nn.Module):
    """Returns the renders unchanged, at any size, ignoring references (the fixer-network contract)."""

    value_range = (0.0, 1.0)
    uses_references = False

    def size_policy(self, size: SizeSpec = "auto") -> SizePolicy:
        return SizePolicy("native")

    def to_dtype(self, dtype: torch.dtype) -> IdentityNet:
        return self

    def describe(self) -> str:
        return "identity: renders pass through unchanged (the schedule's control)"

    def forward(self, images: Tensor, refs: Tensor | None = None) -> Tensor:
        """(B, 3, H, W) in [0, 1] -> the same tensor."""
        return images
