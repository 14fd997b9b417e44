"""Checks that a fixer name can be loaded, without loading it (see `fixer_spec.check_fixer`)."""
from __future__ import annotations

import os
from pathlib import Path

from .fixer_spec import HUB_ID, IDENTITY, REFERENCE_BASE, REFERENCE_SUFFIX, TINY, WEIGHT_SUFFIXES


def hub_offline() -> bool:
    """True when huggingface_hub may not download (HF_HUB_OFFLINE set)."""
    from huggingface_hub import constants

    flag = os.environ.get("HF_HUB_OFFLINE", "0").strip().lower() in ("1", "true", "yes", "on")
    return bool(constants.HF_HUB_OFFLINE) or flag


def check_fixer_name(spec: str) -> None:
    """See `fixer_spec.check_fixer`."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"fixer spec must be a non-empty string, got {spec!r}")
    if spec == IDENTITY:
        return
    if spec == "tiny" or spec.startswith("tiny:"):
        if not TINY.match(spec):
            raise ValueError(f"fixer {spec!r}: expected 'tiny' or 'tiny:SEED' with an integer SEED")
        return
    path = Path(spec).expanduser()
    if path.suffix in (*WEIGHT_SUFFIXES, REFERENCE_SUFFIX):
        if not path.is_file():
            raise FileNotFoundError(
                f"fixer {spec!r}: file {path} does not exist. Train one with configs/difix.yaml (or "
                "configs/demo/difix.yaml), export one with DifixNet.export_weights, or name a published model "
                "('nvidia/difix_ref')")
        if path.suffix == REFERENCE_SUFFIX:
            try:  # the pkl holds the trained tensors only; the rest comes from its base model
                check_fixer_name(REFERENCE_BASE)
            except (FileNotFoundError, ValueError) as err:
                raise ValueError(f"fixer {spec!r}: a reference checkpoint needs its base {REFERENCE_BASE}: {err}") from err
        return
    if path.is_dir():
        if missing := [s for s in ("unet", "vae", "scheduler") if not (path / s).is_dir()]:
            raise FileNotFoundError(
                f"fixer folder {path} has no {'/, '.join(missing)}/ subfolder(s): not a diffusers model folder; "
                "download one with `hf download nvidia/difix_ref --local-dir DIR`")
        return
    if not HUB_ID.match(spec) or spec.startswith((".", "/", "~")):
        raise FileNotFoundError(f"fixer {spec!r}: no such file or folder, and not a hub id like 'nvidia/difix_ref'")
    from huggingface_hub import constants, try_to_load_from_cache

    cached = any(isinstance(try_to_load_from_cache(spec, name), str) for name in ("model_index.json", "unet/config.json"))
    if not cached and hub_offline():
        raise ValueError(
            f"fixer {spec!r} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and the hub is off "
            f"(HF_HUB_OFFLINE=1). On a machine with network: `hf download {spec} --local-dir /path/to/"
            f"{spec.split('/')[-1]}`, copy the folder here and pass its path as the fixer; or fill $HF_HOME with "
            f"`hf download {spec}` and run with that HF_HOME.")
