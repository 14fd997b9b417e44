"""The list of scenes a dataset command runs over: a folder of scene folders, a glob, or a text file."""
from __future__ import annotations

import glob
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Scene", "list_scenes", "SceneListError"]

_GLOB = re.compile(r"[*?\[]")


class SceneListError(ValueError):
    """The scene list is missing, empty or ambiguous; the message names it."""


@dataclass(frozen=True)
class Scene:
    """One scene of a dataset.

    Attributes:
        id: its name in tables and result folders (the folder name: a DL3DV hash, a
            Nerfbusters capture name).
        path: the folder handed to the scene reader (``<folder>/<subdir>`` when a subdir is given).
    """

    id: str
    path: Path


def _folders(spec: str) -> tuple[list[Path], str]:
    path = Path(spec).expanduser()
    if _GLOB.search(spec):
        return sorted(Path(p) for p in glob.glob(str(path)) if Path(p).is_dir()), "glob"
    if path.is_file():
        lines = [ln.split("#", 1)[0].strip() for ln in path.read_text().splitlines()]
        # Relative lines are relative to the list file, so a list travels with its dataset.
        return [(path.parent / ln).resolve() if not Path(ln).is_absolute() else Path(ln) for ln in lines if ln], "list"
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")), "folder"
    raise SceneListError(f"{spec}: no such folder or list file, and not a glob pattern")


def list_scenes(spec: str, subdir: str | None = None, only: list[str] | None = None) -> list[Scene]:
    """The scenes of ``spec``, in a stable order.

    Args:
        spec: a folder whose subfolders are the scenes (hidden ones skipped), a glob pattern
            matching scene folders, or a text file with one scene folder per line (``#``
            comments; relative paths are relative to the file).
        subdir: a folder inside every scene that holds what the reader reads (DL3DV-Benchmark:
            ``nerfstudio``; DL3DV-10K-Sample: ``colmap``).
        only: keep just these scene ids (in the list's order).

    Raises:
        SceneListError: nothing matches, two scenes share a name, a listed folder or its
            subdir is missing, or ``only`` names a scene that is not in the list.
    """
    folders, kind = _folders(spec)
    if not folders:
        raise SceneListError(f"{spec}: the {kind} holds no scene folders")
    scenes = [Scene(f.name, f / subdir if subdir else f) for f in folders]
    missing = [str(s.path) for s in scenes if not s.path.is_dir()]
    if missing:
        raise SceneListError(f"{spec}: {len(missing)} scene folder(s) do not exist: {missing[:5]}")
    seen: dict[str, Path] = {}
    for s in scenes:
        if s.id in seen:
            raise SceneListError(f"{spec}: two scenes are named {s.id!r} ({seen[s.id]} and {s.path}); "
                                 "results are kept per name")
        seen[s.id] = s.path
    if only is not None:
        unknown = sorted(set(only) - set(seen))
        if unknown:
            raise SceneListError(f"{spec}: scenes {unknown} are not in the list")
        scenes = [s for s in scenes if s.id in set(only)]
    return scenes
