"""Every writer of the project on a full disk: the error names the file, the old file stays whole,
no temporary is left (images, JSON, Gaussian .ply, checkpoints)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from datamodules.files.image_io import save_image
from datamodules.files.json_io import write_json_atomic
from helpers.small_disk import nearly_full
from lightning_modules.scene.gaussians.ply import write_ply
from lightning_modules.scene.gaussians.splats import Gaussians

WRITERS = {
    "image": lambda p, big: save_image(torch.rand(3, 256 if big else 4, 256 if big else 4,
                                                  generator=torch.Generator().manual_seed(0)), p.with_suffix(".png")),
    "json": lambda p, big: write_json_atomic(p.with_suffix(".json"), {"x": list(range(100_000 if big else 1))}),
    "ply": lambda p, big: write_ply(p.with_suffix(".ply"), Gaussians.random(5000 if big else 1, 1.0, sh_degree=1).raw()),
    # torch's zip writer says "unexpected pos" (a RuntimeError) where the disk is full
    "checkpoint": lambda p, big: _checkpoint(p.with_suffix(".ckpt"), torch.zeros(100_000 if big else 1)),
}


def _checkpoint(path: Path, w: torch.Tensor) -> Path:
    from callbacks.checkpoints import AtomicCheckpointIO

    AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": w}}, path)
    return path


@pytest.mark.parametrize("writer", list(WRITERS))
def test_a_full_disk_names_the_file_and_keeps_the_old_one(tmp_path: Path, writer: str) -> None:
    write = WRITERS[writer]
    with nearly_full(tmp_path / "fs", leave=16 << 10) as fs:
        old = write(fs / "out", False)  # a small file fits
        before = old.read_bytes()
        cause = "unexpected pos" if writer == "checkpoint" else "No space left on device"
        with pytest.raises(OSError, match=rf"{old} not written \(.*{cause}.*\); the previous {old.name} is intact"):
            write(fs / "out", True)
        assert old.read_bytes() == before
        assert sorted(p.name for p in fs.iterdir()) == sorted(["filler", old.name])  # no temporary left
