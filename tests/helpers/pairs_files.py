"""Training-pair files for fixer tests.

`write_fixer_pairs_json` writes nv-tlabs/Fixer's data format (its README: {"train": {id: {"image",
"target_image", "prompt"}}, "test": {...}}, no reference view), which PairDataModule reads as it
is (`source: json`, `num_refs: 0`).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from datamodules.files.image_io import save_image


def write_fixer_pairs_json(root: Path, n: int = 3, size: tuple[int, int] = (32, 32), seed: int = 0) -> Path:
    """n (render, clean) PNG pairs under root/images and root/pairs.json (relative paths); returns the JSON."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    items = {}
    for i in range(n):
        clean = torch.rand(3, *size, generator=g)
        save_image(clean, root / "images" / f"clean_{i}.png")
        save_image((clean + 0.2 * torch.randn(3, *size, generator=g)).clamp(0, 1), root / "images" / f"render_{i}.png")
        items[f"{i:06d}"] = {"image": f"images/render_{i}.png", "target_image": f"images/clean_{i}.png",
                             "prompt": "remove degradation"}
    path = root / "pairs.json"
    path.write_text(json.dumps({"train": items, "test": items}))
    return path
