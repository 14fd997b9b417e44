"""The header of a PLY file, parsed and checked once for every .ply reader of the project.

Both readers (coloured points: ``datamodules.readers.point_ply``; Gaussians:
``lightning_modules.scene.gaussians.ply``) read one ``vertex`` element of scalar properties;
this parser turns its header into that element's layout or says, naming the file and quoting
the line, what is wrong with it (a count that is no number, a property named twice, a line
cut short), so a bad header never surfaces as a bare ``int()`` or numpy error. By hand: the
header is a few text lines, and plyfile is not in the stack.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["PlyFormatError", "PlyHeader", "read_ply_header", "PLY_TYPES"]

# PLY scalar types (both spellings of the spec) -> numpy types without byte order.
PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}
FORMATS = ("ascii", "binary_little_endian", "binary_big_endian")


class PlyFormatError(ValueError):
    """A PLY file cannot be read; the message names the file and the problem."""


@dataclass(frozen=True)
class PlyHeader:
    """The vertex element of a PLY file.

    Attributes:
        path: the file.
        format: "ascii", "binary_little_endian" or "binary_big_endian".
        count: the number of vertices.
        properties: (name, PLY type) of each vertex property, in file order, names unique.
        comments: the ``comment`` lines' text.
        data_offset: the byte where the data begins (after ``end_header``).
    """

    path: Path
    format: str
    count: int
    properties: tuple[tuple[str, str], ...]
    comments: tuple[str, ...]
    data_offset: int

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.properties]

    def dtype(self) -> np.dtype:
        """The numpy record of one vertex in a binary file (its byte order)."""
        order = ">" if self.format == "binary_big_endian" else "<"
        return np.dtype([(name, order + PLY_TYPES[kind]) for name, kind in self.properties])


def read_ply_header(path: str | os.PathLike) -> PlyHeader:
    """Reads and checks the header of ``path`` (only the header is read).

    Elements other than ``vertex`` may come before it only when empty (the data is read from
    ``data_offset`` on), and may follow it.

    Raises:
        PlyFormatError: naming the file: no ``ply`` magic or ``end_header``, a format line, an
            element or property line that is cut short or malformed (quoted), an unknown
            format or property type, a list property on the vertices, a vertex property named
            twice, a non-empty element before the vertices, no vertex element.
    """
    path = Path(path)
    fmt: str | None = None
    count: int | None = None
    element: str | None = None
    props: list[tuple[str, str]] = []
    comments: list[str] = []
    with open(path, "rb") as f:
        if f.readline().strip() != b"ply":
            raise PlyFormatError(f"{path}: not a PLY file (no 'ply' magic line)")
        while True:
            raw = f.readline()
            if not raw:
                raise PlyFormatError(f"{path}: not a PLY file (no 'end_header' line)")
            line = raw.decode("ascii", errors="replace").strip()
            words = line.split()
            if not words or words[0] == "obj_info":
                continue
            key = words[0]
            if key == "end_header":
                break
            if key == "comment":
                comments.append(line[len("comment"):].strip())
            elif key == "format":
                if len(words) != 3 or words[1] not in FORMATS:
                    raise PlyFormatError(f"{path}: the header line '{line}' is not 'format <{'|'.join(FORMATS)}> 1.0'")
                fmt = words[1]
            elif key == "element":
                element, n = _element(path, line, words)
                if element == "vertex":
                    count = n
                elif count is None and n > 0:
                    raise PlyFormatError(f"{path}: an element '{element}' of {n} comes before the vertices; only "
                                         "vertices first are read")
            elif key == "property" and element == "vertex":
                props.append(_property(path, line, words, props))
        offset = f.tell()
    if fmt is None:
        raise PlyFormatError(f"{path}: the header has no 'format' line")
    if count is None:
        raise PlyFormatError(f"{path}: the header has no 'element vertex <count>' line")
    return PlyHeader(path, fmt, count, tuple(props), tuple(comments), offset)


def _element(path: Path, line: str, words: list[str]) -> tuple[str, int]:
    if len(words) != 3 or not words[2].isdigit():
        raise PlyFormatError(f"{path}: the header line '{line}' is not 'element <name> <count>' with a count of "
                             "0 or more")
    return words[1], int(words[2])


def _property(path: Path, line: str, words: list[str], props: list[tuple[str, str]]) -> tuple[str, str]:
    if len(words) >= 2 and words[1] == "list":
        raise PlyFormatError(f"{path}: the vertex property '{words[-1]}' is a list ('{line}'); only scalar "
                             "vertex properties are read")
    if len(words) != 3:
        raise PlyFormatError(f"{path}: the header line '{line}' is not 'property <type> <name>'")
    kind, name = words[1], words[2]
    if kind not in PLY_TYPES:
        raise PlyFormatError(f"{path}: the vertex property '{name}' has the unknown type '{kind}' (PLY types: "
                             f"{', '.join(PLY_TYPES)})")
    if any(name == have for have, _ in props):
        raise PlyFormatError(f"{path}: the header names the vertex property '{name}' twice; which one holds the "
                             "values is undefined")
    return name, kind
