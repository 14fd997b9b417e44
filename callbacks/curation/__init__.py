"""Making Difix training pairs from scene fits (the four curation strategies): PairWriter and
the cycle reconstruction's hand-over scene."""
from __future__ import annotations

from datamodules.lazy_exports import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "PairWriter": "callbacks.curation.pair_writer",
    "write_cycle_scene": "callbacks.curation.cycle_scene",
    "read_cycle_manifest": "callbacks.curation.cycle_scene",
})
