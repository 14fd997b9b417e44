"""The fixer as callers use it: named (FixerSpec), resolved once into what the name stands for
(sources.resolve_source), and held as one ReadyFixer (size policy, references, batching, output
checks) by everything that fixes renders."""
from __future__ import annotations

from datamodules.lazy_exports import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "FixerSpec": "lightning_modules.difix.fixers.spec",
    "ReadyFixer": "lightning_modules.difix.fixers.ready",
    "ReferenceViews": "lightning_modules.difix.fixers.ready",
    "resolve_source": "lightning_modules.difix.fixers.sources",
    "build_difix_net": "lightning_modules.difix.fixers.sources",
    "FixerError": "lightning_modules.difix.fixers.errors",
    "FixerOutputError": "lightning_modules.difix.fixers.errors",
    "TorchScriptNet": "lightning_modules.difix.fixers.torchscript",
})
