"""Fixer's weights in NVIDIA's naming <-> FixerNet's modules, every key accounted for.

NVIDIA's names (nv-tlabs/Fixer `save_ckpt` / `load_ckpt_from_state_dict`, cosmos-predict2's
`Text2ImagePipeline`): `pretrained_fixer.pkl` is a dict with
- `state_dict_unet`: the whole `Text2ImagePipeline` (an nn.Module whose registered children are
  `tokenizer` and `dit`): `tokenizer.encoder.*`, `tokenizer.decoder.*`, `dit.<MiniTrainDIT key>`;
- `state_dict_vae`: the tokenizer alone, `encoder.*`, `decoder.*` (the same tensors; Fixer
  loads it last, so it wins here too);
- training checkpoints also `net_disc`, `optimizer`, `optimizer_disc` (not the fixer: ignored).
`base/model_fast_tokenizer.pt` is MiniTrainDIT's state dict under `net.` (the pipeline strips
that prefix; `net_ema.` is its EMA copy, unused). DiT keys map to diffusers' names in `dit.py`.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lightning_modules.difix.cosmos.dit import cosmos_to_diffusers_key, diffusers_to_cosmos_key
from lightning_modules.safe_load import UnsafeFileError, read_torch_file

UNET, VAE = "state_dict_unet", "state_dict_vae"
# Other top-level entries of Fixer pkls: its GAN discriminator and optimizer states, our config.
OTHER_ENTRIES = ("net_disc", "optimizer", "optimizer_disc", "fixer_net_config")
EMA_PREFIXES = ("dit_ema.", "net_ema.")
SHOWN = 12


def read_nvidia_file(path: Path, what: str) -> Any:
    """A Fixer torch file read weights-only. Transformer Engine's older `_extra_state` entries
    are io.BytesIO objects (bytes in a buffer, no code): those are allowed too.

    Raises:
        UnsafeFileError: what the file asks for, and how to convert it once if you trust it.
    """
    try:
        with torch.serialization.safe_globals([io.BytesIO]):
            return read_torch_file(path, what)
    except UnsafeFileError as err:
        raise UnsafeFileError(
            f"{err}\nIf the file is NVIDIA's and you trust it, convert it once to plain tensors: python -c \"import "
            f"torch; d = torch.load('{path}', weights_only=False); torch.save({{k: {{n: t for n, t in d[k].items() if "
            f"isinstance(t, torch.Tensor)}} for k in ('{UNET}', '{VAE}') if k in d}}, 'converted.pkl')\" and name "
            "converted.pkl (in the same pretrained/ folder) instead.") from err


def fixer_pickle_parts(payload: Any, path: Path) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """(DiT entries under `dit.`, tokenizer entries under `encoder.` / `decoder.`) of a Fixer pkl.

    Raises:
        ValueError: not a Fixer pkl, or top-level entries no Fixer pkl has (named).
    """
    if not isinstance(payload, dict) or UNET not in payload:
        have = sorted(map(str, payload))[:SHOWN] if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"Fixer checkpoint {path}: no '{UNET}' (not a Fixer pkl; found {have})")
    unknown = sorted(str(k) for k in payload if k not in (UNET, VAE, *OTHER_ENTRIES))
    if unknown:
        raise ValueError(f"Fixer checkpoint {path}: unknown top-level entries {unknown[:SHOWN]}")
    unet = payload[UNET]
    dit = {k: v for k, v in unet.items() if not k.startswith("tokenizer.")}
    vae = payload.get(VAE) or {k[len("tokenizer."):]: v for k, v in unet.items() if k.startswith("tokenizer.")}
    return dit, dict(vae)


def dit_state(entries: dict[str, Any], prefix: str, source: str) -> tuple[dict[str, Tensor], list[str]]:
    """MiniTrainDIT entries under `prefix` -> CosmosTransformer3DModel names.

    Returns:
        (state dict in diffusers' names, the entries dropped: non-weights and EMA copies).

    Raises:
        ValueError: naming every entry that is neither a DiT weight nor a known non-weight.
    """
    state: dict[str, Tensor] = {}
    dropped, unknown = [], []
    for key, value in entries.items():
        if key.startswith(EMA_PREFIXES):
            dropped.append(key)
            continue
        if not key.startswith(prefix):
            unknown.append(key)
            continue
        try:
            mapped = cosmos_to_diffusers_key(key[len(prefix):])
        except KeyError:
            unknown.append(key)
            continue
        if mapped is None:
            dropped.append(key)
        elif not isinstance(value, Tensor):
            unknown.append(f"{key} ({type(value).__name__}, not a tensor)")
        else:
            state[mapped] = value
    if unknown:
        raise ValueError(f"{source}: {len(unknown)} entries are no Cosmos-Predict2 DiT weight: {_show(unknown)}")
    return state, dropped


def load_checked(module: nn.Module, state: dict[str, Tensor], what: str, source: str) -> None:
    """Copies `state` into `module`, naming every missing key, unknown key and shape mismatch first.

    Raises:
        ValueError: the state does not fit the module exactly.
    """
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unknown = sorted(set(state) - set(own))
    shapes = [f"{k} {tuple(state[k].shape)} (model {tuple(own[k].shape)})" for k in sorted(set(state) & set(own))
              if tuple(state[k].shape) != tuple(own[k].shape)]
    problems = [f"{len(missing)} missing: {_show(missing)}" if missing else "",
                f"{len(unknown)} unknown: {_show(unknown)}" if unknown else "",
                f"{len(shapes)} of another shape: {_show(shapes)}" if shapes else ""]
    if any(problems):
        raise ValueError(f"{source}: the {what} weights do not fit ({'; '.join(p for p in problems if p)}); a file of "
                         "another model size or a damaged download?")
    with torch.no_grad():
        module.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True)


def nvidia_state_dicts(dit: nn.Module, tokenizer: nn.Module) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """(state_dict_unet, state_dict_vae) in Fixer's naming, tensors on the CPU (shared between the two)."""
    vae = {k: v.detach().cpu().contiguous() for k, v in tokenizer.state_dict().items()}
    unet = {f"tokenizer.{k}": v for k, v in vae.items()}
    unet.update({f"dit.{diffusers_to_cosmos_key(k)}": v.detach().cpu().contiguous() for k, v in dit.state_dict().items()})
    return unet, vae


def _show(items: list[str]) -> str:
    more = f" ... and {len(items) - SHOWN} more" if len(items) > SHOWN else ""
    return ", ".join(items[:SHOWN]) + more
