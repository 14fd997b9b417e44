"""Camera paths rendered to frames and a video (``predict``), for any scene module.

``render_path`` takes any ``render_views(cameras) -> (rgb, alpha)`` and optionally a
post-render fix, so the same function writes the plain and the fixed path of Gaussians and
NeRFs alike.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from datamodules.cameras import Cameras, interpolate_path
from datamodules.image_io import save_image

__all__ = ["PathSettings", "path_cameras", "render_path", "write_video"]


@dataclass
class PathSettings:
    """The camera path ``predict`` renders.

    Attributes:
        path: JSON of cameras (``datamodules.camera_json`` layout, normalised world); None
            interpolates ``frames`` poses through the training cameras.
        frames: frames of the interpolated path (0: no path, only the predict views).
        fps: frame rate of the video.
    """

    path: str | None = None
    frames: int = 60
    fps: int = 30


# Settings are hyperparameters, so checkpoints hold them; allow them in weights-only loading.
torch.serialization.add_safe_globals([PathSettings])


def path_cameras(settings: PathSettings, train_cameras: Cameras | None) -> Cameras | None:
    """``settings.path``'s cameras, else ``frames`` poses interpolated through ``train_cameras``
    (at the first one's intrinsics and size); None when ``frames`` is 0 and no JSON is given."""
    if settings.path is not None:
        from datamodules.camera_json import read_cameras_json

        return read_cameras_json(settings.path)
    if settings.frames <= 0:
        return None
    if train_cameras is None or len(train_cameras) == 0:
        raise RuntimeError("predict: set predict.path (a cameras JSON) or give the module its training cameras")
    c2w = interpolate_path(train_cameras.camera_to_world, settings.frames)
    names = [f"frame_{i:04d}" for i in range(len(c2w))]
    K = train_cameras.K[:1].expand(len(c2w), 3, 3)
    return Cameras.from_c2w(c2w, K, train_cameras.width[0], train_cameras.height[0], names)


def render_path(
    render_views: Callable[[Cameras], tuple[Tensor, Tensor]],
    cameras: Cameras,
    out_dir: str | Path,
    fps: int,
    fix: Callable[[Tensor, Cameras], Tensor] | None = None,
) -> Path:
    """Renders ``cameras`` in order to ``out_dir``/frames/NNNNN.png and ``out_dir``/video.mp4.

    Args:
        render_views: the scene module's renderer.
        cameras: the path, in order.
        out_dir: output folder.
        fps: video frame rate.
        fix: applied to each rendered frame (N=1) before writing, e.g. the post-render fix.

    Returns:
        The video path.
    """
    out = Path(out_dir)
    paths = []
    for i in range(len(cameras)):  # one frame at a time: memory stays flat for long paths
        rgb, _ = render_views(cameras[i])
        if fix is not None:
            rgb = fix(rgb, cameras[i]).clamp(0, 1)
        paths.append(save_image(rgb[0], out / "frames" / f"{i:05d}.png"))
    return write_video(paths, out / "video.mp4", fps)


def write_video(frames: list[Path], path: Path, fps: int) -> Path:
    """Encodes same-size image frames to an H.264 mp4 (even-padded for yuv420p), atomically."""
    import imageio.v2 as imageio
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        with imageio.get_writer(tmp, fps=fps, codec="libx264", macro_block_size=1, quality=8) as writer:
            for f in frames:
                a = np.asarray(imageio.imread(f))[..., :3]
                h, w = a.shape[:2]
                writer.append_data(np.pad(a, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge"))
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
