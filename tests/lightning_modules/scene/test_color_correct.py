"""cc-PSNR: the reference's colour fit (quadratic + linear + bias per channel over unclipped
pixels, five refits), checked against facts of that formula."""
from __future__ import annotations

import pytest
import torch
from torchmetrics.functional.image import peak_signal_noise_ratio

from lightning_modules.scene.color_correct import cc_psnr, color_correct


def _render(seed: int = 0, size: tuple[int, int] = (24, 32)) -> torch.Tensor:
    """(1, 3, H, W) smooth image strictly inside (0.1, 0.9): no clipped pixel."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size[0]), torch.linspace(0, 1, size[1]), indexing="ij")
    base = torch.stack([xx, yy, xx * yy]) + 0.1 * torch.rand(3, *size, generator=g)
    return (0.1 + 0.8 * base / base.amax(dim=(1, 2), keepdim=True))[None]


def _quadratic(x: torch.Tensor) -> torch.Tensor:
    """A per-channel function of all three channels in the fit's span (squares, a cross term,
    linear mixing, bias), chosen so that it stays inside (0, 1) on `_render` images."""
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    return torch.stack([0.1 + 0.5 * r + 0.2 * g * b, 0.3 * g * g + 0.2 * r + 0.2, 0.6 * b - 0.1 * r * g + 0.25], dim=1)


def test_a_render_off_by_a_quadratic_colour_map_is_corrected_exactly() -> None:
    img = _render()
    ref = _quadratic(img)
    assert float(ref.min()) > 0.01 and float(ref.max()) < 0.99
    corrected = color_correct(img, ref)
    assert torch.allclose(corrected, ref, atol=1e-4)
    assert float(cc_psnr(img, ref)) > 70 > float(peak_signal_noise_ratio(img, ref, data_range=1.0)) + 40


def test_the_target_itself_is_a_fixed_point() -> None:
    ref = _render(1)
    assert torch.allclose(color_correct(ref, ref), ref, atol=1e-5)


def test_pixels_clipped_in_the_target_do_not_enter_the_fit() -> None:
    img = _render(2)
    ref = _quadratic(img)
    spoiled = ref.clone()
    spoiled[..., :6, :] = 1.0  # saturated rows in the target: whatever the render shows there
    corrected = color_correct(img, spoiled)
    # The fit still recovers the map from the remaining pixels ...
    assert torch.allclose(corrected[..., 6:, :], ref[..., 6:, :], atol=1e-4)
    # ... whereas fitting those rows would have bent it (a fit on all pixels misses).
    a = torch.cat([img.flatten(2)[0].T[:, [0, 0, 0, 1, 1, 2]] * img.flatten(2)[0].T[:, [0, 1, 2, 1, 2, 2]],
                   img.flatten(2)[0].T, torch.ones(img[0, 0].numel(), 1)], dim=1)
    w_all = torch.linalg.lstsq(a, spoiled.flatten(2)[0].T).solution
    assert (a @ w_all - ref.flatten(2)[0].T)[6 * 32:].abs().max() > 1e-2


def test_output_is_clipped_and_channels_fit_separately() -> None:
    img = _render(3)
    ref = img.clone()
    ref[:, 1] = (img[:, 1] * 3 - 1).clamp(0, 1)  # green stretched past both ends
    out = color_correct(img, ref)
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    # Red and blue are unchanged targets: their fits stay the identity despite green's clipping.
    assert torch.allclose(out[:, [0, 2]], ref[:, [0, 2]], atol=1e-4)


def test_batched_images_are_fitted_independently() -> None:
    a, b = _render(4), _render(5)
    ref_a, ref_b = _quadratic(a), a  # a second image with another map
    both = color_correct(torch.cat([a, b]), torch.cat([ref_a, ref_b]))
    assert torch.allclose(both[0:1], color_correct(a, ref_a), atol=1e-5)
    assert torch.allclose(both[1:2], color_correct(b, ref_b), atol=1e-5)
    assert cc_psnr(torch.cat([a, b]), torch.cat([ref_a, ref_b])).shape == (2,)


def test_shapes_must_match() -> None:
    with pytest.raises(ValueError, match="img and ref"):
        color_correct(torch.rand(1, 3, 4, 4), torch.rand(1, 3, 4, 5))
