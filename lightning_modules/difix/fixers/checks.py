"""Cheap checks of fixer files, folders and hub ids: headers, keys and configs, no weights read
(`sources.FixerSource.check` calls them before step 1)."""
from __future__ import annotations

import json
import os
from pathlib import Path

from lightning_modules.difix.loading.hub_files import SD_SUBFOLDERS


def hub_offline() -> bool:
    """True when huggingface_hub may not download (HF_HUB_OFFLINE set)."""
    from huggingface_hub import constants

    flag = os.environ.get("HF_HUB_OFFLINE", "0").strip().lower() in ("1", "true", "yes", "on")
    return bool(constants.HF_HUB_OFFLINE) or flag


def check_hub_model(name: str) -> None:
    """A diffusers model hub id is cached, or may be downloaded (the hub is on)."""
    from huggingface_hub import try_to_load_from_cache

    cached = any(isinstance(try_to_load_from_cache(name, f), str) for f in ("model_index.json", "unet/config.json"))
    if not cached and hub_offline():
        raise ValueError(_offline(name, f"`hf download {name} --local-dir /path/to/{name.split('/')[-1]}`, copy the "
                                        "folder here and pass its path as the fixer"))


def _offline(name: str, fetch: str) -> str:
    from huggingface_hub import constants

    return (f"fixer {name!r} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and the hub is off "
            f"(HF_HUB_OFFLINE=1). On a machine with network: {fetch}; or fill $HF_HOME with `hf download {name}` and "
            "run with that HF_HOME.")


def check_safetensors_complete(path: Path) -> dict[str, str]:
    """Reads a .safetensors header and checks that the file holds all the bytes it declares.

    Returns:
        The header's metadata.

    Raises:
        ValueError naming the file: unreadable header, or shorter than its tensors need (truncated).
    """
    from lightning_modules.difix.loading.hub_files import safetensors_metadata

    meta = safetensors_metadata(path)  # a broken header fails here, named
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    size = path.stat().st_size
    if size < 8 + n + end:
        raise ValueError(f"{path}: truncated ({size:,} bytes; its header needs {8 + n + end:,}); download or "
                         "write it again")
    return meta


def check_weights_file(path: Path) -> None:
    """A fixer weights file (.safetensors export, DifixModule / prior .ckpt, .pt, reference .pkl):
    complete, weights-only readable, and of a fixer kind; reads headers and keys, not weights."""
    from lightning_modules.safe_load import read_torch_file
    from lightning_modules.difix.loading.from_prior import PRIOR_KEY
    from lightning_modules.difix.loading.published import PKL_KEYS, check_pkl_fields

    if path.suffix == ".safetensors":
        if "difix_net_config" not in check_safetensors_complete(path):
            raise ValueError(f"fixer {path}: a .safetensors file without 'difix_net_config' metadata: not weights "
                             "exported by DifixNet.export_weights")
        return
    ckpt = read_torch_file(path, "fixer")  # memory-mapped: keys only, no weights read
    if not isinstance(ckpt, dict):
        raise ValueError(f"fixer {path}: holds a {type(ckpt).__name__}, not a checkpoint")
    if path.suffix == ".pkl":
        if missing := [k for k in PKL_KEYS if k not in ckpt]:
            raise ValueError(f"fixer {path}: not a reference Difix checkpoint (missing {missing})")
        check_pkl_fields(ckpt, path)
        return
    if PRIOR_KEY in ckpt or ("difix_net_config" in ckpt and "state_dict" in ckpt):
        return
    kind = (ckpt.get("hyper_parameters") or {}).get("_class_path") if "state_dict" in ckpt else None
    raise ValueError(f"fixer {path}: " + (f"a checkpoint of {kind or 'another LightningModule'} (a scene?), not a "
                                          "fixer" if "state_dict" in ckpt else "not a fixer checkpoint") +
                     "; a fixer is a DifixModule checkpoint, its exported weights, or a published model")


def check_model_folder(path: Path) -> None:
    """A diffusers model folder (SD-Turbo or published Difix layout): every subfolder a fixer
    load needs, readable JSON configs, complete weights files (headers only)."""
    from lightning_modules.difix.loading.hub_files import read_json_file

    if missing := [s for s in SD_SUBFOLDERS if not (path / s).is_dir()]:
        raise FileNotFoundError(
            f"fixer folder {path} has no {'/, '.join(missing)}/ subfolder(s): not a complete diffusers model "
            "folder; download one with `hf download nvidia/difix_ref --local-dir DIR`")
    configs = [path / "model_index.json", path / "unet" / "config.json", path / "vae" / "config.json",
               path / "scheduler" / "scheduler_config.json", path / "text_encoder" / "config.json"]
    for config in configs:
        if config.name == "model_index.json" and not config.is_file():
            continue  # an SD-Turbo cache filled component by component has none
        if not config.is_file():
            raise FileNotFoundError(f"fixer folder {path}: {config.relative_to(path)} is missing; download the "
                                    "folder again")
        read_json_file(config)
    for component in ("unet", "vae", "text_encoder"):
        files = sorted((path / component).glob("*.safetensors"))
        if not files and not list((path / component).glob("*.bin")):
            raise FileNotFoundError(f"fixer folder {path}: no weights in {component}/; download the folder again")
        for file in files:
            check_safetensors_complete(file)
