"""Scene representations: what every scene module shares (SceneModule, the contracts callbacks
and the viewer rely on, evaluation, predict videos), Gaussians (gaussians/) and the NeRF
(nerf/). Names resolve on first use, so importing this package never pulls in Lightning."""
from __future__ import annotations

from datamodules.lazy_exports import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "SceneModule": "lightning_modules.scene.base",
    "EvalSettings": "lightning_modules.scene.evaluation",
    "PathSettings": "lightning_modules.scene.path_video",
    "render_path": "lightning_modules.scene.path_video",
    "open_scene": "lightning_modules.scene.open_scene",
    "RendersViews": "lightning_modules.scene.contracts",
    "PostRenderFix": "lightning_modules.scene.contracts",
    "GaussianSceneModule": "lightning_modules.scene.gaussians.module",
    "render": "lightning_modules.scene.gaussians.rasterize",
    "NerfSceneModule": "lightning_modules.scene.nerf.module",
})
