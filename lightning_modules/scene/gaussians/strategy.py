"""gsplat densification strategies with the fixes this project needs.

- ``DefaultStrategy``: gsplat 1.5.3's, except that opacities are really reset every
  ``reset_every`` steps. Upstream writes ``step % self.reset_every == 0 & step > 0``; ``&``
  binds tighter than the comparisons, so the chain reads ``(step % reset_every == 0) and
  (0 > 0)`` and the reset never happens.
- ``MCMCStrategy``: gsplat's, with pure-torch relocation and noise so that it also runs on
  CPU tensors (upstream calls CUDA kernels for both). On CUDA the upstream code runs.

Both are dataclasses (typed fields, as upstream); their ``initialize_state`` output is
what the scene module checkpoints.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

import torch
from torch import Tensor

from gsplat.strategy import DefaultStrategy as _GsplatDefault
from gsplat.strategy import MCMCStrategy as _GsplatMCMC
from gsplat.strategy.ops import _multinomial_sample, _update_param_with_optimizer, reset_opa

__all__ = ["DefaultStrategy", "MCMCStrategy", "compute_relocation_torch"]

Params = Union[dict[str, torch.nn.Parameter], torch.nn.ParameterDict]


@dataclass
class DefaultStrategy(_GsplatDefault):
    """gsplat's ``DefaultStrategy`` (3DGS densification) with a working opacity reset."""

    def step_post_backward(
        self,
        params: Params,
        optimizers: dict[str, torch.optim.Optimizer],
        state: dict[str, Any],
        step: int,
        info: dict[str, Any],
        packed: bool = False,
    ) -> None:
        """Runs upstream's grow/prune logic, then the opacity reset upstream skips."""
        super().step_post_backward(params, optimizers, state, step, info, packed=packed)
        # Upstream returns early past refine_stop_iter; so must the reset.
        if step < self.refine_stop_iter and step > 0 and step % self.reset_every == 0:
            reset_opa(params=params, optimizers=optimizers, state=state, value=self.prune_opa * 2.0)


def compute_relocation_torch(opacities: Tensor, scales: Tensor, ratios: Tensor, binoms: Tensor) -> tuple[Tensor, Tensor]:
    """Pure-torch ``gsplat.relocation.compute_relocation`` (MCMC paper, Eq. 9).

    Each of ``ratio`` copies of a Gaussian gets opacity ``1 - (1 - o)^(1/ratio)`` and its
    scale times ``o / sum_{i=1}^{ratio} sum_{k=0}^{i-1} C(i-1, k) (-1)^k / sqrt(k+1) o_new^(k+1)``.

    Args:
        opacities: (N,) activated opacities.
        scales: (N, 3) activated scales.
        ratios: (N,) copies per Gaussian (clamped to [1, n_max]).
        binoms: (n_max, n_max) binomial table.

    Returns:
        new_opacities (N,), new_scales (N, 3).
    """
    n_max = binoms.shape[0]
    ratios = ratios.clamp(1, n_max).long()
    new_opa = 1.0 - torch.pow(1.0 - opacities, 1.0 / ratios.to(opacities.dtype))
    # cum[r - 1, k] = sum_{i=1}^{r} C(i - 1, k): the double sum becomes one (N, n_max) product.
    cum = torch.cumsum(binoms.to(opacities.dtype), dim=0)
    k = torch.arange(n_max, device=opacities.device, dtype=opacities.dtype)
    sign_root = torch.where(k % 2 == 0, 1.0, -1.0) / torch.sqrt(k + 1)
    powers = new_opa[:, None] ** (k + 1)  # (N, n_max)
    denom = (cum[ratios - 1] * sign_root * powers).sum(dim=1)
    coeff = opacities / denom
    return new_opa, coeff[:, None] * scales


@dataclass
class MCMCStrategy(_GsplatMCMC):
    """gsplat's ``MCMCStrategy`` (3DGS as MCMC) that also runs on CPU tensors."""

    def step_post_backward(
        self,
        params: Params,
        optimizers: dict[str, torch.optim.Optimizer],
        state: dict[str, Any],
        step: int,
        info: dict[str, Any],
        lr: float,
    ) -> None:
        if params["means"].is_cuda:
            return super().step_post_backward(params, optimizers, state, step, info, lr)
        state["binoms"] = state["binoms"].to(params["means"].device)
        binoms = state["binoms"]
        if self.refine_start_iter < step < self.refine_stop_iter and step % self.refine_every == 0:
            self._relocate_gs_torch(params, optimizers, binoms)
            self._add_new_gs_torch(params, optimizers, binoms)
        self._inject_noise_torch(params, lr * self.noise_lr)

    @torch.no_grad()
    def _relocated(self, params: Params, sampled: Tensor, binoms: Tensor) -> tuple[Tensor, Tensor]:
        opacities = torch.sigmoid(params["opacities"]).flatten()
        new_opa, new_scales = compute_relocation_torch(
            opacities[sampled],
            torch.exp(params["scales"])[sampled],
            torch.bincount(sampled)[sampled] + 1,
            binoms,
        )
        eps = torch.finfo(torch.float32).eps
        return new_opa.clamp(min=self.min_opacity, max=1.0 - eps), new_scales

    @torch.no_grad()
    def _relocate_gs_torch(self, params: Params, optimizers: dict, binoms: Tensor) -> int:
        opacities = torch.sigmoid(params["opacities"].flatten())
        dead = opacities <= self.min_opacity
        n_dead = int(dead.sum())
        if n_dead == 0 or bool(dead.all()):
            return 0
        dead_idx = dead.nonzero(as_tuple=True)[0]
        alive_idx = (~dead).nonzero(as_tuple=True)[0]
        sampled = alive_idx[_multinomial_sample(opacities[alive_idx], n_dead, replacement=True)]
        new_opa, new_scales = self._relocated(params, sampled, binoms)

        def param_fn(name: str, p: Tensor) -> Tensor:
            if name == "opacities":
                p[sampled] = torch.logit(new_opa)
            elif name == "scales":
                p[sampled] = torch.log(new_scales)
            p[dead_idx] = p[sampled]
            return torch.nn.Parameter(p, requires_grad=p.requires_grad)

        def optimizer_fn(key: str, v: Tensor) -> Tensor:
            v[sampled] = 0
            return v

        _update_param_with_optimizer(param_fn, optimizer_fn, params, optimizers)
        return n_dead

    @torch.no_grad()
    def _add_new_gs_torch(self, params: Params, optimizers: dict, binoms: Tensor) -> int:
        current = len(params["means"])
        n_new = max(0, min(self.cap_max, int(1.05 * current)) - current)
        if n_new == 0:
            return 0
        opacities = torch.sigmoid(params["opacities"].flatten())
        sampled = _multinomial_sample(opacities, n_new, replacement=True)
        new_opa, new_scales = self._relocated(params, sampled, binoms)

        def param_fn(name: str, p: Tensor) -> Tensor:
            if name == "opacities":
                p[sampled] = torch.logit(new_opa)
            elif name == "scales":
                p[sampled] = torch.log(new_scales)
            return torch.nn.Parameter(torch.cat([p, p[sampled]]), requires_grad=p.requires_grad)

        def optimizer_fn(key: str, v: Tensor) -> Tensor:
            return torch.cat([v, torch.zeros((len(sampled), *v.shape[1:]), dtype=v.dtype, device=v.device)])

        _update_param_with_optimizer(param_fn, optimizer_fn, params, optimizers)
        return n_new

    @torch.no_grad()
    def _inject_noise_torch(self, params: Params, scaler: float) -> None:
        from gsplat.cuda._torch_impl import _quat_scale_to_covar_preci

        opacities = torch.sigmoid(params["opacities"].flatten())
        covars, _ = _quat_scale_to_covar_preci(
            params["quats"], torch.exp(params["scales"]), compute_covar=True, compute_preci=False, triu=False
        )
        # Only nearly transparent Gaussians move (a steep sigmoid of 1 - opacity around 0.995).
        gate = torch.sigmoid(100.0 * ((1.0 - opacities) - 0.995))
        noise = torch.randn_like(params["means"]) * gate[:, None] * scaler
        params["means"].add_(torch.einsum("nij,nj->ni", covars, noise))


# Strategy objects are hyperparameters of the scene modules, so checkpoints hold them; allow
# them in weights-only loading (Lightning's default when resuming).
torch.serialization.add_safe_globals([DefaultStrategy, MCMCStrategy])
