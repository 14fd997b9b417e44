"""One entry point for every scene format: pick the reader by what files exist."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

from datamodules.readers.finish import finish_scene
from datamodules.readers.scene_data import RawScene, ReadOptions, SceneData, SceneFormatError, env_path

__all__ = ["read_scene", "detect_format", "FORMATS"]

FORMATS = ("colmap", "blender", "nerfstudio", "llff")


def detect_format(path: str | Path) -> str:
    """Guesses a scene folder's format from its files.

    Order: ``transforms_train.json`` -> blender; ``transforms.json`` (or a .json path) ->
    nerfstudio; ``poses_bounds.npy`` -> llff; a COLMAP model in ``sparse/0``, ``sparse`` or the
    folder -> colmap.

    Raises:
        SceneFormatError: the folder is missing or matches no format (the message lists what
            was looked for).
    """
    root = Path(path)
    if root.is_file() and root.suffix == ".json":
        return "nerfstudio"
    if not root.is_dir():
        raise SceneFormatError(f"{root}: scene folder not found")
    if (root / "transforms_train.json").is_file():
        return "blender"
    if (root / "transforms.json").is_file():
        return "nerfstudio"
    if (root / "poses_bounds.npy").is_file():
        return "llff"
    for folder in (root / "sparse" / "0", root / "sparse", root):
        if any((folder / f"cameras{ext}").is_file() for ext in (".bin", ".txt")):
            return "colmap"
    # Downloads that nest the scene one level down (DL3DV-Benchmark: <hash>/nerfstudio/ and
    # <hash>/gaussian_splat/; DL3DV-10K-Sample: <hash>/colmap/): name the folders to pass.
    nested = sorted(p.parent.name for p in root.glob("*/transforms*.json")) + sorted(
        p.parents[2].name if p.parent.name == "0" else p.parents[1].name for p in root.glob("*/sparse/**/cameras.*"))
    hint = f"; these subfolders hold a scene: {sorted(set(nested))} (pass {root}/<subfolder>)" if nested else ""
    raise SceneFormatError(
        f"{root}: cannot tell the scene format: expected transforms_train.json (blender), transforms.json "
        f"(nerfstudio), poses_bounds.npy (llff) or sparse/0/cameras.bin|txt (colmap){hint}"
    )


def _reader(fmt: str) -> Callable[[Path, int], RawScene]:
    if fmt == "colmap":
        from datamodules.readers.colmap import read_colmap

        return read_colmap
    if fmt == "blender":
        from datamodules.readers.blender import read_blender

        return read_blender
    if fmt == "nerfstudio":
        from datamodules.readers.nerfstudio import read_nerfstudio

        return read_nerfstudio
    if fmt == "llff":
        from datamodules.readers.llff import read_llff

        return read_llff
    raise SceneFormatError(f"unknown scene format {fmt!r}; use 'auto' or one of {FORMATS}")


def read_scene(path: str | Path, options: ReadOptions | None = None, **fields: Any) -> SceneData:
    """Reads a scene in any supported format: the format's reader, then the shared steps.

    Args:
        path: scene folder (or a nerfstudio ``transforms.json``); ``~`` and ``$VARS`` expand.
        options: how to read it (format, downscale, split, normalisation, camera group).
        **fields: `ReadOptions` fields replacing those of `options` (e.g. ``normalize=False``).

    Returns:
        SceneData in the normalised world.

    Raises:
        SceneFormatError naming the file and the problem.
    """
    options = dataclasses.replace(options or ReadOptions(), **fields) if fields else options or ReadOptions()
    path = env_path(path)
    downscale = options.downscale
    if isinstance(downscale, bool) or not isinstance(downscale, int) or downscale < 1:
        raise SceneFormatError(f"{path}: downscale must be an integer >= 1, got {downscale!r}")
    fmt = detect_format(path) if options.format == "auto" else options.format
    return finish_scene(_reader(fmt)(path, downscale), options)
