"""Multi-process training of the fixer through Lightning's DDP (2 CPU processes, gloo), via the CLI.

The same code path as the paper-scale run (`--trainer.devices=8 --trainer.strategy=ddp` on GPUs):
Lightning launches the ranks, shards the data, averages gradients and writes checkpoints.
"""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import REPO

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

CONFIG = """
seed_everything: 0
trainer:
  accelerator: cpu
  devices: 2
  strategy:
    class_path: lightning.pytorch.strategies.DDPStrategy
    init_args: {{process_group_backend: gloo}}
  precision: 32-true
  max_steps: {max_steps}
  check_val_every_n_epoch: 1
  num_sanity_val_steps: 0
  log_every_n_steps: 1
  enable_progress_bar: false
  enable_model_summary: false
  logger:
    class_path: lightning.pytorch.loggers.CSVLogger
    init_args: {{save_dir: {logs}, name: ddp, version: {version}}}
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {{dirpath: {ckpt}, save_last: true, save_top_k: 0}}
model:
  class_path: lightning_modules.difix.training.module.DifixModule
  init_args:
    net: {{pretrained: null}}
    loss: {{w_lpips: 0.0, w_gram: 0.0}}
    pretrained_backbone: false
    optimizer: {{lr: 3.0e-3, skip_lr_scale: 5.0}}
data:
  class_path: datamodules.pairs.datamodule.PairDataModule
  init_args:
    source:
      class_path: datamodules.pairs.sources.SyntheticPairs
      init_args: {{degradations: [noise], degradation_strength: 5.0, num_train: 8, num_val: 4}}
    resolution: 32
    crop_size: 32
    num_refs: 1
    batch_size: 1
    val_batch_size: 2
    num_workers: 0
    seed: 0
"""


def _fit(tmp_path: Path, max_steps: int, version: int, resume: Path | None = None) -> list[dict[str, str]]:
    config = tmp_path / f"ddp_{version}.yaml"
    config.write_text(CONFIG.format(max_steps=max_steps, logs=tmp_path / "logs", version=version,
                                    ckpt=tmp_path / "ckpt"))
    env = {k: v for k, v in os.environ.items() if k not in ("MASTER_PORT", "MASTER_ADDR", "LOCAL_RANK", "RANK")}
    env.update(PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS="1",
               PYTHONWARNINGS="ignore")
    cmd = [sys.executable, str(REPO / "main.py"), "fit", "--config", str(config)]
    cmd += ["--ckpt_path", str(resume)] if resume else []
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    with open(tmp_path / "logs" / "ddp" / f"version_{version}" / "metrics.csv") as stream:
        return list(csv.DictReader(stream))


def _column(rows: list[dict[str, str]], key: str) -> list[tuple[int, float]]:
    return [(int(r["step"]), float(r[key])) for r in rows if r.get(key)]


def _full_val_psnr_input() -> tuple[float, float]:
    """PSNR(input, target) over the whole validation set, and over rank 0's half only."""
    from datamodules.pairs.datamodule import PairDataModule
    from datamodules.pairs.sources import SyntheticPairs

    source = SyntheticPairs(degradations=("noise",), degradation_strength=5.0, num_train=8, num_val=4)
    data = PairDataModule(source, resolution=32, crop_size=32, num_refs=1, batch_size=1, val_batch_size=2,
                          num_workers=0, seed=0)
    data.setup("fit")
    items = [data.val_dataloader().dataset[i] for i in range(4)]
    sq = torch.stack([((it["image"] - it["target"]) ** 2).flatten() for it in items])
    psnr = lambda rows: float(10 * torch.log10(1 / sq[rows].mean()))  # noqa: E731
    return psnr([0, 1, 2, 3]), psnr([0, 2])  # DistributedSampler gives rank 0 items 0 and 2


def test_ddp_two_processes_train_reduce_checkpoint_and_resume(tmp_path: Path) -> None:
    rows = _fit(tmp_path, max_steps=8, version=0)
    losses = [v for _, v in _column(rows, "train/loss")]
    assert len(losses) == 8
    assert sum(losses[-3:]) < 0.8 * sum(losses[:3]), losses  # it learns
    # Validation metrics are reduced over both ranks' shards, not rank 0's alone.
    full, rank0 = _full_val_psnr_input()
    assert abs(full - rank0) > 1e-3
    logged = [v for _, v in _column(rows, "val/psnr_input")]
    assert len(logged) == 2 and all(abs(v - full) < 1e-4 for v in logged), (logged, full)
    # One checkpoint (rank 0 writes it), holding only the trained tensors.
    files = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert files == ["last.ckpt"]
    ckpt = torch.load(tmp_path / "ckpt" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 8
    keys = set(ckpt["state_dict"])
    assert keys and all(k.startswith("net.") for k in keys)
    assert not any(k.startswith("net.vae.encoder.") or ".base_layer." in k for k in keys)
    assert any(k.startswith("net.skips.") for k in keys) and any(k.startswith("net.unet.") for k in keys)
    # Resume: the step counter and training continue from the checkpoint.
    rows = _fit(tmp_path, max_steps=10, version=1, resume=tmp_path / "ckpt" / "last.ckpt")
    steps = [s for s, _ in _column(rows, "train/loss")]
    assert steps == [9, 10]  # logged after each optimizer step, counting on from 8
    assert torch.load(tmp_path / "ckpt" / "last.ckpt", map_location="cpu", weights_only=False)["global_step"] == 10


def test_ddp_fine_tunes_nvidias_fixer_and_rank_zero_exports_it(tmp_path: Path) -> None:
    """configs/demo/fixer.yaml (FixerModule, a tiny random Fixer) on two gloo processes: both ranks
    train, rank 0 alone writes the checkpoint and the export in NVIDIA's layout, which loads."""
    from lightning_modules.difix.fixers.ready import ReadyFixer

    env = {k: v for k, v in os.environ.items() if k not in ("MASTER_PORT", "MASTER_ADDR", "LOCAL_RANK", "RANK")}
    env.update(PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS="1",
               PYTHONWARNINGS="ignore")
    out, logs = tmp_path / "fixer", tmp_path / "logs"
    cmd = [sys.executable, str(REPO / "main.py"), "fit", "--config", str(REPO / "configs/demo/fixer.yaml"),
           "--trainer.devices=2", "--trainer.strategy=ddp", "--trainer.max_steps=4", "--trainer.enable_progress_bar=false",
           "--trainer.enable_model_summary=false", f"--trainer.logger.init_args.save_dir={logs}",
           "--data.init_args.source.init_args.num_train=8", "--data.init_args.source.init_args.num_val=2",
           "--data.init_args.resolution=32", "--data.init_args.crop_size=32", "--data.init_args.val_batch_size=1",
           f"--model.init_args.export_dir={out}"]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    ckpts = list(logs.rglob("last.ckpt"))
    assert len(ckpts) == 1 and torch.load(ckpts[0], map_location="cpu", weights_only=False)["global_step"] == 4
    fixer = ReadyFixer(str(out))
    assert fixer.check().kind == "Fixer (Cosmos-Predict2)"
    assert ReadyFixer.around(fixer.net, "ddp fixer", size=(32, 32))(torch.rand(1, 3, 24, 24)).shape == (1, 3, 24, 24)
