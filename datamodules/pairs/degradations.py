"""Synthetic training pairs: procedural clean images and render-like degradations.

Used by PairDataModule's synthetic source so the fixer can be trained and tested without
any 3D reconstruction. The degradations imitate what 3DGS/NeRF renders show away from the
training cameras (METHOD.md "The problem"): blur and lost resolution, floaters
(semi-transparent blobs), ghosting (a faint shifted copy), colour drift and noise. They are
kept at moderate strength so a small fixer can learn to undo them.

Everything takes an explicit `torch.Generator`, so an item seeded by its index is the same
in every run and every worker. All images are (3, H, W) float32 in [0, 1].
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms.v2.functional import gaussian_blur

DEGRADATIONS: tuple[str, ...] = ("blur", "lowres", "ghosting", "floaters", "color", "noise")


def seed_from(*keys: int) -> int:
    """A well-mixed 63-bit seed from integer keys (e.g. (seed, split, index))."""
    return int(np.random.SeedSequence([int(k) & 0xFFFFFFFFFFFFFFFF for k in keys]).generate_state(1, np.uint64)[0] >> 1)


def make_generator(*keys: int) -> torch.Generator:
    """CPU torch.Generator seeded by `seed_from(*keys)`."""
    return torch.Generator().manual_seed(seed_from(*keys))


def _uniform(generator: torch.Generator, low: float, high: float, size: Sequence[int] = ()) -> torch.Tensor:
    return low + (high - low) * torch.rand(tuple(size), generator=generator)


def _grid(height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(H, W) pixel-centre coordinates normalised to [0, 1]: y, x."""
    ys = (torch.arange(height, dtype=torch.float32) + 0.5) / height
    xs = (torch.arange(width, dtype=torch.float32) + 0.5) / width
    return torch.meshgrid(ys, xs, indexing="ij")


def procedural_image(height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """A clean synthetic "photo": smooth colour field + shapes + stripe textures.

    Layers: a smooth random colour field (sum of upsampled noise octaves), 3-7 flat or
    gradient shapes (discs, rectangles) with soft anti-aliased edges, and 1-3 regions of
    oriented stripes / checker texture. High-frequency texture gives the blur and noise
    something to destroy, and the Gram loss something to match. One image in five has a plain
    white background and one in ten a black one, as object-centric captures (NeRF-synthetic)
    do: a fixer fine-tuned without them turned lego's white background grey (white in, 0.93 /
    0.91 / 0.87 out).

    Args:
        height: output height in pixels.
        width: output width in pixels.
        generator: seeds everything.

    Returns:
        (3, height, width) float32 in [0, 1].
    """
    # Smooth background: octaves of bicubic-upsampled noise, coarse to fine.
    image = torch.zeros(1, 3, height, width)
    base = torch.rand(3, generator=generator).view(1, 3, 1, 1)
    for cells, amplitude in ((2, 0.45), (4, 0.25), (8, 0.12)):
        noise = torch.rand(1, 3, cells, cells, generator=generator) - 0.5
        image += amplitude * F.interpolate(noise, size=(height, width), mode="bicubic", align_corners=False)
    image = (image + base)[0]

    y, x = _grid(height, width)
    aspect = width / height
    softness = 1.5 / min(height, width)  # ~1.5 px anti-aliased edges

    covered = torch.zeros(1, height, width)  # where shapes/textures lie over the background
    n_shapes = int(torch.randint(3, 8, (1,), generator=generator))
    for _ in range(n_shapes):
        cy, cx = _uniform(generator, 0.0, 1.0, (2,)).tolist()
        size = float(_uniform(generator, 0.06, 0.3))
        colour = torch.rand(3, 1, 1, generator=generator)
        if torch.rand((), generator=generator) < 0.5:  # disc (round in pixels)
            dist = torch.sqrt((y - cy) ** 2 + ((x - cx) * aspect) ** 2) - size
        else:  # axis-aligned rectangle
            hy, hx = size, float(_uniform(generator, 0.5, 1.5)) * size / aspect
            dist = torch.maximum((y - cy).abs() - hy, (x - cx).abs() - hx)
        mask = torch.sigmoid(-dist / softness)
        shade = 1.0 + 0.3 * (y - cy) * float(_uniform(generator, -1.0, 1.0))  # mild gradient
        image = image * (1 - mask) + (colour * shade) * mask
        covered = torch.maximum(covered, mask)

    n_textures = int(torch.randint(1, 4, (1,), generator=generator))
    for _ in range(n_textures):
        angle = float(_uniform(generator, 0.0, math.pi))
        period_px = float(_uniform(generator, 4.0, 14.0))
        u = (x * width * math.cos(angle) + y * height * math.sin(angle)) * (2 * math.pi / period_px)
        if torch.rand((), generator=generator) < 0.5:
            pattern = 0.5 + 0.5 * torch.sin(u)
        else:  # checker: product of two orthogonal square waves
            v = (-x * width * math.sin(angle) + y * height * math.cos(angle)) * (2 * math.pi / period_px)
            pattern = 0.5 + 0.5 * torch.sign(torch.sin(u) * torch.sin(v))
        c0, c1 = torch.rand(2, 3, 1, 1, generator=generator)
        texture = c0 * (1 - pattern) + c1 * pattern
        cy, cx = _uniform(generator, 0.2, 0.8, (2,)).tolist()
        hy, hx = _uniform(generator, 0.1, 0.3, (2,)).tolist()
        region = torch.sigmoid(-(torch.maximum((y - cy).abs() - hy, (x - cx).abs() - hx)) / softness)
        image = image * (1 - region) + texture * region
        covered = torch.maximum(covered, region)
    # Drawn last so every other draw (and so every earlier image of a seed) stays the same.
    plain = float(torch.rand((), generator=generator))
    if plain < 0.3:
        background = 1.0 if plain < 0.2 else 0.0
        image = image * covered + background * (1 - covered)
    return image.clamp(0.0, 1.0).contiguous()


def shift_image(image: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Translates (..., C, H, W) by integer (dy, dx) pixels, replicating the border.

    out[..., i, j] = image[..., clamp(i - dy), clamp(j - dx)].
    """
    h, w = image.shape[-2:]
    rows = (torch.arange(h) - dy).clamp(0, h - 1)
    cols = (torch.arange(w) - dx).clamp(0, w - 1)
    return image[..., rows[:, None], cols[None, :]]


def blur(image: torch.Tensor, generator: torch.Generator, strength: float = 1.0) -> torch.Tensor:
    """Gaussian blur, sigma in [0.6, 1.8] * strength pixels (reflect padding)."""
    sigma = max(0.3, float(_uniform(generator, 0.6, 1.8)) * strength)
    kernel = 2 * math.ceil(3 * sigma) + 1
    return gaussian_blur(image, kernel_size=[kernel, kernel], sigma=[sigma, sigma])


def lowres(image: torch.Tensor, generator: torch.Generator, strength: float = 1.0) -> torch.Tensor:
    """Down- then up-sampling by 1.5-3x (a render seen from farther than its training views)."""
    factor = 1.0 + float(_uniform(generator, 0.5, 2.0)) * strength
    h, w = image.shape[-2:]
    small = (max(1, round(h / factor)), max(1, round(w / factor)))
    down = F.interpolate(image[None], size=small, mode="bilinear", antialias=True, align_corners=False)
    return F.interpolate(down, size=(h, w), mode="bilinear", align_corners=False)[0]


def ghosting(image: torch.Tensor, generator: torch.Generator, strength: float = 1.0) -> torch.Tensor:
    """Blend with a copy shifted by 3-10 px at 0.15-0.35 opacity (doubled edges)."""
    magnitude = float(_uniform(generator, 3.0, 10.0))
    angle = float(_uniform(generator, 0.0, 2 * math.pi))
    dy, dx = round(magnitude * math.sin(angle)), round(magnitude * math.cos(angle))
    alpha = min(0.6, float(_uniform(generator, 0.15, 0.35)) * strength)
    return (1 - alpha) * image + alpha * shift_image(image, dy, dx)


def floaters(image: torch.Tensor, generator: torch.Generator, strength: float = 1.0) -> torch.Tensor:
    """1-4 semi-transparent soft elliptical blobs (peak opacity 0.3-0.65).

    Colours mix a random colour with the image's mean colour, like the grey-ish or
    scene-coloured clouds stray Gaussians leave in front of the camera.
    """
    h, w = image.shape[-2:]
    y, x = _grid(h, w)
    n = int(torch.randint(1, 5, (1,), generator=generator))
    centres = torch.rand(n, 2, generator=generator)
    radii = _uniform(generator, 0.04, 0.16, (n, 2))
    angles = _uniform(generator, 0.0, math.pi, (n,))
    peaks = (_uniform(generator, 0.3, 0.65, (n,)) * strength).clamp(max=0.9)
    mix = _uniform(generator, 0.3, 0.8, (n, 1))
    colours = mix * torch.rand(n, 3, generator=generator) + (1 - mix) * image.mean(dim=(1, 2))[None]

    # All blobs' opacity maps at once: (n, H, W) rotated-ellipse Gaussians.
    dy = (y[None] - centres[:, 0, None, None]) * h / min(h, w)
    dx = (x[None] - centres[:, 1, None, None]) * w / min(h, w)
    cos, sin = torch.cos(angles)[:, None, None], torch.sin(angles)[:, None, None]
    u, v = cos * dx + sin * dy, -sin * dx + cos * dy
    alphas = peaks[:, None, None] * torch.exp(-0.5 * ((u / radii[:, 0, None, None]) ** 2 + (v / radii[:, 1, None, None]) ** 2))
    for k in range(n):  # "over" compositing is order dependent; n <= 4
        image = image * (1 - alphas[k]) + colours[k, :, None, None] * alphas[k]
    return image


def color_shift(image: torch.Tensor, generator: torch.Generator, strength: float = 1.0) -> torch.Tensor:
    """Per-channel gain (1 +- 0.12) and offset (+- 0.05), scaled by strength."""
    gain = 1.0 + _uniform(generator, -0.12, 0.12, (3, 1, 1)) * strength
    offset = _uniform(generator, -0.05, 0.05, (3, 1, 1)) * strength
    return image * gain + offset


def noise(image: torch.Tensor, generator: torch.Generator, strength: float = 1.0) -> torch.Tensor:
    """Additive Gaussian noise, std 0.01-0.04 * strength."""
    std = float(_uniform(generator, 0.01, 0.04)) * strength
    return image + std * torch.randn(image.shape, generator=generator)


_FUNCTIONS = {
    "blur": blur,
    "lowres": lowres,
    "ghosting": ghosting,
    "floaters": floaters,
    "color": color_shift,
    "noise": noise,
}


class Degrader:
    """Applies a random subset of degradations, in a fixed physical order.

    Each listed degradation is applied with probability `probability`; when none is
    drawn, one is picked uniformly so every degraded image differs from its target. The
    order is always that of DEGRADATIONS (optics first, sensor noise last). An empty list
    is the identity.

    Args:
        names: degradations to draw from, a subset of DEGRADATIONS.
        strength: scales every degradation's magnitude (1.0 = moderate).
        probability: chance that each listed degradation is applied.
    """

    def __init__(self, names: Sequence[str] = DEGRADATIONS, strength: float = 1.0, probability: float = 0.5) -> None:
        unknown = [n for n in names if n not in _FUNCTIONS]
        if unknown:
            raise ValueError(f"unknown degradation(s) {unknown}; choose from {list(DEGRADATIONS)}")
        if strength < 0:
            raise ValueError(f"degradation strength must be >= 0, got {strength}")
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"degradation probability must be in [0, 1], got {probability}")
        self.names = [n for n in DEGRADATIONS if n in names]
        self.strength = strength
        self.probability = probability

    def __call__(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Degrades one image.

        Args:
            image: (3, H, W) in [0, 1].
            generator: drives every random choice (seed it per item for determinism).

        Returns:
            (3, H, W) in [0, 1].
        """
        if not self.names:
            return image
        chosen = torch.rand(len(self.names), generator=generator) < self.probability
        if not bool(chosen.any()):
            chosen[int(torch.randint(len(self.names), (1,), generator=generator))] = True
        for name, use in zip(self.names, chosen.tolist()):
            if use:
                image = _FUNCTIONS[name](image, generator, self.strength)
        return image.clamp(0.0, 1.0)
