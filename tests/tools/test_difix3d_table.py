"""benchmarks/difix3d_table.py: rows fitted by separate --rows runs merge into one table."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from helpers import REPO



def _table_module():
    spec = importlib.util.spec_from_file_location("difix3d_table", REPO / "benchmarks" / "difix3d_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(psnr: float) -> dict:
    return {"metrics": {"psnr": psnr}, "fit_s": 1.0, "test_s": 0.1, "fixes": 0}


def test_rows_merge_in_paper_order_and_refuse_another_config(tmp_path: Path) -> None:
    table = _table_module()
    out = tmp_path / "table.json"
    merged = table.merge_rows(out, "a.yaml", {"Difix3D": _row(2.0), "Difix3D+": _row(3.0)})
    out.write_text(json.dumps({"config": "a.yaml", "rows": merged}))
    merged = table.merge_rows(out, "a.yaml", {"3DGS": _row(1.0)})
    assert list(merged) == ["3DGS", "Difix3D", "Difix3D+"]
    out.write_text(json.dumps({"config": "a.yaml", "rows": merged}))
    merged = table.merge_rows(out, "a.yaml", {table.CONTROL: _row(1.5)})
    assert list(merged) == ["3DGS", table.CONTROL, "Difix3D", "Difix3D+"]
    assert merged["Difix3D+"]["metrics"]["psnr"] == 3.0
    with pytest.raises(SystemExit, match="a.yaml"):
        table.merge_rows(out, "b.yaml", {"3DGS": _row(1.0)})


def test_a_tiny_table_and_its_picture_through_the_scripts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess
    import sys

    from datamodules.files.image_io import load_image

    monkeypatch.chdir(tmp_path)
    table = tmp_path / "table.json"
    tiny = ["--", f"--trainer.logger.init_args.save_dir={tmp_path / 'logs'}", "--trainer.callbacks.fixer=tiny",
            "--trainer.enable_progress_bar=false", "--trainer.max_steps=4", "--trainer.callbacks.start_step=2",
            "--trainer.callbacks.fix_every_n_steps=2", f"--data.init_args.path={tmp_path / 'scene'}",
            "--data.init_args.procedural.num_views=8", "--data.init_args.procedural.size=24",
            "--data.init_args.read.test_every=4", "--data.init_args.read.train_every=1",
            "--model.init_args.predict.frames=0", f"--model.init_args.output_dir={tmp_path / 'out'}"]
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "difix3d_table.py"), "--config",
                           str(REPO / "configs/demo/difix3d.yaml"), "--out", str(table), *tiny],
                          capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(table.read_text())["rows"]
    assert list(rows) == ["3DGS", "Difix3D", "Difix3D+"] and all(Path(r["checkpoint"]).is_file() for r in rows.values())
    out = tmp_path / "view.png"
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "difix3d_picture.py"), "--table", str(table),
                           "--fixer", "tiny", "--out", str(out)], capture_output=True, text=True, timeout=600, env=env,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"wrote {out}" in done.stdout
    picture = load_image(out)
    assert picture.shape == (3, 24, 5 * 24)  # 3DGS | Difix3D | Difix3D+ | ground truth | change
