"""The curated pairs folder on disk: folders swapped in whole, ``pairs.json`` merged under a lock.

Layout of ``out_dir``::

    pairs.json                      {"train": [items], "test": [items]} (PairDataModule's "json" source)
    pairs.json.lock                 fcntl lock held while a writer merges
    <scene>/<strategy>[_<fraction>]/render/<view>.png   degraded renders
                                    target/<view>.png   the real images, at the render's size
                                    ref/<view>.png      reference images (nearest fitted views)

A writer renders into a hidden staging folder, then :func:`commit` swaps the staged folders
in and rewrites ``pairs.json`` (temp file + ``os.replace``). The items of the committing
(scene, strategy) replace that pair's previous items in both splits (deterministic rebuild);
every other item is kept (appending other scenes and strategies). A journal written before
the swap lets the next writer roll an interrupted commit back (or forward, when the new
``pairs.json`` already landed), so ``pairs.json`` never points at missing or half-written
files.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from datamodules.files.json_io import write_json_atomic
from datamodules.files import temp_files
from datamodules.files.temp_files import temp_path

__all__ = ["PAIRS_JSON", "commit", "locked", "read_pairs_doc", "replace_folder", "write_json_atomic", "staging_dir"]

PAIRS_JSON = "pairs.json"
LOCK = "pairs.json.lock"
JOURNAL = ".pairs-commit-journal.json"
SPLITS = ("train", "test")


@contextlib.contextmanager
def locked(out_dir: Path) -> Iterator[None]:
    """Holds an exclusive ``fcntl.flock`` on ``out_dir/pairs.json.lock`` (blocking)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / LOCK, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def read_pairs_doc(out_dir: Path) -> dict[str, Any]:
    """The current ``pairs.json`` (an empty train/test document when there is none).

    Raises:
        ValueError: the file exists but is not a pairs document; the message names it.
    """
    path = out_dir / PAIRS_JSON
    if not path.is_file():
        return {split: [] for split in SPLITS}
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not a readable pairs JSON ({error}); move it away to rebuild") from error
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: expected an object with 'train' and 'test' lists")
    for split in SPLITS:
        doc.setdefault(split, [])
        if not isinstance(doc[split], list):
            raise ValueError(f"{path}: split {split!r} must be a list of items (the writer keeps the list layout)")
    return doc


def staging_dir(parent: Path, name: str) -> Path:
    """A fresh hidden folder beside ``parent/<name>`` for this process (never read as output;
    `datamodules.files.temp_files` names it, and removes it when its writer is gone)."""
    parent.mkdir(parents=True, exist_ok=True)
    path = temp_path(parent / name, "new")
    path.mkdir()
    return path


def remove_stale(out_dir: Path) -> list[Path]:
    """Removes staging folders and temp JSON files left by writers that were killed.

    Only leftovers whose writer process (the pid in the name) is gone are removed, so a
    concurrent writer's files survive. Call with the lock held.

    Returns:
        The removed paths.
    """
    removed = temp_files.remove_stale(out_dir)
    for scene in (p for p in out_dir.iterdir() if p.is_dir() and not p.name.startswith(".")) if out_dir.is_dir() else ():
        removed += temp_files.remove_stale(scene)
    return removed


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _swap_in(moves: list[tuple[Path, Path]], trash: list[tuple[Path, Path]]) -> None:
    """Moves each existing final folder to its trash name, then each staged folder in place."""
    for final, old in trash:
        if final.exists():
            os.rename(final, old)
    for staged, final in moves:
        final.parent.mkdir(parents=True, exist_ok=True)
        os.rename(staged, final)


def recover(out_dir: Path) -> None:
    """Finishes or undoes a commit that was interrupted (call with the lock held)."""
    journal = out_dir / JOURNAL
    if not journal.is_file():
        return
    try:
        record = json.loads(journal.read_text())
    except (OSError, json.JSONDecodeError):
        journal.unlink(missing_ok=True)  # torn journal: written before any folder moved
        return
    current = (out_dir / PAIRS_JSON).read_text() if (out_dir / PAIRS_JSON).is_file() else ""
    if _sha(current) == record["json_sha"]:  # the new pairs.json landed: drop the old folders
        for _, old in record["trash"]:
            shutil.rmtree(out_dir / old, ignore_errors=True)
    else:  # roll back: new folders out, old folders back
        for staged, final in record["moves"]:
            if (out_dir / staged).exists():  # not moved yet: `final`, if any, is still the old folder
                shutil.rmtree(out_dir / staged, ignore_errors=True)
            elif (out_dir / final).exists():
                shutil.rmtree(out_dir / final, ignore_errors=True)
        for final, old in record["trash"]:
            if (out_dir / old).exists() and not (out_dir / final).exists():
                os.rename(out_dir / old, out_dir / final)
    journal.unlink(missing_ok=True)


def _item_folder(item: dict[str, Any]) -> str | None:
    """``<scene>/<dir>`` of an item written by the pair writer (None for foreign items)."""
    parts = Path(str(item.get("image", ""))).parts
    if len(parts) < 3 or Path(str(item.get("image", ""))).is_absolute():
        return None
    return f"{parts[0]}/{parts[1]}"


def commit(
    out_dir: Path,
    scene: str,
    strategy: str,
    split: str,
    staged: dict[str, Path],
    items: list[dict[str, Any]],
) -> Path:
    """Swaps the staged folders in and merges ``items`` into ``pairs.json``, atomically.

    Args:
        out_dir: the pairs folder.
        scene: scene name (first path component of every item).
        strategy: curation strategy; the (scene, strategy) items already in ``pairs.json``
            (either split) are replaced, and the folders they used are removed.
        split: "train" or "test": where ``items`` go.
        staged: final folder (relative to ``out_dir``, e.g. "lego/underfit_0.5") -> staged folder.
        items: new items, paths relative to ``out_dir``.

    Returns:
        The ``pairs.json`` path.

    Raises:
        ValueError: the scene already has items of another strategy in the other split
            (test pairs must come from scenes never trained on).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    with locked(out_dir):
        recover(out_dir)
        doc = read_pairs_doc(out_dir)
        other = "test" if split == "train" else "train"
        clash = sorted({str(it.get("strategy")) for it in doc[other] if it.get("scene") == scene and it.get("strategy") != strategy})
        if clash:
            raise ValueError(
                f"{out_dir / PAIRS_JSON}: scene {scene!r} already has {other} pairs (strategies {clash}); a scene "
                f"belongs to one split so that test pairs come from scenes never trained on. Write it with "
                f"split {other!r}, or remove its {other} items first"
            )
        old_folders: set[str] = set(staged)
        for s in SPLITS:
            keep = []
            for it in doc[s]:
                if it.get("scene") == scene and it.get("strategy") == strategy:
                    folder = _item_folder(it)
                    if folder is not None:
                        old_folders.add(folder)
                else:
                    keep.append(it)
            doc[s] = keep
        doc[split] = doc[split] + items
        tag = uuid.uuid4().hex[:8]
        trash = [(f, f"{Path(f).parent}/.{Path(f).name}.old-{tag}") for f in sorted(old_folders) if (out_dir / f).exists()]
        moves = [(str(path.relative_to(out_dir)), final) for final, path in sorted(staged.items())]
        text = json.dumps(doc, indent=1)
        write_json_atomic(out_dir / JOURNAL, {"json_sha": _sha(text), "trash": trash, "moves": moves})
        _swap_in([(out_dir / s, out_dir / f) for s, f in moves], [(out_dir / f, out_dir / o) for f, o in trash])
        write_json_atomic(out_dir / PAIRS_JSON, doc)
        recover(out_dir)  # the new pairs.json is in: removes the old folders and the journal
    return out_dir / PAIRS_JSON


def replace_folder(staged: Path, final: Path) -> Path:
    """Replaces ``final`` by the finished folder ``staged`` (outputs without a pairs.json entry:
    the cycle-reconstruction stage-1 scene); see `temp_files.replace_folder`."""
    return temp_files.replace_folder(staged, final)
