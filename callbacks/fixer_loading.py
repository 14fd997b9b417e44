"""Builds the Difix fixer a callback names in its config (lazily, at first use)."""
from __future__ import annotations

import os
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


def validate_fixer_spec(spec: str) -> None:
    """Checks, without loading any weights, that `load_fixer(spec)` can find its fixer.

    Cheap enough for `on_fit_start`: a typo must fail before step 1, not when the first fix is
    due (step 30,000 in the paper config).

    Raises:
        FileNotFoundError: a weights file or local folder that does not exist or is not a model.
        ValueError: a malformed "tiny:SEED", or a hub id that is neither cached nor downloadable
            because the hub is switched off (HF_HUB_OFFLINE=1).
    """
    if spec == "tiny" or spec.startswith("tiny:"):
        seed = spec.split(":", 1)[1] if ":" in spec else "0"
        if not seed.lstrip("-").isdigit():
            raise ValueError(f"fixer {spec!r}: expected 'tiny' or 'tiny:SEED' with an integer SEED")
        return
    path = Path(spec).expanduser()
    if path.suffix in WEIGHT_SUFFIXES:
        if not path.is_file():
            raise FileNotFoundError(f"fixer weights {path} do not exist (train one with configs/difix.yaml or "
                                    "configs/demo/difix.yaml, or export one with DifixNet.export_weights)")
        return
    if path.is_dir():
        if not ((path / "unet").is_dir() and (path / "vae").is_dir()):
            raise FileNotFoundError(f"fixer folder {path} has no unet/ and vae/ subfolders: not a diffusers model folder")
        return
    looks_like_hub_id = spec.count("/") == 1 and not spec.startswith((".", "/", "~"))
    if not looks_like_hub_id:
        raise FileNotFoundError(f"fixer {spec!r}: no such file or folder (and not a hub id like 'stabilityai/sd-turbo')")
    from huggingface_hub import constants, try_to_load_from_cache

    cached = any(isinstance(try_to_load_from_cache(spec, name), str)
                 for name in ("model_index.json", "unet/config.json"))
    if not cached and (constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0")):
        raise ValueError(
            f"fixer {spec!r} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and the hub is off "
            f"(HF_HUB_OFFLINE=1). On a machine with network: `hf download {spec} --local-dir /path/to/model`, "
            "copy the folder here and pass its path as the fixer; or fill $HF_HOME with `hf download "
            f"{spec}` and run with that HF_HOME."
        )
