"""The project's one atomic JSON writer (metrics.json, pairs.json, journals), on its atomic text writer.

Readers never see half a file: written through ``temp_files.write_atomic`` (a temp file in
the same folder, flushed to disk, moved into place; a failure names the file).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from datamodules.files.temp_files import write_atomic

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

    Raises:
        OSError: naming the file (a full disk: ENOSPC); an older file stays whole.
    """
    return write_text_atomic(path, json.dumps(doc, indent=indent))


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Writes ``text`` (UTF-8) through `write_atomic`: readers see the old file or the new one.

    Returns:
        The destination path.
    """
    return write_atomic(path, lambda stream: stream.write(text.encode("utf-8")))
