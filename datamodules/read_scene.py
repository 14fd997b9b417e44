"""One entry point for every scene format: pick the reader by what files exist."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Literal
from collections.abc import Sequence

from datamodules.scene_data import SceneData, SceneFormatError, SplitSpec, env_path

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
    raise SceneFormatError(
        f"{root}: cannot tell the scene format: expected transforms_train.json (blender), transforms.json "
        f"(nerfstudio), poses_bounds.npy (llff) or sparse/0/cameras.bin|txt (colmap)"
    )


def _reader(fmt: str) -> Callable[..., SceneData]:
    if fmt == "colmap":
        from datamodules.colmap import read_colmap

        return read_colmap
    if fmt == "blender":
        from datamodules.blender import read_blender

        return read_blender
    if fmt == "nerfstudio":
        from datamodules.nerfstudio import read_nerfstudio

        return read_nerfstudio
    if fmt == "llff":
        from datamodules.llff import read_llff

        return read_llff
    raise SceneFormatError(f"unknown scene format {fmt!r}; use 'auto' or one of {FORMATS}")


def read_scene(
    path: str | Path,
    format: str = "auto",
    downscale: int = 1,
    test_every: int = 8,
    split_file: str | None = None,
    train_every: int = 1,
    max_train_views: int | None = None,
    train_indices: Sequence[int] | None = None,
    normalize: bool = True,
    align_up: bool = False,
    train_group: str | None = None,
    group_by: Literal["camera_id", "pattern"] = "camera_id",
    group_pattern: str | None = None,
) -> SceneData:
    """Reads a scene in any supported format.

    Args:
        path: scene folder (or a nerfstudio ``transforms.json``); ``~`` and ``$VARS`` expand.
        format: "auto" (see :func:`detect_format`) or one of ``FORMATS``.
        downscale: integer image shrink factor (uses ``images_<k>`` folders when present).
        test_every: every n-th image is a test view (ignored when the format has a split).
        split_file: JSON ``{"train": [...], "test": [...]}`` overriding any other split.
        train_every: keep every n-th training view (sparse-view experiments).
        max_train_views: keep at most the first N training views.
        train_indices: explicit image indices to train on.
        normalize: centre and scale the world by the cameras (see scene_data).
        align_up: also rotate the mean camera up vector onto +z.
        train_group: train only on the images of this camera group (cross-reference data:
            fit on one camera of a rig, render the others); applied before ``train_every``
            and ``max_train_views``. See ``datamodules.camera_groups``.
        group_by: "camera_id" (COLMAP camera id, as a string) or "pattern".
        group_pattern: regular expression naming the group of each image path (group_by
            "pattern").

    Returns:
        SceneData in the normalised world.
    """
    path = env_path(path)
    if isinstance(downscale, bool) or not isinstance(downscale, int) or downscale < 1:
        raise SceneFormatError(f"{path}: downscale must be an integer >= 1, got {downscale!r}")
    fmt = detect_format(path) if format == "auto" else format
    if train_group is not None:
        return _read_group(path, fmt, train_group, group_by, group_pattern, downscale, test_every, split_file,
                           train_every, max_train_views, train_indices, normalize, align_up)
    spec = SplitSpec(
        test_every=test_every,
        split_file=split_file,
        train_every=train_every,
        max_train_views=max_train_views,
        train_indices=tuple(train_indices) if train_indices is not None else None,
    )
    return _reader(fmt)(path, downscale=downscale, split=spec, normalize=normalize, align_up=align_up)



def _read_group(
    path: Path,
    fmt: str,
    train_group: str,
    group_by: Literal["camera_id", "pattern"],
    group_pattern: str | None,
    downscale: int,
    test_every: int,
    split_file: str | None,
    train_every: int,
    max_train_views: int | None,
    train_indices: Sequence[int] | None,
    normalize: bool,
    align_up: bool,
) -> SceneData:
    """read_scene with the training views restricted to one camera group.

    Reads with every training view, keeps the group's, then thins by ``train_every`` and
    ``max_train_views`` as :func:`datamodules.scene_data.make_split` would. Normalisation
    still uses every camera, so the world does not depend on the chosen group.
    """
    from datamodules.camera_groups import select_group

    if train_indices is not None:
        raise SceneFormatError(f"{path}: train_group and train_indices both choose the training views; give one")
    if train_every < 1:
        raise SceneFormatError(f"train_every must be >= 1, got {train_every}")
    if max_train_views is not None and max_train_views < 1:
        raise SceneFormatError(f"max_train_views must be >= 1, got {max_train_views}")
    spec = SplitSpec(test_every=test_every, split_file=split_file)
    scene = _reader(fmt)(path, downscale=downscale, split=spec, normalize=normalize, align_up=align_up)
    train = select_group(scene, scene.split["train"], train_group, group_by, group_pattern)
    scene.split["train"] = train[::train_every][:max_train_views]
    return scene
