"""NerfModel: the nerfacto-style NeRF as a plain ``nn.Module`` (field + proposal sampling).

Rays are expressed in "box units": positions relative to ``center`` divided by the box
half-size, so the same defaults serve any scene scale. ``unbounded`` scenes are contracted
(mip-NeRF 360) and sampled from ``near`` to ``far`` with nerfacto's piecewise spacing;
bounded ones (objects on a background, e.g. NeRF-synthetic) are sampled uniformly inside
the box only. With an active ``OccupancyGrid``, rays that cross no occupied cell are background
without any network, and samples in empty cells get zero density unevaluated (every level).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lightning_modules.scene.nerf.field import NerfField, ProposalField
from lightning_modules.scene.nerf.occupancy import OccupancyGrid
from lightning_modules.scene.nerf.rendering import composite, render_weights
from lightning_modules.scene.nerf.sampling import anneal_weights, contract, ray_aabb, sample_pdf, spacing_to_distance

__all__ = ["NerfModel", "SamplingSettings", "RayOutputs"]


@dataclass
class SamplingSettings:
    """Ray sampling (defaults: nerfstudio's nerfacto).

    Attributes:
        num_proposal_samples: samples per ray of each proposal level (nerfacto: 256, 96).
        num_nerf_samples: final samples per ray (nerfacto: 48).
        near_plane: near distance in box units (nerfacto: 0.05).
        far_plane: far distance in box units (nerfacto: 1000).
        anneal_slope: proposal weight annealing slope (nerfacto: 10).
        anneal_steps: steps over which the annealing power rises to 1 (nerfacto: 1000).
        occupancy_resolution: cells per axis of the empty-space grid (`OccupancyGrid`); 0: none
            (nerfacto has none).
        occupancy_threshold: opacity over one cell that counts as occupied (nerfacc: 0.01).
        occupancy_update_every: steps between grid updates (nerfacc: 16).
        occupancy_warmup_steps: the grid skips nothing before this step.
    """

    num_proposal_samples: tuple[int, ...] = (256, 96)
    num_nerf_samples: int = 48
    near_plane: float = 0.05
    far_plane: float = 1000.0
    anneal_slope: float = 10.0
    anneal_steps: int = 1000
    occupancy_resolution: int = 0
    occupancy_threshold: float = 0.01
    occupancy_update_every: int = 16
    occupancy_warmup_steps: int = 256

    def __post_init__(self) -> None:
        self.num_proposal_samples = tuple(int(n) for n in self.num_proposal_samples)
        if not self.num_proposal_samples or min(self.num_proposal_samples) < 1:
            raise ValueError(f"NeRF sampling: num_proposal_samples needs >= 1 sample per proposal level, got "
                             f"{self.num_proposal_samples}")
        if isinstance(self.num_nerf_samples, bool) or not isinstance(self.num_nerf_samples, int) or self.num_nerf_samples < 1:
            raise ValueError(f"NeRF sampling: num_nerf_samples must be an integer >= 1, got {self.num_nerf_samples!r}")
        if not (0.0 <= self.near_plane < self.far_plane) or not math.isfinite(self.far_plane):
            raise ValueError(f"NeRF sampling: need 0 <= near_plane < far_plane (finite), got {self.near_plane}, "
                             f"{self.far_plane}")
        if not self.anneal_slope > 0:
            raise ValueError(f"NeRF sampling: anneal_slope must be > 0, got {self.anneal_slope}")
        if isinstance(self.anneal_steps, bool) or not isinstance(self.anneal_steps, int) or self.anneal_steps < 1:
            raise ValueError(f"NeRF sampling: anneal_steps must be an integer >= 1, got {self.anneal_steps!r}")
        for name, low in (("occupancy_resolution", 0), ("occupancy_update_every", 1), ("occupancy_warmup_steps", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"NeRF sampling: {name} must be an integer >= {low}, got {value!r}")
        if not 0 <= self.occupancy_threshold < 1:
            raise ValueError(f"NeRF sampling: occupancy_threshold must be in [0, 1), got {self.occupancy_threshold}")


@dataclass
class RayOutputs:
    """What ``NerfModel.forward`` returns for R rays.

    Attributes:
        rgb: (R, 3) composited colour.
        acc: (R, 1) accumulated opacity.
        weights: (R, S) final sample weights.
        spacing: (R, S + 1) final bin edges in spacing units.
        proposals: per proposal level, (spacing edges, weights).
    """

    rgb: Tensor
    acc: Tensor
    weights: Tensor
    spacing: Tensor
    proposals: list[tuple[Tensor, Tensor]]


# Settings are hyperparameters, so checkpoints hold them; allow them in weights-only loading.
torch.serialization.add_safe_globals([SamplingSettings])


class NerfModel(nn.Module):
    """Field, proposal fields and their sampling.

    Args:
        field: the colour/density field.
        proposals: one density field per proposal level.
        sampling: sample counts and ranges (one proposal field per entry of
            ``sampling.num_proposal_samples``).
        unbounded: contract space beyond the box (scenes), else sample inside the box only.
        occupancy: the empty-space grid (None: no skipping).
    """

    def __init__(self, field: NerfField, proposals: list[ProposalField], sampling: SamplingSettings, unbounded: bool,
                 occupancy: OccupancyGrid | None = None) -> None:
        super().__init__()
        if len(proposals) != len(sampling.num_proposal_samples):
            raise ValueError(f"NerfModel: {len(proposals)} proposal fields for {len(sampling.num_proposal_samples)} levels")
        self.field = field
        self.proposals = nn.ModuleList(proposals)
        self.sampling = sampling
        self.unbounded = unbounded
        self.occupancy = occupancy if occupancy is not None else OccupancyGrid(
            sampling.occupancy_resolution, sampling.occupancy_threshold, update_every=sampling.occupancy_update_every,
            warmup_steps=sampling.occupancy_warmup_steps)

    def _ranges(self, origins: Tensor, dirs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if self.unbounded:
            near = torch.full_like(origins[:, :1], self.sampling.near_plane)
            return near, torch.full_like(near, self.sampling.far_plane), torch.ones_like(near[:, 0], dtype=torch.bool)
        return ray_aabb(origins, dirs, 1.0, self.sampling.near_plane)

    def _points(self, origins: Tensor, dirs: Tensor, t: Tensor) -> Tensor:
        """Grid positions (R * S, 3) of the bin midpoints of edges t (R, S + 1)."""
        mid = (t[:, 1:] + t[:, :-1]) / 2
        return contract(origins[:, None, :] + dirs[:, None, :] * mid[..., None], self.unbounded).reshape(-1, 3)

    def _crosses_occupied(self, origins: Tensor, dirs: Tensor, near: Tensor, far: Tensor) -> Tensor:
        """(R,) whether a ray has a sample in an occupied cell, probed finer than the cells."""
        n = max(2 * self.occupancy.resolution, self.sampling.num_proposal_samples[0] if self.proposals else 1)
        s = torch.linspace(0.0, 1.0, n + 1, device=origins.device, dtype=origins.dtype).expand(origins.shape[0], n + 1)
        t = spacing_to_distance(s, near, far, self.unbounded)
        return self.occupancy.query(self._points(origins, dirs, t)).reshape(-1, n).any(dim=1)

    def density_at(self, x: Tensor) -> Tensor:
        """The field's densities (N,) at grid positions (N, 3) (what the occupancy grid tracks)."""
        return self.field.density(x)[0]

    def forward(self, origins: Tensor, dirs: Tensor, codes: Tensor, background: Tensor, step: int,
                generator: torch.Generator | None) -> RayOutputs:
        """Renders rays; in a bounded scene only the rays that hit the box are evaluated.

        Args:
            origins: (R, 3) in box units; dirs: (R, 3) unit directions.
            codes: (R, A) appearance codes.
            background: (3,) colour behind the scene.
            step: training step (proposal annealing); large values switch annealing off.
            generator: CPU RNG of the sample jitter; None renders deterministically (evaluation).

        Returns:
            ``RayOutputs`` (rays that miss the box: background colour, zero weights).
        """
        r = origins.shape[0]
        near, far, hit = self._ranges(origins, dirs)
        if self.occupancy.active:
            hit = hit & self._crosses_occupied(origins, dirs, near, far)
        # Draw the jitter for all rays, so a ray's samples do not depend on which others hit.
        n0 = self.sampling.num_proposal_samples[0] if self.proposals else self.sampling.num_nerf_samples
        jitter = None
        if generator is not None:
            counts = len(self.proposals) + 1
            jitter = torch.rand(r, counts, generator=generator).to(origins)
        if bool(hit.all()):
            return self._render(origins, dirs, codes, background, near, far, n0, step, jitter)
        idx = hit.nonzero(as_tuple=True)[0]
        if len(idx) == 0:  # nothing to render: background, and empty weights the losses accept
            empty = origins.new_zeros(0, 1)
            return RayOutputs(background.to(origins).expand(r, 3).clone(), origins.new_zeros(r, 1), empty,
                              origins.new_zeros(0, 2), [])
        sub = self._render(origins[idx], dirs[idx], codes[idx], background, near[idx], far[idx], n0, step,
                           None if jitter is None else jitter[idx])
        rgb = background.to(origins).expand(r, 3).clone()
        rgb = rgb.index_put((idx,), sub.rgb)  # out of place: keeps autograd simple
        acc = origins.new_zeros(r, 1).index_put((idx,), sub.acc)
        return RayOutputs(rgb, acc, sub.weights, sub.spacing, sub.proposals)

    def _render(self, origins: Tensor, dirs: Tensor, codes: Tensor, background: Tensor, near: Tensor, far: Tensor,
                n0: int, step: int, jitter: Tensor | None) -> RayOutputs:
        r = origins.shape[0]
        s = torch.linspace(0.0, 1.0, n0 + 1, device=origins.device, dtype=origins.dtype).expand(r, n0 + 1)
        if jitter is not None:  # nerfacto's single jitter: one uniform offset per ray within the bins
            mid = (s[:, 1:] + s[:, :-1]) / 2
            upper, lower = torch.cat([mid, s[:, -1:]], -1), torch.cat([s[:, :1], mid], -1)
            s = lower + (upper - lower) * jitter[:, :1]
        proposals: list[tuple[Tensor, Tensor]] = []
        counts = list(self.sampling.num_proposal_samples[1:]) + [self.sampling.num_nerf_samples]
        for level, (prop, n_next) in enumerate(zip(self.proposals, counts)):
            t = spacing_to_distance(s, near, far, self.unbounded)
            sigma = self._occupied_only(prop, self._points(origins, dirs, t)).reshape(r, -1)
            w, _ = render_weights(sigma, t)
            proposals.append((s, w))
            annealed = anneal_weights(w.detach(), step, self.sampling.anneal_slope, self.sampling.anneal_steps)
            s = sample_pdf(s, annealed, n_next, None if jitter is None else jitter[:, level + 1 : level + 2])
        t = spacing_to_distance(s, near, far, self.unbounded)
        n = t.shape[1] - 1
        view_dirs = dirs[:, None, :].expand(r, n, 3).reshape(-1, 3)
        points = self._points(origins, dirs, t)
        keep = self.occupancy.query(points)
        if bool(keep.all()):
            sigma, rgb = self.field(points, view_dirs, codes.repeat_interleave(n, dim=0))
        else:
            idx = keep.nonzero(as_tuple=True)[0]
            sub_sigma, sub_rgb = self.field(points[idx], view_dirs[idx], codes.repeat_interleave(n, dim=0)[idx])
            sigma = points.new_zeros(len(points)).index_put((idx,), sub_sigma)
            rgb = points.new_zeros(len(points), 3).index_put((idx,), sub_rgb)
        w, _ = render_weights(sigma.reshape(r, n), t)
        color, acc = composite(w, rgb.reshape(r, n, 3), background)
        return RayOutputs(color, acc, w, s, proposals)

    def _occupied_only(self, density: nn.Module, points: Tensor) -> Tensor:
        """Densities (N,) of ``density`` at points (N, 3), zero in empty cells (not evaluated)."""
        keep = self.occupancy.query(points)
        if bool(keep.all()):
            return density(points)
        idx = keep.nonzero(as_tuple=True)[0]
        return points.new_zeros(len(points)).index_put((idx,), density(points[idx]))
