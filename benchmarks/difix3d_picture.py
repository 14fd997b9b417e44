"""One picture of a held-out view for a Difix3D table: 3DGS | Difix3D | Difix3D+ | ground truth |
the post-render fix's change, labelled, from the checkpoints the table's rows wrote.

    python benchmarks/difix3d_picture.py --table outputs/demo/table.json --fixer outputs/demo/fixer/best.ckpt \
        --out outputs/demo/difix3d_view.png

The view is the held-out test view whose Difix3D render the post-render fix changes most (or
``--view NAME``). The change panel is |Difix3D+ - Difix3D| scaled so its largest value is white
(the gain is printed). Run from the directory the table was made in (the checkpoints name their
scene folder relative to it).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from callbacks.post_render_fix import NearestViewFix, training_views  # noqa: E402
from datamodules.files.image_io import save_image  # noqa: E402
from lightning_modules.difix.fixers.ready import ReadyFixer  # noqa: E402
from lightning_modules.scene.open_scene import open_scene, open_scene_data  # noqa: E402
from lightning_modules.scene.path_video import label_image, to_uint8  # noqa: E402


def row_checkpoint(table: dict, row: str, path: Path) -> str:
    ckpt = (table["rows"].get(row) or {}).get("checkpoint")
    if not ckpt or not Path(ckpt).is_file():
        raise SystemExit(f"{path}: row {row!r} names no checkpoint on disk ({ckpt!r}); make the table again")
    return ckpt


@torch.no_grad()
def picture(table_path: Path, fixer: str, out: Path, view: str | None = None, num_refs: int = 1) -> tuple[Path, str]:
    """Writes the picture; returns its path and the view's name."""
    table = json.loads(table_path.read_text())
    base = "Nerfacto" if "Nerfacto" in table["rows"] else "3DGS"
    plain, progressive = (open_scene(row_checkpoint(table, r, table_path), device="cpu") for r in (base, "Difix3D"))
    data = open_scene_data(row_checkpoint(table, "Difix3D", table_path))
    if data is None or len(data.test_cameras) == 0:
        raise SystemExit(f"{table_path}: the Difix3D row's scene has no held-out test views")
    fix = NearestViewFix(ReadyFixer(fixer), training_views(data), num_refs=num_refs)
    cams = data.test_cameras
    renders = progressive.render_views(cams)[0]
    fixed = torch.cat([fix(renders[i:i + 1], cams[[i]]) for i in range(len(cams))])
    change = (fixed - renders).abs()
    i = cams.names.index(view) if view is not None else int(change.flatten(1).mean(1).argmax())
    cam = cams[[i]]
    panels = [(base, plain.render_views(cam)[0][0]), ("Difix3D", renders[i]), ("Difix3D+", fixed[i]),
              ("ground truth", data.test_images[i])]
    gain = 1.0 / max(float(change[i].max()), 1e-6)
    panels.append((f"change x{gain:.0f}", (change[i] * gain).clamp(0, 1)))
    strip = np.concatenate([label_image(to_uint8(img.float().cpu()), text) for text, img in panels], axis=1)
    save_image(torch.from_numpy(strip).permute(2, 0, 1).float() / 255.0, out)
    return out, cams.names[i]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", type=Path, required=True, help="the table JSON of benchmarks/difix3d_table.py")
    parser.add_argument("--fixer", required=True, help="the fixer the table's Difix3D+ row used")
    parser.add_argument("--out", type=Path, required=True, help="the PNG to write")
    parser.add_argument("--view", default=None, help="test view name (default: the one the fix changes most)")
    parser.add_argument("--num-refs", type=int, default=1)
    args = parser.parse_args(argv)
    out, name = picture(args.table, args.fixer, args.out, args.view, args.num_refs)
    print(f"wrote {out} (held-out view {name}: 3DGS | Difix3D | Difix3D+ | ground truth | the fix's change)")


if __name__ == "__main__":
    main()
