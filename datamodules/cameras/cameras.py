"""The project's one camera type and the pose math that goes with it.

Convention (the only one in the project, the same as gsplat's ``viewmats``): OpenCV camera
axes (+x right, +y down, +z forward), poses stored world-to-camera as 4x4 matrices, pinhole
intrinsics ``K`` in pixels with the pixel-centre convention where pixel ``(u, v)`` covers
``[u, u + 1) x [v, v + 1)`` (so the image centre is ``(W / 2, H / 2)``). Readers convert every
disk format into this at the edge; nothing else converts. Distortion is not represented:
readers undistort images (or refuse) before building a ``Cameras``.

The pose math (translation steps, quaternion slerp, look-at, nearest views) is in
``datamodules/cameras/poses.py``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from collections.abc import Sequence

import torch
from torch import Tensor

from datamodules.cameras.poses import rigid_inverse, to_4x4

__all__ = ["Cameras", "look_at_center"]


@dataclass
class Cameras:
    """A batch of pinhole cameras (always batched, even for one camera).

    Attributes:
        world_to_camera: (N, 4, 4) float32, OpenCV axes (gsplat ``viewmats``).
        K: (N, 3, 3) float32 intrinsics in pixels.
        width: (N,) int64 image widths in pixels.
        height: (N,) int64 image heights in pixels.
        names: N names (image file stem or a given name).
    """

    world_to_camera: Tensor
    K: Tensor
    width: Tensor
    height: Tensor
    names: list[str]

    def __post_init__(self) -> None:
        self.world_to_camera = torch.as_tensor(self.world_to_camera).to(torch.float32)
        self.K = torch.as_tensor(self.K).to(torch.float32)
        self.width = torch.as_tensor(self.width).to(torch.int64).reshape(-1)
        self.height = torch.as_tensor(self.height).to(torch.int64).reshape(-1)
        self.names = [str(n) for n in self.names]
        n = self.world_to_camera.shape[0] if self.world_to_camera.dim() == 3 else -1
        if self.world_to_camera.shape[1:] != (4, 4) or self.world_to_camera.dim() != 3:
            raise ValueError(f"Cameras.world_to_camera must be (N, 4, 4), got {tuple(self.world_to_camera.shape)}")
        if tuple(self.K.shape) != (n, 3, 3):
            raise ValueError(f"Cameras.K must be ({n}, 3, 3), got {tuple(self.K.shape)}")
        if self.width.shape[0] != n or self.height.shape[0] != n:
            raise ValueError(
                f"Cameras.width/height must be ({n},), got {tuple(self.width.shape)} / {tuple(self.height.shape)}"
            )
        if len(self.names) != n:
            raise ValueError(f"Cameras.names must hold {n} names, got {len(self.names)}")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_c2w(
        cls,
        c2w: Tensor,
        K: Tensor,
        width: Tensor | Sequence[int] | int,
        height: Tensor | Sequence[int] | int,
        names: Sequence[str] | None = None,
    ) -> Cameras:
        """Builds cameras from camera-to-world poses (OpenCV axes).

        Args:
            c2w: (N, 4, 4) or (N, 3, 4) camera-to-world.
            K: (N, 3, 3) or (3, 3) (shared) intrinsics in pixels.
            width: (N,) or one int for all.
            height: (N,) or one int for all.
            names: N names; defaults to ``"000"``, ``"001"``, ...
        """
        c2w = to_4x4(torch.as_tensor(c2w, dtype=torch.float64))
        n = c2w.shape[0]
        K = torch.as_tensor(K, dtype=torch.float32)
        if K.dim() == 2:
            K = K.expand(n, 3, 3).clone()
        width = torch.as_tensor(width, dtype=torch.int64).reshape(-1).expand(n).clone()
        height = torch.as_tensor(height, dtype=torch.int64).reshape(-1).expand(n).clone()
        if names is None:
            names = [f"{i:03d}" for i in range(n)]
        w2c = rigid_inverse(c2w).to(torch.float32)
        return cls(w2c, K, width, height, list(names))

    @classmethod
    def cat(cls, cameras: Sequence[Cameras]) -> Cameras:
        """Concatenates batches of cameras (all on one device)."""
        if len(cameras) == 0:
            raise ValueError("Cameras.cat needs at least one Cameras")
        return cls(
            torch.cat([c.world_to_camera for c in cameras]),
            torch.cat([c.K for c in cameras]),
            torch.cat([c.width for c in cameras]),
            torch.cat([c.height for c in cameras]),
            [n for c in cameras for n in c.names],
        )

    @classmethod
    def empty(cls) -> Cameras:
        """A batch of zero cameras."""
        return cls(torch.zeros(0, 4, 4), torch.zeros(0, 3, 3), torch.zeros(0), torch.zeros(0), [])

    # ------------------------------------------------------------------ container protocol
    def __len__(self) -> int:
        return int(self.world_to_camera.shape[0])

    def __getitem__(self, index: int | slice | list[int] | Tensor) -> Cameras:
        """Selects cameras; the result is always batched (an int gives a batch of one)."""
        if isinstance(index, int):
            n = len(self)
            if not -n <= index < n:
                raise IndexError(f"camera index {index} out of range for {n} cameras")
            idx = torch.tensor([index % n])
        elif isinstance(index, slice):
            idx = torch.arange(len(self))[index]
        else:
            idx = torch.as_tensor(index)
            if idx.dtype == torch.bool:
                idx = torch.nonzero(idx, as_tuple=False).reshape(-1)
            idx = idx.to(torch.int64).reshape(-1).cpu()
        dev_idx = idx.to(self.world_to_camera.device)
        return Cameras(
            self.world_to_camera[dev_idx],
            self.K[dev_idx],
            self.width[dev_idx],
            self.height[dev_idx],
            [self.names[i] for i in idx.tolist()],
        )

    def to(self, device: torch.device | str) -> Cameras:
        """Returns the cameras on ``device`` (names stay a Python list)."""
        return Cameras(
            self.world_to_camera.to(device),
            self.K.to(device),
            self.width.to(device),
            self.height.to(device),
            list(self.names),
        )

    @property
    def device(self) -> torch.device:
        return self.world_to_camera.device

    def common_size(self, caller: str) -> tuple[int, int]:
        """The one (width, height) of all cameras: a renderer draws one image size per call.

        Args:
            caller: the step that needs it, named in the error.

        Raises:
            ValueError: no cameras, or cameras of different sizes.
        """
        if len(self) == 0:
            raise ValueError(f"{caller}: no cameras")
        w, h = int(self.width[0]), int(self.height[0])
        if bool((self.width != w).any()) or bool((self.height != h).any()):
            sizes = sorted({(int(a), int(b)) for a, b in zip(self.width.tolist(), self.height.tolist())})
            raise ValueError(f"{caller}: cameras of one call must share one image size, got (width, height) {sizes}")
        return w, h

    # ------------------------------------------------------------------ derived quantities
    @property
    def camera_to_world(self) -> Tensor:
        """(N, 4, 4) float32 camera-to-world (OpenCV axes)."""
        return rigid_inverse(self.world_to_camera.double()).to(torch.float32)

    @property
    def centers(self) -> Tensor:
        """(N, 3) camera centres in world coordinates."""
        return self.camera_to_world[:, :3, 3]

    def scaled(self, factor: float) -> Cameras:
        """Cameras for images resized by ``factor`` (e.g. 0.5 for half resolution).

        New sizes are ``round(size * factor)`` (at least 1); intrinsics are scaled by the exact
        per-axis ratio new_size / old_size, which keeps the pixel-corner convention aligned.
        """
        if factor <= 0:
            raise ValueError(f"Cameras.scaled: factor must be > 0, got {factor}")
        new_w = torch.clamp(torch.round(self.width.double() * factor), min=1).to(torch.int64)
        new_h = torch.clamp(torch.round(self.height.double() * factor), min=1).to(torch.int64)
        return self.resized(new_w, new_h)

    def resized(self, width: Tensor | int, height: Tensor | int) -> Cameras:
        """Cameras for images resized to exact sizes ((N,) or one int each)."""
        n = len(self)
        width = torch.as_tensor(width, dtype=torch.int64, device=self.device).reshape(-1).expand(n)
        height = torch.as_tensor(height, dtype=torch.int64, device=self.device).reshape(-1).expand(n)
        sx = width.to(torch.float32) / self.width.to(torch.float32)
        sy = height.to(torch.float32) / self.height.to(torch.float32)
        K = self.K.clone()
        K[:, 0, :] *= sx[:, None]
        K[:, 1, :] *= sy[:, None]
        return Cameras(self.world_to_camera.clone(), K, width.clone(), height.clone(), list(self.names))

    def project(self, points: Tensor) -> tuple[Tensor, Tensor]:
        """Projects world points into every camera.

        Args:
            points: (P, 3) world points.

        Returns:
            uv: (N, P, 2) pixel coordinates (pixel-corner convention, see module doc).
            depth: (N, P) camera-space z.
        """
        pts = points.to(self.world_to_camera)
        cam = torch.einsum("nij,pj->npi", self.world_to_camera[:, :3, :3], pts) + self.world_to_camera[:, None, :3, 3]
        z = cam[..., 2]
        pix = torch.einsum("nij,npj->npi", self.K, cam)
        uv = pix[..., :2] / pix[..., 2:3]
        return uv, z

    # ------------------------------------------------------------------ serialisation
    def state_dict(self) -> dict[str, Any]:
        """Tensors (on CPU) and the list of names; round-trips through ``from_state_dict``."""
        return {
            "world_to_camera": self.world_to_camera.detach().cpu().clone(),
            "K": self.K.detach().cpu().clone(),
            "width": self.width.detach().cpu().clone(),
            "height": self.height.detach().cpu().clone(),
            "names": list(self.names),
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> Cameras:
        return cls(state["world_to_camera"], state["K"], state["width"], state["height"], list(state["names"]))


def look_at_center(cameras: Cameras | None, scene_scale: float) -> tuple[float, float, float]:
    """The point closest (least squares) to all camera optical axes, or the origin.

    Object captures converge on the object; forward-facing captures have near-parallel axes,
    so an ill-conditioned system or a point farther than 2 scene scales gives the origin.
    """
    if cameras is None or len(cameras) < 2:
        return (0.0, 0.0, 0.0)
    c2w = cameras.camera_to_world.double()
    centers, dirs = c2w[:, :3, 3], c2w[:, :3, 2]
    proj = torch.eye(3, dtype=torch.float64) - dirs[:, :, None] * dirs[:, None, :]  # (N, 3, 3)
    A = proj.sum(0)
    b = (proj @ centers[:, :, None]).sum(0)[:, 0]
    if torch.linalg.cond(A) > 1e4:
        return (0.0, 0.0, 0.0)
    p = torch.linalg.solve(A, b)
    if not torch.isfinite(p).all() or float(p.norm()) > 2 * scene_scale:
        return (0.0, 0.0, 0.0)
    return tuple(float(v) for v in p)
