"""The Difix network as a plain nn.Module: DifixNet, its reference attention, VAE skips, the
Lanczos resize of the reference pipeline, and the component architectures."""
from __future__ import annotations

from datamodules.lazy_exports import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "DifixNet": "lightning_modules.difix.net.net",
    "install_multiview_attention": "lightning_modules.difix.net.attention",
    "VaeSkips": "lightning_modules.difix.net.vae_skips",
    "lanczos_resize": "lightning_modules.difix.net.lanczos",
    "TINY_CONFIG": "lightning_modules.difix.net.architectures",
    "SD_TURBO_CONFIG": "lightning_modules.difix.net.architectures",
})
