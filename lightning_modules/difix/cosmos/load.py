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

from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Literal

import torch

from datamodules.files.temp_files import write_atomic
from lightning_modules.difix.cosmos.config import DiTConfig, FixerNetConfig, TinyTokenizerConfig
from lightning_modules.difix.cosmos.dit import infer_dit_config
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

CONFIG_ENTRY = "fixer_net_config"


def load_fixer_net(files: FixerFiles, start: Literal["pretrained", "base"] = "pretrained",
                   config: FixerNetConfig | None = None, download: bool = True) -> FixerNet:
    """A FixerNet with NVIDIA's (or a fine-tuned) weights, float32 on the CPU.

    Args:
        files: from `find_fixer_files` / `fixer_files`.
        start: "pretrained": Fixer's pkl (its DiT over the base DiT when that is given too);
            "base": the Cosmos-Predict2 0.6B base DiT and tokenizer (fine-tuning from scratch).
        config: the network's sizes when the pkl holds none (NVIDIA's pkls hold none: then
            they are read off its weights).
        download: fetch hub files that are not cached yet (when the hub is on).

    Raises:
        FileNotFoundError: a file is missing (says what to download where).
        ValueError / UnsafeFileError: a file that is not what it should be, naming keys and files.
    """
    files = complete_files(files, start=start, download=download)
    assert files.tokenizer is not None
    tokenizer = read_tokenizer_file(files.tokenizer)
    payload = read_nvidia_file(files.pretrained, "Fixer checkpoint") if start == "pretrained" else None
    dit: dict[str, torch.Tensor] = {}
    vae: dict[str, torch.Tensor] = {}
    if payload is not None:
        dit_entries, vae = fixer_pickle_parts(payload, files.pretrained)
        dit, _ = dit_state(dit_entries, "dit.", f"Fixer checkpoint {files.pretrained} (state_dict_unet)")
        if CONFIG_ENTRY in payload:
            config = config_from_dict(payload[CONFIG_ENTRY], files.pretrained)
    base_source = f"Fixer base DiT {files.base_dit}"
    base = _read_base(files.base_dit, base_source) if files.base_dit is not None and (start == "base" or not dit) else {}
    if config is None:  # NVIDIA's files carry no config: the sizes are the weights'
        config = FixerNetConfig(dit=infer_dit_config(dit or base, str(files.pretrained or files.base_dit)))
    origin = str(files.pretrained) if start == "pretrained" else f"base model {files.base_dit}"
    net = FixerNet(replace(config, tokenizer=None), tokenizer=tokenizer, origin=origin)
    missing = set(net.dit.state_dict()) - set(dit)
    if missing and files.base_dit is not None and not base:  # Fixer loads the base DiT first, the pkl over it
        base = _read_base(files.base_dit, base_source)
    dit = {**{k: v for k, v in base.items() if k in missing or start == "base"}, **dit}
    if vae:
        load_checked(net.tokenizer, vae, "tokenizer", f"Fixer checkpoint {files.pretrained} (state_dict_vae)")
    load_checked(net.dit, dit, "DiT", str(files.pretrained if payload is not None else files.base_dit))
    return net


def save_fixer_folder(net: FixerNet, folder: str | Path) -> Path:
    """Writes `folder/pretrained/pretrained_fixer.pkl` and `folder/base/tokenizer_fast.pth`.

    Each file is written whole (a temporary file renamed into place). Returns the pkl's path.
    """
    folder = Path(folder)
    unet, vae = nvidia_state_dicts(net.dit, net.tokenizer)
    pkl = {"state_dict_unet": unet, "state_dict_vae": vae, CONFIG_ENTRY: asdict(net.config)}
    payload = net.tokenizer.file_payload()
    write_atomic(folder / TOKENIZER, lambda stream: torch.save(payload, stream), "Fixer tokenizer")
    return write_atomic(folder / PRETRAINED, lambda stream: torch.save(pkl, stream), "Fixer checkpoint")


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


def _read_base(path: Path, source: str) -> dict[str, torch.Tensor]:
    """The base DiT's weights in diffusers' names (`net.` prefix, or a bare MiniTrainDIT state dict)."""
    base = read_nvidia_file(path, "Fixer base DiT")
    base = base.get("model", base) if isinstance(base, dict) else base
    if not isinstance(base, dict):
        raise ValueError(f"{source}: not a state dict ({type(base).__name__})")
    prefix = "net." if any(str(k).startswith("net.") for k in base) else ""
    return dit_state(base, prefix, source)[0]
