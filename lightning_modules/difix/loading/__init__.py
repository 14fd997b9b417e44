"""Building DifixNets from what users have: SD-Turbo-architecture folders, NVIDIA's published
folders, reference ``model_*.pkl``, offline priors, this project's checkpoints (one layer each)."""
from __future__ import annotations

from datamodules.lazy_exports import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "net_from_pretrained": "lightning_modules.difix.loading.builders",
    "net_from_checkpoint": "lightning_modules.difix.loading.builders",
    "rebuild_net": "lightning_modules.difix.loading.builders",
    "net_from_reference_checkpoint": "lightning_modules.difix.loading.published",
    "net_from_config": "lightning_modules.difix.loading.base_models",
    "tiny_net": "lightning_modules.difix.loading.base_models",
    "net_from_prior": "lightning_modules.difix.loading.from_prior",
    "PretrainedNotFoundError": "lightning_modules.difix.loading.hub_files",
    "WeightKeyError": "lightning_modules.difix.loading.published_keys",
})
