"""A dataset's table from its scenes' results: per scene, and over the dataset.

Two summaries per row, side by side:

* ``all_views``: every test image of the dataset together, as the paper reports its tables:
  the mean of the per-image PSNR / SSIM / LPIPS / cc-PSNR over all images (scenes weighted by
  their number of test views), and FID of all renders against all targets. FID is not a mean
  of per-image values: the FIDs of scenes do not average to the dataset's FID (with a handful
  of views per scene they are not even meaningful).
* ``over_scenes``: the mean and standard deviation over scenes of each scene's own means (how
  much the result varies from scene to scene).
"""
from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

from torch import nn

from difix3d.table_rows import ROW_ORDER

__all__ = ["build_table", "markdown_table", "METRICS"]

# metric key -> column title
METRICS = {"psnr": "PSNR", "ssim": "SSIM", "lpips": "LPIPS", "lpips_alex": "LPIPS (Alex)", "lpips_vgg": "LPIPS (VGG)",
           "cc_psnr": "cc-PSNR"}


def _mean(values: list[float]) -> float:
    return float("inf") if any(math.isinf(v) for v in values) else float(sum(values) / len(values))


def _view_files(result: dict[str, Any], row: dict[str, Any]) -> tuple[list[Path], list[Path]] | None:
    """(targets, renders) of a scene's row, or None when its views were not kept."""
    if not row.get("views"):
        return None
    views = Path(row["views"])
    names = [v["name"] for v in row["per_view"]]
    targets = [views / "target" / f"{n}.png" for n in names]
    renders = [views / row["render_folder"] / f"{n}.png" for n in names]
    if not all(p.is_file() for p in targets + renders):
        return None
    return targets, renders


def build_table(results: list[dict[str, Any]], fid_feature: int | nn.Module = 2048, device: str = "cpu") -> dict[str, Any]:
    """The table of a dataset from its scenes' ``result.json`` documents (table jobs).

    Args:
        results: one complete result per scene (all from the same config).
        fid_feature: FID's Inception feature size, or a feature module (tests).
        device: where FID features are computed.

    Returns:
        {"scenes": [ids], "rows": {row: {"all_views": {metric: value, "fid": ..., "views": n},
        "over_scenes": {metric: {"mean", "std"}}, "per_scene": {scene: {metric: value}}}}}.
    """
    from lightning_modules.scene.fid import fid_over_files

    names = {name for r in results for name in r["rows"]}
    rows = sorted(names, key=lambda n: ROW_ORDER.index(n) if n in ROW_ORDER else len(ROW_ORDER))
    table: dict[str, Any] = {"scenes": [r["scene"] for r in results], "rows": {}}
    real: list[Path] = []
    fakes: dict[str, list[Path]] = {}
    for name in rows:
        scene_rows = [(r, r["rows"][name]) for r in results if name in r["rows"]]
        views = [v for _, row in scene_rows for v in row["per_view"]]
        keys = [k for k in METRICS if views and all(k in v for v in views)]
        all_views: dict[str, Any] = {k: _mean([v[k] for v in views]) for k in keys}
        all_views["views"] = len(views)
        per_scene = {r["scene"]: {k: v for k, v in row["metrics"].items()} for r, row in scene_rows}
        over = {}
        for k in [*keys, "fid"]:
            vals = [m[k] for m in per_scene.values() if k in m]
            if len(vals) == len(scene_rows) and vals:
                over["fid_of_scene" if k == "fid" else k] = {"mean": _mean(vals),
                                                             "std": statistics.stdev(vals) if len(vals) > 1 else 0.0}
        table["rows"][name] = {"all_views": all_views, "over_scenes": over, "per_scene": per_scene,
                               "scenes": len(scene_rows)}
        files = [_view_files(r, row) for r, row in scene_rows]
        if files and all(f is not None for f in files):
            if not real:
                real = [p for f in files for p in f[0]]  # type: ignore[index]
            fakes[name] = [p for f in files for p in f[1]]  # type: ignore[index]
    for name, fid in (fid_over_files(real, fakes, fid_feature, device) if fakes else {}).items():
        table["rows"][name]["all_views"]["fid"] = fid
    return table


def _cell(value: Any, key: str) -> str:
    if isinstance(value, dict):
        return f"{_cell(value['mean'], key)} ± {_cell(value['std'], key)}"
    if value is None:
        return "n/a"
    return f"{value:.2f}" if key in ("psnr", "cc_psnr", "fid", "fid_of_scene") else f"{value:.4f}"


def markdown_table(doc: dict[str, Any]) -> str:
    """The table document as Markdown: all test images together, over scenes, per scene, failures."""
    rows = doc["table"]["rows"]
    keys = [k for k in METRICS if any(k in r["all_views"] for r in rows.values())]
    out = [f"# {doc['title']}", "", f"Config `{doc['config_hash']}` ({doc['job_kind']}): {len(doc['table']['scenes'])} "
           f"complete scene(s), {len(doc['failed'])} failed.", "",
           "All test images of the dataset together (per-image means; FID of all renders against all targets):", ""]
    head = ["Method", *[METRICS[k] for k in keys], "FID", "views"]
    out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, row in rows.items():
        a = row["all_views"]
        out.append("| " + " | ".join([name, *[_cell(a.get(k), k) for k in keys], _cell(a.get("fid"), "fid"),
                                      str(a["views"])]) + " |")
    over_keys = [k for k in [*keys, "fid_of_scene"] if any(k in r["over_scenes"] for r in rows.values())]
    out += ["", "Mean ± standard deviation over scenes of each scene's own mean (FID of scene: each scene's FID "
            "over its few views, shown only to compare):", ""]
    head = ["Method", *[METRICS.get(k, "FID of scene") for k in over_keys], "scenes"]
    out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, row in rows.items():
        o = row["over_scenes"]
        out.append("| " + " | ".join([name, *[_cell(o.get(k), k) for k in over_keys], str(row["scenes"])]) + " |")
    scenes = doc["table"]["scenes"]
    if scenes:
        out += ["", "PSNR per scene:", "", "| Scene | " + " | ".join(rows) + " |", "|" + "---|" * (len(rows) + 1)]
        for s in scenes:
            out.append(f"| {s} | " + " | ".join(_cell(r["per_scene"].get(s, {}).get("psnr"), "psnr") for r in rows.values()) + " |")
    if doc["failed"]:
        out += ["", "Failed scenes (re-run the same command to redo them):", ""]
        out += [f"- {f['scene']}: {f['error']} (log: {f['stderr']})" for f in doc["failed"]]
    return "\n".join(out) + "\n"
