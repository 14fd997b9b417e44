"""Stops a diverged run before it saves garbage.

A run whose loss, gradients or parameters turn NaN/Inf keeps "training" and, without this,
exits 0 with a NaN checkpoint kept as the best one (or a .ply full of NaN means). The guard
checks every step and refuses any checkpoint whose tensors are not finite, so the last
checkpoint on disk is always the last good state. `main.py` adds it to every run.

Reading a check's answer is a host sync, which stalls a GPU's queue of launched kernels every
step (a bare gsplat loop has none). So on an accelerator the checks stay on the device (one
flag per kind, and the first bad step) and are read every `sync_every_n_steps` steps, and
always before anything is saved or evaluated (a checkpoint, validation, the end of training,
where the .ply and the pairs are written): a diverged run then stops a few steps later, naming
the step it diverged at, and still writes nothing non-finite. On the CPU a sync is free and
the guard reads every step.

Lightning's `detect_anomaly` only covers autograd (and is slow); this checks the values that
end up in checkpoints.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor
from torch.nn.utils import get_total_norm


class NonFiniteError(RuntimeError):
    """Training produced a NaN/Inf loss, gradient or parameter."""


def non_finite_names(named: Iterable[tuple[str, Any]], limit: int = 5) -> list[str]:
    """Names of the floating-point tensors in `named` that hold a NaN or Inf (at most `limit`)."""
    bad: list[str] = []
    for name, t in named:
        if isinstance(t, Tensor) and t.is_floating_point() and t.numel() and not bool(torch.isfinite(t).all()):
            bad.append(name)
            if len(bad) >= limit:
                break
    return bad


def all_finite(tensors: Iterable[Any]) -> bool:
    """True when no floating-point tensor in `tensors` holds a NaN or Inf.

    torch's total inf-norm (the max |x| of each tensor, foreach where the device supports it,
    then their max; NaN propagates through it, Inf stays Inf) and one host sync instead of an
    isfinite + sync per tensor: the tiny DifixNet has ~400 parameter tensors, where the
    per-tensor loop cost ~3 % of a CPU training step.
    """
    flag = finite_flag(tensors)
    return flag is None or bool(flag)


def finite_flag(tensors: Iterable[Any]) -> Tensor | None:
    """`all_finite`'s answer as a 0-dim bool tensor on the tensors' device, not read (no host
    sync); None when `tensors` holds no floating-point values."""
    floats = [t.detach() for t in tensors if isinstance(t, Tensor) and t.is_floating_point() and t.numel()]
    return torch.isfinite(get_total_norm(floats, norm_type="inf")) if floats else None


def _loss_of(outputs: Any) -> Tensor | None:
    if isinstance(outputs, Tensor):
        return outputs
    if isinstance(outputs, Mapping) and isinstance(outputs.get("loss"), Tensor):
        return outputs["loss"]
    return None


_KINDS = ("loss", "gradients", "parameters")


class FiniteGuard(Callback):
    """Raises `NonFiniteError` naming the step and the tensor once training diverges.

    Args:
        check_parameters: also check every trainable parameter after each step (one total
            inf-norm over the weights, `all_finite`; cheap next to a training step).
        check_gradients: check gradients before each optimizer step (on the CPU a NaN
            gradient is caught before it reaches the weights).
        sync_every_n_steps: steps between reads of the device-side checks on an accelerator
            (None: 1 on the CPU, 16 on an accelerator); they are read before every checkpoint,
            validation and the end of training as well.
    """

    def __init__(self, check_parameters: bool = True, check_gradients: bool = True,
                 sync_every_n_steps: int | None = None) -> None:
        if sync_every_n_steps is not None and sync_every_n_steps < 1:
            raise ValueError(f"FiniteGuard: sync_every_n_steps must be >= 1 or None, got {sync_every_n_steps}")
        self.check_parameters = check_parameters
        self.check_gradients = check_gradients
        self.sync_every_n_steps = sync_every_n_steps
        self._first_bad: Tensor | None = None  # (3,) long: first step each kind was non-finite, -1: never

    def _every(self, device: torch.device) -> int:
        if self.sync_every_n_steps is not None:
            return self.sync_every_n_steps
        return 1 if device.type == "cpu" else 16

    @staticmethod
    def _fail(trainer: Trainer, what: str, names: list[str], step: int | None = None) -> None:
        ckpt = getattr(trainer.checkpoint_callback, "last_model_path", "") or "none written yet"
        step = trainer.global_step if step is None else step
        raise NonFiniteError(
            f"training diverged at step {step}: non-finite {what} {names}. "
            f"Nothing was saved from this step on; the last good checkpoint is {ckpt}. "
            "Lower the learning rate (or the loss weights) and resume from it."
        )

    def _record(self, trainer: Trainer, pl_module: LightningModule, kind: int, finite: Tensor,
                named: list[tuple[str, Any]]) -> None:
        """Notes a 0-dim bool `finite` of kind `kind`; reads it at once when the guard syncs every step."""
        if self._every(finite.device) == 1:
            if not bool(finite):
                self._fail(trainer, _KINDS[kind], non_finite_names(named) if named else [f"train/{_KINDS[kind]}"])
            return
        if self._first_bad is None or self._first_bad.device != finite.device:
            self._first_bad = torch.full((len(_KINDS),), -1, dtype=torch.long, device=finite.device)
        bad = ~finite & (self._first_bad[kind] < 0)  # stays on the device: no sync
        self._first_bad[kind] = torch.where(bad, trainer.global_step, self._first_bad[kind])

    def check_now(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Reads the pending device-side checks (one sync) and raises if any was non-finite."""
        if self._first_bad is None:
            return
        first = self._first_bad.tolist()
        self._first_bad = None
        bad = [(step, k) for k, step in enumerate(first) if step >= 0]
        if not bad:
            return
        step, kind = min(bad)
        names = ["train/loss"]
        if kind > 0:  # the weights a bad gradient reached are non-finite now: name those
            names = non_finite_names((n, p) for n, p in pl_module.named_parameters() if p.requires_grad)
        read = f"(read on the device at step {trainer.global_step}{'; parameters now non-finite:' if kind else ''})"
        self._fail(trainer, f"{_KINDS[kind]} {read}", names, step=step)

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: Any) -> None:
        if not self.check_gradients:
            return
        grads = [(f"{n}.grad", p.grad) for n, p in pl_module.named_parameters() if p.grad is not None]
        flag = finite_flag(g for _, g in grads)
        if flag is not None:
            self._record(trainer, pl_module, 1, flag, grads)

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = _loss_of(outputs)
        if loss is not None:
            self._record(trainer, pl_module, 0, torch.isfinite(loss.detach()).all(), [])
        if self.check_parameters:
            params = [(n, p) for n, p in pl_module.named_parameters() if p.requires_grad]
            flag = finite_flag(p for _, p in params)
            if flag is not None:
                self._record(trainer, pl_module, 2, flag, params)
        if self._first_bad is not None and trainer.global_step % self._every(self._first_bad.device) == 0:
            self.check_now(trainer, pl_module)

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.check_now(trainer, pl_module)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.check_now(trainer, pl_module)  # before on_fit_end writes the .ply and commits pairs

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        # Called while the checkpoint dict is assembled, before anything is written.
        self.check_now(trainer, pl_module)
        bad = non_finite_names(checkpoint.get("state_dict", {}).items())
        if bad:
            self._fail(trainer, "tensors in the checkpoint about to be saved", bad)
