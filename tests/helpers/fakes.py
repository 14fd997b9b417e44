"""Stand-ins for a scene model in tests of what consumes its renders (path videos, viewers)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from datamodules.cameras.cameras import Cameras
from datamodules.cameras.poses import look_at


def decode(path: Path) -> list[np.ndarray]:
    import imageio.v2 as imageio

    with imageio.get_reader(path) as reader:
        return [np.asarray(f) for f in reader]


def orbit_cameras(n: int, w: int = 30, h: int = 22) -> Cameras:
    angles = torch.linspace(0, 1, n)
    eyes = torch.stack([angles.cos() * 3, angles.sin() * 3, torch.ones(n)], dim=1)
    K = torch.tensor([[20.0, 0, w / 2], [0, 20.0, h / 2], [0, 0, 1]])
    return Cameras.from_c2w(look_at(eyes, torch.zeros(3)), K, w, h)


class FakeScene:
    """Frame i is a flat grey of value i / 10 (identifiable after lossy encoding)."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def render_views(self, cameras: Cameras) -> tuple[torch.Tensor, torch.Tensor]:
        self.calls.append(len(cameras))
        idx = torch.tensor([int(n) for n in cameras.names], dtype=torch.float32)
        h, w = int(cameras.height[0]), int(cameras.width[0])
        rgb = (idx / 10).view(-1, 1, 1, 1).expand(-1, 3, h, w).clone()
        return rgb, torch.ones(len(cameras), 1, h, w)
