"""Builds the Difix fixer a callback names in its config (lazily, at first use)."""
from __future__ import annotations

from pathlib import Path

from torch import nn

WEIGHT_SUFFIXES = (".ckpt", ".safetensors", ".pt", ".pth")


def load_fixer(spec: str) -> nn.Module:
    """A DifixNet from a config string.

    Args:
        spec: one of
            - a DifixModule checkpoint (`.ckpt`) or exported weights (`.safetensors`, `.pt`);
            - a local diffusers folder or a hub id such as "stabilityai/sd-turbo" (untrained
              Difix: SD-Turbo at t=199 with the pretrained attention reused);
            - "tiny" or "tiny:SEED": an untrained tiny DifixNet, for tests of the plumbing.

    Raises:
        FileNotFoundError: a weights path that does not exist.
    """
    from lightning_modules.difix import DifixNet

    if spec == "tiny" or spec.startswith("tiny:"):
        seed = int(spec.split(":", 1)[1]) if ":" in spec else 0
        return DifixNet.tiny(seed=seed)
    path = Path(spec).expanduser()
    if path.suffix in WEIGHT_SUFFIXES:
        if not path.is_file():
            raise FileNotFoundError(f"fixer weights {path} do not exist (train one with configs/difix.yaml or "
                                    "configs/demo/difix.yaml, or export one with DifixNet.export_weights)")
        return DifixNet.from_checkpoint(path)
    return DifixNet.from_pretrained(str(path) if path.is_dir() else spec)
