"""An occupancy grid over the NeRF's box: where the field has density, so that empty space is skipped.

The idea of nerfacc's ``OccGridEstimator`` (and Instant-NGP's density grid), in pure torch and
used beside the proposal sampling rather than instead of it: every ``update_every`` steps the
field's density is evaluated at one jittered point per cell, kept as an exponential moving
maximum (``decay``), and the cells whose opacity over one cell (``1 - exp(-sigma * cell)``)
exceeds ``min(threshold, mean)`` are occupied. Samples in empty cells get zero density without
evaluating any network, and rays with no occupied sample are background at once: the proposal
and field networks then run only where something is. The grid is a buffer (resumed exactly)
and only skips once ``warmup_steps`` have shaped the field; before that every cell counts.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

__all__ = ["OccupancyGrid"]


class OccupancyGrid(nn.Module):
    """A ``resolution``^3 grid over the field's [0, 1]^3 grid coordinates.

    Args:
        resolution: cells per axis (0 switches skipping off).
        threshold: opacity over one cell above which a cell is occupied (nerfacc: 0.01).
        decay: per-update decay of the stored density (nerfacc: 0.95).
        update_every: steps between updates (nerfacc: 16).
        warmup_steps: no skipping before this step (the field has no shape yet).
    """

    def __init__(self, resolution: int = 64, threshold: float = 0.01, decay: float = 0.95, update_every: int = 16,
                 warmup_steps: int = 256) -> None:
        super().__init__()
        if resolution < 0 or update_every < 1 or warmup_steps < 0 or not 0 < decay <= 1 or threshold < 0:
            raise ValueError(f"OccupancyGrid: resolution >= 0, update_every >= 1, warmup_steps >= 0, 0 < decay <= 1 "
                             f"and threshold >= 0 needed, got {resolution}, {update_every}, {warmup_steps}, {decay}, "
                             f"{threshold}")
        self.resolution, self.threshold, self.decay = resolution, threshold, decay
        self.update_every, self.warmup_steps = update_every, warmup_steps
        cells = max(resolution, 1) ** 3
        self.register_buffer("density", torch.zeros(cells))
        self.register_buffer("occupied", torch.ones(cells, dtype=torch.bool))
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    @property
    def active(self) -> bool:
        """Whether samples are skipped (a grid exists and has been updated past the warm-up)."""
        return self.resolution > 0 and bool(self.updates > 0)

    def due(self, step: int) -> bool:
        """Whether ``update`` runs at the start of this training step."""
        return self.resolution > 0 and step >= self.warmup_steps and step % self.update_every == 0

    def cell_centres(self) -> Tensor:
        """(C, 3) cell centres in [0, 1]^3, in the order of the flat grid (x slowest)."""
        r = self.resolution
        axis = (torch.arange(r, device=self.density.device, dtype=torch.float32) + 0.5) / r
        return torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)

    @torch.no_grad()
    def update(self, density_fn: Callable[[Tensor], Tensor], generator: torch.Generator, chunk: int = 65_536) -> None:
        """Re-evaluates every cell at one jittered point and re-thresholds.

        Args:
            density_fn: densities (N,) of grid positions (N, 3) in [0, 1] (the field's, box units).
            generator: CPU RNG of the jitter (step-seeded: a resumed run draws the same).
            chunk: points per call (memory stays flat).
        """
        r = self.resolution
        jitter = (torch.rand(r**3, 3, generator=generator) - 0.5).to(self.density.device) / r
        points = (self.cell_centres() + jitter).clamp(0, 1)
        sigma = torch.cat([density_fn(points[i:i + chunk]) for i in range(0, len(points), chunk)])
        # Opacity across one cell in box units (the grid spans 2 box units per axis).
        opacity = 1 - torch.exp(-sigma.float() * (2.0 / r))
        self.density.copy_(torch.maximum(self.density * self.decay, opacity))
        threshold = min(self.threshold, float(self.density.mean()))
        self.occupied.copy_(self.density > threshold)
        self.updates += 1

    def query(self, x: Tensor) -> Tensor:
        """Occupancy (N,) bool of grid positions x (N, 3) in [0, 1]; all True while inactive."""
        if not self.active:
            return torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        r = self.resolution
        cell = (x * r).long().clamp(0, r - 1)
        return self.occupied[(cell[:, 0] * r + cell[:, 1]) * r + cell[:, 2]]
