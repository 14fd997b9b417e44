"""Image files <-> float tensors, the project's one image convention at the disk edge.

Every image that enters the project is a float32 tensor (3, H, W) in [0, 1]; every image
written leaves through `save_image`, atomically, so a crash never leaves a half-written
PNG that a later run would try to read.
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from datamodules.files.temp_files import write_atomic

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def read_image_size(path: str | os.PathLike) -> tuple[int, int]:
    """Reads an image's (width, height) from its header without decoding the pixels.

    Args:
        path: image file.

    Returns:
        (width, height) in pixels.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not an image PIL can identify.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: image file not found")
    try:
        with Image.open(path) as image:  # lazy: only the header is parsed
            return image.size
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"{path}: not a readable image ({error})") from error


def find_undecodable(paths: list[Path], threads: int = 4) -> dict[Path, str]:
    """Decodes every image fully and returns the ones that fail, with the reason.

    A header check passes truncated files (an interrupted copy), which then crash training
    when the loader reaches them. PIL releases the GIL while decoding, so threads help.

    Returns:
        {path: error message} for each file that does not decode.
    """
    from concurrent.futures import ThreadPoolExecutor

    def check(path: Path) -> str | None:
        try:
            with Image.open(path) as image:
                image.load()
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
            return f"{type(error).__name__}: {error}"
        return None

    unique = list(dict.fromkeys(paths))
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        results = list(pool.map(check, unique))
    return {p: r for p, r in zip(unique, results) if r is not None}


# PIL modes with one channel (and alpha): read as RGB by repeating the channel.
GREYSCALE_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "F")


def warn_greyscale_among_colour(paths: Sequence[Path], where: str | os.PathLike) -> list[Path]:
    """Warns once when some, not all, of ``paths`` are greyscale; returns the greyscale ones.

    ``load_image`` reads a greyscale file as RGB by repeating its channel, which is right for a
    greyscale capture and a silent mistake for one frame among colour photos (a mask, a depth
    map, an infrared frame copied into the folder). Only the headers are read. Files that do
    not open are left to the checks that decode them.

    Args:
        paths: the image files of one set (a scene, a pairs file).
        where: the set, for the message.
    """
    modes: dict[Path, str] = {}
    for path in dict.fromkeys(Path(p) for p in paths):
        try:
            with Image.open(path) as image:  # lazy: only the header is parsed
                modes[path] = image.mode
        except (UnidentifiedImageError, OSError):
            continue
    grey = [p for p, mode in modes.items() if mode in GREYSCALE_MODES]
    if grey and len(grey) < len(modes):
        named = ", ".join(str(p) for p in grey[:3]) + (f" and {len(grey) - 3} more" if len(grey) > 3 else "")
        kinds = ", ".join(sorted({modes[p] for p in grey}))
        warnings.warn(f"{where}: {len(grey)} of {len(modes)} images are greyscale (mode {kinds}) among colour ones: "
                      f"{named}; each is read as RGB by repeating its channel. A mask or depth map among the photos?",
                      stacklevel=2)
    return grey


def _to_float_array(image: Image.Image) -> np.ndarray:
    """PIL image -> (H, W, C) float32 in [0, 1], C in {3, 4}; keeps alpha when present."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit greyscale: PIL's convert("RGB") would clip to 8 bits, so scale ourselves.
        grey = np.asarray(image, dtype=np.float32) / 65535.0
        return np.repeat(grey[..., None], 3, axis=-1)
    if image.mode == "F":
        grey = np.asarray(image, dtype=np.float32)
        return np.repeat(grey[..., None], 3, axis=-1)
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (
        image.mode == "P" and "transparency" in image.info
    )
    image = image.convert("RGBA" if has_alpha else "RGB")
    return np.asarray(image, dtype=np.float32) / 255.0


def load_image(
    path: str | os.PathLike,
    size: tuple[int, int] | None = None,
    background: tuple[float, float, float] | None = None,
) -> torch.Tensor:
    """Loads an image file as a float tensor.

    RGBA images are composited over `background` when it is given (before any resize, so
    edges do not pick up the colour hidden under transparent pixels); otherwise alpha is
    dropped. Greyscale is repeated to 3 channels; 16-bit greyscale keeps its precision (the
    readers say when a set mixes greyscale and colour: ``warn_greyscale_among_colour``).

    Args:
        path: image file (PNG, JPEG, WebP, BMP, TIFF: whatever PIL reads).
        size: (width, height) to resize to (bicubic, antialiased), or None for native size.
        background: RGB in [0, 1] to composite transparent pixels over, or None.

    Returns:
        (3, H, W) float32 in [0, 1].

    Raises:
        FileNotFoundError: the file does not exist (message names it).
        ValueError: the file cannot be decoded, or `size` is not positive (message names it).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: image file not found")
    try:
        with Image.open(path) as image:
            array = _to_float_array(image)
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise ValueError(f"{path}: not a readable image ({error})") from error

    tensor = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)
    if tensor.shape[0] == 4:
        rgb, alpha = tensor[:3], tensor[3:]
        if background is not None:
            bg = torch.tensor(background, dtype=torch.float32).view(3, 1, 1)
            rgb = rgb * alpha + bg * (1.0 - alpha)
        tensor = rgb
    tensor = tensor.float()
    if size is not None:
        width, height = int(size[0]), int(size[1])
        if width <= 0 or height <= 0:
            raise ValueError(f"{path}: resize target must be positive (width, height), got {size}")
        tensor = resize_image(tensor, (height, width))
    return tensor.clamp_(0.0, 1.0).contiguous()


def resize_image(image: torch.Tensor, size_hw: tuple[int, int]) -> torch.Tensor:
    """Resizes (..., 3, H, W) images to `size_hw` = (height, width), bicubic + antialias.

    Returns the input unchanged when it already has that size. Output is clamped to [0, 1]
    because bicubic overshoots at edges.
    """
    if tuple(image.shape[-2:]) == tuple(size_hw):
        return image
    batched = image.reshape(-1, *image.shape[-3:])
    out = F.interpolate(batched, size=tuple(size_hw), mode="bicubic", antialias=True, align_corners=False)
    return out.clamp(0.0, 1.0).reshape(*image.shape[:-2], *size_hw)


def save_image(image: torch.Tensor, path: str | os.PathLike) -> Path:
    """Writes a (3, H, W) [0, 1] tensor as an 8-bit image, atomically.

    Written through ``temp_files.write_atomic`` (a temporary in the same folder moved into
    place), so readers never see a partial file. Parent folders are created. The format follows
    the suffix (.png, .jpg, ...).

    Args:
        image: (3, H, W) or (1, H, W) float tensor in [0, 1] (values outside are clamped),
            on any device.
        path: destination file.

    Returns:
        The destination path.

    Raises:
        ValueError: wrong shape, NaN/Inf values, or a suffix PIL cannot write (message names the path).
        OSError: the file cannot be written (a full disk), naming it; an older file stays whole.
    """
    path = Path(path)
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"{path}: save_image expects a (3, H, W) or (1, H, W) tensor, got {tuple(image.shape)}")
    image_format = Image.registered_extensions().get(path.suffix.lower())
    if image_format is None:
        raise ValueError(f"{path}: unknown image suffix {path.suffix!r}; use one of {IMAGE_EXTENSIONS}")
    if not bool(torch.isfinite(image).all()):  # NaN would be written as black: refuse instead
        bad = int((~torch.isfinite(image)).sum())
        raise ValueError(f"{path}: the image holds {bad} NaN/Inf values; not written (they would be black pixels)")
    array = (image.detach().float().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).cpu()
    array = array.permute(1, 2, 0).numpy()
    pil = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)

    return write_atomic(path, lambda stream: pil.save(stream, format=image_format), "image")


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly inside `folder`, sorted by name.

    Raises:
        FileNotFoundError: `folder` is not a directory.
        ValueError: it holds no image files.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: image folder not found")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise ValueError(f"{folder}: no image files ({', '.join(IMAGE_EXTENSIONS)}) in this folder")
    return files
