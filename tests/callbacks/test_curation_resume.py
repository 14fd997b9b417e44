"""A curation killed mid-fit resumes from its last.ckpt: the snapshots it had staged are kept,
the ones still due are written, and the pairs match an uninterrupted run's."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from datamodules.files.image_io import load_image
from datamodules.procedural.scene import make_procedural_scene
from helpers import REPO

# A tiny underfit curation (snapshots at steps 10, 20, 30 of 40) with last.ckpt every 10 steps.
# With KILL_AT set, the process SIGKILLs itself as step KILL_AT + 1 begins (its checkpoint of
# step KILL_AT is on disk): what a crash or an out-of-memory kill leaves behind.
SCRIPT = r"""
import os, signal, sys
import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from callbacks.checkpoints import AtomicCheckpointIO
from callbacks.curation.pair_writer import PairWriter
from datamodules.readers.scene_data import ReadOptions
from datamodules.scene.datamodule import SceneDataModule
from lightning_modules.scene.gaussians.initial import InitSettings
from lightning_modules.scene.gaussians.module import GaussianSceneModule
from lightning_modules.scene.gaussians.settings import SHSchedule
from lightning_modules.scene.gaussians.strategy import DefaultStrategy

scene, out, ckpts, kill_at, resume = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]

class Kill(Callback):
    def on_train_batch_start(self, trainer, module, batch, idx):
        if kill_at and trainer.global_step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

pl.seed_everything(0)
dm = SceneDataModule(scene, read=ReadOptions(test_every=4), steps_per_epoch=1000)
model = GaussianSceneModule(sh=SHSchedule(degree=0), init=InitSettings(max_points=300),
                            strategy=DefaultStrategy(refine_start_iter=10**6),
                            output_dir=out + "_fit")
writer = PairWriter(out_dir=out, scene_name="proc", strategy="underfit", render="train", at_fractions=[0.25, 0.5, 0.75])
saver = ModelCheckpoint(dirpath=ckpts, save_last=True, save_top_k=0, every_n_train_steps=10)
trainer = pl.Trainer(max_steps=40, accelerator="cpu", logger=False, callbacks=[writer, saver, Kill()],
                     plugins=[AtomicCheckpointIO()], enable_progress_bar=False, enable_model_summary=False,
                     num_sanity_val_steps=0, limit_val_batches=0)
trainer.fit(model, dm, ckpt_path=resume or None)
"""


def _run(tmp_path: Path, scene: Path, name: str, kill_at: int = 0, resume: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", SCRIPT, str(scene), str(tmp_path / name), str(tmp_path / f"{name}_ckpt"),
                           str(kill_at), resume], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)


def test_killed_underfit_curation_resumes_with_its_staged_snapshots(tmp_path: Path) -> None:
    scene = make_procedural_scene(tmp_path / "scene", num_views=12, size=32, seed=0, num_points=300)
    whole = _run(tmp_path, scene, "whole")
    assert whole.returncode == 0, whole.stderr[-3000:]

    killed = _run(tmp_path, scene, "killed", kill_at=20)
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert not (tmp_path / "killed" / "pairs.json").exists()  # nothing visible yet
    staged = list((tmp_path / "killed" / "proc").glob(".underfit.*.new"))
    assert len(staged) == 1 and sorted(p.name for p in staged[0].iterdir()) == ["underfit_0.25", "underfit_0.5"]

    ckpt = tmp_path / "killed_ckpt" / "last.ckpt"
    aside = tmp_path / "aside"
    staged[0].rename(aside)  # the staged snapshots gone: the resume says so instead of losing them
    lost = _run(tmp_path, scene, "killed", resume=str(ckpt))
    assert lost.returncode != 0 and "start this curation again without --ckpt_path" in lost.stderr
    aside.rename(staged[0])
    resumed = _run(tmp_path, scene, "killed", resume=str(ckpt))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not list((tmp_path / "killed" / "proc").glob(".*"))  # the killed run's staging was taken over
    docs = [json.loads((tmp_path / n / "pairs.json").read_text()) for n in ("whole", "killed")]
    items = [sorted(d["train"], key=lambda it: it["name"]) for d in docs]
    assert [it["name"] for it in items[0]] == [it["name"] for it in items[1]]
    assert {it["step"] for it in items[1]} == {10, 20, 30}
    for a, b in zip(*items):
        x, y = load_image(tmp_path / "whole" / a["image"]), load_image(tmp_path / "killed" / b["image"])
        if a["step"] <= 20:  # staged before the kill: the same files
            assert torch.equal(x, y), a["name"]
        else:  # rendered after the resume: the same state, up to float reassociation and 8-bit rounding
            assert (x - y).abs().max() <= 2 / 255, a["name"]
