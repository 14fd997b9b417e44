"""LPIPSLoss, GramLoss and load_vgg16 (random backbones: the tests run offline)."""
from __future__ import annotations

import warnings

import pytest
import torch
from torchvision.transforms.v2.functional import gaussian_blur

from lightning_modules.difix.training.backbones import load_vgg16, torchvision_cache_path
from lightning_modules.difix.training.losses import GRAM_LAYER_WEIGHTS, GramLoss, LPIPSLoss, gram_loss_from_features

VGG_FILE = "vgg16-397923af.pth"


def _quiet(factory):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return factory()


@pytest.fixture(scope="module")
def gram() -> GramLoss:
    return _quiet(lambda: GramLoss(pretrained_backbone=False, crop_size=None))


@pytest.fixture(scope="module")
def lpips_loss() -> LPIPSLoss:
    return _quiet(lambda: LPIPSLoss(pretrained_backbone=False))


@pytest.fixture
def empty_torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    return tmp_path


def _images(seed: int, shape=(2, 3, 32, 32)) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------- Gram maths
def test_gram_formula_on_hand_computed_features():
    # F = [[1, 2], [3, 4]] (d=2 channels, h=1, w=2) -> G = F F^T = [[5, 11], [11, 25]];
    # target features 0 -> mean(G^2) = (25 + 121 + 121 + 625) / 4 = 223; / (d h w = 4) = 55.75.
    f = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 2, 1, 2)
    zero = torch.zeros_like(f)
    assert gram_loss_from_features([f], [zero], [2.0]).item() == pytest.approx(2 * 55.75)
    # "gatys" divides G by d h w before squaring: the reference value / (d h w).
    assert gram_loss_from_features([f], [zero], [1.0], "gatys").item() == pytest.approx(55.75 / 4)


def test_gram_cross_batch_matches_reference_code_reshape():
    torch.manual_seed(0)
    fp, ft = torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5)
    b, d, h, w = fp.shape
    # Reference code: tensor.view(b * d, h * w); torch.mm(t, t.t()); mean(diff^2) / (d h w).
    gp = fp.reshape(b * d, h * w) @ fp.reshape(b * d, h * w).t()
    gt = ft.reshape(b * d, h * w) @ ft.reshape(b * d, h * w).t()
    expected = ((gp - gt) ** 2).mean() / (d * h * w)
    got = gram_loss_from_features([fp], [ft], [1.0], cross_batch=True)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    # Default: per-image Grams (diagonal blocks only).
    per_image = torch.einsum("bcn,bdn->bcd", fp.flatten(2), fp.flatten(2)) - torch.einsum("bcn,bdn->bcd", ft.flatten(2), ft.flatten(2))
    assert gram_loss_from_features([fp], [ft], [1.0]).item() == pytest.approx((per_image.pow(2).mean() / (d * h * w)).item(), rel=1e-5)


def test_gram_loss_equals_explicit_einsum_on_its_vgg_features(gram):
    pred, target = _images(0), _images(1)
    expected = 0.0
    for weight, fp, ft in zip(GRAM_LAYER_WEIGHTS, gram.features(pred), gram.features(target)):
        _, d, h, w = fp.shape
        gp = torch.einsum("bchw,bdhw->bcd", fp, fp)
        gt = torch.einsum("bchw,bdhw->bcd", ft, ft)
        expected += weight * ((gp - gt) ** 2).mean().item() / (d * h * w)
    assert gram(pred, target).item() == pytest.approx(expected, rel=1e-4)


def test_gram_features_are_vgg16_relu_layers(gram):
    feats = gram.features(_images(0, (1, 3, 64, 64)))
    assert [f.shape[1] for f in feats] == [64, 128, 256, 512, 512]
    assert [f.shape[-1] for f in feats] == [64, 32, 16, 8, 4]
    assert all(isinstance(gram.vgg[i], torch.nn.ReLU) for i in (3, 8, 15, 22, 29))
    assert all(f.min() >= 0 for f in feats)  # taken after the ReLUs


# ------------------------------------------------------------ Gram behaviour
def test_gram_zero_for_identical_and_positive_otherwise(gram):
    x = _images(0)
    assert gram(x, x.clone()).item() == 0.0
    assert gram(x, _images(1)).item() > 0.0


def test_gram_uses_one_crop_for_both_images():
    cropping = _quiet(lambda: GramLoss(pretrained_backbone=False, crop_size=32))
    x = _images(0)
    # Different windows of the same image would give a non-zero loss.
    assert all(cropping(x, x.clone()).item() == 0.0 for _ in range(3))
    # Smaller than the crop: the whole image is used.
    small = _images(1, (1, 3, 24, 20))
    assert cropping(small, small.clone()).item() == 0.0 and cropping(small, _images(2, (1, 3, 24, 20))).item() > 0


def test_gram_ignores_texture_phase_that_l2_punishes(gram):
    # A periodic texture translated by half its period has the same texture statistics
    # (Gram ~ 0, only border effects) but a large pixel L2; a blur is the reverse.
    tile = _images(3, (1, 3, 8, 8))
    texture = tile.repeat(1, 1, 8, 8)  # 64 x 64
    shifted = torch.roll(texture, shifts=(4, 4), dims=(2, 3))
    blurred = gaussian_blur(texture, [5, 5], [1.0, 1.0])
    l2 = lambda a: ((a - texture) ** 2).mean().item()  # noqa: E731
    assert l2(shifted) > l2(blurred)
    assert gram(shifted, texture).item() < 0.01 * gram(blurred, texture).item()


def test_gradients_reach_pred_only(gram, lpips_loss):
    for loss in (gram, lpips_loss):
        pred = _images(0).requires_grad_(True)
        target = _images(1)
        loss(pred, target).backward()
        assert pred.grad is not None and pred.grad.abs().sum() > 0
        assert all(p.grad is None for p in loss.parameters())
        assert not any(p.requires_grad for p in loss.parameters())


def test_shape_mismatch_is_refused(gram):
    with pytest.raises(ValueError, match=r"GramLoss.*\(2, 3, 32, 32\).*\(2, 3, 32, 30\)"):
        gram(_images(0), _images(1, (2, 3, 32, 30)))


# ----------------------------------------------------------------- LPIPS
def test_lpips_zero_positive_symmetric(lpips_loss):
    a, b = _images(0), _images(1)
    assert lpips_loss(a, a.clone()).item() == pytest.approx(0.0, abs=1e-7)
    ab, ba = lpips_loss(a, b).item(), lpips_loss(b, a).item()
    assert ab > 0 and ab == pytest.approx(ba, rel=1e-5)
    assert lpips_loss(a, b).ndim == 0


def test_losses_stay_in_eval_and_out_of_checkpoints(gram, lpips_loss):
    parent = torch.nn.Module()
    parent.gram, parent.lpips, parent.head = gram, lpips_loss, torch.nn.Linear(2, 2)
    parent.train()
    assert not gram.training and not lpips_loss.training
    # LPIPS's heads have dropout: in train mode two calls would differ.
    a, b = _images(0), _images(1)
    assert lpips_loss(a, b).item() == lpips_loss(a, b).item()
    state = parent.state_dict()
    assert sorted(state) == ["head.bias", "head.weight"]
    parent.load_state_dict(state, strict=True)  # the frozen weights are not "missing"


# ------------------------------------------------------- backbones offline
def test_random_backbone_warns_and_is_deterministic():
    with pytest.warns(UserWarning, match="NOT real perceptual distances"):
        first = load_vgg16(pretrained=False)
    with pytest.warns(UserWarning):
        second = load_vgg16(pretrained=False)
    assert len(first) == 31 and not any(p.requires_grad for p in first.parameters())
    assert all(torch.equal(p, q) for p, q in zip(first.parameters(), second.parameters()))


def test_offline_error_names_the_vgg16_file(empty_torch_home):
    expected = empty_torch_home / "hub" / "checkpoints" / VGG_FILE
    assert torchvision_cache_path("vgg") == expected
    for build in (lambda: load_vgg16(pretrained=True), lambda: GramLoss(), lambda: LPIPSLoss(net="vgg")):
        with pytest.raises(FileNotFoundError) as info:
            build()
        message = str(info.value)
        assert str(expected) in message
        assert "https://download.pytorch.org/models/vgg16-397923af.pth" in message
        assert "pretrained_backbone=False" in message


def test_pretrained_weights_load_from_torchvision_cache(empty_torch_home):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        donor = load_vgg16(pretrained=False)
    for p in donor.parameters():
        p.data.add_(1.0)  # distinguishable from the random init
    path = torchvision_cache_path("vgg")
    path.parent.mkdir(parents=True)
    torch.save({f"features.{k}": v for k, v in donor.state_dict().items()}, path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "random backbone" warning
        loaded = load_vgg16(pretrained=True)
    assert all(torch.equal(p, q) for p, q in zip(loaded.parameters(), donor.parameters()))

    path.write_bytes(b"truncated download")
    with pytest.raises(RuntimeError, match=VGG_FILE.replace(".", r"\.")):
        load_vgg16(pretrained=True)


def test_gram_stays_float32_under_autocast(gram):
    pred, target = _images(0), _images(1)
    full = gram(pred, target).item()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = gram(pred, target)
    assert mixed.dtype == torch.float32 and mixed.item() == pytest.approx(full, rel=0.05)
