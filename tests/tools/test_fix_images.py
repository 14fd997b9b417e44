"""scripts/fix_images.py on a tiny fixer: outputs at input size, references matched, inputs safe."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from lightning_modules.difix.fixers.ready import ReadyFixer
from datamodules.files.image_io import load_image, save_image
from helpers import REPO

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")
SCRIPT = REPO / "scripts" / "fix_images.py"


def _script():
    spec = importlib.util.spec_from_file_location("fix_images", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fix_images_writes_fixed_pngs_beside_and_never_over_inputs(tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(0)
    renders, refs = tmp_path / "renders", tmp_path / "refs"
    for name in ("a", "b"):
        save_image(torch.rand(3, 24, 40, generator=gen), renders / f"{name}.png")
        save_image(torch.rand(3, 24, 40, generator=gen), refs / f"{name}.jpg")
    before = {p: p.read_bytes() for p in renders.iterdir()}
    fix_images = _script()
    written = fix_images.main(["--fixer", "tiny", "--images", str(renders), "--refs", str(refs),
                               "--out", str(tmp_path / "fixed")])
    assert [p.name for p in written] == ["a.png", "b.png"]
    assert {p: p.read_bytes() for p in renders.iterdir()} == before
    assert not list((tmp_path / "fixed").glob(".*"))  # no temporary files left
    expected = ReadyFixer("tiny")(load_image(renders / "a.png")[None], load_image(refs / "a.jpg")[None, None])[0]
    got = load_image(written[0])
    assert got.shape == (3, 24, 40)
    assert (got - expected).abs().max() <= 1 / 255 + 1e-6  # 8-bit rounding only

    with pytest.raises(ValueError, match="overwrite an input"):
        fix_images.main(["--fixer", "tiny", "--images", str(renders), "--out", str(renders)])
    (tmp_path / "empty_refs").mkdir()
    with pytest.raises(FileNotFoundError, match="no reference named a"):
        fix_images.main(["--fixer", "tiny", "--images", str(renders), "--refs", str(tmp_path / "empty_refs"),
                         "--out", str(tmp_path / "x")])
    # One reference for all images, and the reference code's fixed resolution: still input size.
    one = fix_images.main(["--fixer", "tiny", "--images", str(renders / "b.png"), "--refs", str(refs / "a.jpg"),
                           "--out", str(tmp_path / "resized"), "--size", "64", "128"])
    assert load_image(one[0]).shape == (3, 24, 40)
    beside = fix_images.main(["--fixer", "tiny", "--images", str(renders / "a.png")])  # no --out
    assert beside == [renders / "fixed" / "a.png"]


def test_fix_images_into_a_full_disk_fails_naming_the_out_folder(tmp_path: Path) -> None:
    from helpers.small_disk import nearly_full

    save_image(torch.rand(3, 24, 40, generator=torch.Generator().manual_seed(0)), tmp_path / "in" / "a.png")
    with nearly_full(tmp_path / "fs", leave=0) as fs:
        with pytest.raises(OSError, match=rf"--out {fs / 'fixed'}: .*free"):
            _script().main(["--fixer", "tiny", "--images", str(tmp_path / "in"), "--out", str(fs / "fixed")])
        assert not (fs / "fixed").exists() or not list((fs / "fixed").iterdir())
