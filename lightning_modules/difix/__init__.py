"""Difix, the single-step diffusion fixer: the network (net/), building it from every kind of
weights (loading/), the fixer as callers use it (fixers/), and training it (training/). Names
resolve on first use, so importing this package pulls in neither diffusers nor Lightning."""
from __future__ import annotations

from datamodules.lazy_exports import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "DifixNet": "lightning_modules.difix.net.net",
    "FixerSpec": "lightning_modules.difix.fixers.spec",
    "ReadyFixer": "lightning_modules.difix.fixers.ready",
    "build_difix_net": "lightning_modules.difix.fixers.sources",
    "net_from_pretrained": "lightning_modules.difix.loading.builders",
    "net_from_checkpoint": "lightning_modules.difix.loading.builders",
    "tiny_net": "lightning_modules.difix.loading.base_models",
    "PretrainedNotFoundError": "lightning_modules.difix.loading.hub_files",
    "DifixModule": "lightning_modules.difix.training.module",
    "DifixNetSpec": "lightning_modules.difix.training.net_spec",
    "DifixPriorModule": "lightning_modules.difix.training.prior",
})
