"""Every kind of fixer a name can stand for, and the one function that tells which: `resolve_source`.

A name is resolved once into a typed `FixerSource`; its `check()` is the cheap test before step 1
(file headers, keys, configs, the hub cache; no weights read) and its `build()` loads the network.
Names (the same wherever a fixer is named):

- "identity": no fixer (renders pass through), the ablation control of the progressive schedule;
- "tiny" or "tiny:SEED": an untrained tiny DifixNet, for tests of the plumbing;
- a hub id: "nvidia/difix_ref", "nvidia/difix" (published Difix), "stabilityai/sd-turbo" (an
  untrained Difix on SD-Turbo), from the Hugging Face cache or downloaded;
- a local folder of any of those (diffusers layout);
- a reference training checkpoint `model_*.pkl` (on its base, stabilityai/sd-turbo);
- a DifixModule checkpoint (`.ckpt`) or its exported weights (`.safetensors`, `.pt`, `.pth`);
- an offline prior checkpoint (`configs/demo/prior.yaml`, `.ckpt`);
- NVIDIA's current Fixer (Cosmos-Predict2 0.6B, `lightning_modules/difix/cosmos/`): the hub id
  "nvidia/Fixer", a folder from `hf download nvidia/Fixer --local-dir DIR` (or the folder above
  it), or a `pretrained_fixer.pkl` of that layout (its `base/` files beside `pretrained/`);
- a TorchScript image-to-image file, or a folder holding NVIDIA's withdrawn Fixer export
  (`pretrained/pretrained_fixer_jit.pt`).

A new kind of fixer is one more `FixerSource` subclass here and one more branch in
`resolve_source`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from torch import nn

from lightning_modules.difix.fixers import checks
from lightning_modules.difix.loading.published import REFERENCE_BASE

__all__ = ["FixerSource", "resolve_source", "build_difix_net", "IDENTITY"]

IDENTITY = "identity"
TINY = re.compile(r"^tiny(:-?\d+)?$")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
WEIGHT_SUFFIXES = (".ckpt", ".safetensors", ".pt", ".pth")
REFERENCE_SUFFIX = ".pkl"


@dataclass(frozen=True)
class FixerSource:
    """A fixer name resolved to what it stands for.

    Attributes:
        name: the name as the config gave it (for messages).
        difix: the network is a DifixNet (it takes Difix options, and DifixModule can fine-tune it).
        needs_trial: the network is code the project cannot inspect (TorchScript): run one tiny call
            before step 1 (`ReadyFixer.try_once`).
    """

    name: str
    kind: ClassVar[str] = "fixer"
    difix: ClassVar[bool] = True
    needs_trial: ClassVar[bool] = False

    def check(self, **options: Any) -> None:
        """Cheap: that `build` will find what it needs (no weights read). Raises naming the file."""

    def build(self, **options: Any) -> nn.Module:
        """The network (loads weights). Difix kinds take DifixNet options, `prompt` and `cache_dir`."""
        raise NotImplementedError


@dataclass(frozen=True)
class Identity(FixerSource):
    kind: ClassVar[str] = "identity"
    difix: ClassVar[bool] = False

    def build(self, **options: Any) -> nn.Module:
        from lightning_modules.difix.fixers.identity import IdentityNet

        return IdentityNet()


@dataclass(frozen=True)
class Tiny(FixerSource):
    seed: int = 0
    kind: ClassVar[str] = "tiny"

    def build(self, prompt: str | None = None, cache_dir: str | None = None, **options: Any) -> nn.Module:
        from lightning_modules.difix.loading.base_models import tiny_net

        return tiny_net(seed=self.seed, **({"prompt": prompt} if prompt is not None else {}), **options)


@dataclass(frozen=True)
class DiffusersModel(FixerSource):
    """A hub id or local folder in the SD-Turbo or the published Difix layout."""

    path: Path | None = None  # None: a hub id
    kind: ClassVar[str] = "diffusers model"

    def check(self, **options: Any) -> None:
        if self.path is not None:
            checks.check_model_folder(self.path)
        else:
            checks.check_hub_model(self.name)

    def build(self, prompt: str | None = None, cache_dir: str | None = None, **options: Any) -> nn.Module:
        from lightning_modules.difix.loading.builders import net_from_pretrained

        text = {"prompt": prompt} if prompt is not None else {}
        return net_from_pretrained(str(self.path) if self.path else self.name, cache_dir=cache_dir, **text, **options)


@dataclass(frozen=True)
class ReferencePkl(FixerSource):
    """The reference training code's `model_*.pkl` on its base model."""

    path: Path = Path()
    base: str = REFERENCE_BASE
    kind: ClassVar[str] = "reference checkpoint"

    def check(self, **options: Any) -> None:
        checks.check_weights_file(self.path)
        try:  # the pkl holds the trained tensors only; the rest comes from its base model
            resolve_source(self.base).check()
        except (FileNotFoundError, ValueError) as err:
            raise ValueError(f"fixer {self.name!r}: a reference checkpoint needs its base {self.base}: {err}") from err

    def build(self, prompt: str | None = None, cache_dir: str | None = None, **options: Any) -> nn.Module:
        from lightning_modules.difix.loading.published import net_from_reference_checkpoint

        text = {"prompt": prompt} if prompt is not None else {}
        return net_from_reference_checkpoint(self.path, base=self.base, cache_dir=cache_dir, **text, **options)


@dataclass(frozen=True)
class DifixWeights(FixerSource):
    """A DifixModule checkpoint or exported weights (its base rebuilt from the stored config), or an
    offline prior checkpoint (DifixPriorModule, in SD-Turbo's place). Both keep their stored prompt."""

    path: Path = Path()
    prior: bool = False

    @property
    def kind(self) -> str:  # type: ignore[override]
        return "prior checkpoint" if self.prior else "DifixModule checkpoint"

    def check(self, **options: Any) -> None:
        checks.check_weights_file(self.path)

    def build(self, prompt: str | None = None, cache_dir: str | None = None, **options: Any) -> nn.Module:
        from lightning_modules.difix.loading.builders import net_from_checkpoint
        from lightning_modules.difix.loading.from_prior import net_from_prior

        if self.prior:
            net = net_from_prior(self.path, **options)
        else:
            options.pop("skip_init", None)  # the checkpoint holds the trained skip convs
            net = net_from_checkpoint(self.path, cache_dir=cache_dir, **options)
        if prompt is not None and prompt != net.build_config["prompt"]:
            raise ValueError(f"fixer {self.name}: its prompt embedding is for {net.build_config['prompt']!r}; "
                             f"prompt {prompt!r} cannot be used with it (leave the prompt at its default)")
        return net


@dataclass(frozen=True)
class TorchScriptFile(FixerSource):
    """A TorchScript image-to-image file (`torchscript.py`)."""

    path: Path = Path()
    kind: ClassVar[str] = "TorchScript fixer"
    difix: ClassVar[bool] = False
    needs_trial: ClassVar[bool] = True

    def check(self, operator_libraries: list[str] | None = None, **options: Any) -> None:
        from lightning_modules.difix.fixers.torchscript import check_torchscript

        check_torchscript(self.name, self.path, operator_libraries)

    def build(self, **options: Any) -> nn.Module:
        from lightning_modules.difix.fixers.torchscript import TorchScriptNet

        return TorchScriptNet(self.path, name=self.name, **options)


@dataclass(frozen=True)
class CosmosFixer(FixerSource):
    """NVIDIA's current Fixer (`cosmos/`): no reference view, runs as it is (fine-tuned by FixerModule)."""

    files: Any = None  # cosmos.files.FixerFiles
    kind: ClassVar[str] = "Fixer (Cosmos-Predict2)"
    difix: ClassVar[bool] = False

    def check(self, **options: Any) -> None:
        from lightning_modules.difix.cosmos.files import complete_files

        if self.files.repo_id is None or checks.hub_offline():  # a hub file still missing is downloaded at build
            complete_files(self.files, download=False)

    def build(self, **options: Any) -> nn.Module:
        from lightning_modules.difix.cosmos.load import load_fixer_net

        return load_fixer_net(self.files)


def resolve_source(name: str) -> FixerSource:
    """What a fixer name stands for: the one place a name is classified (see the module docstring).

    Reads file headers and keys where the suffix does not say (a `.pt` may be TorchScript or an
    export, a `.ckpt` a prior or a DifixModule checkpoint); loads no weights.

    Raises:
        ValueError: an empty name, or a malformed "tiny:SEED".
        FileNotFoundError: a path that does not exist, or a name that is no file, folder nor hub id.
    """
    from lightning_modules.difix.cosmos.files import find_fixer_files
    from lightning_modules.difix.fixers import torchscript

    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"fixer name must be a non-empty string, got {name!r}")
    if name == IDENTITY:
        return Identity(name)
    if name == "tiny" or name.startswith("tiny:"):
        if not TINY.match(name):
            raise ValueError(f"fixer {name!r}: expected 'tiny' or 'tiny:SEED' with an integer SEED")
        return Tiny(name, seed=int(name.split(":", 1)[1]) if ":" in name else 0)
    if (fixer_files := find_fixer_files(name)) is not None:
        legacy = torchscript.cached_hub_file(name) if fixer_files.repo_id is not None else None
        if legacy is not None and fixer_files.pretrained is None and fixer_files.tokenizer is None:
            return TorchScriptFile(name, path=legacy)  # a cached copy of the withdrawn export, nothing newer
        return CosmosFixer(name, files=fixer_files)
    path = Path(name).expanduser()
    if path.is_file():
        if torchscript.is_torchscript_file(path):
            return TorchScriptFile(name, path=path)
        if path.suffix == REFERENCE_SUFFIX:
            return ReferencePkl(name, path=path, base=REFERENCE_BASE)
        if path.suffix in WEIGHT_SUFFIXES:
            from lightning_modules.difix.loading.from_prior import is_prior_checkpoint

            return DifixWeights(name, path=path, prior=is_prior_checkpoint(path))
        raise ValueError(f"fixer {name!r}: {path} is no fixer file (a DifixModule .ckpt, exported weights "
                         f"{', '.join(WEIGHT_SUFFIXES[1:])}, a reference {REFERENCE_SUFFIX} or a TorchScript .pt)")
    if path.suffix in (*WEIGHT_SUFFIXES, REFERENCE_SUFFIX):
        raise FileNotFoundError(
            f"fixer {name!r}: file {path} does not exist. Train one with configs/difix.yaml (or "
            "configs/demo/difix.yaml), export one with DifixNet.export_weights, or name a published model "
            "('nvidia/difix_ref')")
    if path.is_dir():
        export = torchscript.folder_export(path)
        return TorchScriptFile(name, path=export) if export else DiffusersModel(name, path=path)
    if HUB_ID.match(name) and not name.startswith((".", "/", "~")):
        return DiffusersModel(name)
    raise FileNotFoundError(f"fixer {name!r}: no such file or folder, and not a hub id like 'nvidia/difix_ref'")


def build_difix_net(name: str, cache_dir: str | None = None, prompt: str | None = None,
                    **net_options: Any) -> Any:
    """The DifixNet a fixer name stands for, to train or fine-tune (DifixModule's `net.pretrained`).

    Args:
        name: a Difix kind of name (see the module docstring).
        cache_dir: Hugging Face cache folder.
        prompt: text prompt for a model with a text encoder; None: the default. Checkpoints and
            priors keep their stored embedding, so another prompt for them is an error.
        **net_options: DifixNet options (timestep, LoRA ranks, size_mode, latent, ...). For a
            checkpoint they replace the stored ones; LoRA ranks must then equal the stored ones.
    """
    source = resolve_source(name)
    if not source.difix:
        raise ValueError(f"fixer {name!r} is a {source.kind}: it runs as it is (a fixer: of the scene callback, the "
                         "viewer, fix_images.py) but is not a Difix network to train or fine-tune")
    return source.build(cache_dir=cache_dir, prompt=prompt, **net_options)
