"""NVIDIA's current Fixer (nv-tlabs/Fixer, Cosmos-Predict2 0.6B): the network as plain nn.Modules
(diffusers' Cosmos DiT + NVIDIA's tokenizer programs), its one-step schedule, and reading /
writing NVIDIA's file layout. Names resolve on first use; nothing here imports Lightning."""
from __future__ import annotations

from datamodules.lazy_exports import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "FixerNet": "lightning_modules.difix.cosmos.net",
    "FixerNetConfig": "lightning_modules.difix.cosmos.config",
    "DiTConfig": "lightning_modules.difix.cosmos.config",
    "TinyTokenizerConfig": "lightning_modules.difix.cosmos.config",
    "FixerFiles": "lightning_modules.difix.cosmos.files",
    "find_fixer_files": "lightning_modules.difix.cosmos.files",
    "fixer_files": "lightning_modules.difix.cosmos.files",
    "load_fixer_net": "lightning_modules.difix.cosmos.load",
    "save_fixer_folder": "lightning_modules.difix.cosmos.load",
    "ImageTokenizer": "lightning_modules.difix.cosmos.tokenizer",
    "read_tokenizer_file": "lightning_modules.difix.cosmos.tokenizer",
})
