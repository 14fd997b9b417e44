"""Where NVIDIA's Fixer files are: the hub id, a downloaded folder, or the files named one by one.

`hf download nvidia/Fixer --local-dir DIR` writes (per NVIDIA's model repo and nv-tlabs/Fixer's
README, whose command uses `--local-dir models`):

    DIR/pretrained/pretrained_fixer.pkl   Fixer's weights (torch pickle: state_dict_unet, state_dict_vae, ...)
    DIR/base/model_fast_tokenizer.pt      the Cosmos-Predict2 0.6B text-to-image DiT it was trained from
    DIR/base/tokenizer_fast.pth           the fast tokenizer (TorchScript programs + latent mean / std)

Running Fixer needs the pkl and the tokenizer (the tokenizer's architecture is only in its
programs); fine-tuning from the base model needs the DiT and the tokenizer. The folder may be
named directly or through the folder above it (`models/`). The older TorchScript export
`pretrained/pretrained_fixer_jit.pt` is another backend's (`fixers/torchscript.py`).
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

FIXER_REPO = "nvidia/Fixer"
PRETRAINED = "pretrained/pretrained_fixer.pkl"
BASE_DIT = "base/model_fast_tokenizer.pt"
TOKENIZER = "base/tokenizer_fast.pth"
# Layouts under a named folder: the download folder itself, or the folder holding models/.
ROOTS = ("", "models/")
# A Fixer pickle's top-level keys and a key of its DiT, as bytes in the pickle's data record.
FIXER_PICKLE_MARKS = (b"state_dict_unet", b"state_dict_vae")
FIXER_DIT_MARKS = (b"dit.blocks.", b"dit.x_embedder.")


@dataclass(frozen=True)
class FixerFiles:
    """The files a Fixer is built from (None: absent, or on the hub and not downloaded yet).

    Attributes:
        tokenizer: `base/tokenizer_fast.pth` (always needed).
        pretrained: `pretrained/pretrained_fixer.pkl` or a fine-tuned pkl of that layout.
        base_dit: `base/model_fast_tokenizer.pt` (needed when no pkl gives every DiT weight).
        repo_id: the hub repo the files come from (files still None are downloaded from it).
        name: the name as the user gave it (for messages).
    """

    tokenizer: Path | None = None
    pretrained: Path | None = None
    base_dit: Path | None = None
    repo_id: str | None = None
    name: str = ""

    def describe(self) -> str:
        """Where each file is, in one line."""
        parts = [f"{label} {path if path is not None else '(not downloaded)'}"
                 for label, path in (("pkl", self.pretrained), ("tokenizer", self.tokenizer), ("base DiT", self.base_dit))
                 if path is not None or self.repo_id is not None]
        return f"{self.name or self.repo_id}: " + ", ".join(parts)


def find_fixer_files(name: str) -> FixerFiles | None:
    """The Fixer files a fixer name stands for, or None when it is no Fixer name (reads no weights).

    A Fixer name is the hub id `nvidia/Fixer` (files taken from the Hugging Face cache, None where
    not cached yet), a folder in NVIDIA's layout (or holding `models/` in it), or a pkl of that
    layout (`pretrained_fixer.pkl`, or any torch zip whose record names `state_dict_unet`,
    `state_dict_vae` and Cosmos DiT keys; its `base/` files are looked up beside `pretrained/`).
    """
    if not isinstance(name, str) or not name.strip():
        return None
    if name.strip().lower() == FIXER_REPO.lower():
        return _cached(FIXER_REPO, name)
    path = Path(name).expanduser()
    if path.is_dir():
        for root in ROOTS:
            found = {key: path / root / rel for key, rel in
                     (("pretrained", PRETRAINED), ("base_dit", BASE_DIT), ("tokenizer", TOKENIZER))}
            present = {k: p for k, p in found.items() if p.is_file()}
            if present:
                return FixerFiles(name=name, **present)
        return None
    if path.is_file() and (path.name == Path(PRETRAINED).name or is_fixer_pickle(path)):
        base = path.parent.parent / "base" if path.parent.name == "pretrained" else path.parent / "base"
        return FixerFiles(pretrained=path, name=name,
                          tokenizer=_file(base / Path(TOKENIZER).name), base_dit=_file(base / Path(BASE_DIT).name))
    return None


def fixer_files(tokenizer: str | Path, pretrained: str | Path | None = None,
                base_dit: str | Path | None = None) -> FixerFiles:
    """FixerFiles from paths named one by one (e.g. a config's three fields); each must exist.

    Raises:
        FileNotFoundError: naming the field and the path.
    """
    paths: dict[str, Path | None] = {}
    for field_name, value in (("tokenizer", tokenizer), ("pretrained", pretrained), ("base_dit", base_dit)):
        if value is None:
            paths[field_name] = None
            continue
        path = Path(value).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"Fixer {field_name} file {path} does not exist "
                                    f"(from `hf download {FIXER_REPO} --local-dir DIR`: {_relative(field_name)})")
        paths[field_name] = path
    return FixerFiles(name=str(pretrained or base_dit or tokenizer), **paths)


def is_fixer_pickle(path: Path) -> bool:
    """Whether a torch zip file's pickle record has Fixer's keys (reads that record only, no tensor)."""
    try:
        with zipfile.ZipFile(path) as archive:
            record = next((n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"), None)
            if record is None:
                return False
            data = archive.read(record)
    except (OSError, zipfile.BadZipFile):
        return False
    return all(m in data for m in FIXER_PICKLE_MARKS) and any(m in data for m in FIXER_DIT_MARKS)


def complete_files(files: FixerFiles, start: Literal["pretrained", "base"] = "pretrained",
                   download: bool = True) -> FixerFiles:
    """Fills in hub files not cached yet (downloading them when the hub is on) and checks that
    what is needed is there: the tokenizer and the pkl to run (or fine-tune) Fixer, the tokenizer
    and the base DiT to fine-tune from the base model.

    Raises:
        FileNotFoundError: naming the missing files and what to download where.
    """
    wanted = {"tokenizer": TOKENIZER, "pretrained" if start == "pretrained" else "base_dit":
              PRETRAINED if start == "pretrained" else BASE_DIT}
    if files.repo_id is not None:
        files = _download(files, wanted, download)
    missing = [rel for key, rel in wanted.items() if getattr(files, key) is None]
    if missing:
        raise FileNotFoundError(f"Fixer {files.name!r}: missing {', '.join(missing)}. {offline_help(files.name)}")
    return files


def offline_help(name: str) -> str:
    """What to download where, for a Fixer that is not (fully) on this machine."""
    from huggingface_hub import constants

    return (f"On a machine with network: `hf download {FIXER_REPO} --local-dir DIR` (all three files, ~5.2 GB; "
            f"running needs only `hf download {FIXER_REPO} {PRETRAINED} {TOKENIZER} --local-dir DIR`), copy DIR "
            f"here and name DIR as the fixer; or fill the Hugging Face cache ({constants.HF_HUB_CACHE}) with "
            f"`hf download {FIXER_REPO}` and name {FIXER_REPO}. Fixer's licence: NVIDIA Open Model License "
            f"(accept it on the model page first). Asked for: {name!r}.")


def _download(files: FixerFiles, wanted: dict[str, str], download: bool) -> FixerFiles:
    from huggingface_hub import hf_hub_download

    from lightning_modules.difix.fixers.checks import hub_offline

    todo = {k: rel for k, rel in wanted.items() if getattr(files, k) is None}
    if not todo:
        return files
    if hub_offline() or not download:
        why = "the hub is off (HF_HUB_OFFLINE=1)" if hub_offline() else "downloading was not asked for"
        raise FileNotFoundError(f"Fixer {files.name!r}: {', '.join(todo.values())} not in the Hugging Face cache and "
                                f"{why}. {offline_help(files.name)}")
    got = {}
    for key, rel in todo.items():
        try:
            got[key] = Path(hf_hub_download(str(files.repo_id), rel))
        except Exception as err:  # noqa: BLE001 - no network, gated repo (licence not accepted), file moved
            raise FileNotFoundError(f"Fixer {files.name!r}: could not download {rel} ({type(err).__name__}: "
                                    f"{str(err).splitlines()[0] if str(err) else ''}). {offline_help(files.name)}") from err
    return replace(files, **got)


def _cached(repo: str, name: str) -> FixerFiles:
    from huggingface_hub import try_to_load_from_cache

    def cached(rel: str) -> Path | None:
        hit = try_to_load_from_cache(repo, rel)
        return Path(hit) if isinstance(hit, str) else None

    return FixerFiles(tokenizer=cached(TOKENIZER), pretrained=cached(PRETRAINED), base_dit=cached(BASE_DIT),
                      repo_id=repo, name=name)


def _file(path: Path) -> Path | None:
    return path if path.is_file() else None


def _relative(field_name: str) -> str:
    return {"tokenizer": TOKENIZER, "pretrained": PRETRAINED, "base_dit": BASE_DIT}[field_name]
