"""Reading torch files that users bring (scene checkpoints, fixer checkpoints, priors, reference
pkls) without running code from them.

`torch.load(weights_only=True)` unpickles tensors and plain data only; the project's own
settings classes that checkpoints hold (evaluation, path video, strategies, NeRF sampling) are
registered as safe where they are defined, so they are imported here first. A file that needs
anything else is refused, naming the file and the global it asked for, before that code runs.
"""
from __future__ import annotations

import importlib
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

# Modules that register the settings classes checkpoints hold (torch.serialization.add_safe_globals).
SAFE_GLOBAL_MODULES = (
    "datamodules.readers.scene_data",
    "datamodules.procedural.scene",
    "lightning_modules.scene.evaluation",
    "lightning_modules.scene.path_video",
    "lightning_modules.scene.gaussians.strategy",
    "lightning_modules.scene.gaussians.reconstruction",
    "lightning_modules.scene.nerf.field",
    "lightning_modules.scene.nerf.model",
    "lightning_modules.difix.training.net_spec",
    "lightning_modules.difix.training.fixer_spec",
)


class UnsafeFileError(ValueError):
    """A torch file that would run code (or build arbitrary objects) when loaded."""


def register_safe_globals() -> None:
    """Imports the modules whose settings classes checkpoints may hold."""
    for name in SAFE_GLOBAL_MODULES:
        importlib.import_module(name)


def read_torch_file(path: str | Path, what: str = "checkpoint") -> Any:
    """`torch.load(path, weights_only=True)` on the CPU, memory-mapped where the file allows.

    Args:
        path: the file.
        what: what the caller expects it to be, for messages ("scene checkpoint", "fixer", ...).

    Raises:
        FileNotFoundError: no such file.
        UnsafeFileError: the file asks for code or objects that are not plain data (refused
            before anything of it runs).
        ValueError: not a torch file, or truncated / damaged.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    register_safe_globals()
    mmap = zipfile.is_zipfile(path)  # torch's zip format maps lazily; legacy pickles do not
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        # torch names what the file asked for on a line of its own (e.g. "... GLOBAL posix.system ...").
        found = re.search(r"[^\n]*(GLOBAL|global|Unsupported)[^\n]*", str(err).split("\n", 1)[-1])
        asked = found.group(0).strip()[:200] if found else type(err).__name__
        raise UnsafeFileError(
            f"{what} {path}: refused, it holds objects that are not plain data ({asked}); loading it would run code "
            "from the file. Only load files you trust with torch.load(weights_only=False) yourself.") from err
    except Exception as err:  # noqa: BLE001 - truncated zip, not a torch file, ...
        raise ValueError(f"{what} {path}: cannot be read as a torch file ({type(err).__name__}: {err}); "
                         "truncated or damaged? Write it again.") from err
