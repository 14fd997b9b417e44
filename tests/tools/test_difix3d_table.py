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
