"""ViewerCallback: watch a scene live in the browser while `fit` trains it (as gsplat's trainer).

Add it to a scene config's callbacks (or on the command line with
``--trainer.callbacks+=callbacks.viewer.callback.ViewerCallback``) and open the printed address.
Training holds the viewer's render lock and lends it between two steps, so a frame renders
between steps: training pauses while a client renders and while its camera moves (up to
``max_pause_s`` per step), and runs at full speed when no browser is connected.

The Difix3D+ fix in the viewer uses the training's ProgressiveFixCallback's fixer (the same
network in memory) when ``fixer`` is unset or names the same fixer, else its own ``fixer``
(loaded when the fix is first switched on); references are the datamodule's training views.
Without either the viewer shows renders only.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Literal

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info

from lightning_modules.difix.fixers.ready import ReadyFixer
from lightning_modules.difix.fixers.spec import FixerSpec, as_fixer_spec
from lightning_modules.scene.contracts import GrowsTrainingSet, RendersViews

log = logging.getLogger(__name__)

__all__ = ["ViewerCallback"]


class ViewerCallback(Callback):
    """Serves the scene being trained on a local web page (viser).

    Args:
        port: TCP port (0: a free one; the address is logged).
        host: interface to bind; the default serves this machine only. Another host (e.g.
            0.0.0.0) exposes the page to the network: only on an explicit setting.
        move_resolution: longer image side while the camera moves.
        rest_resolution: longer image side once it rests.
        fixer: fixer name or ``FixerSpec`` for the viewer's Difix3D+ switch
            (``lightning_modules.difix.fixers``); None: the progressive fix's fixer, if training
            has one, else no fix switch.
        num_refs: initial number of reference views of the fix.
        fix_mode: when the fix runs: "at rest", "every frame" or "auto".
        max_pause_s: longest a training step waits for a moving camera to rest.
        refresh_every_s: re-render the clients' views this often while training, so they show
            progress; at least twice the last frame's render + fix time apart, so viewing never
            takes more than about a third of the time.
        keep_open_s: after `fit` ends, keep serving this many seconds (-1: until Ctrl-C).
    """

    def __init__(
        self,
        port: int = 8080,
        host: str = "127.0.0.1",
        move_resolution: int = 256,
        rest_resolution: int = 512,
        fixer: str | FixerSpec | None = None,
        num_refs: int = 1,
        fix_mode: Literal["at rest", "every frame", "auto"] = "auto",
        max_pause_s: float = 1.0,
        refresh_every_s: float = 1.0,
        keep_open_s: float = 0.0,
    ) -> None:
        self.port, self.host = port, host
        self.move_resolution, self.rest_resolution = move_resolution, rest_resolution
        self.fixer, self.num_refs, self.fix_mode = fixer, num_refs, fix_mode
        self.max_pause_s, self.refresh_every_s, self.keep_open_s = max_pause_s, refresh_every_s, keep_open_s
        self._last_refresh = 0.0
        self.viewer: Any = None  # SceneViewer while fit runs
        self.render_lock = threading.Lock()
        self._held = False

    def _fix(self, trainer: Trainer) -> Any:
        """The post-render fix the viewer shows: the progressive fix's fixer when it is the same (or
        none is named here), so one network is in memory; the viewer's own otherwise."""
        from callbacks.post_render_fix import NearestViewFix, training_views
        from callbacks.progressive_fix import ProgressiveFixCallback

        progressive = next((cb for cb in trainer.callbacks if isinstance(cb, ProgressiveFixCallback)), None)
        shared = progressive.fixer if progressive is not None else None
        if self.fixer is None and shared is None:
            return None
        fixer = shared if shared is not None and (self.fixer is None or as_fixer_spec(self.fixer) == shared.spec) \
            else ReadyFixer(self.fixer)  # type: ignore[arg-type]
        fixer.check()  # before step 1, not at the first fixed frame
        data = trainer.datamodule
        views = training_views(data) if isinstance(data, GrowsTrainingSet) else None
        return NearestViewFix(fixer, views, num_refs=self.num_refs)

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        if not isinstance(pl_module, RendersViews):
            raise TypeError(f"{type(pl_module).__name__} lacks render_views/scene_scale/device (RendersViews) needed by "
                            "ViewerCallback")
        from callbacks.viewer.server import SceneViewer

        data = trainer.datamodule
        train = data.train_cameras if isinstance(data, GrowsTrainingSet) else None
        self.viewer = SceneViewer(
            pl_module, self._fix(trainer), host=self.host, port=self.port, move_resolution=self.move_resolution,
            rest_resolution=self.rest_resolution, fix_mode=self.fix_mode,
            render_lock=self.render_lock, initial_camera=None if train is None or len(train) == 0 else train[[0]],
            label="difix3d: training")
        rank_zero_info(f"viewer: {self.viewer.url}")

    # Training holds the render lock from on_train_start to on_train_end (the whole loop: steps,
    # other callbacks' batch work such as the progressive fix, validation) and lends it to the
    # viewer between two steps, so a frame never overlaps anything that touches the model.
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.viewer is not None and not self._held:
            self.render_lock.acquire()
            self._held = True

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        viewer = self.viewer
        if viewer is None or not viewer.num_clients:
            return
        viewer.set_status(f"training: step {trainer.global_step}")
        last_ms = sum(v for k, v in viewer.stats.items() if k.endswith("_ms") and v == v)  # NaN-safe
        if time.time() - self._last_refresh > max(self.refresh_every_s, 2e-3 * last_ms):
            self._last_refresh = time.time()
            viewer.rerender()  # show the training progress
        self._release()
        # Wait while a frame is due or rendering, or the camera moves (bounded); a Lock is not
        # fair, so without this the training thread would take it straight back.
        deadline = time.time() + self.max_pause_s
        while (viewer.busy or time.time() - viewer.last_moved() < viewer.rest_delay_s) and time.time() < deadline:
            time.sleep(0.01)
        self.render_lock.acquire()
        self._held = True

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._release()

    def _release(self) -> None:
        if self._held:
            self._held = False
            self.render_lock.release()

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self._release()
        self._close()

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._release()
        if self.viewer is None:
            return
        self.viewer.set_status(f"training done: step {trainer.global_step}")
        if self.keep_open_s != 0:
            rank_zero_info(f"viewer: still serving {self.viewer.url} ({'Ctrl-C to stop' if self.keep_open_s < 0 else f'{self.keep_open_s:.0f} s'})")
            end = float("inf") if self.keep_open_s < 0 else time.time() + self.keep_open_s
            try:
                while time.time() < end:
                    time.sleep(0.2)
            except KeyboardInterrupt:
                pass
        self._close()

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._release()
        self._close()

    def _close(self) -> None:
        if self.viewer is not None:
            self.viewer.stop()
            self.viewer = None
