"""Starting a DifixNet from a `DifixPriorModule` checkpoint, the way the paper starts from SD-Turbo.

A prior named as a fixer or as DifixModule's `pretrained`, and `rebuild_net` (when a fixer
checkpoint's base is a prior) come here: the architecture is rebuilt from the checkpoint's `difix_prior` entry, the
pretrained VAE / UNet weights are loaded into the plain diffusers components *before* DifixNet
adds its LoRA adapters (their keys then still match), and the prior's skip convs and prompt
embedding replace the fresh ones. A fixer checkpoint records the prior's path as its base
(`{"kind": "prior", "path": ...}`) so `net_from_checkpoint` can rebuild the frozen weights.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from torch import Tensor

from lightning_modules.difix.net.prompt import DEFAULT_PROMPT
from lightning_modules.difix.loading.base_models import net_from_components
from lightning_modules.difix.net.architectures import build_components
from lightning_modules.safe_load import read_torch_file

PRIOR_KEY = "difix_prior"  # the checkpoint entry DifixPriorModule writes (training/prior.py imports it)


def read_prior(path: str | Path) -> tuple[dict[str, Any], dict[str, Tensor]] | None:
    """The prior's rebuild info and DifixNet-named tensors, or None when `path` is no prior checkpoint.

    Raises:
        ValueError: the file is a torch checkpoint claiming to be a prior but lacking tensors.
    """
    path = Path(path).expanduser()
    if path.suffix != ".ckpt" or not path.is_file():
        return None
    try:
        ckpt = read_torch_file(path, "Difix prior")
    except ValueError:  # unreadable or unsafe: not a prior; the fixer loader reports it
        return None
    if not isinstance(ckpt, dict) or PRIOR_KEY not in ckpt:
        return None
    state = {k[len("net."):]: v for k, v in ckpt.get("state_dict", {}).items() if k.startswith("net.")}
    for part in ("vae.", "unet.", "skips."):
        if not any(k.startswith(part) for k in state):
            raise ValueError(f"{path}: prior checkpoint has no '{part}*' tensors (interrupted or foreign file?)")
    return ckpt[PRIOR_KEY], state


def is_prior_checkpoint(path: str | Path | None) -> bool:
    """True when `path` is a DifixPriorModule checkpoint (cheap enough for config checks)."""
    return path is not None and read_prior(path) is not None


def _sub_state(state: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def net_from_prior(path: str | Path, prompt_embeds: Tensor | None = None, **net_kwargs: Any) -> Any:
    """A DifixNet whose VAE, UNet, skip convs and prompt embedding come from a prior checkpoint.

    Args:
        path: DifixPriorModule checkpoint (.ckpt).
        prompt_embeds: (1, L, D) embedding to use instead of the prior's (a fixer checkpoint's).
        **net_kwargs: DifixNet.__init__ options (timestep, LoRA ranks, skip_init, ...); the
            prior's skip weights replace `skip_init`'s constant.

    Raises:
        FileNotFoundError / ValueError naming the file.
    """
    if not Path(path).expanduser().is_file():
        raise FileNotFoundError(f"Difix prior checkpoint {path} does not exist (train it with "
                                "`python main.py fit --config configs/demo/prior.yaml`)")
    found = read_prior(path)
    if found is None:
        raise ValueError(f"{path}: not a DifixPriorModule checkpoint (no '{PRIOR_KEY}' entry)")
    info, state = found
    config = copy.deepcopy(info["config"])
    config["text_encoder"] = None  # the prior's embedding is reused: no text encoder to build
    components = build_components(config, seed=int(info["seed"]))
    components["vae"].load_state_dict(_sub_state(state, "vae."))
    components["unet"].load_state_dict(_sub_state(state, "unet."))
    embeds = prompt_embeds if prompt_embeds is not None else state["prompt_embeds"]
    # Absolute: a fixer checkpoint keeps only its trained weights and rebuilds the frozen ones
    # from this file, so it must load from any working directory (a relative path failed as
    # soon as the fixer was used from another folder).
    base = {"kind": "prior", "path": str(Path(path).expanduser().resolve()), "config": info["config"],
            "seed": int(info["seed"])}
    net = net_from_components(components, base, prompt=info.get("prompt", DEFAULT_PROMPT),
                                   prompt_embeds=embeds, provenance={"layout": f"offline Difix prior {path}"},
                                   **net_kwargs)
    net.skips.load_state_dict(_sub_state(state, "skips."))
    return net
