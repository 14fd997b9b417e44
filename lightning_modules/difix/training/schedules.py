"""The learning-rate schedule shared by the prior (DifixPriorModule) and the fixer (DifixModule)."""
from __future__ import annotations

from typing import Any

import torch


def cosine_to_tenth(optimizer: torch.optim.Optimizer, total_steps: int, lr: float) -> dict[str, Any]:
    """Lightning's optimizer config: cosine decay per step from ``lr`` to ``lr / 10`` over ``total_steps``."""
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps, eta_min=lr * 0.1)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
