"""The NeRF field (nerfacto's): hash-grid density, view-dependent colour, proposal densities.

Plain ``nn.Module``s (no Lightning). Sizes default to nerfstudio's ``NerfactoModelConfig``
(``nerfstudio/models/nerfacto.py``): field hash grid 16 levels, 2 features, resolutions
16-2048, 2**19 entries; density MLP one hidden layer of 64 to 1 + 15 geometry features;
colour MLP two hidden layers of 64 on SH(degree 4) of the direction + geometry features +
a 32-d per-image appearance embedding; proposal fields 5 levels, resolutions 16-128 / 256,
2**17 entries, one hidden layer of 16. Densities use a truncated exponential.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lightning_modules.scene.nerf.encoding import HashEncoding, sh_encoding

__all__ = ["FieldSettings", "NerfField", "ProposalField", "build_fields", "trunc_exp"]


@dataclass
class FieldSettings:
    """Sizes of the NeRF field and its proposal fields (defaults: nerfstudio's nerfacto).

    Attributes:
        num_levels: field hash-grid levels (16).
        base_res: coarsest grid resolution (16).
        max_res: finest grid resolution (2048).
        log2_hashmap_size: log2 entries per level (19).
        features_per_level: features per level (2).
        hidden_dim: density MLP width (64).
        geo_feat_dim: geometry features to the colour MLP (15).
        hidden_dim_color: colour MLP width (64).
        appearance_embed_dim: per-image appearance code size (32; 0: none).
        proposal_max_res: finest resolution of each proposal field (128, 256): one entry per
            proposal level of `SamplingSettings.num_proposal_samples`.
        proposal_num_levels: proposal hash-grid levels (5).
        proposal_log2_hashmap_size: proposal log2 entries per level (17).
        proposal_hidden_dim: proposal MLP width (16).
    """

    num_levels: int = 16
    base_res: int = 16
    max_res: int = 2048
    log2_hashmap_size: int = 19
    features_per_level: int = 2
    hidden_dim: int = 64
    geo_feat_dim: int = 15
    hidden_dim_color: int = 64
    appearance_embed_dim: int = 32
    proposal_max_res: tuple[int, ...] = (128, 256)
    proposal_num_levels: int = 5
    proposal_log2_hashmap_size: int = 17
    proposal_hidden_dim: int = 16

    def __post_init__(self) -> None:
        self.proposal_max_res = tuple(int(r) for r in self.proposal_max_res)
        at_least = {"num_levels": 1, "base_res": 2, "log2_hashmap_size": 4, "features_per_level": 1, "hidden_dim": 1,
                    "geo_feat_dim": 0, "hidden_dim_color": 1, "appearance_embed_dim": 0, "proposal_num_levels": 1,
                    "proposal_log2_hashmap_size": 4, "proposal_hidden_dim": 1}
        for name, low in at_least.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"NeRF field: {name} must be an integer >= {low}, got {value!r}")
        for name in ("log2_hashmap_size", "proposal_log2_hashmap_size"):
            if getattr(self, name) > 26:  # 2^26 entries x levels x features: beyond any GPU at float32
                raise ValueError(f"NeRF field: {name} must be <= 26, got {getattr(self, name)}")
        if self.max_res < self.base_res:
            raise ValueError(f"NeRF field: max_res {self.max_res} must be >= base_res {self.base_res}")
        if not self.proposal_max_res or min(self.proposal_max_res) < 16:
            raise ValueError(f"NeRF field: proposal_max_res needs one resolution >= 16 per proposal level, got "
                             f"{self.proposal_max_res}")


# Settings are hyperparameters, so checkpoints hold them; allow them in weights-only loading.
torch.serialization.add_safe_globals([FieldSettings])


class _TruncExp(torch.autograd.Function):
    """exp with its gradient clamped at exp(15) (torch-ngp / nerfstudio), against blow-ups."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return torch.exp(x)

    @staticmethod
    def backward(ctx, g: Tensor) -> Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return g * torch.exp(x.clamp(max=15))


def trunc_exp(x: Tensor) -> Tensor:
    return _TruncExp.apply(x)


def _mlp(dims: list[int], out_act: nn.Module | None = None) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(dims) - 1):
        layers.append(nn.Linear(dims[i], dims[i + 1]))
        if i < len(dims) - 2:
            layers.append(nn.ReLU())
    if out_act is not None:
        layers.append(out_act)
    return nn.Sequential(*layers)


def _inside(x: Tensor) -> Tensor:
    """1 where x (in [0, 1]^3 grid units) lies inside the grid, else 0 (nerfacto's selector)."""
    return ((x >= 0) & (x <= 1)).all(dim=-1).to(x.dtype)


class ProposalField(nn.Module):
    """Density only (a proposal network): small hash grid + one hidden layer.

    Args:
        num_levels, max_res, log2_hashmap_size: its hash grid (base resolution 16, 2 features).
        hidden_dim: hidden width.
    """

    def __init__(self, num_levels: int = 5, max_res: int = 128, log2_hashmap_size: int = 17, hidden_dim: int = 16) -> None:
        super().__init__()
        self.encoding = HashEncoding(num_levels, 16, max_res, log2_hashmap_size, 2)
        self.mlp = _mlp([self.encoding.out_dim, hidden_dim, 1])

    def forward(self, x: Tensor) -> Tensor:
        """Densities (N,) of grid positions x (N, 3) in [0, 1]."""
        return trunc_exp(self.mlp(self.encoding(x))[:, 0]) * _inside(x)


class NerfField(nn.Module):
    """Density and view-dependent colour.

    Args:
        num_levels: hash-grid levels.
        base_res: coarsest resolution.
        max_res: finest resolution.
        log2_hashmap_size: entries per level (log2).
        features_per_level: features per level.
        hidden_dim: density MLP width.
        geo_feat_dim: geometry features passed to the colour MLP.
        hidden_dim_color: colour MLP width (two hidden layers).
        appearance_embed_dim: per-image appearance code size (0: none).
        num_images: training images (appearance codes); set later by ``set_num_images``.
    """

    def __init__(
        self,
        num_levels: int = 16,
        base_res: int = 16,
        max_res: int = 2048,
        log2_hashmap_size: int = 19,
        features_per_level: int = 2,
        hidden_dim: int = 64,
        geo_feat_dim: int = 15,
        hidden_dim_color: int = 64,
        appearance_embed_dim: int = 32,
        num_images: int = 0,
    ) -> None:
        super().__init__()
        self.encoding = HashEncoding(num_levels, base_res, max_res, log2_hashmap_size, features_per_level)
        self.density_mlp = _mlp([self.encoding.out_dim, hidden_dim, 1 + geo_feat_dim])
        self.appearance_embed_dim = appearance_embed_dim
        self.color_mlp = _mlp([16 + geo_feat_dim + appearance_embed_dim, hidden_dim_color, hidden_dim_color, 3], nn.Sigmoid())
        self.appearance: nn.Embedding | None = None
        self.set_num_images(num_images)

    def set_num_images(self, n: int) -> None:
        """(Re)creates the per-image appearance codes for ``n`` training images."""
        if self.appearance_embed_dim > 0 and n > 0:
            self.appearance = nn.Embedding(n, self.appearance_embed_dim)
            nn.init.normal_(self.appearance.weight, std=0.01)

    def appearance_codes(self, view: Tensor) -> Tensor:
        """(N, A) codes of training image indices ``view`` (N,); -1 (fixed or evaluation views)
        takes the mean code, as nerfacto's ``use_average_appearance_embedding``."""
        if self.appearance is None:
            return torch.zeros(view.shape[0], self.appearance_embed_dim, device=view.device)
        mean = self.appearance.weight.mean(dim=0, keepdim=True)
        codes = self.appearance(view.clamp_min(0))
        return torch.where((view >= 0)[:, None], codes, mean)

    def density(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Densities (N,) and geometry features (N, G) of grid positions x (N, 3) in [0, 1]."""
        h = self.density_mlp(self.encoding(x))
        return trunc_exp(h[:, 0]) * _inside(x), h[:, 1:]

    def forward(self, x: Tensor, dirs: Tensor, codes: Tensor) -> tuple[Tensor, Tensor]:
        """Density (N,) and colour (N, 3) in [0, 1].

        Args:
            x: (N, 3) grid positions in [0, 1].
            dirs: (N, 3) unit view directions.
            codes: (N, A) appearance codes.
        """
        sigma, geo = self.density(x)
        rgb = self.color_mlp(torch.cat([sh_encoding(dirs, 4), geo, codes], dim=-1))
        return sigma, rgb


def build_fields(settings: FieldSettings) -> tuple[NerfField, list[ProposalField]]:
    """The field and one proposal field per entry of ``settings.proposal_max_res``."""
    s = settings
    field = NerfField(s.num_levels, s.base_res, s.max_res, s.log2_hashmap_size, s.features_per_level, s.hidden_dim,
                      s.geo_feat_dim, s.hidden_dim_color, s.appearance_embed_dim)
    proposals = [ProposalField(s.proposal_num_levels, r, s.proposal_log2_hashmap_size, s.proposal_hidden_dim)
                 for r in s.proposal_max_res]
    return field, proposals
