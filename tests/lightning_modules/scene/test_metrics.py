"""The evaluation protocol's options: LPIPS with both backbones (the reference's VGG input
convention), cc-PSNR beside PSNR, and test views kept whole for a dataset-wide FID."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from datamodules.files.image_io import load_image
from lightning_modules.scene.evaluation import EvalSettings, SceneEvaluator
from lightning_modules.scene.metrics import LPIPS_BACKBONE_FILES, ImageMetrics


def _pair(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    target = torch.rand(2, 3, 32, 32, generator=g)
    return (target * 0.7 + 0.1 * torch.rand(2, 3, 32, 32, generator=g)).clamp(0, 1), target


def test_offline_each_lpips_backbone_is_skipped_with_a_warning_naming_its_file(tmp_path: Path,
                                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.warns(UserWarning) as caught:
        metrics = ImageMetrics("alex", lpips_nets=("alex", "vgg"), cc_psnr=True)
    messages = " ".join(str(w.message) for w in caught)
    assert all(name in messages for name in LPIPS_BACKBONE_FILES.values())
    out = metrics(*_pair(0))
    assert set(out) == {"psnr", "ssim", "cc_psnr"}  # no LPIPS number from a backbone that is not there


@pytest.fixture(scope="module")
def random_backbones() -> ImageMetrics:
    return ImageMetrics("vgg", lpips_nets=("alex", "vgg"), random_backbone=True)


def test_both_backbones_and_the_reference_vgg_input(random_backbones: ImageMetrics) -> None:
    pred, target = _pair(1)
    nets = random_backbones.nets
    plain = random_backbones(pred, target)
    assert set(plain) == {"psnr", "ssim", "lpips", "lpips_alex", "lpips_vgg"}
    assert torch.equal(plain["lpips"], plain["lpips_vgg"])  # one backbone, one score, two keys
    assert torch.allclose(plain["lpips_vgg"], nets["vgg"](pred, target, normalize=True).reshape(-1))
    random_backbones.reference_vgg_input = True
    try:
        reference = random_backbones(pred, target)
    finally:
        random_backbones.reference_vgg_input = False
    # VGG sees the [0, 1] images unscaled (the reference's normalize=False); AlexNet is unchanged.
    assert torch.allclose(reference["lpips_vgg"], nets["vgg"](pred, target, normalize=False).reshape(-1))
    assert not torch.allclose(reference["lpips_vgg"], plain["lpips_vgg"], atol=1e-4)
    assert torch.allclose(reference["lpips_alex"], plain["lpips_alex"])


def _evaluate(evaluator: SceneEvaluator, views: Path, names: list[str], finish: bool = True) -> None:
    evaluator.start("test", torch.device("cpu"), with_fix=False, views_dir=views)
    for i, name in enumerate(names):
        pred, target = _pair(10 + i)
        evaluator.update(pred[:1], target[:1], [name], fixed=pred[:1].flip(-1))
    if finish:
        evaluator.summary()


def test_saved_test_views_are_replaced_whole(tmp_path: Path) -> None:
    settings = EvalSettings(pretrained_metrics=False, compute_fid=False, cc_psnr=True, save_views=True)
    evaluator = SceneEvaluator(settings)
    views = tmp_path / "out" / "test_views"
    _evaluate(evaluator, views, ["a", "b"])
    assert sorted(p.relative_to(views).as_posix() for p in views.rglob("*.png")) == [
        "render/a.png", "render/b.png", "render_fixed/a.png", "render_fixed/b.png", "target/a.png", "target/b.png"]
    pred, target = _pair(10)
    assert torch.allclose(load_image(views / "target" / "a.png"), target[0], atol=0.5 / 255 + 1e-6)
    assert "cc_psnr" in evaluator.records[0]
    # A test killed before its end leaves the previous complete set in place ...
    _evaluate(evaluator, views, ["c"], finish=False)
    assert sorted(p.name for p in (views / "render").iterdir()) == ["a.png", "b.png"]
    # ... and a finished one replaces it whole: no view of the earlier test is mixed in.
    _evaluate(evaluator, views, ["c"])
    assert sorted(p.relative_to(views).as_posix() for p in views.rglob("*.png")) == [
        "render/c.png", "render_fixed/c.png", "target/c.png"]
    assert [p.name for p in views.parent.iterdir()] == ["test_views"]  # no staging folder left behind
