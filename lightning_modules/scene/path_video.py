"""Camera paths rendered to videos (``predict``): plain, Difix3D+ (post-render fix) and side by side.

Written once for every scene representation: ``render_path`` needs only a render function with
the scene modules' contract (``render_views(cameras) -> (rgb (N,3,H,W) in [0,1], alpha)``) and,
for Difix3D+, the post-render fix ``fix(rgb (N,3,H,W), cameras) -> (N,3,H,W)``.

Memory stays flat for long paths: frames are rendered a small batch at a time and streamed to
the encoders (imageio-ffmpeg) and PNG files; nothing accumulates. Each video is written to a
temporary file and moved into place when complete, so an interrupted run leaves no
half-written video under the final name.
"""
from __future__ import annotations

import errno
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from datamodules.cameras.cameras import Cameras
from datamodules.cameras.poses import interpolate_path
from datamodules.files.image_io import save_image
from datamodules.files.temp_files import remove_stale, replace_folder, temp_path

__all__ = ["PathSettings", "VideoStream", "label_image", "path_cameras", "render_path", "to_uint8"]

RenderFn = Callable[[Cameras], tuple[Tensor, Tensor]]
FixFn = Callable[[Tensor, Cameras], Tensor]


@dataclass
class PathSettings:
    """The camera path ``predict`` renders.

    Attributes:
        path: JSON of cameras (``datamodules.cameras.camera_json`` layout, normalised world); None
            interpolates ``frames`` poses through the training cameras.
        frames: frames of the interpolated path (0: no path, only the predict views).
        fps: frame rate of the video.
    """

    path: str | None = None
    frames: int = 60
    fps: int = 30

    def __post_init__(self) -> None:
        if isinstance(self.frames, bool) or not isinstance(self.frames, int) or self.frames < 0:
            raise ValueError(f"predict.frames must be an integer >= 0 (0: no path video), got {self.frames!r}")
        if isinstance(self.fps, bool) or not isinstance(self.fps, int) or self.fps <= 0:
            raise ValueError(f"predict.fps must be a positive integer, got {self.fps!r}")


# Settings are hyperparameters, so checkpoints hold them; allow them in weights-only loading.
torch.serialization.add_safe_globals([PathSettings])


def path_cameras(settings: PathSettings, train_cameras: Cameras | None) -> Cameras | None:
    """``settings.path``'s cameras, else ``frames`` poses interpolated through ``train_cameras``
    (at the first one's intrinsics and size); None when ``frames`` is 0 and no JSON is given."""
    if settings.path is not None:
        from datamodules.cameras.camera_json import read_cameras_json

        return read_cameras_json(settings.path)
    if settings.frames <= 0:
        return None
    if train_cameras is None or len(train_cameras) == 0:
        raise RuntimeError("predict: set predict.path (a cameras JSON) or give the module its training cameras")
    c2w = interpolate_path(train_cameras.camera_to_world, settings.frames)
    names = [f"frame_{i:04d}" for i in range(len(c2w))]
    K = train_cameras.K[:1].expand(len(c2w), 3, 3)
    return Cameras.from_c2w(c2w, K, train_cameras.width[0], train_cameras.height[0], names)


def to_uint8(image: Tensor, what: str = "frame") -> np.ndarray:
    """(3, H, W) [0, 1] tensor -> (H, W, 3) uint8 array, rounded as ``save_image`` rounds.

    Raises:
        ValueError: naming `what`, when the image holds NaN/Inf (it would become black pixels).
    """
    if not bool(torch.isfinite(image).all()):
        raise ValueError(f"{what}: the render holds NaN/Inf values; not written (they would be black pixels). "
                         "Check the camera (finite, positive intrinsics) and the scene's parameters")
    return (image.detach().float().clamp(0, 1) * 255.0).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def label_image(image: np.ndarray, text: str) -> np.ndarray:
    """Writes ``text`` in the top-left corner of an (H, W, 3) uint8 image, on a dark box.

    The font (PIL's default, scaled to the image height, shrunk to fit narrow frames) keeps
    labels readable on small demo renders as on 1024-wide ones.
    """
    from PIL import Image, ImageDraw, ImageFont

    pil = Image.fromarray(image)
    draw = ImageDraw.Draw(pil)
    size = max(8, image.shape[0] // 12)
    font = ImageFont.load_default(size=size)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    while right - left > 0.9 * image.shape[1] and size > 4:  # narrow frames: shrink to fit
        size -= 1
        font = ImageFont.load_default(size=size)
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    pad = max(1, size // 4)
    draw.rectangle((0, 0, right - left + 2 * pad, bottom - top + 2 * pad), fill=(0, 0, 0))
    draw.text((pad - left, pad - top), text, fill=(255, 255, 255), font=font)
    return np.asarray(pil)


class VideoStream:
    """An H.264 mp4 written frame by frame (imageio-ffmpeg), moved into place on ``close``.

    Frames of odd size are edge-padded to even (yuv420p needs it). Use as a context manager:
    on an exception the temporary file is removed and the final path is left untouched.

    Args:
        path: final .mp4 path (parents created).
        fps: frame rate.
    """

    def __init__(self, path: str | Path, fps: int) -> None:
        import imageio.v2 as imageio

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = temp_path(self.path, keep_suffix=True)  # ffmpeg picks the format by the suffix
        self._writer = imageio.get_writer(self._tmp, fps=fps, codec="libx264", macro_block_size=1, quality=8)
        self.frames = 0

    def append(self, frame: np.ndarray) -> None:
        """Appends one (H, W, 3) uint8 frame (all frames of a video share one size)."""
        h, w = frame.shape[:2]
        try:
            self._writer.append_data(np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge"))
        except (OSError, RuntimeError) as err:  # ffmpeg gone (a full disk): a broken pipe
            raise self._failed(err) from err
        self.frames += 1

    def close(self) -> Path:
        try:
            self._writer.close()
            os.replace(self._tmp, self.path)
        except (OSError, RuntimeError) as err:
            self._tmp.unlink(missing_ok=True)
            raise self._failed(err) from err
        return self.path

    def _failed(self, err: Exception) -> OSError:
        code = err.errno if isinstance(err, OSError) and err.errno else errno.EIO
        first = (str(err).strip().splitlines() or [""])[0][:200]  # imageio appends ffmpeg's command line
        return OSError(code, f"video {self.path} not written at frame {self.frames} ({type(err).__name__}: "
                             f"{first}); a full disk, or ffmpeg failed")

    def abort(self) -> None:
        self._writer.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> VideoStream:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


@torch.no_grad()
def render_path(
    render_views: RenderFn,
    cameras: Cameras,
    out_dir: str | Path,
    fps: int = 30,
    fix: FixFn | None = None,
    labels: tuple[str, str] = ("plain", "Difix3D+"),
    batch_size: int = 1,
    save_frames: bool = True,
    progress: bool = True,
) -> dict[str, Path]:
    """Renders ``cameras`` in order and writes the path videos (and frames) under ``out_dir``.

    Writes ``video.mp4`` (plain renders) and ``frames/NNNNN.png``; with ``fix`` also
    ``video_fixed.mp4`` + ``frames_fixed/NNNNN.png`` (Difix3D+) and ``video_compare.mp4``
    (plain | fixed side by side, each labelled).

    Args:
        render_views: the scene module's renderer: Cameras -> (rgb (N, 3, H, W) in [0, 1], alpha).
        cameras: the path, all of one image size (a video has one frame size).
        out_dir: output folder.
        fps: frame rate of the videos.
        fix: the post-render fix, (rgb (N, 3, H, W), cameras) -> (N, 3, H, W); None writes
            the plain video only.
        labels: captions of the plain and fixed halves of ``video_compare.mp4``.
        batch_size: frames rendered (and fixed) per call; memory grows with it, not with the path.
        save_frames: also write each frame as a PNG.
        progress: show a tqdm progress bar.

    Returns:
        {"video": path, and with ``fix`` "video_fixed" and "video_compare"}.

    Raises:
        ValueError: an empty path or cameras of different sizes.
    """
    cameras.common_size("render_path")  # a video has one frame size
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale(out)  # videos / frame folders half-written by killed runs
    names = ["video"] + (["video_fixed", "video_compare"] if fix is not None else [])
    folders = (["frames"] + (["frames_fixed"] if fix is not None else [])) if save_frames else []
    streams: dict[str, VideoStream] = {}
    # Frames go to fresh hidden folders that replace the old ones at the end: a re-run never
    # mixes its frames with an earlier run's (other length or size).
    staged = {name: temp_path(out / name, "new") for name in folders}
    try:
        for name in names:
            streams[name] = VideoStream(out / f"{name}.mp4", fps)
        bar = tqdm(total=len(cameras), desc="path video" + (" + Difix3D+" if fix else ""), disable=not progress,
                   leave=False)
        for start in range(0, len(cameras), batch_size):
            cams = cameras[list(range(start, min(start + batch_size, len(cameras))))]
            rgb, _ = render_views(cams)
            fixed = fix(rgb, cams).clamp(0, 1) if fix is not None else None
            for j in range(len(cams)):
                index = start + j
                plain = to_uint8(rgb[j], f"frame {index} ({cams.names[j]}) of {out / 'video.mp4'}")
                streams["video"].append(plain)
                if save_frames:
                    save_image(rgb[j], staged["frames"] / f"{index:05d}.png")
                if fixed is not None:
                    better = to_uint8(fixed[j], f"frame {index} ({cams.names[j]}) of {out / 'video_fixed.mp4'}")
                    streams["video_fixed"].append(better)
                    streams["video_compare"].append(
                        np.concatenate([label_image(plain, labels[0]), label_image(better, labels[1])], axis=1))
                    if save_frames:
                        save_image(fixed[j], staged["frames_fixed"] / f"{index:05d}.png")
            bar.update(len(cams))
        bar.close()
    except BaseException:
        for stream in streams.values():
            stream.abort()
        for folder in staged.values():
            shutil.rmtree(folder, ignore_errors=True)
        raise
    written = {name: stream.close() for name, stream in streams.items()}
    for name, folder in staged.items():
        replace_folder(folder, out / name)
    # What an earlier run wrote here and this one did not (e.g. its Difix3D+ videos) no longer
    # matches the new plain video: removed, not left beside it.
    for name in sorted({"video_fixed", "video_compare"} - set(names)):
        (out / f"{name}.mp4").unlink(missing_ok=True)
    for name in sorted({"frames", "frames_fixed"} - set(folders)):
        shutil.rmtree(out / name, ignore_errors=True)
    return written
