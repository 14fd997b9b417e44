"""One Difix training step (DifixModule, ``configs/difix.yaml``): seconds per step and peak memory.

``configs/difix.yaml`` as a user runs it (bf16-mixed, AdamW, L2 + LPIPS + Gram with the Gram loss
on from the first step, the reference slot supervised), built by the CLI's own parser in this
process, fine-tuning a fixer folder (``--fixer-dir``, e.g. a random SD-Turbo-size one from
``random_difix_ref.py``) on synthetic pairs at ``--size`` with one reference, batch 1. One setting
per run, so each peak is its own and an out-of-memory setting costs nothing else:

    full      the whole UNet trained (the paper)                  unet_lora_rank 0
    lora8     a rank-8 UNet LoRA                                  unet_lora_rank 8
    gc        the whole UNet, gradient checkpointing in the UNet
    lora8_gc  both (what configs/difix.yaml suggests for 24 GB cards)

The first ``--warmup`` steps are not timed (allocations, cuDNN's algorithm search); the rest are,
the device synchronised around each (forward, backward, optimizer step). Offline, LPIPS and Gram
run on a random VGG (``pretrained_backbone: false``): the same work as the real one.

    python benchmarks/gpu_train_step.py --fixer-dir /tmp/difix_ref_sd-turbo --setting full --out full.json
    python benchmarks/gpu_train_step.py --fixer-dir /tmp/difix_ref_tiny --setting lora8 --smoke   # CPU, tiny
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from lightning.pytorch import Callback  # noqa: E402

from datamodules.files.json_io import write_json_atomic  # noqa: E402

SETTINGS = {
    "full": {"unet_lora_rank": 0, "gradient_checkpointing": False},
    "lora8": {"unet_lora_rank": 8, "gradient_checkpointing": False},
    "gc": {"unet_lora_rank": 0, "gradient_checkpointing": True},
    "lora8_gc": {"unet_lora_rank": 8, "gradient_checkpointing": True},
}


class StepClock(Callback):
    """Wall time of every training step (forward, backward, optimizer), the device synchronised."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._start = 0.0

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.seconds.append(time.perf_counter() - self._start)


def cli_args(a: argparse.Namespace, cuda: bool, work: str) -> list[str]:
    setting = SETTINGS[a.setting]
    h, w = a.size
    return ["--config", str(REPO / "configs" / "difix.yaml"), f"--trainer.accelerator={'gpu' if cuda else 'cpu'}",
            f"--trainer.max_steps={a.steps}", "--trainer.limit_val_batches=0", f"--trainer.logger.init_args.save_dir={work}",
            "--trainer.enable_progress_bar=false", f"--model.init_args.net.pretrained={a.fixer_dir}",
            f"--model.init_args.net.unet_lora_rank={setting['unet_lora_rank']}",
            f"--model.init_args.gradient_checkpointing={str(setting['gradient_checkpointing']).lower()}",
            "--model.init_args.pretrained_backbone=false", "--model.init_args.loss.gram_warmup_steps=0",
            '--data.init_args.source={"class_path": "datamodules.pairs.sources.SyntheticPairs", "init_args": '
            f'{{"num_train": {a.steps + 1}, "num_val": 1}}}}', f"--data.init_args.resolution=[{h}, {w}]",
            "--data.init_args.num_workers=2", *a.extra]


def main(argv: list[str] | None = None) -> dict:
    from difix3d.cli import cli_main

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fixer-dir", type=Path, required=True, help="the fixer to fine-tune (a published-layout folder)")
    p.add_argument("--setting", choices=sorted(SETTINGS), default="full")
    p.add_argument("--size", type=lambda s: tuple(int(v) for v in s.lower().split("x")), default=(576, 1024),
                   help="HxW of the pairs (default 576x1024, the reference code's)")
    p.add_argument("--steps", type=int, default=4, help="steps in all")
    p.add_argument("--warmup", type=int, default=1, help="first steps not timed")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--smoke", action="store_true", help="CPU, 2 steps at 32x64: checks the script, not speed")
    p.add_argument("extra", nargs="*", help="after --: more LightningCLI arguments")
    a = p.parse_args(argv)
    if a.smoke:
        a.size, a.steps, a.warmup = (32, 64), 2, 1
    cuda = torch.cuda.is_available() and not a.smoke
    result: dict[str, Any] = {"device": torch.cuda.get_device_name() if cuda else "cpu", "torch": torch.__version__,
                              "setting": a.setting, **SETTINGS[a.setting], "size": list(a.size), "refs": 1,
                              "batch": 1, "precision": "bf16-mixed"}
    with contextlib.redirect_stdout(io.StringIO()), tempfile.TemporaryDirectory() as work:
        cli = cli_main(cli_args(a, cuda, work), run=False)
        result.update(fit(cli, a.warmup, cuda))
    print(json.dumps(result, indent=2))
    if a.out is not None:
        write_json_atomic(a.out, result, indent=2)
    return result


def fit(cli: Any, warmup: int, cuda: bool) -> dict[str, Any]:
    """Runs the built trainer; the step times, peak memory and trainable parameters."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    trainer = cli.trainer
    # A timing run writes no checkpoint (the config's would hold the whole UNet, in outputs/).
    trainer.callbacks[:] = [c for c in trainer.callbacks if not isinstance(c, ModelCheckpoint)]
    clock = StepClock()
    trainer.callbacks.append(clock)
    start = time.perf_counter()
    trainer.fit(cli.model, datamodule=cli.datamodule)
    timed = clock.seconds[warmup:]
    net = cli.model.net
    return {
        "fit_s": round(time.perf_counter() - start, 1), "steps": len(clock.seconds),
        "s_per_step": round(statistics.median(timed), 3) if timed else None,
        "first_step_s": round(clock.seconds[0], 2) if clock.seconds else None,
        # what the net was built with (the setting reached it)
        "net_unet_lora_rank": net.build_config["unet_lora_rank"],
        "net_gradient_checkpointing": bool(getattr(net.unet, "is_gradient_checkpointing", False)),
        "trainable_params_m": round(sum(q.numel() for q in net.parameters() if q.requires_grad) / 1e6, 1),
        "peak_gpu_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
        "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 2) if cuda else None,
    }


if __name__ == "__main__":
    main()
