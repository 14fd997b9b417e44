"""The project's temporary files and folders, and the removal of those left by killed writers.

Every writer that must never leave a half-written output (images, JSON, checkpoints, videos,
staged frame folders) writes to a hidden name beside the final one that carries its process id,
`.<name>.<pid>.<hex>.tmp` (files) or `.<name>.<pid>.<hex>.new` (folders), and renames it into
place when complete. A process killed in between leaves such a name behind; `remove_stale`
deletes the ones whose process is gone, so a later run cleans up after an earlier one without
touching a writer that is still running.
"""
from __future__ import annotations

import os
import re
import shutil
import uuid
from pathlib import Path

STALE = re.compile(r"^\..+\.(\d+)\.[0-9a-f]{8}\.(tmp|new)(\.[A-Za-z0-9]+)?$")


def temp_path(path: Path, kind: str = "tmp", keep_suffix: bool = False) -> Path:
    """A hidden sibling of `path` for this process: `.<name>.<pid>.<hex>.<kind>`.

    Args:
        path: the final path.
        kind: "tmp" (a file) or "new" (a staged folder).
        keep_suffix: end with the final suffix again (`....tmp.mp4`), for writers that pick
            their format by the file name (ffmpeg).
    """
    if kind not in ("tmp", "new"):
        raise ValueError(f"temp_path: kind must be 'tmp' or 'new', got {kind!r}")
    tail = path.suffix if keep_suffix else ""
    return path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.{kind}{tail}"


def pid_alive(pid: int) -> bool:
    """True when a process with this id exists (on this machine)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale(folder: Path) -> list[Path]:
    """Removes the temporary files / folders in `folder` whose writer process is gone.

    Returns:
        The removed paths.
    """
    removed = []
    if not folder.is_dir():
        return removed
    for path in folder.iterdir():
        match = STALE.match(path.name)
        if match is None or pid_alive(int(match.group(1))):
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def check_writable(folder: Path, what: str) -> None:
    """Creates `folder` if needed and writes (then removes) a probe file in it.

    Raises:
        OSError naming `what` and the folder, before any work that would write there.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = temp_path(folder / "probe")
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise OSError(err.errno, f"{what} {folder} cannot be written ({err.strerror or err}); choose another "
                                 "folder or fix its permissions") from err


def replace_folder(staged: Path, final: Path) -> Path:
    """Puts the complete folder ``staged`` in the place of ``final`` (the old one removed after).

    A crash between the two renames leaves no ``final`` (and the old one under a temporary
    name that a later `remove_stale` clears), never a half-written one.
    """
    old = temp_path(final, "new") if final.exists() else None
    if old is not None:
        os.rename(final, old)
    os.rename(staged, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return final
