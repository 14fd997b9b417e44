"""The paper's Table 2 rows for one scene (3DGS or Nerfacto / No-op fix / Difix3D / Difix3D+),
each a fit and a test of one config through the project's CLI. Used by
``benchmarks/difix3d_table.py`` (one scene) and by the dataset command (``difix3d.dataset``,
one job per scene).

The first row ("3DGS" for a Gaussian scene module, "Nerfacto" for a NeRF) fits the config
with its ProgressiveFixCallback removed; "Difix3D" fits with it and is tested on plain renders;
"Difix3D+" tests the same model with the post-render fix. "No-op fix" is the progressive
schedule with the fixer spec "identity" (the control: what the schedule alone gives).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

__all__ = ["CONTROL", "ROW_ORDER", "fit_and_test", "table_rows"]

CONTROL = "No-op fix"
ROW_ORDER = ["3DGS", "Nerfacto", CONTROL, "Difix3D", "Difix3D+"]


def fit_and_test(config: str, overrides: list[str], name: str, progressive: bool, post_fix: bool = True) -> dict[bool, dict[str, Any]]:
    """Fits one row's scene and tests it (twice for the progressive row with `post_fix`: plain and fixed).

    Args:
        config: a scene config holding a ProgressiveFixCallback.
        overrides: CLI arguments after it (later ones win).
        name: the logger's run name.
        progressive: keep the progressive fix during the fit.
        post_fix: also test with the post-render fix (progressive rows).

    Returns:
        {False: plain row, True: post-render-fixed row (when tested)}; each row holds "metrics"
        (metrics.json's mean), "per_view" (its per-view records, ``_fixed`` keys for the fixed
        row), "output_dir" (where metrics.json and test_views/ are), "fit_s", "test_s", "base"
        ("3DGS" or "Nerfacto"), "fixes", "checkpoint" (and "num_gaussians" for 3DGS).
    """
    from callbacks.progressive_fix import ProgressiveFixCallback
    from difix3d.cli import cli_main
    from lightning_modules.scene.nerf.module import NerfSceneModule

    cli = cli_main(["--config", config, f"--trainer.logger.init_args.name={name}", *overrides], run=False)
    trainer, model, data = cli.trainer, cli.model, cli.datamodule
    fixers = [c for c in trainer.callbacks if isinstance(c, ProgressiveFixCallback)]
    if not fixers:
        raise SystemExit(f"{config}: no ProgressiveFixCallback in trainer.callbacks")
    if not progressive:
        trainer.callbacks = [c for c in trainer.callbacks if not isinstance(c, ProgressiveFixCallback)]
    t0 = time.perf_counter()
    trainer.fit(model, datamodule=data)
    fit_s = time.perf_counter() - t0
    saver = trainer.checkpoint_callback  # the row's last.ckpt, for benchmarks/difix3d_picture.py
    checkpoint = str(Path(saver.last_model_path).resolve()) if saver is not None and saver.last_model_path else None
    rows: dict[bool, dict[str, Any]] = {}
    post = [False, True] if progressive and post_fix else [False]
    for fix in post:
        for cb in fixers:
            cb.post_render_fix = fix
        t0 = time.perf_counter()
        trainer.test(model, datamodule=data, verbose=False)
        test_s = time.perf_counter() - t0
        metrics = json.loads((model.output_path / "metrics.json").read_text())
        key = "mean_fixed" if fix else "mean"
        rows[fix] = {"metrics": metrics[key], "per_view": metrics["per_view"], "output_dir": str(model.output_path.resolve()),
                     "fit_s": fit_s, "test_s": test_s,
                     "base": "Nerfacto" if isinstance(model, NerfSceneModule) else "3DGS",
                     "fixes": sum(c.num_fixes for c in fixers), "checkpoint": checkpoint}
        if "num_gaussians" in metrics:
            rows[fix]["num_gaussians"] = metrics["num_gaussians"]
    return rows


def table_rows(config: str, overrides: list[str], rows: list[str], output_dir: Path | None = None) -> dict[str, dict[str, Any]]:
    """Fits and tests the chosen rows of one scene's table.

    Args:
        config: the scene config (with a ProgressiveFixCallback).
        overrides: CLI arguments for every row.
        rows: any of "plain" (3DGS / Nerfacto), "control" (No-op fix), "progressive" (Difix3D
            and Difix3D+).
        output_dir: each row's metrics.json and test views go to ``output_dir/<run name>``
            (None: the config's output_dir or the logger's folder).

    Returns:
        {row name: row} in the paper's order (see `fit_and_test` for a row's fields).
    """
    unknown = sorted(set(rows) - {"plain", "control", "progressive"})
    if unknown:
        raise ValueError(f"unknown table rows {unknown}: choose from plain, control, progressive")
    out: dict[str, dict[str, Any]] = {}

    def run(name: str, extra: list[str], progressive: bool, post_fix: bool = True) -> dict[bool, dict[str, Any]]:
        where = [f"--model.init_args.output_dir={output_dir / name}"] if output_dir is not None else []
        return fit_and_test(config, [*overrides, *extra, *where], name, progressive, post_fix)

    if "plain" in rows:
        plain = run("table_3dgs", [], progressive=False)[False]
        out[plain["base"]] = plain
    if "control" in rows:  # last override wins: the fixer becomes the identity
        out[CONTROL] = run("table_noop_fix", ["--trainer.callbacks.fixer=identity"], progressive=True, post_fix=False)[False]
    if "progressive" in rows:
        prog = run("table_difix3d", [], progressive=True)
        out.update({"Difix3D": prog[False], "Difix3D+": prog[True]})
    for row in out.values():
        row["overrides"] = list(overrides)
    return {name: out[name] for name in sorted(out, key=ROW_ORDER.index)}
