"""Training data of the fixer: the pairs folder and its ``pairs.json`` (one record type, one
reader, one writer), pair datasets, PairDataModule and its sources, synthetic degradations, the
prior's corpus."""
from __future__ import annotations

from datamodules.lazy_exports import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "PairRecord": "datamodules.pairs.record",
    "DEFAULT_PROMPT": "datamodules.pairs.record",
    "read_pairs_json": "datamodules.pairs.pairs_json",
    "PairDataError": "datamodules.pairs.pairs_json",
    "PairDataModule": "datamodules.pairs.datamodule",
    "JsonPairs": "datamodules.pairs.sources",
    "SyntheticPairs": "datamodules.pairs.sources",
    "RenderFolder": "datamodules.pairs.sources",
    "PairDataset": "datamodules.pairs.datasets",
    "SyntheticPairDataset": "datamodules.pairs.datasets",
    "MixedPairDataModule": "datamodules.pairs.mixed",
    "Degrader": "datamodules.pairs.degradations",
})
