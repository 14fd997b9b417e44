"""Image grids for the loggers (TensorBoard): one tiling and one way to reach the loggers, used by
the fixer's validation, the progressive fix, curation and scene evaluation alike."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor


def tile_grid(tiles: list[Tensor], columns: int) -> Tensor:
    """(3, H_i, W_i) tiles in [0, 1] -> one (3, H, W) grid, `columns` tiles a row, each tile
    padded (black) to the largest one, 2-pixel gaps (torchvision's make_grid)."""
    from torchvision.utils import make_grid

    h = max(t.shape[-2] for t in tiles)
    w = max(t.shape[-1] for t in tiles)
    padded = [F.pad(t.detach().float().cpu(), (0, w - t.shape[-1], 0, h - t.shape[-2])) for t in tiles]
    return make_grid(torch.stack(padded).clamp(0, 1), nrow=columns, padding=2)


def log_image(loggers: Iterable[Any], tag: str, image: Tensor, step: int) -> None:
    """Adds a (3, H, W) image to every logger that takes images (TensorBoard's add_image)."""
    for logger in loggers:
        experiment = getattr(logger, "experiment", None)
        if hasattr(experiment, "add_image"):
            experiment.add_image(tag, image.detach().cpu(), step)
