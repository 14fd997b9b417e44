"""The speed benchmarks' printout: one line of context (torch, threads, the load average: a shared
machine's timings mean little without it), then right-aligned columns."""
from __future__ import annotations

import os
from collections.abc import Sequence

import torch


def print_rows(header: Sequence[str], rows: Sequence[Sequence[object]], context: str) -> None:
    """Prints ``# torch <version>, threads <n>, <context>, load average <1-min>`` and the table."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# torch {torch.__version__}, threads {torch.get_num_threads()}, {context}, load average {load:.1f}")
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(c).rjust(w) for c, w in zip(row, widths)))
