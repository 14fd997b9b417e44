"""Paper Table 2 for one scene: 3DGS (or Nerfacto) vs Difix3D (progressive) vs Difix3D+ (+ post-render fix).

    python benchmarks/difix3d_table.py --config configs/demo/difix3d.yaml        # 3DGS rows
    python benchmarks/difix3d_table.py --config configs/demo/difix3d_nerf.yaml   # Nerfacto rows
    python benchmarks/difix3d_table.py --config configs/scene.yaml -- --trainer.max_steps=30000

The config must hold a ProgressiveFixCallback. The first row ("3DGS" for a Gaussian scene
module, "Nerfacto" for a NeRF) fits the same config with the callback removed; "Difix3D" fits
with it and is tested on plain renders; "Difix3D+" tests the same model with the post-render
fix. `--rows control` adds "No-op fix": the progressive schedule with the fixer spec
"identity", so the novel views go into training as the model's own renders. Difix3D minus
that row is what the fixer contributes; the control minus the first row is what the schedule
alone gives (extra views, their weights). Same seed and steps for every fit. Everything after
`--` is passed to the CLI (overrides). Prints the table and writes it as JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datamodules.files.json_io import write_json_atomic  # noqa: E402
from difix3d.table_rows import CONTROL, ROW_ORDER, table_rows  # noqa: E402, F401 (CONTROL: the row name, for callers)

METRICS = ("psnr", "ssim", "lpips", "fid")


def print_table(table: dict[str, dict]) -> None:
    header = f"{'Method':<10} " + " ".join(f"{m.upper():>7}" for m in METRICS) + f" {'fit s':>7} {'test s':>7} {'#fix':>5}"
    print(header)
    print("-" * len(header))
    for name, row in table.items():
        vals = " ".join(f"{row['metrics'][m]:>7.4f}" if m in row["metrics"] else f"{'n/a':>7}" for m in METRICS)
        print(f"{name:<10} {vals} {row['fit_s']:>7.1f} {row['test_s']:>7.1f} {row['fixes']:>5}")


def merge_rows(out: Path, config: str, rows: dict[str, dict]) -> dict[str, dict]:
    """Adds `rows` to the table already in `out` (written by a --rows run of the same config)."""
    table: dict[str, dict] = {}
    if out.exists():
        old = json.loads(out.read_text())
        if old.get("config") != config:
            raise SystemExit(f"{out}: holds a table for {old.get('config')!r}, not {config!r}; "
                             "pass another --out or delete it")
        table = old["rows"]
    table.update(rows)
    return {name: table[name] for name in sorted(table, key=lambda n: ROW_ORDER.index(n) if n in ROW_ORDER else len(ROW_ORDER))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--out", default="outputs/difix3d_table.json")
    parser.add_argument("--rows", choices=["all", "plain", "progressive", "control"], default="all",
                        help="fit only the plain row, only Difix3D / Difix3D+, or only the no-op-fix "
                             "control, and merge them into --out (two processes can then fit the rows "
                             "side by side; make demo does)")
    args, rest = parser.parse_known_args()
    overrides = [a for a in rest if a != "--"]
    out = Path(args.out)

    chosen = {"all": ["plain", "progressive"]}.get(args.rows, [args.rows])
    rows = table_rows(args.config, overrides, chosen)
    for row in rows.values():
        row.pop("per_view")  # metrics.json beside each row's checkpoint keeps them
    table = rows if args.rows == "all" else merge_rows(out, args.config, rows)
    print_table(table)
    write_json_atomic(out, {"config": args.config, "rows": table})  # a killed run keeps the old table
    print(f"written {out}")


if __name__ == "__main__":
    main()
