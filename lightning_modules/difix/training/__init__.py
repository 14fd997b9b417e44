"""Training the fixer: DifixModule, the offline prior DifixPriorModule, NVIDIA's Fixer (FixerModule),
their losses and schedules."""
from __future__ import annotations

from datamodules.lazy_exports import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "DifixModule": "lightning_modules.difix.training.module",
    "DifixNetSpec": "lightning_modules.difix.training.net_spec",
    "DifixPriorModule": "lightning_modules.difix.training.prior",
    "FixerModule": "lightning_modules.difix.training.fixer_module",
    "FixerNetSpec": "lightning_modules.difix.training.fixer_spec",
    "LPIPSLoss": "lightning_modules.difix.training.losses",
    "GramLoss": "lightning_modules.difix.training.losses",
    "load_vgg16": "lightning_modules.difix.training.backbones",
})
