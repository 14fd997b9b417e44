"""Cameras type and pose math."""
from __future__ import annotations

import math

import pytest
import torch

from datamodules.cameras.cameras import Cameras
from datamodules.cameras.poses import (interpolate_path, look_at, pose_distance, quat_to_rotmat, rotmat_to_quat, slerp,
                                       step_pose_toward)


def _random_rotations(n: int, gen: torch.Generator) -> torch.Tensor:
    q = torch.randn(n, 4, generator=gen, dtype=torch.float64)
    return quat_to_rotmat(q / q.norm(dim=-1, keepdim=True))


def _random_c2w(n: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    c2w = torch.eye(4, dtype=torch.float64).repeat(n, 1, 1)
    c2w[:, :3, :3] = _random_rotations(n, gen)
    c2w[:, :3, 3] = torch.randn(n, 3, generator=gen, dtype=torch.float64) * 3
    return c2w


def _rot_z(angle: float) -> torch.Tensor:
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)


def _cams(n: int = 5) -> Cameras:
    c2w = _random_c2w(n)
    K = torch.tensor([[50.0, 0, 32], [0, 60.0, 24], [0, 0, 1]])
    return Cameras.from_c2w(c2w, K, torch.full((n,), 64), torch.full((n,), 48), [f"im{i}" for i in range(n)])


def test_quaternion_round_trip_including_180_degrees() -> None:
    gen = torch.Generator().manual_seed(1)
    R = _random_rotations(64, gen)
    R = torch.cat([R, _rot_z(math.pi)[None], torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64))[None]])
    back = quat_to_rotmat(rotmat_to_quat(R))
    assert torch.allclose(back, R, atol=1e-10)


def test_from_c2w_round_trip_and_centers() -> None:
    c2w = _random_c2w(4)
    cams = Cameras.from_c2w(c2w, torch.eye(3), 10, 8)
    assert cams.world_to_camera.dtype == torch.float32 and cams.width.dtype == torch.int64
    assert torch.allclose(cams.camera_to_world.double(), c2w, atol=1e-5)
    assert torch.allclose(cams.centers.double(), c2w[:, :3, 3], atol=1e-5)
    # world_to_camera maps the centre to the camera origin
    w2c = cams.world_to_camera.double()
    origin = (w2c[:, :3, :3] @ c2w[:, :3, 3:]).squeeze(-1) + w2c[:, :3, 3]
    assert origin.abs().max() < 1e-5
    assert cams.names == ["000", "001", "002", "003"]


def test_validation_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="K must be"):
        Cameras(torch.eye(4)[None], torch.eye(3)[None].repeat(2, 1, 1), torch.tensor([1]), torch.tensor([1]), ["a"])
    with pytest.raises(ValueError, match="names"):
        Cameras(torch.eye(4)[None], torch.eye(3)[None], torch.tensor([1]), torch.tensor([1]), ["a", "b"])


def test_indexing_is_always_batched() -> None:
    cams = _cams(5)
    one = cams[2]
    assert len(one) == 1 and one.names == ["im2"] and one.world_to_camera.shape == (1, 4, 4)
    assert cams[-1].names == ["im4"]
    assert cams[1:4].names == ["im1", "im2", "im3"]
    sel = cams[[4, 0]]
    assert sel.names == ["im4", "im0"]
    assert torch.equal(sel.K[0], cams.K[4])
    assert cams[torch.tensor([3, 1])].names == ["im3", "im1"]
    assert cams[torch.tensor([True, False, True, False, False])].names == ["im0", "im2"]
    with pytest.raises(IndexError):
        cams[5]
    both = Cameras.cat([cams[0], cams[3:]])
    assert both.names == ["im0", "im3", "im4"] and both.K.shape == (3, 3, 3)


def test_scaled_intrinsics_and_projection() -> None:
    cams = _cams(3)
    half = cams.scaled(0.5)
    assert half.width.tolist() == [32] * 3 and half.height.tolist() == [24] * 3
    assert torch.allclose(half.K[0], torch.tensor([[25.0, 0, 16], [0, 30.0, 12], [0, 0, 1]]))
    # A point projects to half the pixel coordinates (pixel-corner convention).
    pts = cams.centers + cams.camera_to_world[:, :3, 2] * 2.0  # 2 units in front of each
    uv, z = cams.project(pts)
    uv2, z2 = half.project(pts)
    assert torch.allclose(uv2, uv * 0.5, atol=1e-4)
    assert torch.allclose(z, z2)
    # each point lies on its own camera's optical axis -> principal point
    diag = uv[torch.arange(3), torch.arange(3)]
    assert torch.allclose(diag, cams.K[:, :2, 2], atol=1e-3)
    odd = cams.resized(21, 17)
    assert odd.width.tolist() == [21] * 3
    assert math.isclose(float(odd.K[0, 0, 2]), 32 * 21 / 64, rel_tol=1e-6)
    with pytest.raises(ValueError):
        cams.scaled(0)


def test_state_dict_round_trip_and_to() -> None:
    cams = _cams(4)
    state = cams.state_dict()
    back = Cameras.from_state_dict(state)
    for key in ("world_to_camera", "K", "width", "height"):
        assert torch.equal(getattr(back, key), getattr(cams, key))
    assert back.names == cams.names
    state["K"][0, 0, 0] = -1  # a copy: mutating the state leaves the cameras alone
    assert cams.K[0, 0, 0] > 0
    moved = cams.to("cpu")
    assert moved.device.type == "cpu" and moved.names == cams.names


def test_look_at_is_opencv() -> None:
    eye = torch.tensor([[0.0, -4.0, 0.0]])
    c2w = look_at(eye, torch.zeros(3), up=(0.0, 0.0, 1.0))
    R = c2w[0, :3, :3]
    assert torch.allclose(R[:, 2], torch.tensor([0.0, 1.0, 0.0]))  # forward toward the origin
    assert torch.allclose(R[:, 1], torch.tensor([0.0, 0.0, -1.0]))  # +y is down
    assert torch.allclose(R[:, 0], torch.tensor([1.0, 0.0, 0.0]))  # +x right
    assert math.isclose(float(torch.det(R)), 1.0, rel_tol=1e-6)
    # A point above the target appears above the image centre (smaller v).
    cams = Cameras.from_c2w(c2w, torch.tensor([[10.0, 0, 5], [0, 10.0, 5], [0, 0, 1]]), 10, 10)
    uv, _ = cams.project(torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]))
    assert uv[0, 0, 1] < 5 and uv[0, 1, 0] > 5


def test_pose_distance_known_values() -> None:
    a = torch.eye(4, dtype=torch.float64)[None]
    b = torch.eye(4, dtype=torch.float64).repeat(2, 1, 1)
    b[0, :3, 3] = torch.tensor([3.0, 4.0, 0.0])
    b[1, :3, :3] = _rot_z(0.5)
    d = pose_distance(a, b)
    assert d.shape == (1, 2)
    assert torch.allclose(d, torch.tensor([[5.0, 0.5]], dtype=torch.float64), atol=1e-9)
    many = _random_c2w(6)
    dm = pose_distance(many, many)
    assert dm.shape == (6, 6)
    assert dm.diagonal().abs().max() < 1e-6
    assert torch.allclose(dm, dm.T, atol=1e-9)
    # tiny rotation angles stay accurate (no acos precision loss)
    c = torch.eye(4)[None].clone()
    c[0, :3, :3] = _rot_z(1e-4).float()
    assert math.isclose(float(pose_distance(torch.eye(4)[None], c)), 1e-4, rel_tol=1e-2)


@pytest.mark.parametrize("step", [0.3, 0.25, 1.0, 10.0])
def test_step_pose_toward_reaches_target_in_ceil_steps(step: float) -> None:
    start = _random_c2w(3, seed=2)
    target = _random_c2w(3, seed=3)
    dist = (target[:, :3, 3] - start[:, :3, 3]).norm(dim=-1)
    expected = torch.ceil(dist / step - 1e-9).long()
    pose = start.clone()
    steps_taken = torch.zeros(3, dtype=torch.long)
    done = torch.zeros(3, dtype=torch.bool)
    for _ in range(200):
        new, reached = step_pose_toward(pose, target, step)
        moved = (new[:, :3, 3] - pose[:, :3, 3]).norm(dim=-1)
        steps_taken += (~done).long()
        # Not yet reached: the translation moved exactly `step`; rotation stays orthonormal.
        assert torch.allclose(moved[~reached], torch.full_like(moved[~reached], step), atol=1e-9)
        R = new[:, :3, :3]
        assert torch.allclose(R @ R.transpose(1, 2), torch.eye(3, dtype=R.dtype).expand_as(R), atol=1e-9)
        assert torch.allclose(torch.det(R), torch.ones(3, dtype=R.dtype), atol=1e-9)
        pose = new
        done = done | reached
        if done.all():
            break
    assert done.all()
    assert torch.equal(steps_taken, expected)
    assert torch.equal(pose, target)  # snapped exactly


def test_step_pose_toward_rotation_moves_with_translation() -> None:
    start = torch.eye(4, dtype=torch.float64)[None]
    target = torch.eye(4, dtype=torch.float64)[None].clone()
    target[0, :3, 3] = torch.tensor([4.0, 0.0, 0.0])
    target[0, :3, :3] = _rot_z(1.0)
    new, reached = step_pose_toward(start, target, 1.0)
    assert not reached.item()
    angle = pose_distance(start, new).item() - 1.0
    assert math.isclose(angle, 0.25, rel_tol=1e-6)  # a quarter of the way in both
    # float32 in, float32 out
    new32, _ = step_pose_toward(start.float(), target.float(), 1.0)
    assert new32.dtype == torch.float32
    with pytest.raises(ValueError):
        step_pose_toward(start, target, 0.0)


def test_slerp_keeps_rotations_orthonormal() -> None:
    gen = torch.Generator().manual_seed(4)
    R0, R1 = _random_rotations(16, gen), _random_rotations(16, gen)
    q0, q1 = rotmat_to_quat(R0), rotmat_to_quat(R1)
    for t in (0.0, 0.1, 0.5, 0.9, 1.0):
        R = quat_to_rotmat(slerp(q0, q1, t))
        assert torch.allclose(R @ R.transpose(1, 2), torch.eye(3, dtype=R.dtype).expand_as(R), atol=1e-10)
        assert torch.allclose(torch.det(R), torch.ones(16, dtype=R.dtype), atol=1e-10)
    assert torch.allclose(quat_to_rotmat(slerp(q0, q1, 0.0)), R0, atol=1e-10)
    assert torch.allclose(quat_to_rotmat(slerp(q0, q1, 1.0)), R1, atol=1e-10)
    # halfway is equidistant
    mid = quat_to_rotmat(slerp(q0, q1, 0.5))
    eye = torch.eye(4, dtype=torch.float64).repeat(16, 1, 1)
    a, b, m = eye.clone(), eye.clone(), eye.clone()
    a[:, :3, :3], b[:, :3, :3], m[:, :3, :3] = R0, R1, mid
    assert torch.allclose(pose_distance(a, m).diagonal(), pose_distance(m, b).diagonal(), atol=1e-8)
    # identical rotations do not produce NaN
    assert torch.isfinite(slerp(q0, q0, 0.3)).all()


def test_interpolate_path_endpoints_and_keys() -> None:
    keys = _random_c2w(4, seed=5)
    path = interpolate_path(keys, 31)
    assert path.shape == (31, 4, 4)
    assert torch.equal(path[0], keys[0]) and torch.equal(path[-1], keys[-1])
    # frames 10 and 20 land on keys 1 and 2 (uniform spacing in key index)
    assert torch.allclose(path[10], keys[1], atol=1e-9) and torch.allclose(path[20], keys[2], atol=1e-9)
    R = path[:, :3, :3]
    assert torch.allclose(R @ R.transpose(1, 2), torch.eye(3, dtype=R.dtype).expand_as(R), atol=1e-9)
    assert torch.allclose(path[:, 3], torch.tensor([0.0, 0, 0, 1], dtype=path.dtype).expand(31, 4))
    assert interpolate_path(keys[:1], 3).shape == (3, 4, 4)
    assert interpolate_path(keys.float(), 5).dtype == torch.float32


def test_common_size_names_the_caller_and_the_sizes() -> None:
    K = torch.tensor([[10.0, 0, 4], [0, 10.0, 3], [0, 0, 1]])
    c2w = _random_c2w(3)
    assert Cameras.from_c2w(c2w, K, 8, 6).common_size("render") == (8, 6)
    mixed = Cameras.from_c2w(c2w, K, torch.tensor([8, 8, 16]), torch.tensor([6, 6, 12]))
    with pytest.raises(ValueError, match=r"render_path: .*\[\(8, 6\), \(16, 12\)\]"):
        mixed.common_size("render_path")
    with pytest.raises(ValueError, match="render: no cameras"):
        mixed[[]].common_size("render")
