"""Lightning callbacks: the Difix3D progressive fix (and its Difix3D+ post-render fix), checkpoints
that never damage the last good one, the finite guard, curation (callbacks/curation/) and the
live viewer (callbacks/viewer/). Names resolve on first use."""
from __future__ import annotations

from datamodules.lazy_exports import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "ProgressiveFixCallback": "callbacks.progressive_fix",
    "NearestViewFix": "callbacks.post_render_fix",
    "BestAndLastCheckpoint": "callbacks.checkpoints",
    "AtomicCheckpointIO": "callbacks.checkpoints",
    "LastCheckpointAtFitEnd": "callbacks.checkpoints",
    "OutputFolderCheck": "callbacks.disk_space",
    "FiniteGuard": "callbacks.finite_guard",
    "PairWriter": "callbacks.curation.pair_writer",
    "ViewerCallback": "callbacks.viewer.callback",
    "SceneViewer": "callbacks.viewer.server",
})
