"""Gaussian parameters, .ply I/O (INRIA layout, original units) and the densification strategies."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from lightning_modules.scene.gaussians.splats import Gaussians, knn_rms_distance, rgb_to_sh, sh_to_rgb
from lightning_modules.scene.gaussians.ply import read_ply, write_ply
from lightning_modules.scene.gaussians.similarity import rotate_sh, transform_splats
from lightning_modules.scene.gaussians.strategy import DefaultStrategy, MCMCStrategy, compute_relocation_torch


def _random_gaussians(n: int = 50, sh_degree: int = 3, seed: int = 0) -> Gaussians:
    gen = torch.Generator().manual_seed(seed)
    g = Gaussians.random(n, 1.0, sh_degree=sh_degree, generator=gen)
    raw = g.raw()
    raw["shN"] = torch.randn(raw["shN"].shape, generator=gen) * 0.3
    raw["opacities"] = torch.randn(n, generator=gen)
    raw["scales"] = raw["scales"] + torch.randn(n, 3, generator=gen) * 0.2
    g.set_splats(raw)
    return g


def _similarity(seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=gen, dtype=torch.float64))
    if torch.det(q) < 0:
        q[:, 0] = -q[:, 0]
    T = torch.eye(4, dtype=torch.float64)
    T[:3, :3] = 0.37 * q
    T[:3, 3] = torch.tensor([0.5, -2.0, 1.5])
    return T


# ---------------------------------------------------------------------- parameters / init
def test_from_points_follows_simple_trainer_init(seed: int) -> None:
    points = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 2, 0], [0, 0, 3], [5, 5, 5]])
    colors = torch.rand(5, 3)
    g = Gaussians.from_points(points, colors, sh_degree=2, init_opacity=0.1)
    assert len(g) == 5 and g.splats["shN"].shape == (5, 8, 3) and g.splats["sh0"].shape == (5, 1, 3)
    # Point 0: neighbours at 1, 2, 3 -> rms = sqrt((1 + 4 + 9) / 3).
    assert torch.allclose(g.splats["scales"][0], torch.full((3,), math.log(math.sqrt(14 / 3))), atol=1e-5)
    assert torch.allclose(g.opacities, torch.full((5,), 0.1), atol=1e-6)
    assert torch.allclose(sh_to_rgb(g.splats["sh0"][:, 0]), colors, atol=1e-6)
    assert torch.allclose(rgb_to_sh(sh_to_rgb(g.splats["sh0"])), g.splats["sh0"], atol=1e-6)
    assert torch.count_nonzero(g.splats["shN"]) == 0
    act = g.activated()
    assert act["colors"].shape == (5, 9, 3)
    assert torch.allclose(act["scales"], torch.exp(g.splats["scales"]))


def test_knn_rms_distance_matches_brute_force(seed: int) -> None:
    pts = torch.randn(300, 3)
    pts[1] = pts[0]  # a duplicate: its nearest other point is at distance 0
    d = torch.cdist(pts, pts).square()
    ref = torch.sort(d, dim=1).values[:, 1:4].mean(1).sqrt()
    out = knn_rms_distance(pts)
    assert out.dtype == pts.dtype and out.shape == (300,)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    # Two coincident points: k drops to 1 and the zero distance is floored, so its log is finite.
    torch.testing.assert_close(knn_rms_distance(pts[:2]), torch.full((2,), 1e-7))


def test_load_state_dict_adopts_checkpoint_size() -> None:
    src = _random_gaussians(17)
    dst = Gaussians(0, sh_degree=3)
    dst.load_state_dict(src.state_dict())
    assert len(dst) == 17
    for name, p in dst.splats.items():
        assert isinstance(p, torch.nn.Parameter)
        assert torch.equal(p, src.splats[name])
    wrong_degree = Gaussians(0, sh_degree=1)
    with pytest.raises(RuntimeError, match="splats.shN"):
        wrong_degree.load_state_dict(src.state_dict())


# ---------------------------------------------------------------------- .ply
def test_ply_round_trip_and_inria_layout(tmp_path: Path) -> None:
    g = _random_gaussians(40, sh_degree=3)
    path = write_ply(tmp_path / "sub" / "pc.ply", g.raw())
    assert not list(path.parent.glob(".*tmp"))  # atomic write leaves no temp file
    back = read_ply(path)
    for name, t in g.raw().items():
        assert back[name].shape == t.shape, name
        assert torch.equal(back[name], t), name
    # Layout: header order and channel-major f_rest, as the INRIA code writes it.
    raw = path.read_bytes()
    header, body = raw.split(b"end_header\n", 1)
    props = [line.split()[-1].decode() for line in header.splitlines() if line.startswith(b"property")]
    assert props[:9] == ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    assert props[9:] == [f"f_rest_{i}" for i in range(45)] + [
        "opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    assert b"format binary_little_endian 1.0" in header
    data = np.frombuffer(body, dtype="<f4").reshape(40, len(props))
    shN = g.splats["shN"].detach().numpy()
    assert np.array_equal(data[:, 9], shN[:, 0, 0])  # f_rest_0: channel 0, coefficient 1
    assert np.array_equal(data[:, 10], shN[:, 1, 0])  # f_rest_1: channel 0, coefficient 2
    assert np.array_equal(data[:, 9 + 15], shN[:, 0, 1])  # f_rest_15: channel 1, coefficient 1
    assert np.array_equal(data[:, 3:6], np.zeros((40, 3), np.float32))


def test_ply_original_units_round_trip(tmp_path: Path) -> None:
    """Export through the inverse normalisation, read back through it: the same Gaussians."""
    g = _random_gaussians(30, sh_degree=3)
    T = _similarity()
    path = write_ply(tmp_path / "orig.ply", g.raw(), transform=torch.linalg.inv(T))
    stored = read_ply(path)
    s = 0.37
    inv = torch.linalg.inv(T)
    expect_means = (g.raw()["means"].double() @ inv[:3, :3].T + inv[:3, 3]).float()
    assert torch.allclose(stored["means"], expect_means, atol=1e-5)
    assert torch.allclose(stored["scales"], g.raw()["scales"] + math.log(1 / s), atol=1e-5)
    back = read_ply(path, transform=T)
    for name in ("means", "scales", "opacities", "sh0", "shN"):
        assert torch.allclose(back[name], g.raw()[name], atol=1e-4), name
    q0 = torch.nn.functional.normalize(g.raw()["quats"], dim=-1)
    q1 = torch.nn.functional.normalize(back["quats"], dim=-1)
    assert torch.allclose((q0 * q1).sum(-1).abs(), torch.ones(30), atol=1e-5)


def test_rotate_sh_keeps_view_dependent_colour() -> None:
    from gsplat.cuda._torch_impl import _spherical_harmonics

    gen = torch.Generator().manual_seed(1)
    shN = torch.randn(8, 15, 3, generator=gen)
    coeffs = torch.cat([torch.zeros(8, 1, 3), shN], dim=1)
    R = _similarity(3)[:3, :3] / 0.37
    rotated = torch.cat([torch.zeros(8, 1, 3), rotate_sh(shN, R)], dim=1)
    dirs = torch.nn.functional.normalize(torch.randn(8, 3, generator=gen, dtype=torch.float64), dim=-1)
    before = _spherical_harmonics(3, dirs.float(), coeffs)
    after = _spherical_harmonics(3, (dirs @ R.T).float(), rotated)  # the same ray, rotated world
    assert torch.allclose(before, after, atol=1e-4)
    splats = {"means": torch.zeros(8, 3), "scales": torch.zeros(8, 3), "quats": torch.tensor([[1.0, 0, 0, 0]]).repeat(8, 1),
              "opacities": torch.zeros(8), "sh0": torch.zeros(8, 1, 3), "shN": shN}
    T = torch.eye(4, dtype=torch.float64)
    T[:3, :3] = R
    moved = transform_splats(splats, T)
    from datamodules.cameras.poses import quat_to_rotmat

    assert torch.allclose(quat_to_rotmat(moved["quats"].double())[0], R, atol=1e-5)


def test_read_ply_rejects_bad_files(tmp_path: Path) -> None:
    g = _random_gaussians(5)
    good = write_ply(tmp_path / "g.ply", g.raw())
    truncated = tmp_path / "t.ply"
    truncated.write_bytes(good.read_bytes()[:-10])
    with pytest.raises(ValueError, match="t.ply.*truncated"):
        read_ply(truncated)
    ascii_ply = tmp_path / "a.ply"
    ascii_ply.write_text("ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nend_header\n0\n")
    with pytest.raises(ValueError, match="a.ply.*ascii"):
        read_ply(ascii_ply)
    no_gauss = tmp_path / "p.ply"
    no_gauss.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 1\nproperty float x\n"
                         b"property float y\nproperty float z\nend_header\n" + np.zeros(3, "<f4").tobytes())
    with pytest.raises(ValueError, match="p.ply.*lacks"):
        read_ply(no_gauss)


# ---------------------------------------------------------------------- strategies
def _params_and_optimizers(n: int = 20, seed: int = 0) -> tuple[torch.nn.ParameterDict, dict]:
    g = _random_gaussians(n, sh_degree=1, seed=seed)
    params = g.splats
    opts = {k: torch.optim.Adam([{"params": p, "lr": 1e-3, "name": k}], eps=1e-15) for k, p in params.items()}
    loss = sum((p**2).sum() for p in params.values())
    loss.backward()
    for o in opts.values():
        o.step()  # gives every optimizer an exp_avg state that strategies must resize
    return params, opts


def _fake_info(n: int, grad: float) -> dict:
    means2d = torch.zeros(1, n, 2, requires_grad=True)
    means2d.grad = torch.full((1, n, 2), grad)
    return {"means2d": means2d, "radii": torch.ones(1, n, 2, dtype=torch.int32), "width": 32, "height": 32,
            "n_cameras": 1, "gaussian_ids": None}


def test_opacity_reset_happens_at_reset_every() -> None:
    from gsplat.strategy import DefaultStrategy as Upstream

    kwargs = dict(reset_every=5, refine_start_iter=10_000, refine_stop_iter=20_000, prune_opa=0.01)
    params, opts = _params_and_optimizers()
    params["opacities"].data.fill_(3.0)  # sigmoid ~ 0.95
    state = DefaultStrategy(**kwargs).initialize_state()
    for step in range(1, 5):
        DefaultStrategy(**kwargs).step_post_backward(params, opts, state, step, _fake_info(20, 0.0))
    assert torch.allclose(params["opacities"], torch.full((20,), 3.0))  # not before reset_every
    DefaultStrategy(**kwargs).step_post_backward(params, opts, state, 5, _fake_info(20, 0.0))
    assert torch.allclose(torch.sigmoid(params["opacities"]), torch.full((20,), 0.02), atol=1e-5)
    assert torch.count_nonzero(opts["opacities"].state[params["opacities"]]["exp_avg"]) == 0
    # The upstream class never resets (gsplat 1.5.3's precedence bug): the reason for the subclass.
    params2, opts2 = _params_and_optimizers()
    params2["opacities"].data.fill_(3.0)
    state2 = Upstream(**kwargs).initialize_state()
    Upstream(**kwargs).step_post_backward(params2, opts2, state2, 5, _fake_info(20, 0.0))
    assert torch.allclose(params2["opacities"], torch.full((20,), 3.0))


def test_default_strategy_grows_and_resizes_optimizer_state() -> None:
    strategy = DefaultStrategy(refine_start_iter=0, refine_every=1, reset_every=10_000, grow_grad2d=1e-4)
    params, opts = _params_and_optimizers(20)
    state = strategy.initialize_state(scene_scale=1.0)
    strategy.step_post_backward(params, opts, state, 1, _fake_info(20, 1.0))
    n = len(params["means"])
    assert n > 20
    for name, p in params.items():
        assert p.shape[0] == n
        assert opts[name].param_groups[0]["params"][0] is p
        assert opts[name].state[p]["exp_avg"].shape == p.shape
    assert state["grad2d"].shape == (n,)


def test_compute_relocation_torch_matches_formula() -> None:
    n_max = 51
    binoms = torch.tensor([[math.comb(n, k) for k in range(n_max)] for n in range(n_max)], dtype=torch.float32)
    opa = torch.tensor([0.3, 0.9, 0.5, 0.05])
    scales = torch.rand(4, 3) + 0.1
    ratios = torch.tensor([1, 2, 3, 5])
    new_opa, new_scales = compute_relocation_torch(opa, scales, ratios, binoms)
    for i in range(4):
        r = int(ratios[i])
        o_new = 1 - (1 - float(opa[i])) ** (1 / r)
        denom = sum(math.comb(j - 1, k) * (-1) ** k / math.sqrt(k + 1) * o_new ** (k + 1)
                    for j in range(1, r + 1) for k in range(j))
        assert new_opa[i].item() == pytest.approx(o_new, rel=1e-5)
        assert torch.allclose(new_scales[i], float(opa[i]) / denom * scales[i], rtol=1e-4)
    assert torch.allclose(new_opa[0], opa[0]) and torch.allclose(new_scales[0], scales[0])  # ratio 1: unchanged


def test_mcmc_strategy_runs_on_cpu_and_adds_gaussians() -> None:
    strategy = MCMCStrategy(refine_start_iter=0, refine_every=1, cap_max=1000, min_opacity=0.05)
    params, opts = _params_and_optimizers(40)
    params["opacities"].data[:5] = -10.0  # dead: relocated onto live ones
    state = strategy.initialize_state()
    means_before = params["means"].detach().clone()
    torch.manual_seed(0)
    strategy.step_post_backward(params, opts, state, 1, {}, lr=1e-4)
    assert len(params["means"]) == 42  # + 5 %
    assert (torch.sigmoid(params["opacities"]) > 0.05 - 1e-6).all()
    assert opts["means"].state[params["means"]]["exp_avg"].shape == (42, 3)
    assert not torch.equal(params["means"][:5], means_before[:5])


def test_atomic_writes_get_normal_permissions(tmp_path: Path) -> None:
    import os

    from datamodules.files.json_io import umask_mode, write_json_atomic

    ply = write_ply(tmp_path / "g.ply", _random_gaussians(3).raw())
    js = write_json_atomic(tmp_path / "m.json", {"a": 1})
    assert os.stat(ply).st_mode & 0o777 == umask_mode()
    assert os.stat(js).st_mode & 0o777 == umask_mode()
