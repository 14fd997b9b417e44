"""Renders a camera path to videos: plain, Difix3D+ (post-render fix) and side by side.

Written once for every scene representation: it needs only a render function with the scene
modules' contract (``render_views(cameras) -> (rgb (N,3,H,W) in [0,1], alpha)``) and, for
Difix3D+, the post-render fix ``fix(rgb (N,3,H,W), cameras) -> (N,3,H,W)``.

Memory stays flat for long paths: frames are rendered a small batch at a time and streamed to
the encoders (imageio-ffmpeg) and PNG files; nothing accumulates. Each video is written to a
temporary file and moved into place when complete, so an interrupted run leaves no
half-written video under the final name.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from datamodules.cameras import Cameras

__all__ = ["VideoStream", "label_image", "render_path_videos", "to_uint8"]

RenderFn = Callable[[Cameras], tuple[Tensor, Tensor]]
FixFn = Callable[[Tensor, Cameras], Tensor]


def to_uint8(image: Tensor) -> np.ndarray:
    """(3, H, W) [0, 1] tensor -> (H, W, 3) uint8 array (round half up, as every PNG here)."""
    return (image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255 + 0.5).astype(np.uint8)


def label_image(image: np.ndarray, text: str) -> np.ndarray:
    """Writes ``text`` in the top-left corner of an (H, W, 3) uint8 image, on a dark box.

    The font (PIL's default, scaled to the image height) keeps labels readable on small demo
    renders as on 1024-wide ones.
    """
    from PIL import Image, ImageDraw, ImageFont

    pil = Image.fromarray(image)
    draw = ImageDraw.Draw(pil)
    size = max(8, image.shape[0] // 12)
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
        self._tmp = self.path.with_name(f".{self.path.stem}.tmp{os.getpid()}{self.path.suffix}")
        self._writer = imageio.get_writer(self._tmp, fps=fps, codec="libx264", macro_block_size=1, quality=8)
        self.frames = 0

    def append(self, frame: np.ndarray) -> None:
        """Appends one (H, W, 3) uint8 frame (all frames of a video share one size)."""
        h, w = frame.shape[:2]
        self._writer.append_data(np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge"))
        self.frames += 1

    def close(self) -> Path:
        self._writer.close()
        os.replace(self._tmp, self.path)
        return self.path

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


def _save_png(frame: np.ndarray, path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    Image.fromarray(frame).save(tmp, format="PNG")
    os.replace(tmp, path)


@torch.no_grad()
def render_path_videos(
    render: RenderFn,
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
        render: the scene's ``render_views``: Cameras -> (rgb (N, 3, H, W) in [0, 1], alpha).
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
    if len(cameras) == 0:
        raise ValueError("render_path_videos: the camera path is empty")
    if bool((cameras.width != cameras.width[0]).any()) or bool((cameras.height != cameras.height[0]).any()):
        raise ValueError("render_path_videos: all cameras of a path must share one image size")
    out = Path(out_dir)
    names = ["video"] + (["video_fixed", "video_compare"] if fix is not None else [])
    streams: dict[str, VideoStream] = {}
    try:
        for name in names:
            streams[name] = VideoStream(out / f"{name}.mp4", fps)
        bar = tqdm(total=len(cameras), desc="path video" + (" + Difix3D+" if fix else ""), disable=not progress,
                   leave=False)
        for start in range(0, len(cameras), batch_size):
            cams = cameras[list(range(start, min(start + batch_size, len(cameras))))]
            rgb, _ = render(cams)
            fixed = fix(rgb, cams).clamp(0, 1) if fix is not None else None
            for j in range(len(cams)):
                index = start + j
                plain = to_uint8(rgb[j])
                streams["video"].append(plain)
                if save_frames:
                    _save_png(plain, out / "frames" / f"{index:05d}.png")
                if fixed is not None:
                    better = to_uint8(fixed[j])
                    streams["video_fixed"].append(better)
                    streams["video_compare"].append(
                        np.concatenate([label_image(plain, labels[0]), label_image(better, labels[1])], axis=1))
                    if save_frames:
                        _save_png(better, out / "frames_fixed" / f"{index:05d}.png")
            bar.update(len(cams))
        bar.close()
    except BaseException:
        for stream in streams.values():
            stream.abort()
        raise
    return {name: stream.close() for name, stream in streams.items()}
