"""Images grouped by the camera that took them (multi-camera rigs), for cross-reference data.

Two ways to name a group:

* ``"camera_id"``: the COLMAP ``camera_id`` of each image (images sharing one sensor's
  intrinsics), as a string ("1", "2", ...). Only COLMAP scenes carry it.
* ``"pattern"``: a regular expression searched in each image's path relative to the scene
  folder (e.g. ``images/front/0001.jpg``; the name when the path is outside the folder).
  The group is the first capture group, or the whole match when the pattern has none;
  images it does not match belong to no group. ``(front|left|right)`` or ``^images/(cam\\d+)/``
  suit rig folders, ``_(cam\\d)_`` file-name tags.
"""
from __future__ import annotations

import re
from typing import Literal

from datamodules.readers.scene_data import SceneData, SceneFormatError

__all__ = ["GroupBy", "image_groups", "select_group"]

GroupBy = Literal["camera_id", "pattern"]


def image_groups(scene: SceneData, group_by: GroupBy, pattern: str | None = None) -> list[str | None]:
    """The group label of each of the scene's N images (None: in no group).

    Raises:
        SceneFormatError: ``camera_id`` on a format without camera ids, or a missing or
            invalid pattern; the message names the scene folder.
    """
    if group_by == "camera_id":
        if scene.camera_ids is None:
            raise SceneFormatError(
                f"{scene.root}: group_by 'camera_id' needs camera ids, which only COLMAP scenes carry "
                f"(this is a {scene.format or 'non-COLMAP'} scene); use group_by 'pattern' with group_pattern"
            )
        return [str(c) for c in scene.camera_ids]
    if group_by != "pattern":
        raise SceneFormatError(f"{scene.root}: group_by must be 'camera_id' or 'pattern', got {group_by!r}")
    if not pattern:
        raise SceneFormatError(f"{scene.root}: group_by 'pattern' needs group_pattern (a regular expression)")
    try:
        regex = re.compile(pattern)
    except re.error as error:
        raise SceneFormatError(f"{scene.root}: group_pattern {pattern!r} is not a valid regular expression ({error})") from error
    labels: list[str | None] = []
    for path, name in zip(scene.image_paths, scene.cameras.names):
        try:
            text = path.relative_to(scene.root).as_posix()
        except ValueError:
            text = name
        match = regex.search(text)
        labels.append(None if match is None else (match.group(1) if regex.groups else match.group(0)))
    return labels


def select_group(scene: SceneData, indices: list[int], group: str, group_by: GroupBy, pattern: str | None = None) -> list[int]:
    """The subset of ``indices`` whose images belong to ``group`` (order kept).

    Raises:
        SceneFormatError: no image of ``indices`` is in ``group``; the message lists the
            groups that exist.
    """
    labels = image_groups(scene, group_by, pattern)
    chosen = [i for i in indices if labels[i] == group]
    if not chosen:
        found = sorted({labels[i] for i in indices if labels[i] is not None})
        raise SceneFormatError(
            f"{scene.root}: no training image is in group {group!r} (group_by {group_by!r}"
            + (f", pattern {pattern!r}" if group_by == "pattern" else "")
            + f"); groups found: {found or 'none'}"
        )
    return chosen
