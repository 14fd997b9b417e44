"""Building a FixerNet from NVIDIA's files, and writing one back in NVIDIA's layout.

Loading follows Fixer's own order (`Pix2Pix_Turbo.__init__`): the base DiT (when given), then
the pkl's pipeline weights over it, then its tokenizer weights; the tokenizer's programs and
latent statistics come from `tokenizer_fast.pth`. Every file is read weights-only; every key is
accounted for (`keys.py`). Saving writes `pretrained/pretrained_fixer.pkl` (NVIDIA's dict, plus
this project's `fixer_net_config`) and `base/tokenizer_fast.pth` (the tokenizer's programs with
their current weights): a folder `find_fixer_files` and NVIDIA's scripts both read (theirs also
want `base/model_fast_tokenizer.pt` to build the pipeline first: copy NVIDIA's).
"""
from __future__ import annotations

import logging
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

import torch

from datamodules.files.temp_files import temp_path
from lightning_modules.difix.cosmos.config import DiTConfig, FixerNetConfig, TinyTokenizerConfig
from lightning_modules.difix.cosmos.files import PRETRAINED, TOKENIZER, FixerFiles, complete_files
from lightning_modules.difix.cosmos.keys import (
    dit_state,
    fixer_pickle_parts,
    load_checked,
    nvidia_state_dicts,
    read_nvidia_file,
)
from lightning_modules.difix.cosmos.net import FixerNet
from lightning_modules.difix.cosmos.tokenizer import read_tokenizer_file

log = logging.getLogger("difix3d.fixer")
CONFIG_ENTRY = "fixer_net_config"


def load_fixer_net(files: FixerFiles, start: Literal["pretrained", "base"] = "pretrained",
                   config: FixerNetConfig | None = None, download: bool = True) -> FixerNet:
    """A FixerNet with NVIDIA's (or a fine-tuned) weights, float32 on the CPU.

    Args:
        files: from `find_fixer_files` / `fixer_files`.
        start: "pretrained": Fixer's pkl (its DiT over the base DiT when that is given too);
            "base": the Cosmos-Predict2 0.6B base DiT and tokenizer (fine-tuning from scratch).
        config: the network's sizes when the pkl holds none (NVIDIA's: the published 0.6B).
        download: fetch hub files that are not cached yet (when the hub is on).

    Raises:
        FileNotFoundError: a file is missing (says what to download where).
        ValueError / UnsafeFileError: a file that is not what it should be, naming keys and files.
    """
    files = complete_files(files, start=start, download=download)
    assert files.tokenizer is not None
    tokenizer = read_tokenizer_file(files.tokenizer)
    payload = read_nvidia_file(files.pretrained, "Fixer checkpoint") if start == "pretrained" else None
    if payload is not None and isinstance(payload, dict) and CONFIG_ENTRY in payload:
        config = config_from_dict(payload[CONFIG_ENTRY], files.pretrained)
    config = config if config is not None else FixerNetConfig()
    origin = (f"{files.pretrained}" if start == "pretrained" else f"base model {files.base_dit}")
    net = FixerNet(_without_tiny(config), tokenizer=tokenizer, origin=origin)

    dit: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    if files.base_dit is not None and (start == "base" or payload is None or _pkl_lacks_dit(payload, net)):
        base = read_nvidia_file(files.base_dit, "Fixer base DiT")
        base = base.get("model", base) if isinstance(base, dict) else base
        if not isinstance(base, dict):
            raise ValueError(f"Fixer base DiT {files.base_dit}: not a state dict ({type(base).__name__})")
        prefix = "net." if any(str(k).startswith("net.") for k in base) else ""
        dit, dropped = dit_state(base, prefix, f"Fixer base DiT {files.base_dit}")
    if payload is not None:
        dit_entries, vae = fixer_pickle_parts(payload, files.pretrained)
        pkl_dit, pkl_dropped = dit_state(dit_entries, "dit.", f"Fixer checkpoint {files.pretrained} ({'state_dict_unet'})")
        dit.update(pkl_dit)
        dropped += pkl_dropped
        if vae:
            load_checked(net.tokenizer, vae, "tokenizer", f"Fixer checkpoint {files.pretrained} (state_dict_vae)")
    load_checked(net.dit, dit, "DiT", str(files.pretrained if payload is not None else files.base_dit))
    if dropped:
        log.debug("Fixer: %d non-weight entries dropped (RoPE tables, counters, EMA copies, TE metadata)", len(dropped))
    return net


def save_fixer_folder(net: FixerNet, folder: str | Path) -> Path:
    """Writes `folder/pretrained/pretrained_fixer.pkl` and `folder/base/tokenizer_fast.pth`.

    Each file is written whole (a temporary file renamed into place). Returns the pkl's path.
    """
    folder = Path(folder)
    unet, vae = nvidia_state_dicts(net.dit, net.tokenizer)
    pkl = {"state_dict_unet": unet, "state_dict_vae": vae, CONFIG_ENTRY: asdict(net.config)}
    _save_whole(net.tokenizer.file_payload(), folder / TOKENIZER)
    return _save_whole(pkl, folder / PRETRAINED)


def config_from_dict(doc: Any, source: Any) -> FixerNetConfig:
    """The FixerNetConfig a saved pkl holds (`asdict` form).

    Raises:
        ValueError: naming the file and the field it cannot read.
    """
    try:
        tok = doc.get("tokenizer")
        return FixerNetConfig(
            dit=DiTConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in doc["dit"].items()}),
            tokenizer=TinyTokenizerConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in tok.items()})
            if tok else None,
            **{k: tuple(v) if isinstance(v, list) else v for k, v in doc.items() if k not in ("dit", "tokenizer")})
    except (AttributeError, KeyError, TypeError) as err:
        raise ValueError(f"Fixer checkpoint {source}: its '{CONFIG_ENTRY}' cannot be read ({err})") from err


def _without_tiny(config: FixerNetConfig) -> FixerNetConfig:
    """The config with the tokenizer coming from the file (no tiny one is built)."""
    from dataclasses import replace

    return replace(config, tokenizer=None)


def _pkl_lacks_dit(payload: dict[str, Any], net: FixerNet) -> bool:
    unet = payload.get("state_dict_unet", {})
    return sum(str(k).startswith("dit.") for k in unet) < len(net.dit.state_dict())


def _save_whole(obj: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
