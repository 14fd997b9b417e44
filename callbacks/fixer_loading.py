"""Builds the Difix fixer that a config names (lazily, at first use), and checks the name early.

One spec string, everywhere a fixer is named (ProgressiveFixCallback, scripts/fix_images.py):
    - "nvidia/difix_ref", "nvidia/difix" (published, downloaded or from the HF cache), or a
      local folder of either; "stabilityai/sd-turbo" or its folder (untrained Difix);
    - a reference training checkpoint `model_*.pkl` (its base: stabilityai/sd-turbo);
    - a DifixModule checkpoint (`.ckpt`) or exported weights (`.safetensors`, `.pt`, `.pth`);
    - "tiny" or "tiny:SEED": an untrained tiny DifixNet, for tests of the plumbing;
    - "identity": no fixer at all (renders pass through unchanged), the ablation control. With
      it the progressive schedule still adds its novel views to training, as its own renders,
      so a Difix3D row fitted with it measures what the schedule gives without Difix.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

from torch import nn

WEIGHT_SUFFIXES = (".ckpt", ".safetensors", ".pt", ".pth")
REFERENCE_SUFFIX = ".pkl"
REFERENCE_BASE = "stabilityai/sd-turbo"  # what the reference training script fine-tunes
IDENTITY = "identity"
_TINY = re.compile(r"^tiny(:-?\d+)?$")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def load_fixer(spec: str, resize_to: tuple[int, int] | None = None,
               latent: Literal["mode", "sample"] | None = None) -> nn.Module:
    """The fixer a config string names, wrapped as an `ImageFixer`.

    Args:
        spec: see the module docstring.
        resize_to: (height, width) the fixer runs at (e.g. (576, 1024) as the reference code);
            None: the input size, padded.
        latent: "mode" / "sample" of the VAE posterior; None keeps the net's setting ("mode").

    Raises:
        FileNotFoundError: a weights path that does not exist.
        lightning_modules.difix.PretrainedNotFoundError: a hub id that is not cached (offline),
            with what to download where.
    """
    from lightning_modules.difix.image_fixer import IdentityFixer, ImageFixer
    from lightning_modules.difix.net import DifixNet

    validate_fixer_spec(spec)
    if spec == IDENTITY:
        return IdentityFixer()
    if _TINY.match(spec):
        net = DifixNet.tiny(seed=int(spec.split(":", 1)[1]) if ":" in spec else 0)
    else:
        path = Path(spec).expanduser()
        if path.suffix == REFERENCE_SUFFIX:
            net = DifixNet.from_reference_checkpoint(path, base=REFERENCE_BASE)
        elif path.suffix in WEIGHT_SUFFIXES:
            net = DifixNet.from_checkpoint(path)
        else:
            net = DifixNet.from_pretrained(str(path) if path.is_dir() else spec)
    if latent is not None:
        if latent not in ("mode", "sample"):
            raise ValueError(f"load_fixer: latent must be 'mode' or 'sample', got {latent!r}")
        net.latent = latent
    return ImageFixer(net, resize_to=resize_to)


def validate_fixer_spec(spec: str) -> None:
    """Checks, without loading any weights, that `load_fixer(spec)` can find its fixer.

    Cheap enough for `on_fit_start`: a typo must fail before step 1, not when the first fix is
    due (step 30,000 in the paper config). Accepts a weights file / `.pkl` that exists, a model
    folder, a hub id that is cached or may be downloaded (HF_HUB_OFFLINE off), "tiny[:SEED]", "identity".

    Raises:
        FileNotFoundError: a weights file or local folder that does not exist or is not a model.
        ValueError: a malformed "tiny:SEED", or a hub id that is neither cached nor downloadable
            because the hub is switched off (HF_HUB_OFFLINE=1); the message says what to download.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"fixer spec must be a non-empty string, got {spec!r}")
    if spec == IDENTITY:
        return
    if spec == "tiny" or spec.startswith("tiny:"):
        if not _TINY.match(spec):
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
                validate_fixer_spec(REFERENCE_BASE)
            except (FileNotFoundError, ValueError) as err:
                raise ValueError(f"fixer {spec!r}: a reference checkpoint needs its base {REFERENCE_BASE}: {err}") from err
        return
    if path.is_dir():
        if missing := [s for s in ("unet", "vae", "scheduler") if not (path / s).is_dir()]:
            raise FileNotFoundError(
                f"fixer folder {path} has no {'/, '.join(missing)}/ subfolder(s): not a diffusers model folder; "
                "download one with `hf download nvidia/difix_ref --local-dir DIR`")
        return
    if not _HUB_ID.match(spec) or spec.startswith((".", "/", "~")):
        raise FileNotFoundError(f"fixer {spec!r}: no such file or folder, and not a hub id like 'nvidia/difix_ref'")
    from huggingface_hub import constants, try_to_load_from_cache

    cached = any(isinstance(try_to_load_from_cache(spec, name), str) for name in ("model_index.json", "unet/config.json"))
    offline = constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "0").strip().lower() in ("1", "true", "yes", "on")
    if not cached and offline:
        raise ValueError(
            f"fixer {spec!r} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and the hub is off "
            f"(HF_HUB_OFFLINE=1). On a machine with network: `hf download {spec} --local-dir /path/to/"
            f"{spec.split('/')[-1]}`, copy the folder here and pass its path as the fixer; or fill $HF_HOME with "
            f"`hf download {spec}` and run with that HF_HOME.")
