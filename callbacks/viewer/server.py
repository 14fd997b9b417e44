"""A live web viewer of a scene with the Difix3D+ post-render fix as a switch (on viser).

Any scene with the scene modules' render contract (``render_views(cameras) -> (rgb, alpha)``,
``scene_scale``) can be viewed: 3DGS and NeRF alike. viser serves the page (its wheel ships
the built web client) and streams each rendered frame to the browser as the background image.

Why not nerfview's ``Viewer``: its render thread has no place for a second, slower stage (the
fix), calls ``os._exit`` when a render raises (that would end a training run) and imports
jaxtyping without declaring it. What is hand-written here is only the small part nerfview
does: a render thread per client with a low resolution while the camera moves and a full one
once it rests, and a lock that pauses training while a frame renders.

Fix scheduling: the fixer runs on the frame rendered after the camera stops moving ("at
rest"), on every frame ("every frame"), or on every frame while the last render + fix took
under ``realtime_ms`` ("auto").
"""
from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from callbacks.post_render_fix import NearestViewFix
from datamodules.cameras.cameras import Cameras
from datamodules.cameras.poses import quat_to_rotmat
from lightning_modules.scene.contracts import RendersViews, SeedPoints
from lightning_modules.scene.path_video import to_uint8

log = logging.getLogger(__name__)

__all__ = ["SceneViewer", "render_size", "viewer_camera"]

FixMode = Literal["at rest", "every frame", "auto"]
FIX_MODES: tuple[str, ...] = ("at rest", "every frame", "auto")


def render_size(aspect: float, resolution: int) -> tuple[int, int]:
    """(W, H) with the longer side ``resolution`` pixels and the given width/height ratio."""
    if aspect >= 1:
        return resolution, max(1, round(resolution / aspect))
    return max(1, round(resolution * aspect)), resolution


def viewer_camera(wxyz: Any, position: Any, fov: float, aspect: float, resolution: int, name: str = "viewer") -> Cameras:
    """A browser camera (viser: OpenCV axes, camera-to-world rotation ``wxyz`` and centre
    ``position``, vertical field of view ``fov`` in radians) as one ``Cameras``.

    Args:
        resolution: pixels along the longer image side.
    """
    w, h = render_size(aspect, resolution)
    c2w = torch.eye(4, dtype=torch.float64)
    c2w[:3, :3] = quat_to_rotmat(torch.as_tensor(np.asarray(wxyz), dtype=torch.float64)[None])[0]
    c2w[:3, 3] = torch.as_tensor(np.asarray(position), dtype=torch.float64)
    focal = h / 2.0 / math.tan(fov / 2.0)
    K = torch.tensor([[focal, 0.0, w / 2.0], [0.0, focal, h / 2.0], [0.0, 0.0, 1.0]])
    return Cameras.from_c2w(c2w[None], K, w, h, [name])


@dataclasses.dataclass
class _Client:
    """Render state of one connected browser."""

    handle: Any
    wake: threading.Event = dataclasses.field(default_factory=threading.Event)
    dirty: bool = True  # the camera or a setting changed since the last frame
    last_move: float = 0.0  # time of the last camera update
    last_quality: str = "none"  # "move" or "rest"
    thread: threading.Thread | None = None


class SceneViewer:
    """Serves a scene in the browser (viser) with the Difix3D+ fix as a control.

    Controls: fix on/off, reference views, when to fix (at rest / every frame / auto),
    resolution while moving and at rest; readouts of render ms and fix ms per frame.

    Args:
        scene: the scene to show (``RendersViews``: render_views, scene_scale, device).
        fix: the post-render fix (``NearestViewFix``: its fixer and the views references come
            from; the panel's reference count is passed at each fix). None: no fix.
        host: interface to bind; 127.0.0.1 (this machine only) unless set explicitly.
        port: TCP port (0 picks a free one; see ``port``).
        move_resolution: longer image side while the camera moves.
        rest_resolution: longer image side once it rests.
        fix_enabled: start with the fix on.
        fix_mode: "at rest", "every frame" or "auto".
        realtime_ms: "auto" fixes every frame while render + fix took less than this.
        rest_delay_s: the camera counts as resting after this long without an update.
        jpeg_quality: quality of the streamed frames.
        render_lock: held while a frame renders (a training loop holds it during a step).
        initial_camera: the camera (one, OpenCV, e.g. a training view: pose and field of view)
            the page opens at, so the scene fills the frame; None: looks at the
            origin from 2 scene scales.
        up: world up direction for the orbit controls (None: -y of ``initial_camera``).
        label: page title.
    """

    def __init__(
        self,
        scene: RendersViews,
        fix: NearestViewFix | None = None,
        host: str = "127.0.0.1",
        port: int = 8080,
        move_resolution: int = 256,
        rest_resolution: int = 512,
        fix_enabled: bool = False,
        fix_mode: FixMode = "auto",
        realtime_ms: float = 100.0,
        rest_delay_s: float = 0.2,
        jpeg_quality: int = 90,
        render_lock: threading.Lock | None = None,
        initial_camera: Cameras | None = None,
        up: tuple[float, float, float] | None = None,
        label: str = "difix3d viewer",
    ) -> None:
        import viser

        if not isinstance(scene, RendersViews):
            raise TypeError(f"SceneViewer: {type(scene).__name__} lacks render_views / scene_scale / device (RendersViews)")
        if fix_mode not in FIX_MODES:
            raise ValueError(f"fix_mode must be one of {FIX_MODES}, got {fix_mode!r}")
        if not (16 <= move_resolution <= 4096 and 16 <= rest_resolution <= 4096):
            raise ValueError(f"resolutions must be in 16..4096, got {move_resolution} / {rest_resolution}")
        self.scene, self.fix = scene, fix
        self.realtime_ms, self.rest_delay_s, self.jpeg_quality = realtime_ms, rest_delay_s, jpeg_quality
        self.render_lock = render_lock if render_lock is not None else threading.Lock()
        self.stats: dict[str, float] = {"frames": 0, "rest_frames": 0, "fixed_frames": 0, "render_ms": float("nan"),
                                        "fix_ms": float("nan")}
        self.errors: list[str] = []
        self._frame_cond = threading.Condition()
        self._clients: dict[int, _Client] = {}
        self._running = True
        self._active = 0  # frames being prepared, waiting for the render lock or rendering
        self.server = viser.ViserServer(host=host, port=port, label=label, verbose=False)
        if port != 0 and self.port != port:  # viser takes the next free port without a word
            log.warning("viewer: port %d is in use; serving on port %d instead", port, self.port)
        self._set_initial_camera(initial_camera, up)
        self._build_gui(move_resolution, rest_resolution, fix_enabled, fix_mode)
        self.server.on_client_connect(self._connect)
        self.server.on_client_disconnect(self._disconnect)

    # ------------------------------------------------------------------ setup
    def _set_initial_camera(self, camera: Cameras | None, up: tuple[float, float, float] | None) -> None:
        scale = float(self.scene.scene_scale)
        fov = None
        if camera is not None and len(camera) > 0:
            c2w = camera.camera_to_world[0].double().cpu()
            fov = 2.0 * math.atan(float(camera.height[0]) / (2.0 * float(camera.K[0, 1, 1])))
        else:
            # No camera: from -y (z up) toward the middle of the scene's geometry when it has
            # points to offer (a .ply in its own world), else toward the origin.
            seeds = self.scene.seed_points(4096) if isinstance(self.scene, SeedPoints) else None
            center = seeds[0].double().median(dim=0).values if seeds is not None else torch.zeros(3, dtype=torch.float64)
            c2w = torch.eye(4, dtype=torch.float64)
            # OpenCV axes: right +x, down -z, forward +y (z up), from -y toward the centre.
            c2w[:3, :3] = torch.tensor([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]], dtype=torch.float64)
            c2w[:3, 3] = center + torch.tensor([0.0, -2.5 * scale, 0.0], dtype=torch.float64)
        position, forward = c2w[:3, 3], c2w[:3, 2]
        up_vec = torch.as_tensor(up, dtype=torch.float64) if up is not None else -c2w[:3, 1]
        self.server.scene.set_up_direction(tuple(float(v) for v in up_vec / up_vec.norm()))
        self.server.initial_camera.position = tuple(float(v) for v in position)
        self.server.initial_camera.look_at = tuple(float(v) for v in position + forward * max(scale, 1e-3))
        self.server.initial_camera.up = tuple(float(v) for v in up_vec / up_vec.norm())
        if fov is not None:  # the training view's own field of view: the scene fills the frame as it did there
            self.server.initial_camera.fov = fov

    def _build_gui(self, move_res: int, rest_res: int, fix_enabled: bool, fix_mode: str) -> None:
        gui = self.server.gui
        has_fix = self.fix is not None
        with gui.add_folder("Difix3D+"):
            self.gui_fix = gui.add_checkbox("Fix (Difix3D+)", initial_value=fix_enabled and has_fix, disabled=not has_fix,
                                            hint="Run the Difix post-render fix" if has_fix else "No fixer configured")
            has_refs = self.fix is not None and self.fix.has_references
            self.gui_refs = gui.add_slider("Reference views", min=0, max=4, step=1,
                                           initial_value=self.fix.num_refs if has_refs else 0, disabled=not has_refs,
                                           hint="Nearest training views given to the fixer")
            self.gui_fix_mode = gui.add_dropdown("Fix frames", FIX_MODES, initial_value=fix_mode, disabled=not has_fix,
                                                 hint="auto: every frame while render + fix is real-time, else at rest")
        with gui.add_folder("Rendering"):
            self.gui_move_res = gui.add_slider("Moving resolution", min=16, max=2048, step=16, initial_value=move_res)
            self.gui_rest_res = gui.add_slider("Rest resolution", min=16, max=4096, step=16, initial_value=rest_res)
        with gui.add_folder("Per frame"):
            self.gui_render_ms = gui.add_number("Render ms", initial_value=0.0, disabled=True)
            self.gui_fix_ms = gui.add_number("Fix ms", initial_value=0.0, disabled=True)
            self.gui_frame = gui.add_text("Frame", initial_value="-", disabled=True)
            self.gui_status = gui.add_text("Status", initial_value="viewing", disabled=True)

        for handle in (self.gui_fix, self.gui_refs, self.gui_fix_mode, self.gui_move_res, self.gui_rest_res):
            handle.on_update(lambda _: self.rerender())

    # ------------------------------------------------------------------ public API
    @property
    def port(self) -> int:
        return int(self.server.get_port())

    @property
    def url(self) -> str:
        return f"http://{self.server.get_host()}:{self.port}"

    @property
    def num_clients(self) -> int:
        return len(self._clients)

    @property
    def fix_enabled(self) -> bool:
        return bool(self.gui_fix.value) and self.fix is not None

    @fix_enabled.setter
    def fix_enabled(self, value: bool) -> None:
        if value and self.fix is None:
            raise ValueError("SceneViewer: no fixer configured")
        self.gui_fix.value = bool(value)  # its on_update re-renders every client
        self.rerender()

    def set_status(self, text: str) -> None:
        """Shows a line in the panel (the training callback reports the step here)."""
        self.gui_status.value = text

    @property
    def busy(self) -> bool:
        """A frame is due or rendering (a training loop yields its lock until this clears)."""
        return self._active > 0 or any(c.dirty for c in list(self._clients.values()))

    def last_moved(self) -> float:
        """Time of the latest camera update of any client (0 without clients)."""
        return max((c.last_move for c in self._clients.values()), default=0.0)

    def rerender(self) -> None:
        """Renders every client's view again at rest quality (a setting changed)."""
        for c in list(self._clients.values()):
            c.dirty = True
            c.wake.set()

    def wait_for_frames(self, count: int, key: str = "frames", timeout: float = 30.0) -> bool:
        """Blocks until ``stats[key] >= count`` (key: "frames", "rest_frames", "fixed_frames");
        False on timeout."""
        with self._frame_cond:
            return self._frame_cond.wait_for(lambda: self.stats[key] >= count, timeout=timeout)

    def stop(self) -> None:
        """Stops the render threads and the server."""
        self._running = False
        for c in list(self._clients.values()):
            c.wake.set()
            if c.thread is not None:
                c.thread.join(timeout=10)
        self.server.stop()

    # ------------------------------------------------------------------ clients
    def _connect(self, handle: Any) -> None:
        client = _Client(handle)
        self._clients[handle.client_id] = client

        @handle.camera.on_update
        def _(_: Any) -> None:
            client.last_move = time.time()
            client.dirty = True
            client.wake.set()

        client.thread = threading.Thread(target=self._render_loop, args=(client,), daemon=True,
                                         name=f"viewer-client-{handle.client_id}")
        client.thread.start()

    def _disconnect(self, handle: Any) -> None:
        client = self._clients.pop(handle.client_id, None)
        if client is not None:
            client.wake.set()

    def _render_loop(self, client: _Client) -> None:
        while self._running and client.handle.client_id in self._clients:
            client.wake.wait(timeout=self.rest_delay_s / 2)
            client.wake.clear()
            moving = time.time() - client.last_move < self.rest_delay_s
            # A rest frame follows the last moving one: that is where the fix runs by default.
            if not (client.dirty or (not moving and client.last_quality == "move")):
                continue
            with self._frame_cond:
                self._active += 1
            client.dirty = False
            try:
                self._render_frame(client, moving)
            except Exception as err:  # a failed frame must not end a training run or the viewer
                log.exception("viewer: rendering a frame failed")
                self.errors.append(repr(err))
                self.gui_status.value = f"error: {err!r}"[:200]
            finally:
                with self._frame_cond:
                    self._active -= 1

    def wants_fix(self, moving: bool) -> bool:
        """Whether the next frame gets the Difix3D+ fix: the switch is on, and the fix mode says
        so ("at rest": only once the camera stops; "every frame"; "auto": while moving only as
        long as render + fix stay within the real-time budget)."""
        if not self.fix_enabled:
            return False
        mode = self.gui_fix_mode.value
        if not moving or mode == "every frame":
            return True
        total = self.stats["render_ms"] + self.stats["fix_ms"]
        return mode == "auto" and math.isfinite(total) and total < self.realtime_ms

    @torch.no_grad()
    def _render_frame(self, client: _Client, moving: bool) -> None:
        cam = client.handle.camera
        try:
            wxyz, position, fov, aspect = cam.wxyz, cam.position, cam.fov, cam.aspect
        except (AssertionError, ZeroDivisionError):  # the browser has not reported its camera yet
            client.dirty = True
            return
        res = int(self.gui_move_res.value if moving else self.gui_rest_res.value)
        cameras = viewer_camera(wxyz, position, fov, aspect, res).to(self.scene.device)
        fix = self.wants_fix(moving)
        if fix:
            self.fix.fixer.net  # noqa: B018 (a lazy fixer loads here, outside the timed fix)
        with self.render_lock:
            start = time.perf_counter()
            rgb, _ = self.scene.render_views(cameras)
            _sync(rgb)
            render_ms = (time.perf_counter() - start) * 1e3
            fix_ms = float("nan")
            if fix:
                start = time.perf_counter()
                rgb = self.fix(rgb, cameras, num_refs=int(self.gui_refs.value))
                _sync(rgb)
                fix_ms = (time.perf_counter() - start) * 1e3
        frame = to_uint8(rgb[0])
        client.handle.scene.set_background_image(frame, format="jpeg", jpeg_quality=self.jpeg_quality)
        client.last_quality = "move" if moving else "rest"
        with self._frame_cond:
            self.stats["frames"] += 1
            self.stats["rest_frames"] += not moving
            self.stats["render_ms"] = render_ms
            if fix:
                self.stats["fixed_frames"] += 1
                self.stats["fix_ms"] = fix_ms
            self._frame_cond.notify_all()
        self.gui_render_ms.value = round(render_ms, 1)
        if fix:
            self.gui_fix_ms.value = round(fix_ms, 1)
        self.gui_frame.value = f"{frame.shape[1]}x{frame.shape[0]} {'fixed' if fix else 'plain'} ({client.last_quality})"


def _sync(t: Tensor) -> None:
    if t.device.type == "cuda":
        torch.cuda.synchronize(t.device)

