"""The project's temporary files and folders, and the removal of those left by killed writers.

Every writer that must never leave a half-written output (images, JSON, checkpoints, videos,
staged frame folders) writes to a hidden name beside the final one that carries its process id,
`.<name>.<pid>.<hex>.tmp` (files) or `.<name>.<pid>.<hex>.new` (folders), and renames it into
place when complete. A process killed in between leaves such a name behind; `remove_stale`
deletes the ones whose process is gone, so a later run cleans up after an earlier one without
touching a writer that is still running.
"""
from __future__ import annotations

import errno
import os
import re
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

MIN_FREE_BYTES = 1 << 20
"""Free space every output folder must have before a run starts: its small files (metrics,
configs, event-file headers) fit; a full disk is refused by name before any work."""

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


def write_atomic(path: str | os.PathLike, write: Callable[[BinaryIO], None], what: str = "") -> Path:
    """Writes a file through a hidden temporary beside it, flushed to disk, then ``os.replace``.

    Readers never see half a file, and whatever fails (a full disk, a kill) leaves the old file
    whole and no temporary behind. Every writer of the project's outputs goes through this.

    Args:
        path: the final file (parent folders are created).
        write: writes the content to the binary stream it is given.
        what: what the file is, for the message ("checkpoint", "point cloud", ...).

    Returns:
        ``path``.

    Raises:
        OSError: naming the file, the cause (its errno kept: ENOSPC for a full disk) and
            whether an older file is still there; anything ``write`` raises is reported so
            (torch's zip writer says "unexpected pos" for a full disk).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        with open(tmp, "xb") as stream:  # not mkstemp: its files are 0600, this respects the umask
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, path)
    except Exception as err:
        tmp.unlink(missing_ok=True)
        kept = f"the previous {path.name} is intact" if path.exists() else f"no earlier {path.name} was there"
        code = err.errno if isinstance(err, OSError) and err.errno else errno.EIO
        raise OSError(code, f"{what + ' ' if what else ''}{path} not written ({type(err).__name__}: {err}); "
                            f"{kept}") from err
    except BaseException:  # interrupted: no half-written file left behind
        tmp.unlink(missing_ok=True)
        raise
    return path


def check_free_space(folder: Path, need: int, what: str, purpose: str = "") -> None:
    """Raises when the filesystem of ``folder`` (or of its nearest existing parent) has less
    than ``need`` bytes free for this user.

    Args:
        folder: where the files will go.
        need: bytes needed.
        what: the option that names the folder, for the message ("output_dir", "--out", ...).
        purpose: what the bytes are for, for the message.

    Raises:
        OSError (ENOSPC) naming ``what``, the folder, the bytes free and needed.
    """
    folder = Path(folder)
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    st = os.statvfs(probe)
    free = st.f_bavail * st.f_frsize
    if free < need:
        raise OSError(errno.ENOSPC, f"{what} {folder}: {_size(free)} free, {_size(need)} needed"
                                    f"{' for ' + purpose if purpose else ''}; free some space or choose another "
                                    "folder")


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 1 << 20 else f"{n / 1024:.0f} KiB"


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
