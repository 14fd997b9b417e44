"""The live viewer: camera conversion, the Difix3D+ fix callable, the view command, the fit
callback, and (marker `browser`) the page in a real headless Chromium."""
from __future__ import annotations

import contextlib
import io
import math
import shutil
import threading
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from callbacks.post_render_fix import NearestViewFix
from datamodules.cameras.cameras import Cameras
from datamodules.cameras.poses import look_at, rotmat_to_quat
from helpers import REPO
from lightning_modules.difix.fixers.ready import ReadyFixer, ReferenceViews
from lightning_modules.difix.net.sizing import SizePolicy



def random_scene(n: int = 1500):
    from lightning_modules.scene.gaussians.splats import Gaussians
    from lightning_modules.scene.gaussians.module import GaussianSceneModule

    g = Gaussians.random(n, 1.0, center=(0.0, 0.0, 0.0), sh_degree=0, init_opacity=0.6, init_scale=1.0,
                         generator=torch.Generator().manual_seed(0))
    return GaussianSceneModule.from_splats(g.raw(), sh_degree=0, scene_scale=1.0).eval()


def test_viewer_camera_is_the_browser_pose_in_opencv_axes() -> None:
    from callbacks.viewer.server import render_size, viewer_camera

    c2w = look_at(torch.tensor([[2.0, -1.0, 0.5]]), torch.zeros(3))[0]
    wxyz = rotmat_to_quat(c2w[:3, :3].double()[None])[0].numpy()
    cam = viewer_camera(wxyz, c2w[:3, 3].numpy(), fov=math.radians(60), aspect=4 / 3, resolution=160)
    assert (int(cam.width[0]), int(cam.height[0])) == (160, 120) == render_size(4 / 3, 160)
    assert render_size(0.5, 100) == (50, 100)
    torch.testing.assert_close(cam.camera_to_world[0], c2w.float(), atol=1e-5, rtol=0)
    focal = 60 / math.tan(math.radians(30))  # half height over tan(half vertical fov)
    torch.testing.assert_close(cam.K[0], torch.tensor([[focal, 0, 80], [0, focal, 60], [0, 0, 1]]), atol=1e-3, rtol=0)


class RecordingNet(nn.Module):
    """A fixer network (the ReadyFixer contract) that records the references it is given."""

    value_range, uses_references = (0.0, 1.0), True

    def __init__(self) -> None:
        super().__init__()
        self.refs_seen: list[tuple | None] = []

    def size_policy(self, size: object = "auto") -> SizePolicy:
        return SizePolicy()

    def to_dtype(self, dtype: torch.dtype) -> RecordingNet:
        return self

    def describe(self) -> str:
        return "recording"

    def forward(self, images: torch.Tensor, refs: torch.Tensor | None = None) -> torch.Tensor:
        self.refs_seen.append(None if refs is None else (tuple(refs.shape), float(refs[0, 0].mean())))
        return 1 - images


def _three_views() -> ReferenceViews:
    c2w = look_at(torch.tensor([[3.0, 0, 0], [0, 3.0, 0], [-3.0, 0, 0]]), torch.zeros(3))
    K = torch.tensor([[10.0, 0, 4], [0, 10.0, 4], [0, 0, 1]])
    return ReferenceViews(Cameras.from_c2w(c2w, K, 8, 8), [torch.full((3, 8, 8), v) for v in (0.1, 0.5, 0.9)])


def test_nearest_view_fix_takes_the_nearest_views_and_the_reference_count_per_call() -> None:
    views, net = _three_views(), RecordingNet()
    fix = NearestViewFix(ReadyFixer.around(net, "recording"), views, num_refs=1)
    query = views.cameras[[1]]
    out = fix(torch.full((1, 3, 6, 10), 0.25), query)
    torch.testing.assert_close(out, torch.full((1, 3, 6, 10), 0.75))
    fix(torch.zeros(1, 3, 6, 10), query, num_refs=2)  # the viewer's control, per call
    fix(torch.zeros(1, 3, 6, 10), query, num_refs=0)
    seen = net.refs_seen
    assert seen[0] == ((1, 1, 3, 6, 10), pytest.approx(0.5))  # its own (nearest) training view, resized
    assert seen[1][0] == (1, 2, 3, 6, 10) and seen[2] is None and fix.num_refs == 1
    with pytest.raises(ValueError, match="2 images"):
        ReferenceViews(views.cameras, views.images[:2])
    lazy = NearestViewFix(ReadyFixer("tiny"), views)
    assert not lazy.fixer.loaded  # nothing loads until the first fix
    lazy(torch.rand(1, 3, 16, 16), query)
    assert lazy.fixer.loaded


class _TrainingViews:
    """The GrowsTrainingSet members the viewer reads."""

    def __init__(self, views: ReferenceViews) -> None:
        self.train_cameras, self.train_images = views.cameras, views.images

    def target_cameras(self, kind: str = "test") -> Cameras:
        return self.train_cameras

    def set_fixed_views(self, images, cameras, weights, masks, real_view_weight=None) -> None:  # pragma: no cover
        raise AssertionError("not used")


def test_the_viewer_beside_training_adds_no_second_network() -> None:
    from callbacks.progressive_fix import ProgressiveFixCallback
    from callbacks.viewer.callback import ViewerCallback

    views = _three_views()
    progressive = ProgressiveFixCallback(fixer="tiny", num_refs=1)
    for named in (None, "tiny"):  # unset, or the same fixer: the callback's instance
        trainer = SimpleNamespace(callbacks=[ViewerCallback(port=0, fixer=named), progressive],
                                  datamodule=_TrainingViews(views))
        fix = trainer.callbacks[0]._fix(trainer)
        assert fix.fixer is progressive.fixer and fix.has_references
    fix(torch.rand(1, 3, 16, 16), views.cameras[[0]])
    progressive.fixer.fix_views(torch.rand(1, 3, 16, 16), views.cameras[[2]], views, 1)
    assert fix.fixer.net is progressive.fixer.net  # one network in memory
    trainer = SimpleNamespace(callbacks=[ViewerCallback(port=0, fixer="tiny:1"), progressive],
                              datamodule=_TrainingViews(views))
    assert trainer.callbacks[0]._fix(trainer).fixer is not progressive.fixer  # another fixer: its own
    alone = SimpleNamespace(callbacks=[ViewerCallback(port=0)], datamodule=_TrainingViews(views))
    assert alone.callbacks[0]._fix(alone) is None  # no fixer anywhere: no fix switch


def fit_demo(tmp_path: Path, extra: list[str], version: int) -> Path:
    from difix3d.cli import cli_main

    args = ["fit", "--config", str(REPO / "configs/demo/difix3d.yaml"), "--trainer.enable_progress_bar=false",
            f"--trainer.logger.init_args.save_dir={tmp_path / 'logs'}", f"--trainer.logger.init_args.version={version}",
            "--trainer.callbacks.fixer=tiny", "--trainer.callbacks.start_step=100", "--trainer.max_steps=3",
            f"--data.init_args.path={tmp_path / 'scene'}", "--data.init_args.procedural.num_views=8",
            "--data.init_args.procedural.size=24", "--data.init_args.read.test_every=4", "--data.init_args.read.train_every=1",
            "--data.init_args.steps_per_epoch=3", "--data.init_args.max_val_views=1",
            "--model.init_args.init.max_points=200", "--model.init_args.predict.frames=0",
            f"--model.init_args.output_dir={tmp_path / f'out{version}'}", *extra]
    with contextlib.redirect_stdout(io.StringIO()):
        cli_main(args)
    return tmp_path / "logs" / "difix3d_demo" / f"version_{version}" / "checkpoints" / "last.ckpt"


def test_fit_callback_without_clients_changes_nothing_and_view_command_opens_the_checkpoint(tmp_path: Path) -> None:
    pytest.importorskip("viser")
    import sys

    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import view
    finally:
        sys.path.remove(str(REPO / "scripts"))
    plain = fit_demo(tmp_path, [], 0)
    viewed = fit_demo(tmp_path, ["--trainer.callbacks+=callbacks.viewer.callback.ViewerCallback",
                                 "--trainer.callbacks.port=0"], 1)
    a, b = (torch.load(p, map_location="cpu", weights_only=False)["state_dict"] for p in (plain, viewed))
    assert a.keys() == b.keys()
    for k in a:  # same seed, same steps: the idle viewer did not touch training
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=0)

    args = view.parse_args([str(viewed), "--fixer", "tiny", "--port", "0", "--device", "cpu"])
    assert args.host == "127.0.0.1"  # other interfaces only when asked for
    viewer = view.build_viewer(args)
    try:
        assert viewer.fix is not None and viewer.fix.has_references and viewer.fix.num_refs == 1
        page = urllib.request.urlopen(viewer.url, timeout=10).read().decode()
        assert viewer.url.startswith("http://127.0.0.1:") and "<html" in page.lower()
    finally:
        viewer.stop()


class FakeViewer:
    """What ViewerCallback reads from a SceneViewer: one client whose frame is due until drawn."""

    def __init__(self, lock: threading.Lock) -> None:
        self.lock, self.num_clients, self.rest_delay_s = lock, 1, 0.05
        self.stats = {"render_ms": 10.0, "fix_ms": float("nan")}
        self.drawn = threading.Event()

    @property
    def busy(self) -> bool:
        return not self.drawn.is_set()

    def last_moved(self) -> float:
        return 0.0

    def set_status(self, text: str) -> None:
        self.status = text

    def rerender(self) -> None:
        pass


def test_training_holds_the_render_lock_and_lends_it_between_steps() -> None:
    from callbacks.viewer.callback import ViewerCallback

    cb = ViewerCallback(port=0, max_pause_s=5.0)
    viewer = cb.viewer = FakeViewer(cb.render_lock)
    trainer = SimpleNamespace(global_step=7)
    cb.on_train_start(trainer, None)
    assert not cb.render_lock.acquire(timeout=0.05)  # a frame cannot render during a step

    def render() -> None:  # the viewer's render thread
        with cb.render_lock:
            viewer.drawn.set()

    thread = threading.Thread(target=render)
    thread.start()
    cb.on_train_batch_end(trainer, None, None, None, 0)  # between two steps the frame renders
    assert viewer.drawn.is_set() and viewer.status == "training: step 7"
    assert not cb.render_lock.acquire(timeout=0.05)  # and training has the lock back
    thread.join(timeout=5)
    cb.on_train_end(trainer, None)
    assert cb.render_lock.acquire(timeout=1)
    cb.render_lock.release()
    cb.viewer = None


def test_fix_runs_at_rest_every_frame_or_when_fast_enough() -> None:
    pytest.importorskip("viser")
    from callbacks.viewer.server import SceneViewer

    viewer = SceneViewer(random_scene(10), fix=NearestViewFix(ReadyFixer("identity")), port=0, realtime_ms=100.0)
    try:
        assert not viewer.wants_fix(moving=False)  # switched off
        viewer.fix_enabled = True
        assert viewer.wants_fix(moving=False)
        viewer.gui_fix_mode.value = "at rest"
        assert not viewer.wants_fix(moving=True)
        viewer.gui_fix_mode.value = "every frame"
        assert viewer.wants_fix(moving=True)
        viewer.gui_fix_mode.value = "auto"
        assert not viewer.wants_fix(moving=True)  # nothing measured yet
        viewer.stats.update(render_ms=30.0, fix_ms=50.0)
        assert viewer.wants_fix(moving=True)
        viewer.stats.update(fix_ms=90.0)
        assert not viewer.wants_fix(moving=True)
        with pytest.raises(ValueError, match="fix_mode"):
            SceneViewer(random_scene(10), port=0, fix_mode="sometimes")  # type: ignore[arg-type]
        # The scene is taken by its declared contract (RendersViews), not probed attribute by attribute.
        with pytest.raises(TypeError, match="RendersViews"):
            SceneViewer(torch.nn.Identity(), port=0)  # type: ignore[arg-type]
    finally:
        viewer.stop()
    no_fix = SceneViewer(random_scene(10), port=0)
    try:
        with pytest.raises(ValueError, match="no fixer"):
            no_fix.fix_enabled = True
    finally:
        no_fix.stop()


# ---------------------------------------------------------------- in a real browser
def _scene_region(png: Path) -> np.ndarray:
    from PIL import Image

    image = np.asarray(Image.open(png).convert("RGB")).astype(np.float32)
    # Left of the control panel, below the "software WebGL" notice, above the axes widget.
    return image[160:390, 60:450]


@pytest.mark.browser
def test_browser_shows_the_scene_and_it_changes_with_camera_and_fix(tmp_path: Path) -> None:
    pytest.importorskip("viser")
    from helpers.browser import Browser, chromium_path

    if chromium_path() is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    import sys

    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import view
    finally:
        sys.path.remove(str(REPO / "scripts"))
    ply = random_scene().export_ply(tmp_path / "scene.ply", original_units=False)
    viewer = view.build_viewer(view.parse_args([str(ply), "--fixer", "tiny", "--port", "0", "--device", "cpu",
                                                "--move-resolution", "64", "--rest-resolution", "160"]))
    shots = tmp_path / "screenshots"
    try:
        with Browser(tmp_path / "profile") as browser:
            browser.open(viewer.url)
            assert viewer.wait_for_frames(1, "rest_frames", timeout=60), f"no frame rendered: {viewer.errors}"
            time.sleep(1.5)  # the browser draws the streamed frame
            first = browser.screenshot(shots / "1_scene.png")

            client = next(iter(viewer.server.get_clients().values()))
            rest = viewer.stats["rest_frames"]
            client.camera.position = (2.0, -1.5, 1.0)  # through the server: the browser follows
            client.camera.look_at = (0.0, 0.0, 0.0)
            assert viewer.wait_for_frames(rest + 1, "rest_frames", timeout=60), viewer.errors
            time.sleep(1.5)
            moved = browser.screenshot(shots / "2_camera_moved.png")

            viewer.fix_enabled = True
            assert viewer.wait_for_frames(1, "fixed_frames", timeout=60), viewer.errors
            time.sleep(1.5)
            fixed = browser.screenshot(shots / "3_fixed.png")
            assert viewer.gui_fix_ms.value > 0 and viewer.gui_render_ms.value > 0
    finally:
        viewer.stop()
        artifacts = REPO / "test-artifacts" / "viewer"
        if shots.is_dir():
            shutil.copytree(shots, artifacts, dirs_exist_ok=True)
    a, b, c = (_scene_region(p) for p in (first, moved, fixed))
    assert a.std() > 10, "the canvas is blank: no scene in the screenshot"
    assert np.abs(a - b).mean() > 3, "moving the camera did not change the page"
    assert np.abs(b - c).mean() > 3, "switching the fix on did not change the page"
    assert not viewer.errors


def test_a_busy_port_is_said_on_the_console(caplog: pytest.LogCaptureFixture) -> None:
    import logging
    import socket

    from callbacks.viewer.server import SceneViewer

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with caplog.at_level(logging.WARNING, logger="callbacks.viewer.server"):
            viewer = SceneViewer(random_scene(10), port=port)
        try:
            assert viewer.port != port
            assert f"port {port} is in use; serving on port {viewer.port}" in caplog.text
        finally:
            viewer.stop()
