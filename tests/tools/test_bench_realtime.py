"""benchmarks/bench_realtime.py runs end to end on a tiny scene (numbers are not asserted)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from helpers import REPO



def test_bench_realtime_prints_render_and_fix_fps(capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("bench_realtime", REPO / "benchmarks" / "bench_realtime.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.main(["--gaussians", "300", "--sizes", "24x16", "--frames", "1", "--warmup", "0", "--device", "cpu"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert "fps render+fix" in lines[1]
    row = lines[2].split()
    assert row[:2] == ["24x16", "cpu"]
    render_ms, fix_ms, fps, fps_fixed = (float(v) for v in row[2:])
    assert min(render_ms, fix_ms, fps, fps_fixed) > 0
