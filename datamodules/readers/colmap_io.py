"""COLMAP model files: binary and text readers and writers, and the model folder lookup.

Formats as COLMAP's ``src/colmap/scene/reconstruction_io.cc`` writes them; a truncated or
unparsable file raises ``SceneFormatError`` naming the file and the byte or line.
"""
from __future__ import annotations

import struct
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from datamodules.readers.colmap_types import CAMERA_MODELS, MODEL_IDS, ColmapCamera, ColmapImage, ColmapPoints
from datamodules.readers.scene_data import SceneFormatError

# ============================================================================ binary
class _Reader:
    """Sequential little-endian reader that reports truncation with the file and byte."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data = path.read_bytes()
        self.pos = 0

    def read(self, fmt: str, what: str) -> tuple:
        size = struct.calcsize("<" + fmt)
        if self.pos + size > len(self.data):
            raise SceneFormatError(
                f"{self.path}: file truncated at byte {len(self.data)} (reading {what} at byte {self.pos} "
                f"needs {size} bytes)"
            )
        try:
            out = struct.unpack_from("<" + fmt, self.data, self.pos)
        except struct.error as error:  # pragma: no cover - guarded by the size check
            raise SceneFormatError(f"{self.path}: file truncated at byte {self.pos} ({error})") from error
        self.pos += size
        return out

    def array(self, dtype: str, count: int, what: str) -> np.ndarray:
        dt = np.dtype(dtype).newbyteorder("<")
        size = dt.itemsize * count
        if self.pos + size > len(self.data):
            raise SceneFormatError(
                f"{self.path}: file truncated at byte {len(self.data)} (reading {what} at byte {self.pos} "
                f"needs {size} bytes)"
            )
        out = np.frombuffer(self.data, dtype=dt, count=count, offset=self.pos).copy()
        self.pos += size
        return out

    def cstring(self, what: str) -> str:
        end = self.data.find(b"\x00", self.pos)
        if end < 0:
            raise SceneFormatError(f"{self.path}: file truncated at byte {len(self.data)} (unterminated {what})")
        text = self.data[self.pos : end].decode("utf-8", errors="replace")
        self.pos = end + 1
        return text


def read_cameras_binary(path: Path) -> dict[int, ColmapCamera]:
    r = _Reader(path)
    (n,) = r.read("Q", "camera count")
    cams = {}
    for i in range(n):
        cam_id, model_id, width, height = r.read("iiQQ", f"camera {i} header")
        if model_id not in CAMERA_MODELS:
            raise SceneFormatError(
                f"{path}: camera {cam_id} has unknown camera model id {model_id} (known ids 0-{max(CAMERA_MODELS)})"
            )
        name, n_params = CAMERA_MODELS[model_id]
        params = list(r.read("d" * n_params, f"camera {cam_id} parameters"))
        cams[cam_id] = ColmapCamera(cam_id, name, int(width), int(height), params)
    return cams


def read_images_binary(path: Path) -> dict[int, ColmapImage]:
    r = _Reader(path)
    (n,) = r.read("Q", "image count")
    images = {}
    for i in range(n):
        vals = r.read("idddddddi", f"image {i} header")
        name = r.cstring(f"name of image {vals[0]}")
        (m,) = r.read("Q", f"point count of image {name!r}")
        obs = r.array(
            np.dtype([("x", "<f8"), ("y", "<f8"), ("id", "<i8")]), m, f"2D points of image {name!r}"
        )
        images[vals[0]] = ColmapImage(
            vals[0],
            np.array(vals[1:5]),
            np.array(vals[5:8]),
            vals[8],
            name,
            np.stack([obs["x"], obs["y"]], axis=-1),
            obs["id"].astype(np.int64),
        )
    return images


def read_points3d_binary(path: Path) -> ColmapPoints:
    r = _Reader(path)
    (n,) = r.read("Q", "point count")
    ids = np.zeros(n, np.int64)
    xyz = np.zeros((n, 3))
    rgb = np.zeros((n, 3), np.uint8)
    err = np.zeros(n)
    tracks = []
    for i in range(n):
        vals = r.read("QdddBBBd", f"point {i}")
        ids[i], xyz[i], rgb[i], err[i] = vals[0], vals[1:4], vals[4:7], vals[7]
        (length,) = r.read("Q", f"track length of point {vals[0]}")
        tracks.append(r.array("<i4", 2 * length, f"track of point {vals[0]}").reshape(-1, 2).astype(np.int64))
    return ColmapPoints(ids, xyz, rgb, err, tracks)


def write_colmap_binary(
    folder: str | Path,
    cameras: Iterable[ColmapCamera],
    images: Iterable[ColmapImage],
    points: ColmapPoints | None = None,
) -> Path:
    """Writes ``cameras.bin``, ``images.bin``, ``points3D.bin`` (COLMAP's layout) to ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cameras, images = list(cameras), list(images)
    out = bytearray(struct.pack("<Q", len(cameras)))
    for c in cameras:
        if c.model not in MODEL_IDS:
            raise ValueError(f"unknown COLMAP camera model {c.model!r}")
        out += struct.pack("<iiQQ", c.id, MODEL_IDS[c.model], c.width, c.height)
        out += struct.pack("<" + "d" * len(c.params), *c.params)
    (folder / "cameras.bin").write_bytes(bytes(out))

    out = bytearray(struct.pack("<Q", len(images)))
    for im in images:
        out += struct.pack("<idddddddi", im.id, *map(float, im.qvec), *map(float, im.tvec), im.camera_id)
        out += im.name.encode("utf-8") + b"\x00"
        xys = np.asarray(im.xys, np.float64).reshape(-1, 2)
        ids = np.asarray(im.point3d_ids, np.int64).reshape(-1)
        rec = np.zeros(len(xys), dtype=[("x", "<f8"), ("y", "<f8"), ("id", "<i8")])
        rec["x"], rec["y"], rec["id"] = xys[:, 0], xys[:, 1], ids
        out += struct.pack("<Q", len(xys)) + rec.tobytes()
    (folder / "images.bin").write_bytes(bytes(out))

    pts = points if points is not None else ColmapPoints.from_arrays(np.zeros((0, 3)), np.zeros((0, 3)))
    out = bytearray(struct.pack("<Q", len(pts.ids)))
    for i in range(len(pts.ids)):
        out += struct.pack("<QdddBBBd", int(pts.ids[i]), *map(float, pts.xyz[i]), *map(int, pts.rgb[i]), float(pts.error[i]))
        track = np.asarray(pts.tracks[i], np.int32).reshape(-1, 2)
        out += struct.pack("<Q", len(track)) + track.astype("<i4").tobytes()
    (folder / "points3D.bin").write_bytes(bytes(out))
    return folder


# ============================================================================ text
def _data_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of every line, comments removed but blank lines kept."""
    return [(i + 1, line.strip()) for i, line in enumerate(path.read_text().splitlines()) if not line.lstrip().startswith("#")]


def _parse(path: Path, lineno: int, what: str, fn, text):  # noqa: ANN001 - tiny local helper
    try:
        return fn(text)
    except (ValueError, IndexError) as error:
        raise SceneFormatError(f"{path}: line {lineno}: cannot parse {what} ({error})") from error


def read_cameras_text(path: Path) -> dict[int, ColmapCamera]:
    cams = {}
    for lineno, line in _data_lines(path):
        if not line:
            continue
        parts = line.split()
        if len(parts) < 4:
            raise SceneFormatError(f"{path}: line {lineno}: expected 'CAMERA_ID MODEL WIDTH HEIGHT PARAMS...'")
        model = parts[1]
        if model not in MODEL_IDS:
            raise SceneFormatError(f"{path}: line {lineno}: unknown camera model {model!r}")
        cam_id = _parse(path, lineno, "camera id", int, parts[0])
        params = _parse(path, lineno, "camera parameters", lambda p: [float(x) for x in p], parts[4:])
        if len(params) != CAMERA_MODELS[MODEL_IDS[model]][1]:
            raise SceneFormatError(
                f"{path}: line {lineno}: camera model {model} takes {CAMERA_MODELS[MODEL_IDS[model]][1]} "
                f"parameters, got {len(params)}"
            )
        cams[cam_id] = ColmapCamera(
            cam_id, model, _parse(path, lineno, "width", int, parts[2]), _parse(path, lineno, "height", int, parts[3]), params
        )
    return cams


def read_images_text(path: Path) -> dict[int, ColmapImage]:
    lines = _data_lines(path)
    images = {}
    i = 0
    while i < len(lines):
        lineno, line = lines[i]
        if not line:
            i += 1
            continue
        parts = line.split()
        if len(parts) < 10:
            raise SceneFormatError(
                f"{path}: line {lineno}: expected 'IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME', got {line[:80]!r}"
            )
        vals = _parse(path, lineno, "image pose", lambda p: [float(x) for x in p], parts[1:8])
        image_id = _parse(path, lineno, "image id", int, parts[0])
        cam_id = _parse(path, lineno, "camera id", int, parts[8])
        name = " ".join(parts[9:])
        # The observation line always follows (possibly empty).
        obs_text = lines[i + 1][1] if i + 1 < len(lines) else ""
        obs = _parse(path, lineno + 1, "2D points", lambda s: np.array(s.split(), dtype=np.float64), obs_text)
        if obs.size % 3:
            raise SceneFormatError(f"{path}: line {lineno + 1}: 2D points must come in (X, Y, POINT3D_ID) triples")
        obs = obs.reshape(-1, 3)
        images[image_id] = ColmapImage(image_id, np.array(vals[:4]), np.array(vals[4:]), cam_id, name, obs[:, :2], obs[:, 2].astype(np.int64))
        i += 2
    return images


def read_points3d_text(path: Path) -> ColmapPoints:
    ids, xyz, rgb, err, tracks = [], [], [], [], []
    for lineno, line in _data_lines(path):
        if not line:
            continue
        parts = line.split()
        if len(parts) < 8 or (len(parts) - 8) % 2:
            raise SceneFormatError(f"{path}: line {lineno}: expected 'POINT3D_ID X Y Z R G B ERROR TRACK[]'")
        ids.append(_parse(path, lineno, "point id", int, parts[0]))
        xyz.append(_parse(path, lineno, "point position", lambda p: [float(x) for x in p], parts[1:4]))
        rgb.append(_parse(path, lineno, "point colour", lambda p: [int(x) for x in p], parts[4:7]))
        err.append(_parse(path, lineno, "point error", float, parts[7]))
        tracks.append(np.array(parts[8:], dtype=np.int64).reshape(-1, 2))
    return ColmapPoints(
        np.array(ids, np.int64),
        np.array(xyz, np.float64).reshape(-1, 3),
        np.array(rgb, np.uint8).reshape(-1, 3),
        np.array(err, np.float64),
        tracks,
    )


def write_colmap_text(
    folder: str | Path,
    cameras: Iterable[ColmapCamera],
    images: Iterable[ColmapImage],
    points: ColmapPoints | None = None,
) -> Path:
    """Writes ``cameras.txt``, ``images.txt``, ``points3D.txt`` (COLMAP's layout) to ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["# Camera list with one line of data per camera:", "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]"]
    for c in cameras:
        lines.append(" ".join([str(c.id), c.model, str(c.width), str(c.height), *(repr(float(p)) for p in c.params)]))
    (folder / "cameras.txt").write_text("\n".join(lines) + "\n")
    lines = [
        "# Image list with two lines of data per image:",
        "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME",
        "#   POINTS2D[] as (X, Y, POINT3D_ID)",
    ]
    for im in images:
        lines.append(" ".join([str(im.id), *(repr(float(v)) for v in im.qvec), *(repr(float(v)) for v in im.tvec), str(im.camera_id), im.name]))
        xys = np.asarray(im.xys, np.float64).reshape(-1, 2)
        ids = np.asarray(im.point3d_ids, np.int64).reshape(-1)
        lines.append(" ".join(f"{x!r} {y!r} {int(p)}" for (x, y), p in zip(xys.tolist(), ids.tolist())))
    (folder / "images.txt").write_text("\n".join(lines) + "\n")
    lines = ["# 3D point list with one line of data per point:", "#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[]"]
    if points is not None:
        for i in range(len(points.ids)):
            track = " ".join(str(int(v)) for v in np.asarray(points.tracks[i]).reshape(-1))
            lines.append(
                " ".join([str(int(points.ids[i])), *(repr(float(v)) for v in points.xyz[i]), *(str(int(v)) for v in points.rgb[i]), repr(float(points.error[i])), track]).rstrip()
            )
    (folder / "points3D.txt").write_text("\n".join(lines) + "\n")
    return folder


# ============================================================================ model folder
def find_colmap_model(root: str | Path) -> Path:
    """The folder holding the sparse model: ``sparse/0``, ``sparse`` or ``root`` itself."""
    root = Path(root)
    for folder in (root / "sparse" / "0", root / "sparse", root):
        if any((folder / f"cameras{ext}").is_file() for ext in (".bin", ".txt")):
            return folder
    raise SceneFormatError(f"{root}: no COLMAP model (cameras.bin/.txt) in sparse/0/, sparse/ or the folder itself")


def read_colmap_model(folder: str | Path) -> tuple[dict[int, ColmapCamera], dict[int, ColmapImage], ColmapPoints | None]:
    """Reads a COLMAP model folder, binary preferred over text.

    Returns:
        cameras by id, images by id, points (None when points3D is absent).
    """
    folder = Path(folder)
    ext = ".bin" if (folder / "cameras.bin").is_file() else ".txt"
    for name in ("cameras", "images"):
        if not (folder / f"{name}{ext}").is_file():
            raise SceneFormatError(f"{folder / (name + ext)}: COLMAP model file is missing")
    if ext == ".bin":
        cameras = read_cameras_binary(folder / "cameras.bin")
        images = read_images_binary(folder / "images.bin")
        points = read_points3d_binary(folder / "points3D.bin") if (folder / "points3D.bin").is_file() else None
    else:
        cameras = read_cameras_text(folder / "cameras.txt")
        images = read_images_text(folder / "images.txt")
        points = read_points3d_text(folder / "points3D.txt") if (folder / "points3D.txt").is_file() else None
    return cameras, images, points
