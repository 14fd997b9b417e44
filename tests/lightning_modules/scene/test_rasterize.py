"""The renderer: the CPU backend against a dense per-pixel reference, gsplat's
conventions, the info dict gsplat's strategies read, and (on CUDA) gsplat itself."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from gsplat.cuda._torch_impl import (
    _persp_proj,
    _quat_scale_to_covar_preci,
    _world_to_cam,
)

from lightning_modules.scene.gaussians import rasterize_pairs
from lightning_modules.scene.gaussians.rasterize import render
from lightning_modules.scene.gaussians.rasterize_torch import _find_pairs, project_gaussians, rasterization_torch

H, W = 8, 10


def make_scene(n: int = 20, dtype: torch.dtype = torch.float64, seed: int = 0) -> dict:
    """A tiny scene that exercises every rule: overlaps deep enough for the early
    stop, a Gaussian behind the near plane, one off-screen, one nearly transparent."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=g, dtype=dtype) * torch.tensor([0.6, 0.5, 0.5], dtype=dtype)
    means[:, 2] += 3.0
    means[0, 2] = 0.005  # in front of the camera but nearer than near_plane
    means[1] = torch.tensor([30.0, 0.0, 3.0], dtype=dtype)  # far off-screen
    quats = torch.randn(n, 4, generator=g, dtype=dtype)
    scales = torch.rand(n, 3, generator=g, dtype=dtype) * 0.25 + 0.05
    opacities = torch.rand(n, generator=g, dtype=dtype) * 0.5 + 0.5
    opacities[2] = 0.003  # below gsplat's 1/255 threshold: culled
    opacities[3:8] = 0.9995  # opaque layers: alpha hits the 0.999 clamp, pixels stop early
    means[3:8, :2] *= 0.2  # stacked near the optical axis
    means[3:8, 2] = torch.linspace(2.5, 3.5, 5, dtype=dtype)
    scales[3:8] = 0.3
    means[3, :2] = torch.tensor([0.3 / 12, 0.6 / 11], dtype=dtype) * means[3, 2]  # on pixel (5, 4)'s centre
    colors = torch.rand(n, 3, generator=g, dtype=dtype)
    viewmats = torch.eye(4, dtype=dtype)[None].repeat(2, 1, 1)
    # Second camera: rotated about y and shifted, so the two views differ.
    a = 0.2
    viewmats[1, :3, :3] = torch.tensor(
        [[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]], dtype=dtype
    )
    viewmats[1, :3, 3] = torch.tensor([0.1, -0.05, 0.2], dtype=dtype)
    Ks = torch.tensor([[12.0, 0, 5.2], [0, 11.0, 3.9], [0, 0, 1]], dtype=dtype)[None].repeat(2, 1, 1)
    return dict(means=means, quats=quats, scales=scales, opacities=opacities, colors=colors,
                viewmats=viewmats, Ks=Ks)


def dense_reference(s: dict, render_mode: str = "RGB", backgrounds=None, eps2d: float = 0.3,
                    antialiased: bool = False):
    """Every pixel against every Gaussian, composited with cumprod (the obvious way).

    Projection comes from gsplat's own pure-torch reference functions.
    Returns colors (C,H,W,X), alphas (C,H,W,1), means2d (C,N,2), opacity-aware radii.
    """
    covars, _ = _quat_scale_to_covar_preci(s["quats"], s["scales"], compute_preci=False)
    means_c, covars_c = _world_to_cam(s["means"], covars, s["viewmats"])
    means2d, cov2d = _persp_proj(means_c, covars_c, s["Ks"], W, H)
    det_orig = torch.linalg.det(cov2d)
    cov2d = cov2d + eps2d * torch.eye(2, dtype=cov2d.dtype)
    conics = torch.linalg.inv(cov2d)
    depths = means_c[..., 2]
    C, N = depths.shape
    o = s["opacities"][None].expand(C, N)
    if antialiased:  # Mip-Splatting compensation, gsplat's rasterize_mode="antialiased"
        o = o * torch.sqrt((det_orig / torch.linalg.det(cov2d)).clamp(min=0))
    extend = torch.sqrt(2 * torch.log(torch.clamp(o.detach() * 255, min=1))).clamp(max=3.33)
    rx = torch.ceil(extend * cov2d[..., 0, 0].detach().sqrt())
    ry = torch.ceil(extend * cov2d[..., 1, 1].detach().sqrt())
    mx, my = means2d.detach().unbind(-1)
    valid = (depths > 0.01) & (o >= 1 / 255)
    valid &= (mx + rx > 0) & (mx - rx < W) & (my + ry > 0) & (my - ry < H)
    radii = torch.where(valid[..., None], torch.stack([rx, ry], -1), 0).int()

    ys, xs = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    pix = torch.stack([xs, ys], -1).reshape(-1, 2).to(means2d.dtype) + 0.5  # (P, 2)
    feats = s["colors"][None].expand(C, N, 3)
    if render_mode in ("D", "ED"):
        feats = depths[..., None]
    elif render_mode in ("RGB+D", "RGB+ED"):
        feats = torch.cat([feats, depths[..., None]], -1)
    out_c, out_a = [], []
    for c in range(C):
        order = torch.argsort(depths[c])
        d = pix[:, None, :] - means2d[c, order][None]  # (P, N, 2)
        q = conics[c, order]
        sigma = 0.5 * (q[:, 0, 0] * d[..., 0] ** 2 + q[:, 1, 1] * d[..., 1] ** 2) + q[:, 0, 1] * d[..., 0] * d[..., 1]
        alpha = torch.clamp(o[c, order] * torch.exp(-sigma), max=0.999)
        use = valid[c, order][None] & (sigma >= 0) & (alpha >= 1 / 255)
        alpha = torch.where(use, alpha, torch.zeros_like(alpha))
        t_incl = torch.cumprod(1 - alpha, dim=1)
        t_excl = torch.cat([torch.ones_like(t_incl[:, :1]), t_incl[:, :-1]], 1)
        w = alpha * t_excl * (t_incl > 1e-4)
        out_c.append((w @ feats[c, order]).reshape(H, W, -1))
        out_a.append(w.sum(1).reshape(H, W, 1))
    colors, alphas = torch.stack(out_c), torch.stack(out_a)
    if backgrounds is not None:
        bg = backgrounds if render_mode in ("RGB",) else torch.cat([backgrounds, backgrounds[:, :1] * 0], -1)
        if render_mode in ("D", "ED"):
            bg = backgrounds[:, :1] * 0
        colors = colors + (1 - alphas) * bg[:, None, None, :]
    if render_mode in ("ED", "RGB+ED"):
        colors = torch.cat([colors[..., :-1], colors[..., -1:] / alphas.clamp(min=1e-10)], -1)
    return colors, alphas, means2d, radii


def _leaves(s: dict) -> dict:
    return {k: v.clone().requires_grad_(k not in ("viewmats", "Ks")) for k, v in s.items()}


@pytest.mark.parametrize(
    "render_mode,rasterize_mode",
    [("RGB", "classic"), ("RGB+ED", "classic"), ("D", "classic"), ("RGB", "antialiased")],
)
def test_matches_dense_reference_values_and_gradients(render_mode: str, rasterize_mode: str) -> None:
    s = make_scene()
    bg = torch.tensor([[0.2, 0.5, 0.9], [1.0, 0.0, 0.3]], dtype=torch.float64)
    a, b = _leaves(s), _leaves(s)
    col, alp, info = render(**{k: a[k] for k in a}, width=W, height=H, backend="torch",
                            render_mode=render_mode, backgrounds=bg, rasterize_mode=rasterize_mode)
    info["means2d"].retain_grad()
    col_r, alp_r, m2d_r, radii_r = dense_reference(b, render_mode, backgrounds=bg,
                                                    antialiased=rasterize_mode == "antialiased")
    m2d_r.retain_grad()

    assert col.shape == col_r.shape and alp.shape == (2, H, W, 1)
    assert alp.max() > 0.99, "the scene should contain opaque pixels"
    torch.testing.assert_close(col, col_r, rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(alp, alp_r, rtol=1e-7, atol=1e-9)
    assert torch.equal(info["radii"], radii_r)

    g = torch.Generator().manual_seed(1)
    wc, wa = torch.randn(col.shape, generator=g, dtype=col.dtype), torch.randn(alp.shape, generator=g, dtype=col.dtype)
    ((col * wc).sum() + (alp * wa).sum()).backward()
    ((col_r * wc).sum() + (alp_r * wa).sum()).backward()
    keys = ["means", "quats", "scales", "opacities"] + (["colors"] if render_mode != "D" else [])
    for k in keys:
        assert a[k].grad.abs().sum() > 0, k
        torch.testing.assert_close(a[k].grad, b[k].grad, rtol=1e-6, atol=1e-8, msg=k)
    visible = (info["radii"] > 0).all(-1)
    torch.testing.assert_close(info["means2d"].grad[visible], m2d_r.grad[visible], rtol=1e-6, atol=1e-8)
    assert torch.all(info["means2d"].grad[~visible] == 0)


def test_float32_forward_matches_reference() -> None:
    s = make_scene(dtype=torch.float32, seed=3)
    col, alp, _ = render(**s, width=W, height=H, render_mode="RGB+ED")
    col_r, alp_r, _, _ = dense_reference(s, "RGB+ED")
    torch.testing.assert_close(alp, alp_r, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(col, col_r, rtol=1e-4, atol=1e-4)


def test_culling_rules() -> None:
    s = make_scene()
    radii, means2d, depths, conics, _ = project_gaussians(
        s["means"], s["quats"], s["scales"], s["opacities"], s["viewmats"], s["Ks"], W, H
    )
    assert radii.dtype == torch.int32 and radii.shape == (2, 20, 2)
    assert torch.all(radii[:, 0] == 0), "nearer than near_plane"
    assert torch.all(radii[:, 1] == 0), "off-screen"
    assert torch.all(radii[:, 2] == 0), "opacity below 1/255"
    assert (radii > 0).all(-1).sum() > 20
    # radius_clip culls Gaussians whose radii are both small.
    radii_c, *_ = project_gaussians(
        s["means"], s["quats"], s["scales"], s["opacities"], s["viewmats"], s["Ks"], W, H, radius_clip=3.0
    )
    small = (radii <= 3).all(-1)
    assert torch.all(radii_c[small] == 0) and torch.equal(radii_c[~small], radii[~small])


def test_pixel_centres_and_low_pass() -> None:
    """A point-like Gaussian on a pixel centre: the eps2d blur alone sets its footprint."""
    dtype = torch.float64
    K = torch.tensor([[[10.0, 0, 0], [0, 10.0, 0], [0, 0, 1]]], dtype=dtype)
    # Projects to pixel (3.5, 2.5) = the centre of pixel column 3, row 2.
    means = torch.tensor([[0.35, 0.25, 1.0]], dtype=dtype)
    col, alp, info = render(means, torch.tensor([[1.0, 0, 0, 0]], dtype=dtype),
                            torch.full((1, 3), 1e-6, dtype=dtype), torch.tensor([0.9], dtype=dtype),
                            torch.ones(1, 3, dtype=dtype), torch.eye(4, dtype=dtype)[None], K, W, H)
    assert alp[0, 2, 3, 0].item() == pytest.approx(0.9, rel=1e-6)
    # One pixel away: alpha = 0.9 * exp(-0.5 / 0.3).
    assert alp[0, 2, 4, 0].item() == pytest.approx(0.9 * math.exp(-0.5 / 0.3), rel=1e-5)
    assert alp[0, 3, 3, 0].item() == pytest.approx(0.9 * math.exp(-0.5 / 0.3), rel=1e-5)
    # ceil(min(3.33, sqrt(2 ln(0.9*255))) * sqrt(0.3)) = 2
    assert info["radii"][0, 0].tolist() == [2, 2]


def test_sh_conventions_and_offset() -> None:
    """Degree 1 straight ahead: colour = 0.28209 c0 + 0.48860 z c2 + 0.5, clamped at 0."""
    dtype = torch.float64
    K = torch.tensor([[[10.0, 0, 5.0], [0, 10.0, 4.0], [0, 0, 1]]], dtype=dtype)
    means = torch.tensor([[0.0, 0.0, 2.0]], dtype=dtype)
    sh = torch.zeros(1, 4, 3, dtype=dtype)
    sh[0, 0] = torch.tensor([0.3, -0.2, -3.0])
    sh[0, 2] = torch.tensor([0.4, 0.1, 0.0])  # the z-term
    sh[0, 1] = torch.tensor([5.0, 5.0, 5.0])  # y-term: zero for a view straight ahead
    args = (means, torch.tensor([[1.0, 0, 0, 0]], dtype=dtype), torch.full((1, 3), 1.0, dtype=dtype),
            torch.tensor([0.999], dtype=dtype), sh, torch.eye(4, dtype=dtype)[None], K, W, H)
    col, alp, _ = render(*args, sh_degree=1)
    expect = (0.2820947917738781 * sh[0, 0] + 0.48860251190292 * sh[0, 2] + 0.5).clamp(min=0)
    torch.testing.assert_close(col[0, 4, 5] / alp[0, 4, 5], expect)
    col0, alp0, _ = render(*args, sh_degree=0)
    torch.testing.assert_close(col0[0, 4, 5] / alp0[0, 4, 5], (0.2820947917738781 * sh[0, 0] + 0.5).clamp(min=0))


def test_info_fields_match_gsplat_layout() -> None:
    s = make_scene(dtype=torch.float32)
    s["colors"] = torch.randn(20, 16, 3)
    col, alp, info = render(**s, width=W, height=H, sh_degree=3, render_mode="RGB+ED")
    assert col.shape == (2, H, W, 4) and col.dtype == torch.float32
    assert info["means2d"].shape == (2, 20, 2) and info["means2d"].dtype == torch.float32
    assert info["radii"].shape == (2, 20, 2) and info["radii"].dtype == torch.int32
    assert info["depths"].shape == (2, 20) and info["opacities"].shape == (2, 20)
    assert info["conics"].shape == (2, 20, 3)
    assert info["gaussian_ids"] is None and info["n_cameras"] == 2
    assert (info["width"], info["height"]) == (W, H)
    assert isinstance(info["width"], int)


def test_empty_view_renders_background() -> None:
    s = make_scene(dtype=torch.float32)
    s["means"] = s["means"] * torch.tensor([1.0, 1.0, -1.0])  # everything behind the camera
    bg = torch.tensor([[0.1, 0.2, 0.3]]).repeat(2, 1)
    col, alp, info = render(**s, width=W, height=H, backgrounds=bg)
    assert torch.all(alp == 0) and torch.allclose(col, bg[:, None, None, :].expand_as(col))
    assert info["n_pairs"] == 0


def test_row_bands_do_not_change_the_result() -> None:
    s = make_scene(dtype=torch.float32)
    radii, m2d, depths, conics, opac = project_gaussians(
        s["means"], s["quats"], s["scales"], s["opacities"], s["viewmats"], s["Ks"], W, H
    )
    one = _find_pairs(m2d, conics, opac, depths, radii, W, H, pair_budget=10**9)
    many = _find_pairs(m2d, conics, opac, depths, radii, W, H, pair_budget=7)
    assert many[-1]["bands"] > 5 and one[-1]["bands"] == 1
    for x, y in zip(one[:4], many[:4]):
        assert torch.equal(x, y)


def test_int64_sort_keys_give_the_same_pairs(monkeypatch: pytest.MonkeyPatch) -> None:
    # Bands too big for int32 (band pixels x Gaussians >= 2**31) sort int64 keys.
    s = make_scene(dtype=torch.float32)
    radii, m2d, depths, conics, opac = project_gaussians(
        s["means"], s["quats"], s["scales"], s["opacities"], s["viewmats"], s["Ks"], W, H
    )
    int32 = _find_pairs(m2d, conics, opac, depths, radii, W, H, pair_budget=10**9)
    monkeypatch.setattr(rasterize_pairs, "INT32_KEYS_MAX", 0)
    int64 = _find_pairs(m2d, conics, opac, depths, radii, W, H, pair_budget=10**9)
    assert int32[-1]["pairs"] > 50
    # Only the sort key's dtype differs: the same order, and alphas / transmittances from the
    # same float code path, so they must match exactly.
    for x, y in zip(int32[:4], int64[:4]):
        assert x.dtype == y.dtype and torch.equal(x, y)


def test_band_whose_candidates_all_fall_below_the_threshold_gives_no_pairs() -> None:
    # A sharp Gaussian on a pixel corner: its box holds pixel (0, 0), whose centre is too far
    # for alpha >= 1/255 (sigma = 25 there), so the band has one candidate and no pair.
    m2d = torch.zeros(1, 1, 2)
    conics = torch.tensor([[[100.0, 0.0, 100.0]]])
    pix, gid, alpha, trans, stats = _find_pairs(
        m2d, conics, torch.ones(1, 1), torch.ones(1, 1), torch.ones(1, 1, 2, dtype=torch.int32), W, H, 10**6)
    assert stats["candidate_pairs"] == 1 and stats["pairs"] == 0
    assert pix.dtype == gid.dtype == torch.int64 and alpha.dtype == trans.dtype == torch.float32
    assert pix.numel() == gid.numel() == alpha.numel() == trans.numel() == 0


def test_segment_runs_and_cumsum_match_a_loop() -> None:
    keys = torch.tensor([1, 1, 1, 4, 6, 6, 9, 9])  # keys 0, 2, 3, 5, 7, 8 do not occur
    values = torch.tensor([0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
    first, last = rasterize_pairs.segment_runs(keys, 10)
    for k in keys.unique().tolist():
        idx = torch.nonzero(keys == k).squeeze(1)
        assert first[k] == idx[0] and last[k] == idx[-1]
    assert first.min() >= 0 and last.max() < len(keys)  # absent keys stay in range
    expected = torch.cat([values[keys == k].double().cumsum(0) for k in keys.unique().tolist()])
    # One global cumsum minus each run's offset against a cumsum per run: other sums, so a tolerance.
    torch.testing.assert_close(rasterize_pairs.segment_cumsum(values, keys, first), expected, rtol=0, atol=1e-12)


def test_backward_chunks_do_not_change_gradients() -> None:
    s = make_scene()
    grads = []
    for budget in (10**9, 5):
        a = _leaves(s)
        col, alp, _ = rasterization_torch(**a, width=W, height=H, pair_budget=budget)
        (col.sum() + 2 * alp.sum()).backward()
        grads.append([a[k].grad for k in ("means", "quats", "scales", "opacities", "colors")])
    for g1, g2 in zip(*grads):
        torch.testing.assert_close(g1, g2, rtol=1e-12, atol=1e-12)


def test_bad_arguments_raise() -> None:
    s = make_scene(dtype=torch.float32)
    with pytest.raises(ValueError, match="backend"):
        render(**s, width=W, height=H, backend="warp")
    with pytest.raises(ValueError, match="CUDA"):
        render(**s, width=W, height=H, backend="gsplat")
    with pytest.raises(ValueError, match="render_mode"):
        render(**s, width=W, height=H, render_mode="RGBD")
    with pytest.raises(ValueError, match="packed"):
        render(**s, width=W, height=H, packed=True)
    with pytest.raises(ValueError, match="quats"):
        render(**{**s, "quats": s["quats"][:, :3]}, width=W, height=H)
    with pytest.raises(ValueError, match="colors"):
        render(**s, width=W, height=H, sh_degree=1)  # (N, 3) colours are not SH coefficients


def test_default_strategy_densifies_on_cpu() -> None:
    from gsplat.strategy import DefaultStrategy

    s = make_scene(n=200, dtype=torch.float32, seed=5)
    params = torch.nn.ParameterDict({
        "means": s["means"], "quats": s["quats"], "scales": torch.log(s["scales"]),
        "opacities": torch.logit(s["opacities"].clamp(0.01, 0.99)), "colors": s["colors"],
    })
    optimizers = {k: torch.optim.Adam([p], lr=1e-3) for k, p in params.items()}
    strategy = DefaultStrategy(refine_start_iter=0, refine_every=1, grow_grad2d=1e-6, verbose=False)
    strategy.check_sanity(params, optimizers)
    state = strategy.initialize_state(scene_scale=1.0)
    target = torch.rand(2, H, W, 3)
    col, alp, info = render(params["means"], params["quats"], torch.exp(params["scales"]),
                            torch.sigmoid(params["opacities"]), params["colors"],
                            s["viewmats"], s["Ks"], W, H)
    strategy.step_pre_backward(params, optimizers, state, step=1, info=info)
    (1e3 * F.mse_loss(col, target)).backward()
    n_before = len(params["means"])
    strategy.step_post_backward(params, optimizers, state, step=1, info=info, packed=False)
    assert len(params["means"]) > n_before


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA for gsplat's kernels")
@pytest.mark.parametrize("sh_degree", [None, 3])
def test_torch_backend_agrees_with_gsplat(sh_degree: int | None) -> None:
    g = torch.Generator().manual_seed(0)
    n, h, w = 3000, 96, 128
    means = torch.randn(n, 3, generator=g) * torch.tensor([1.0, 0.8, 1.0]) + torch.tensor([0, 0, 4.0])
    quats = torch.randn(n, 4, generator=g)
    scales = torch.exp(torch.randn(n, 3, generator=g) * 0.5 - 3.5)
    opacities = torch.rand(n, generator=g)
    colors = torch.rand(n, 3, generator=g) if sh_degree is None else torch.randn(n, 16, 3, generator=g) * 0.3
    K = torch.tensor([[[100.0, 0, 64.0], [0, 100.0, 48.0], [0, 0, 1]]])
    viewmats = torch.eye(4)[None].repeat(2, 1, 1)
    viewmats[1, :3, 3] = torch.tensor([0.3, -0.1, 0.5])
    Ks = K.repeat(2, 1, 1)
    bg = torch.rand(2, 3, generator=g)
    out = {}
    for backend, dev in (("torch", "cpu"), ("gsplat", "cuda")):
        leaves = [t.clone().to(dev).requires_grad_(True) for t in (means, quats, scales, opacities, colors)]
        col, alp, info = render(*leaves, viewmats.to(dev), Ks.to(dev), w, h, sh_degree=sh_degree,
                                backgrounds=bg.to(dev), render_mode="RGB+ED", backend=backend)
        info["means2d"].retain_grad()
        wc = torch.randn(col.shape, generator=torch.Generator().manual_seed(1)).to(dev)
        ((col * wc).sum() + alp.sum()).backward()
        out[backend] = dict(col=col.detach().cpu(), alp=alp.detach().cpu(), radii=info["radii"].cpu(),
                            m2d=info["means2d"].detach().cpu(), m2d_grad=info["means2d"].grad.cpu(),
                            grads=[t.grad.cpu() for t in leaves])
    a, b = out["torch"], out["gsplat"]

    def psnr(x, y):
        return (-10 * torch.log10(((x - y) ** 2).mean() / y.abs().max() ** 2)).item()

    assert psnr(a["col"][..., :3], b["col"][..., :3]) > 40
    assert psnr(a["alp"], b["alp"]) > 40
    solid = (b["alp"][..., 0] > 0.5) & (a["alp"][..., 0] > 0.5)  # expected depth is 0/0-prone elsewhere
    assert psnr(a["col"][..., 3][solid], b["col"][..., 3][solid]) > 40
    vis = (b["radii"] > 0).all(-1)
    assert ((a["radii"] > 0).all(-1) == vis).float().mean() > 0.999
    assert (a["radii"][vis] - b["radii"][vis]).abs().max() <= 1
    torch.testing.assert_close(a["m2d"][vis], b["m2d"][vis], rtol=1e-4, atol=1e-3)
    pairs = [("means2d", a["m2d_grad"][vis], b["m2d_grad"][vis])]
    pairs += list(zip(["means", "quats", "scales", "opacities", "colors"], a["grads"], b["grads"]))
    for name, ga, gb in pairs:
        rel = ((ga - gb).norm() / gb.norm()).item()
        assert rel < 0.02, f"{name}: relative gradient difference {rel:.4f}"

    # "auto" picks gsplat for CUDA tensors: its meta carries the tile intersections.
    _, _, info = render(means.cuda(), quats.cuda(), scales.cuda(), opacities.cuda(), colors.cuda(),
                        viewmats.cuda(), Ks.cuda(), w, h, sh_degree=sh_degree)
    assert "isect_ids" in info
