"""Finding and reading fixer weights on disk or in the Hugging Face cache.

Three kinds of artefacts reach DifixNet's builders:
- a diffusers Stable Diffusion folder / hub id in the SD-Turbo layout (`stabilityai/sd-turbo`);
- a published Difix folder / hub id (`nvidia/difix`, `nvidia/difix_ref`): the same layout plus
  `model_index.json` naming `DifixPipeline` and a peft-wrapped VAE (see `published.py`);
- this project's own DifixModule checkpoints and `export_weights` files.

Everything that fails here says which file or hub id, and what to download where.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from torch import Tensor

from lightning_modules.safe_load import read_torch_file

SD_SUBFOLDERS = ("unet", "vae", "scheduler", "text_encoder", "tokenizer")
# What a published Difix folder needs from the hub. No *.py: the folder's remote code is never
# imported, so it is not downloaded either.
PUBLISHED_PATTERNS = ["model_index.json", "*/*.json", "*/*.txt", "*/diffusion_pytorch_model.safetensors",
                      "*/diffusion_pytorch_model*.safetensors.index.json",
                      "*/diffusion_pytorch_model-*.safetensors", "text_encoder/model.safetensors"]


class PretrainedNotFoundError(OSError):
    """The diffusion model could not be loaded (offline, not cached, or not an SD folder)."""


def offline_message(name_or_path: str, err: BaseException, cache_dir: str | None = None) -> str:
    """What to download and where, for a hub id or folder that could not be loaded."""
    from huggingface_hub import constants

    hf_home = os.environ.get("HF_HOME", "~/.cache/huggingface (default)")
    if Path(name_or_path).expanduser().is_dir():
        folder = Path(name_or_path).expanduser()
        missing = [s for s in SD_SUBFOLDERS if not (folder / s).is_dir()]
        return (
            f"DifixNet: '{folder}' is not a complete diffusers Stable Diffusion / Difix folder "
            f"(missing subfolders: {missing or 'none; a file inside one is missing or broken'}). "
            f"It needs {', '.join(s + '/' for s in SD_SUBFOLDERS)} as written by "
            f"`hf download stabilityai/sd-turbo --local-dir {folder}` (or nvidia/difix_ref for the published "
            f"Difix). Cause: {type(err).__name__}: {err}"
        )
    local = "/path/to/" + str(name_or_path).rstrip("/").split("/")[-1]
    return (
        f"DifixNet: could not load '{name_or_path}' ({type(err).__name__}: {err}).\n"
        f"This machine is offline (HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', '0')}) or has no "
        f"network, and the model is not in the Hugging Face cache ({cache_dir or constants.HF_HUB_CACHE}; "
        f"HF_HOME={hf_home}).\n"
        "Fix, on a machine with network access, one of:\n"
        f"  1. hf download {name_or_path} --local-dir {local}\n"
        f"     (older huggingface_hub: huggingface-cli download {name_or_path} --local-dir {local})\n"
        f"     copy the folder here and name it instead of the hub id (`pretrained: {local}` / `fixer: {local}`; "
        f"it must hold {', '.join(s + '/' for s in SD_SUBFOLDERS)});\n"
        f"  2. HF_HOME=/path/to/hf_home hf download {name_or_path}, copy /path/to/hf_home here and run "
        "with HF_HOME=/path/to/hf_home (add HF_HUB_OFFLINE=1 to never touch the network)."
    )


def _hub_errors() -> tuple[type[BaseException], ...]:
    from huggingface_hub import errors as hf_errors

    return (OSError, hf_errors.HFValidationError, hf_errors.EntryNotFoundError, hf_errors.RepositoryNotFoundError,
            hf_errors.HfHubHTTPError, hf_errors.LocalEntryNotFoundError)


def read_model_index(name_or_path: str, cache_dir: str | None = None, revision: str | None = None) -> dict[str, Any]:
    """`model_index.json` of a folder or hub id; {} when there is none or it cannot be fetched.

    {} sends the caller down the SD-Turbo path, which loads component by component (a cache
    filled that way holds no model_index.json) and reports an offline failure itself.
    """
    folder = Path(name_or_path).expanduser()
    if folder.is_dir():
        path = folder / "model_index.json"
        return read_json_file(path) if path.is_file() else {}
    from huggingface_hub import hf_hub_download

    try:
        path = hf_hub_download(str(name_or_path), "model_index.json", cache_dir=cache_dir, revision=revision)
    except _hub_errors():
        return {}
    return read_json_file(path)


def vae_has_difix_keys(name_or_path: str, cache_dir: str | None = None, revision: str | None = None) -> bool:
    """True when the VAE weights (local or already cached) hold Difix skip convs / peft-wrapped keys.

    Catches a published folder whose model_index.json went missing; reads key names only.
    """
    from huggingface_hub import try_to_load_from_cache
    from safetensors import safe_open

    name = "vae/diffusion_pytorch_model.safetensors"
    folder = Path(name_or_path).expanduser()
    path = folder / name if folder.is_dir() else try_to_load_from_cache(str(name_or_path), name, cache_dir=cache_dir,
                                                                        revision=revision)
    if not isinstance(path, (str, Path)) or not Path(path).is_file():
        return False
    try:
        with safe_open(str(path), framework="pt") as f:
            return any("skip_conv" in k or ".base_layer." in k for k in f.keys())
    except Exception as err:  # noqa: BLE001 - safetensors' own errors name no file
        raise ValueError(f"{path}: cannot be read as safetensors ({err}); truncated? Download it again") from err


def is_published_difix(model_index: dict[str, Any]) -> bool:
    """True for a published Difix pipeline folder (`_class_name` DifixPipeline)."""
    name = model_index.get("_class_name", "")
    names = name if isinstance(name, list) else [name]
    return any(isinstance(n, str) and n.endswith("DifixPipeline") for n in names)


STOCK_UNET = ["diffusers", "UNet2DConditionModel"]


def unet_is_multiview(model_index: dict[str, Any], folder: Path | None = None) -> tuple[bool, str]:
    """Whether a published Difix folder's UNet is the reference's multi-view class, and why.

    diffusers names a component by [library, class]; a class from a module file shipped beside
    the weights is named by that file (`nvidia/difix_ref` ships `unet/unet_2d_condition.py`, so
    its entry is ["unet_2d_condition", "UNet2DConditionModel"]), the stock one by
    ["diffusers", "UNet2DConditionModel"] (`nvidia/difix`). The only custom UNet the reference
    code has is its multi-view UNet (`src/mv_unet.py`: joint self-attention over the views,
    stock weight keys), so anything but the stock entry, or a `.py` file in `unet/`, means
    reference attention. The module file is never imported.

    Returns:
        (multi-view, the reason in words, for the load line).
    """
    entry = model_index.get("unet")
    if isinstance(entry, list) and [str(e) for e in entry] != STOCK_UNET:
        return True, f"model_index.json names the UNet {entry}, not diffusers' stock class: the reference's multi-view UNet"
    modules = sorted(p.name for p in (folder / "unet").glob("*.py")) if folder is not None else []
    if modules:
        return True, f"unet/ ships its own module {modules[0]}: the reference's multi-view UNet"
    return False, f"model_index.json names diffusers' stock UNet {entry}: no joint attention over views"


def snapshot_folder(name_or_path: str, cache_dir: str | None = None, revision: str | None = None) -> Path:
    """A local folder for a published Difix hub id (downloaded without remote code) or folder."""
    folder = Path(name_or_path).expanduser()
    if folder.is_dir():
        return folder
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(str(name_or_path), cache_dir=cache_dir, revision=revision,
                                      allow_patterns=PUBLISHED_PATTERNS))
    except _hub_errors() as err:
        raise PretrainedNotFoundError(offline_message(str(name_or_path), err, cache_dir)) from err


def read_json_file(path: str | Path) -> Any:
    """A JSON file's content; broken JSON raises ValueError naming the file."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: broken JSON ({err}); download or write the file again") from err


def read_safetensors(path: str | Path) -> dict[str, Tensor]:
    """All tensors of a .safetensors file; a truncated / damaged file raises ValueError naming it."""
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as err:  # noqa: BLE001 - safetensors' own errors name no file
        raise ValueError(f"{path}: cannot be read as safetensors ({err}); truncated? Download it again") from err


def safetensors_metadata(path: str | Path) -> dict[str, str]:
    """The header metadata of a .safetensors file (reads the header only); errors name the file."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as err:  # noqa: BLE001 - safetensors' own errors name no file
        raise ValueError(f"{path}: cannot be read as safetensors ({err}); truncated? Download it again") from err


def read_component_weights(folder: Path) -> tuple[dict[str, Tensor], Path]:
    """The state dict of one diffusers component folder (safetensors, sharded or not; or .bin).

    Returns:
        (state dict, the file it came from, for error messages).

    Raises:
        FileNotFoundError naming the folder when no weights file is there.
    """
    single = folder / "diffusion_pytorch_model.safetensors"
    if single.is_file():
        return read_safetensors(single), single
    index = folder / "diffusion_pytorch_model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(read_json_file(index).get("weight_map", {}).values()))
        state: dict[str, Tensor] = {}
        for shard in shards:
            state.update(read_safetensors(folder / shard))
        return state, index
    binary = folder / "diffusion_pytorch_model.bin"
    if binary.is_file():
        return read_torch_file(binary, "component weights"), binary
    raise FileNotFoundError(
        f"{folder}: no diffusion_pytorch_model.safetensors (or sharded .safetensors / .bin) in this component "
        "folder; download the full model folder again (e.g. `hf download nvidia/difix_ref --local-dir DIR`)"
    )


def load_difix_weights(path: str | Path) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Reads build_config and trained weights from a DifixModule .ckpt or an exported file.

    Returns:
        (build_config, state_dict with DifixNet keys).

    Raises:
        FileNotFoundError / ValueError naming the file and the problem.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"fixer checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        meta = safetensors_metadata(path)
        if "difix_net_config" not in meta:
            raise ValueError(f"{path}: safetensors file has no 'difix_net_config' metadata (not a Difix export)")
        try:
            config = json.loads(meta["difix_net_config"])
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: its 'difix_net_config' metadata is broken JSON ({err})") from err
        return config, read_safetensors(path)
    ckpt = read_torch_file(path, "fixer")  # weights only: refuses pickled code before it runs
    if isinstance(ckpt, dict) and "state_dict" in ckpt and "difix_net_config" not in ckpt:
        kind = (ckpt.get("hyper_parameters") or {}).get("_class_path") or "another LightningModule"
        raise ValueError(f"{path}: a checkpoint of {kind}, not a fixer (no 'difix_net_config'); a fixer is a "
                         "DifixModule checkpoint, its exported weights, or a published model")
    if not isinstance(ckpt, dict) or "difix_net_config" not in ckpt or "state_dict" not in ckpt:
        raise ValueError(f"{path}: no 'difix_net_config' / 'state_dict' (not a DifixModule checkpoint or export)")
    state = ckpt["state_dict"]
    if any(k.startswith("net.") for k in state):  # a LightningModule checkpoint
        state = {k[len("net."):]: v for k, v in state.items() if k.startswith("net.")}
    return ckpt["difix_net_config"], state
