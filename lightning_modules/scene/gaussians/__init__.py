"""3D Gaussian Splatting: parameters, initialisation, .ply files, other tools' reconstruction files
and worlds, the rasterizer front (gsplat on CUDA, pure torch elsewhere), densification
strategies, GaussianSceneModule."""
from __future__ import annotations

from datamodules.lazy_exports import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "GaussianSceneModule": "lightning_modules.scene.gaussians.module",
    "Gaussians": "lightning_modules.scene.gaussians.splats",
    "render": "lightning_modules.scene.gaussians.rasterize",
    "read_ply": "lightning_modules.scene.gaussians.ply",
    "write_ply": "lightning_modules.scene.gaussians.ply",
    "GaussiansFile": "lightning_modules.scene.gaussians.reconstruction",
    "InitSettings": "lightning_modules.scene.gaussians.initial",
    "LearningRates": "lightning_modules.scene.gaussians.settings",
    "LossSettings": "lightning_modules.scene.gaussians.settings",
    "RasterSettings": "lightning_modules.scene.gaussians.settings",
    "SHSchedule": "lightning_modules.scene.gaussians.settings",
    "read_gaussians_file": "lightning_modules.scene.gaussians.reconstruction",
    "DefaultStrategy": "lightning_modules.scene.gaussians.strategy",
    "MCMCStrategy": "lightning_modules.scene.gaussians.strategy",
    "photometric_loss": "lightning_modules.scene.gaussians.losses",
})
