"""Pose math on 4x4 camera-to-world / world-to-camera matrices and quaternions.

Translation steps plus quaternion slerp live here so the progressive-fix callback and the
video path share one implementation; ``datamodules.cameras.cameras.Cameras`` builds on
``rigid_inverse``. Conventions are the ones ``datamodules/cameras/cameras.py`` states (OpenCV axes).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "pose_distance",
    "nearest_views",
    "step_pose_toward",
    "interpolate_path",
    "look_at",
    "slerp",
    "rotmat_to_quat",
    "quat_to_rotmat",
    "rigid_inverse",
    "fov_to_focal",
    "to_4x4",
    "apply_transform_to_c2w",
]


def to_4x4(m: Tensor) -> Tensor:
    """(N, 3, 4) or (N, 4, 4) -> (N, 4, 4) with a [0, 0, 0, 1] last row."""
    if m.dim() != 3 or m.shape[1:] not in ((3, 4), (4, 4)):
        raise ValueError(f"expected (N, 3, 4) or (N, 4, 4) poses, got {tuple(m.shape)}")
    out = torch.zeros(m.shape[0], 4, 4, dtype=m.dtype, device=m.device)
    out[:, :3, :] = m[:, :3, :]
    out[:, 3, 3] = 1.0
    return out


def rigid_inverse(m: Tensor) -> Tensor:
    """Inverse of (N, 4, 4) rigid transforms [R | t] (exact, no general matrix inverse)."""
    R = m[:, :3, :3]
    t = m[:, :3, 3:]
    out = torch.zeros_like(m)
    Rt = R.transpose(1, 2)
    out[:, :3, :3] = Rt
    out[:, :3, 3:] = -Rt @ t
    out[:, 3, 3] = 1.0
    return out


def rotmat_to_quat(R: Tensor) -> Tensor:
    """Rotation matrices (..., 3, 3) -> unit quaternions (..., 4) wxyz with w >= 0.

    Picks, per matrix, the best-conditioned of the four Shepperd candidates, so it is stable
    for rotations near 180 degrees too.
    """
    m = R
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    # 4 * (w^2, x^2, y^2, z^2) up to the common offset: choose the largest.
    diag = torch.stack(
        [1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], dim=-1
    )
    s = torch.sqrt(torch.clamp(diag, min=1e-12))  # 2|q_i| for each candidate
    # Each candidate row: quaternion scaled by 2 * q_i (then normalised below).
    cand = torch.stack(
        [
            torch.stack([diag[..., 0], m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]], -1),
            torch.stack([m[..., 2, 1] - m[..., 1, 2], diag[..., 1], m[..., 1, 0] + m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0]], -1),
            torch.stack([m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] + m[..., 0, 1], diag[..., 2], m[..., 2, 1] + m[..., 1, 2]], -1),
            torch.stack([m[..., 1, 0] - m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0], m[..., 2, 1] + m[..., 1, 2], diag[..., 3]], -1),
        ],
        dim=-2,
    ) / s[..., :, None]
    best = diag.argmax(dim=-1)
    q = torch.gather(cand, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    q = q / q.norm(dim=-1, keepdim=True)
    return torch.where(q[..., :1] < 0, -q, q)


def quat_to_rotmat(q: Tensor) -> Tensor:
    """Quaternions (..., 4) wxyz (normalised here) -> rotation matrices (..., 3, 3)."""
    q = q / q.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(*q.shape[:-1], 3, 3)


def slerp(q0: Tensor, q1: Tensor, t: Tensor | float) -> Tensor:
    """Spherical linear interpolation of unit quaternions along the shorter arc.

    Args:
        q0, q1: (..., 4) wxyz.
        t: scalar or (...) fraction in [0, 1].

    Returns:
        (..., 4) unit quaternions.
    """
    t = torch.as_tensor(t, dtype=q0.dtype, device=q0.device)
    if t.dim() < q0.dim():
        t = t[..., None]
    dot = (q0 * q1).sum(-1, keepdim=True)
    q1 = torch.where(dot < 0, -q1, q1)  # the shorter of the two arcs
    dot = dot.abs().clamp(max=1.0)
    theta = torch.acos(dot)
    sin_theta = torch.sin(theta)
    near = sin_theta < 1e-6  # nearly identical rotations: lerp is exact enough and safe
    safe_sin = torch.where(near, torch.ones_like(sin_theta), sin_theta)
    w0 = torch.where(near, 1 - t, torch.sin((1 - t) * theta) / safe_sin)
    w1 = torch.where(near, t, torch.sin(t * theta) / safe_sin)
    q = w0 * q0 + w1 * q1
    return q / q.norm(dim=-1, keepdim=True)


def _rotation_angle(qa: Tensor, qb: Tensor) -> Tensor:
    """Angle (rad) between rotations given as unit quaternions; broadcasts over leading dims."""
    dot = (qa * qb).sum(-1, keepdim=True)
    qb = torch.where(dot < 0, -qb, qb)
    # atan2 form: accurate for tiny and large angles alike (acos loses precision near 0).
    # |qa - qb| = 2 sin(angle / 4), |qa + qb| = 2 cos(angle / 4) for unit quaternions.
    return 4 * torch.atan2((qa - qb).norm(dim=-1), (qa + qb).norm(dim=-1))


def pose_distance(c2w_a: Tensor, c2w_b: Tensor) -> Tensor:
    """Pairwise pose distance: translation distance plus rotation angle in radians.

    Args:
        c2w_a: (N, 4, 4) camera-to-world.
        c2w_b: (M, 4, 4) camera-to-world.

    Returns:
        (N, M) ``||t_a - t_b|| + angle(R_a, R_b)`` in the input dtype.
    """
    a = c2w_a.double()
    b = c2w_b.double()
    trans = torch.cdist(a[:, :3, 3], b[:, :3, 3])
    qa = rotmat_to_quat(a[:, :3, :3])[:, None]
    qb = rotmat_to_quat(b[:, :3, :3])[None, :]
    return (trans + _rotation_angle(qa, qb)).to(c2w_a.dtype)


def nearest_views(query_c2w: Tensor, pool_c2w: Tensor, k: int, exclude: Sequence[int] | None = None) -> Tensor:
    """The ``k`` pool poses nearest to each query pose (``pose_distance``), nearest first.

    The project's one nearest-reference search (progressive fix, pair curation).

    Args:
        query_c2w: (N, 4, 4) camera-to-world.
        pool_c2w: (M, 4, 4) camera-to-world.
        k: neighbours per query (at most the usable pool size).
        exclude: per query, a pool index it may not pick (its own view) or -1; None: none.

    Returns:
        (N, k) int64 pool indices.

    Raises:
        ValueError: fewer than ``k`` usable pool poses.
    """
    dist = pose_distance(query_c2w.double(), pool_c2w.double())
    if exclude is not None:
        rows = [i for i, j in enumerate(exclude) if j >= 0]
        if rows:
            dist[rows, [exclude[i] for i in rows]] = float("inf")
    usable = pool_c2w.shape[0] - (1 if exclude is not None and any(j >= 0 for j in exclude) else 0)
    if k < 1 or k > usable:
        raise ValueError(f"nearest_views: asked for {k} neighbours but the pool has {usable} usable poses")
    return dist.topk(k, dim=1, largest=False).indices


def step_pose_toward(c2w_from: Tensor, c2w_to: Tensor, step: float) -> tuple[Tensor, Tensor]:
    """Moves each pose ``step`` world units toward its target (Difix3D's progressive update).

    The translation moves ``step`` along the straight line to the target and the rotation is
    slerped by the same fraction ``step / distance``, so translation and rotation arrive
    together. When the remaining translation is <= ``step`` the pose snaps to the target.
    Repeating from the result reaches the target in ``ceil(distance / step)`` calls.

    Args:
        c2w_from: (N, 4, 4) current camera-to-world poses.
        c2w_to: (N, 4, 4) target camera-to-world poses.
        step: translation step in world units (> 0).

    Returns:
        c2w: (N, 4, 4) new poses (dtype of ``c2w_from``).
        reached: (N,) bool, True where the result equals the target.
    """
    if step <= 0:
        raise ValueError(f"step_pose_toward: step must be > 0, got {step}")
    a = c2w_from.double()
    b = c2w_to.double()
    delta = b[:, :3, 3] - a[:, :3, 3]
    dist = delta.norm(dim=-1)
    # Relative tolerance so that an exact multiple of the step still snaps despite round-off.
    reached = dist <= step * (1 + 1e-6) + 1e-12
    frac = torch.where(reached, torch.ones_like(dist), step / dist.clamp(min=1e-12))
    t = a[:, :3, 3] + frac[:, None] * delta
    q = slerp(rotmat_to_quat(a[:, :3, :3]), rotmat_to_quat(b[:, :3, :3]), frac)
    out = torch.zeros_like(a)
    out[:, :3, :3] = quat_to_rotmat(q)
    out[:, :3, 3] = t
    out[:, 3, 3] = 1.0
    out = torch.where(reached[:, None, None], b, out)
    return out.to(c2w_from.dtype), reached


def interpolate_path(c2w: Tensor, n_frames: int) -> Tensor:
    """A smooth-enough camera path through key poses (piecewise lerp + slerp).

    Keyframes are spaced uniformly in the frame index; the first and last frames equal the
    first and last key poses exactly.

    Args:
        c2w: (N, 4, 4) key camera-to-world poses, N >= 1.
        n_frames: number of output frames (>= 1).

    Returns:
        (n_frames, 4, 4) camera-to-world poses in the dtype of ``c2w``.
    """
    if n_frames < 1:
        raise ValueError(f"interpolate_path: n_frames must be >= 1, got {n_frames}")
    keys = c2w.double()
    n = keys.shape[0]
    if n == 0:
        raise ValueError("interpolate_path: need at least one key pose")
    if n == 1 or n_frames == 1:
        return keys[:1].expand(n_frames, 4, 4).clone().to(c2w.dtype)
    s = torch.linspace(0, n - 1, n_frames, dtype=torch.float64, device=c2w.device)
    i0 = torch.clamp(torch.floor(s).long(), max=n - 2)
    frac = s - i0
    q = rotmat_to_quat(keys[:, :3, :3])
    qi = slerp(q[i0], q[i0 + 1], frac)
    t = keys[i0, :3, 3] + frac[:, None] * (keys[i0 + 1, :3, 3] - keys[i0, :3, 3])
    out = torch.zeros(n_frames, 4, 4, dtype=torch.float64, device=c2w.device)
    out[:, :3, :3] = quat_to_rotmat(qi)
    out[:, :3, 3] = t
    out[:, 3, 3] = 1.0
    # Exact endpoints (the slerp round trip is only accurate to ~1e-16).
    out[0] = keys[0]
    out[-1] = keys[-1]
    return out.to(c2w.dtype)


def look_at(eye: Tensor, target: Tensor, up: Sequence[float] | Tensor = (0.0, 0.0, 1.0)) -> Tensor:
    """OpenCV camera-to-world poses looking from ``eye`` at ``target``.

    Args:
        eye: (N, 3) camera centres.
        target: (N, 3) or (3,) points looked at (on the +z axis of the camera).
        up: (3,) world up; the camera's -y axis points as close to it as possible.

    Returns:
        (N, 4, 4) camera-to-world (float32 unless ``eye`` is float64).
    """
    dtype = eye.dtype if eye.dtype == torch.float64 else torch.float32
    eye = eye.to(torch.float64)
    target = torch.as_tensor(target, dtype=torch.float64, device=eye.device).expand_as(eye)
    up_t = torch.as_tensor(up, dtype=torch.float64, device=eye.device).expand_as(eye)
    z = target - eye
    z = z / z.norm(dim=-1, keepdim=True)
    x = torch.cross(z, up_t, dim=-1)  # right = forward x up (so that y = forward x right is down)
    bad = x.norm(dim=-1) < 1e-8  # looking straight along `up`: pick any perpendicular
    if bad.any():
        alt = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64, device=eye.device).expand_as(eye)
        x = torch.where(bad[:, None], torch.cross(z, alt, dim=-1), x)
    x = x / x.norm(dim=-1, keepdim=True)
    y = torch.cross(z, x, dim=-1)
    c2w = torch.zeros(eye.shape[0], 4, 4, dtype=torch.float64, device=eye.device)
    c2w[:, :3, 0] = x
    c2w[:, :3, 1] = y
    c2w[:, :3, 2] = z
    c2w[:, :3, 3] = eye
    c2w[:, 3, 3] = 1.0
    return c2w.to(dtype)


def fov_to_focal(fov: float, size: float) -> float:
    """Focal length in pixels for a full field of view ``fov`` (rad) across ``size`` pixels."""
    return 0.5 * size / math.tan(0.5 * fov)


def apply_transform_to_c2w(transform: Tensor, c2w: Tensor) -> Tensor:
    """Applies a similarity ``transform`` (4, 4) to camera-to-world poses (N, 4, 4).

    The rotation part of the result stays orthonormal (the scale only moves centres).
    """
    s = torch.linalg.det(transform[:3, :3]).abs() ** (1.0 / 3.0)
    R = transform[:3, :3] / s
    out = c2w.clone()
    out[:, :3, :3] = R @ c2w[:, :3, :3]
    out[:, :3, 3] = (transform[:3, :3] @ c2w[:, :3, 3:]).squeeze(-1) + transform[:3, 3]
    return out
