"""Files on disk: images, atomic JSON, PLY headers, and the temporaries of writers that must never leave a
half-written output."""
from __future__ import annotations

from datamodules.lazy_exports import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "load_image": "datamodules.files.image_io",
    "save_image": "datamodules.files.image_io",
    "write_json_atomic": "datamodules.files.json_io",
    "write_text_atomic": "datamodules.files.json_io",
    "temp_path": "datamodules.files.temp_files",
    "remove_stale": "datamodules.files.temp_files",
    "read_ply_header": "datamodules.files.ply_header",
    "PlyFormatError": "datamodules.files.ply_header",
})
