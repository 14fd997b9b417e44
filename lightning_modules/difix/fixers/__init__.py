"""The fixer as callers use it: named (FixerSpec), checked without loading, built once
(load_fixer), run on renders of any size (ImageFixer; TorchScriptFixer for nvidia/Fixer and other
TorchScript files)."""
from __future__ import annotations

from datamodules.lazy_exports import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "FixerSpec": "lightning_modules.difix.fixers.spec",
    "load_fixer": "lightning_modules.difix.fixers.spec",
    "check_fixer": "lightning_modules.difix.fixers.spec",
    "build_difix_net": "lightning_modules.difix.fixers.spec",
    "ImageFixer": "lightning_modules.difix.fixers.image_fixer",
    "IdentityFixer": "lightning_modules.difix.fixers.image_fixer",
    "FixerOutputError": "lightning_modules.difix.fixers.image_fixer",
    "TorchScriptFixer": "lightning_modules.difix.fixers.torchscript",
})
