"""The paper's tables over a dataset, or pair curation over a list of scenes: one job per scene
on submitit (SLURM, or its local executor on one machine). See ``difix3d/dataset/command.py``
and the README ("Tables over a dataset").

    python scripts/dataset.py --config configs/dataset/dl3dv_table.yaml --scenes /data/DL3DV-10K-Benchmark
    python scripts/dataset.py --help
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads (difix3d/cli.py explains why)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from difix3d.dataset.command import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
