"""NeRF building blocks on synthetic tensors: hash encoding, sampling, contraction, losses."""
from __future__ import annotations

import math

import pytest
import torch

from lightning_modules.scene.nerf.encoding import HashEncoding, sh_encoding
from lightning_modules.scene.nerf.rendering import composite, distortion_loss, interlevel_loss, render_weights
from lightning_modules.scene.nerf.sampling import (anneal_weights, contract, ray_aabb, sample_pdf,
                                                   spacing_to_distance)


def test_dense_level_interpolates_the_table_trilinearly() -> None:
    enc = HashEncoding(num_levels=1, base_res=4, max_res=4, log2_hashmap_size=10, features_per_level=1)
    assert enc.num_dense == 1  # 5^3 = 125 vertices fit in 1024 entries: no hashing
    with torch.no_grad():
        enc.table.copy_(torch.randn_like(enc.table))
    # A grid vertex reads its own entry; the midpoint of an edge averages the two ends.
    v = torch.tensor([[1, 2, 3]])
    x = v / 4.0
    idx = 1 + 2 * 5 + 3 * 25
    torch.testing.assert_close(enc(x)[0, 0], enc.table[idx, 0])
    mid = (torch.tensor([[1.5, 2, 3]]) / 4.0)
    torch.testing.assert_close(enc(mid)[0, 0], (enc.table[idx, 0] + enc.table[idx + 1, 0]) / 2)


def test_hash_encoding_shapes_and_gradients_touch_eight_entries_per_level() -> None:
    enc = HashEncoding(num_levels=4, base_res=8, max_res=128, log2_hashmap_size=8, features_per_level=2)
    assert enc.num_dense < 4  # the finer levels hash
    x = torch.rand(5, 3)
    out = enc(x)
    assert out.shape == (5, 8)
    out[0].sum().backward()
    touched = (enc.table.grad.abs().sum(dim=1) > 0).sum()
    assert 1 <= touched <= 4 * 8
    # A tiny move changes the output continuously (trilinear, no jumps).
    eps = torch.tensor([[1e-4, 0, 0]])
    assert (enc(x[:1] + eps) - enc(x[:1])).abs().max() < 1e-2


def test_sh_encoding_is_orthonormal_over_the_sphere() -> None:
    d = torch.randn(100_000, 3, dtype=torch.float64)
    d = d / d.norm(dim=1, keepdim=True)
    y = sh_encoding(d, 4)
    gram = 4 * math.pi * (y.T @ y) / len(d)
    torch.testing.assert_close(gram, torch.eye(16, dtype=torch.float64), atol=0.04, rtol=0)


def test_contraction_keeps_the_box_and_squashes_the_rest() -> None:
    inside = torch.tensor([[0.5, -0.2, 0.9]])
    torch.testing.assert_close(contract(inside, True), (inside + 2) / 4)
    far = torch.tensor([[1e6, 0.0, 0.0], [3.0, 1.0, -2.0]])
    c = contract(far, True)
    assert bool(((c >= 0) & (c <= 1)).all())
    assert c[0, 0] == pytest.approx(1.0, abs=1e-5)
    torch.testing.assert_close(contract(inside, False), (inside + 1) / 2)


def test_spacing_maps_ends_to_near_and_far_monotonically() -> None:
    s = torch.linspace(0, 1, 11)[None].expand(2, 11)
    near, far = torch.tensor([[0.05], [0.2]]), torch.tensor([[1000.0], [5.0]])
    for unbounded in (True, False):
        t = spacing_to_distance(s, near, far, unbounded)
        torch.testing.assert_close(t[:, 0], near[:, 0])
        torch.testing.assert_close(t[:, -1], far[:, 0], rtol=1e-3, atol=0)
        assert bool((t[:, 1:] > t[:, :-1]).all())


def test_ray_aabb_hits_and_misses() -> None:
    o = torch.tensor([[-3.0, 0.0, 0.0], [-3.0, 5.0, 0.0]])
    d = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    near, far, hit = ray_aabb(o, d, 1.0, 0.0)
    assert hit.tolist() == [True, False]
    assert near[0, 0] == pytest.approx(2.0) and far[0, 0] == pytest.approx(4.0)


def test_sample_pdf_concentrates_in_the_heavy_bin() -> None:
    bins = torch.linspace(0, 1, 11)[None].expand(3, 11).contiguous()
    w = torch.full((3, 10), 1e-3)
    w[:, 6] = 1.0
    edges = sample_pdf(bins, w, 32, torch.rand(3, 1, generator=torch.Generator().manual_seed(0)))
    assert edges.shape == (3, 33)
    assert bool((edges[:, 1:] >= edges[:, :-1]).all())
    mids = (edges[:, 1:] + edges[:, :-1]) / 2
    assert float(((mids > 0.6) & (mids < 0.7)).float().mean()) > 0.8
    assert anneal_weights(w, 0, 10.0, 100).eq(1).all()  # power 0 at the start: uniform
    torch.testing.assert_close(anneal_weights(w, 100, 10.0, 100), w)


def test_render_weights_match_closed_form_and_composite() -> None:
    sigma = torch.tensor([[0.0, 1.0, 2.0]])
    t = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    w, _ = render_weights(sigma, t)
    expected = torch.tensor([[0.0, 1 - math.exp(-1), math.exp(-1) * (1 - math.exp(-2))]])
    torch.testing.assert_close(w, expected)
    rgb = torch.tensor([[[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]]])
    color, acc = composite(w, rgb, torch.ones(3))
    torch.testing.assert_close(acc[0, 0], w.sum())
    torch.testing.assert_close(color[0, 0], 1 - w.sum())  # red only from the background


def test_interlevel_loss_is_zero_for_an_upper_bound_and_positive_otherwise() -> None:
    s = torch.linspace(0, 1, 9)[None]
    w = torch.tensor([[0, 0, 0.2, 0.6, 0.1, 0, 0, 0]])
    assert float(interlevel_loss(w, s, [(s, w)])) == pytest.approx(0.0, abs=1e-6)
    coarse = torch.linspace(0, 1, 5)[None]
    covering = torch.tensor([[0.0, 0.8, 0.1, 0.0]])  # coarse bins summing the fine mass
    assert float(interlevel_loss(w, s, [(coarse, covering)])) == pytest.approx(0.0, abs=1e-6)
    missing = torch.tensor([[0.9, 0.0, 0.0, 0.0]], requires_grad=True)
    loss = interlevel_loss(w, s, [(coarse, missing)])
    assert float(loss.detach()) > 0.1
    loss.backward()
    assert missing.grad is not None and bool((missing.grad != 0).any())


def test_distortion_loss_matches_the_quadratic_formula() -> None:
    g = torch.Generator().manual_seed(0)
    s = torch.sort(torch.rand(4, 13, generator=g), dim=1).values
    w = torch.rand(4, 12, generator=g) / 6
    mid = (s[:, 1:] + s[:, :-1]) / 2
    pair = (w[:, :, None] * w[:, None, :] * (mid[:, :, None] - mid[:, None, :]).abs()).sum(dim=(1, 2))
    intra = (w**2 * (s[:, 1:] - s[:, :-1])).sum(dim=1) / 3
    torch.testing.assert_close(distortion_loss(w, s), (pair + intra).mean(), rtol=1e-5, atol=1e-7)
    # Concentrated weights cost less than spread-out ones.
    focused = torch.zeros(1, 12)
    focused[0, 5] = 1.0
    spread = torch.full((1, 12), 1 / 12)
    assert float(distortion_loss(focused, s[:1])) < float(distortion_loss(spread, s[:1]))


def test_fused_corner_lookup_equals_the_plain_gather_with_its_gradient() -> None:
    from lightning_modules.scene.nerf.encoding import _CornerSum

    g = torch.Generator().manual_seed(0)
    table = torch.randn(50, 2, generator=g, requires_grad=True)
    idx = torch.randint(0, 50, (30, 8), generator=g, dtype=torch.int32)  # repeats: gradients accumulate
    w = torch.rand(30, 8, generator=g)
    grad = torch.randn(30, 2, generator=g)
    fused = _CornerSum.apply(table, idx, w)
    (a,) = torch.autograd.grad(fused, table, grad)
    plain = (table[idx.long()] * w[..., None]).sum(dim=1)
    (b,) = torch.autograd.grad(plain, table, grad)
    torch.testing.assert_close(fused, plain, atol=1e-6, rtol=0)
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_occupancy_grid_marks_where_density_is() -> None:
    from lightning_modules.scene.nerf.occupancy import OccupancyGrid

    grid = OccupancyGrid(resolution=8, threshold=0.01, warmup_steps=4, update_every=2)
    x = torch.rand(100, 3)
    assert not grid.active and bool(grid.query(x).all())  # before any update nothing is skipped
    assert not grid.due(2) and grid.due(4) and not grid.due(5)

    def ball(p: torch.Tensor) -> torch.Tensor:  # dense inside a ball of radius 0.2 around the centre
        return ((p - 0.5).norm(dim=-1) < 0.2).float() * 50.0

    grid.update(ball, torch.Generator().manual_seed(0))
    assert grid.active
    centre, corner = torch.tensor([[0.5, 0.5, 0.5]]), torch.tensor([[0.05, 0.05, 0.95]])
    assert bool(grid.query(centre)[0]) and not bool(grid.query(corner)[0])
    assert 0 < float(grid.occupied.float().mean()) < 0.2
    # The density moves elsewhere: the stored maximum decays, the old cells empty after enough
    # updates and the new ones fill at once.
    def moved(p: torch.Tensor) -> torch.Tensor:
        return ((p - 0.2).norm(dim=-1) < 0.15).float() * 50.0

    grid.update(moved, torch.Generator().manual_seed(1))
    assert bool(grid.query(centre)[0]) and bool(grid.query(torch.tensor([[0.2, 0.2, 0.2]]))[0])
    for i in range(200):
        grid.update(moved, torch.Generator().manual_seed(2 + i))
    assert not bool(grid.query(centre)[0]) and bool(grid.query(torch.tensor([[0.2, 0.2, 0.2]]))[0])
