"""A torch file carrying a pickle payload is refused by every reader of user files, before the
payload runs (scene checkpoints, fixers, priors, reference pkls, the viewer)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from lightning_modules.safe_load import UnsafeFileError
from lightning_modules.difix.loading.published import net_from_reference_checkpoint
from helpers import REPO


class Payload:
    """Unpickling this runs `touch <marker>` (what an attacker's file would do, harmlessly)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _payload_file(path: Path, marker: Path, **extra: object) -> Path:
    torch.save({"state_dict": {}, "hyper_parameters": {"x": Payload(marker)}, **extra}, path)
    return path


def _reader(name: str, base: Path):
    """(file suffix, function reading such a file) for each reader of user files."""
    from callbacks.post_render_fix import reference_views_from_checkpoint
    from lightning_modules.difix.fixers.ready import ReadyFixer
    from lightning_modules.difix.loading.builders import net_from_checkpoint
    from lightning_modules.difix.loading.from_prior import net_from_prior
    from lightning_modules.scene.open_scene import open_scene

    return {
        "scene (viewer, benchmarks)": (".ckpt", open_scene),
        "reference views of a scene": (".ckpt", reference_views_from_checkpoint),
        "fixer .ckpt": (".ckpt", lambda p: ReadyFixer(str(p)).net),
        "fixer export .pt": (".pt", net_from_checkpoint),
        "prior": (".ckpt", net_from_prior),
        "reference pkl": (".pkl", lambda p: net_from_reference_checkpoint(p, base=str(base))),
    }[name]


READERS = ["scene (viewer, benchmarks)", "reference views of a scene", "fixer .ckpt", "fixer export .pt", "prior",
           "reference pkl"]


@pytest.mark.parametrize("reader", READERS)
def test_a_pickle_payload_is_refused_without_running(reader: str, tmp_path: Path) -> None:
    marker = tmp_path / "payload_ran"
    suffix, read = _reader(reader, tmp_path)
    path = _payload_file(tmp_path / f"evil{suffix}", marker, difix_prior={"config": {}}, rank_vae=4)
    with pytest.raises((UnsafeFileError, ValueError), match="evil"):
        read(path)
    assert not marker.exists(), f"{reader}: the payload ran"


def test_the_view_command_refuses_it_too(tmp_path: Path) -> None:
    import subprocess
    import sys

    marker = tmp_path / "payload_ran"
    path = _payload_file(tmp_path / "evil.ckpt", marker)
    script = REPO / "scripts" / "view.py"
    run = subprocess.run([sys.executable, str(script), str(path), "--port", "0"], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode != 0 and "refused" in run.stderr and not marker.exists()


def test_unsafe_error_names_the_global(tmp_path: Path) -> None:
    from lightning_modules.safe_load import read_torch_file

    marker = tmp_path / "payload_ran"
    with pytest.raises(UnsafeFileError, match=r"evil\.ckpt: refused.*(system|posix)"):
        read_torch_file(_payload_file(tmp_path / "evil.ckpt", marker))
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["pickle payload", "truncated"])
def test_ckpt_path_that_is_unsafe_or_damaged_is_refused_naming_it(damage: str, tmp_path: Path) -> None:
    from helpers.runs import run, scene_args

    marker = tmp_path / "payload_ran"
    path = _payload_file(tmp_path / "evil.ckpt", marker)
    says = r"refused, it holds objects that are not plain data.*(system|posix)"
    if damage == "truncated":
        path = tmp_path / "cut.ckpt"
        torch.save({"state_dict": {"w": torch.zeros(1000)}, "hyper_parameters": {}, "global_step": 3}, path)
        path.write_bytes(path.read_bytes()[:2000])
        says = r"cannot be read as a torch file.*truncated or damaged"
    args = scene_args(tmp_path, tmp_path / "logs", tmp_path / "out", 2)
    for sub in ("test", "fit"):
        with pytest.raises(ValueError, match=rf"--ckpt_path {path}: {says}"):
            run([sub, *args, f"--ckpt_path={path}"])
    assert not marker.exists()


def test_the_trainer_reads_checkpoints_through_the_safe_reader(tmp_path: Path) -> None:
    from callbacks.checkpoints import AtomicCheckpointIO

    marker = tmp_path / "payload_ran"
    with pytest.raises(UnsafeFileError, match=r"checkpoint .*evil\.ckpt: refused"):
        AtomicCheckpointIO().load_checkpoint(_payload_file(tmp_path / "evil.ckpt", marker))
    assert not marker.exists()
    good = tmp_path / "good.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "global_step": 7}, good)
    assert AtomicCheckpointIO().load_checkpoint(good)["global_step"] == 7
