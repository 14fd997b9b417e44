"""The project's one atomic JSON writer (metrics.json, pairs.json, journals), on its atomic text writer.

Readers never see half a file: the text goes to a temp file in the same folder, is flushed
to disk, then moved into place with ``os.replace``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from datamodules.files.temp_files import temp_path

__all__ = ["write_json_atomic", "write_text_atomic", "umask_mode"]


def umask_mode() -> int:
    """0o666 minus the process umask: the mode ``open()`` gives a new file."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def write_json_atomic(path: str | os.PathLike, doc: Any, indent: int = 1) -> Path:
    """Writes ``doc`` as JSON through a temp file + ``os.replace`` (parents created).

    Args:
        path: destination file.
        doc: JSON-serialisable document.
        indent: JSON indentation.

    Returns:
        The destination path.
    """
    return write_text_atomic(path, json.dumps(doc, indent=indent))


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Writes ``text`` through a temp file + ``os.replace`` (parents created): readers see the
    old file or the new one, never half of one.

    Returns:
        The destination path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # open(..., "x") rather than mkstemp: mkstemp files are 0600, this respects the umask.
    tmp = temp_path(path)
    try:
        with open(tmp, "x") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
