"""TorchScript fixers (nvidia/Fixer's export and any such file): named like every fixer, run at
their size and value range, references ignored, bad files and missing libraries named."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from helpers.torchscript_fixers import (TinyTorchScriptFixer, script_module, write_files_needing_operators,
                                        write_tiny_torchscript)
from lightning_modules.difix.fixers.errors import FixerError, FixerOutputError
from lightning_modules.difix.fixers.ready import ReadyFixer
from lightning_modules.difix.fixers.sources import build_difix_net
from lightning_modules.difix.fixers.spec import FixerSpec
from lightning_modules.difix.fixers.torchscript import TorchScriptNet, required_operator_libraries
from lightning_modules.difix.net.sizing import SizePolicy


def load_fixer(spec: str | FixerSpec) -> ReadyFixer:
    fixer = ReadyFixer(spec)
    fixer.check()
    return fixer


def check_fixer(spec: str | FixerSpec) -> None:
    ReadyFixer(spec).check()


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_torchscript(tmp_path_factory.mktemp("ts") / "tiny_fixer.pt")


def _images(n: int = 2, h: int = 20, w: int = 30) -> torch.Tensor:
    return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(0))


def test_runs_at_its_size_and_value_range_and_back(tiny_file: Path) -> None:
    fixer = load_fixer(FixerSpec(name=str(tiny_file), size=(32, 48)))
    assert isinstance(fixer.net, TorchScriptNet)
    x = _images()
    out = fixer(x)
    assert out.shape == x.shape and out.dtype == torch.float32 and 0 <= float(out.min()) <= float(out.max()) <= 1
    # The same by hand: bilinear to 32x48, [0, 1] -> [-1, 1], the module, back.
    net = TinyTorchScriptFixer(0).eval()
    with torch.no_grad():
        up = F.interpolate(x, size=(32, 48), mode="bilinear", antialias=True).clamp(0, 1)
        y = ((net(up * 2 - 1) + 1) / 2).clamp(0, 1)
        want = F.interpolate(y, size=(20, 30), mode="bilinear", antialias=True).clamp(0, 1)
    torch.testing.assert_close(out, want, atol=1e-5, rtol=0)
    assert float((out - x).abs().mean()) > 1e-3  # it changed the images

    # value_range [0, 1]: the module sees the renders as they are.
    plain = load_fixer(FixerSpec(name=str(tiny_file), size=(20, 30), value_range=(0.0, 1.0)))
    with torch.no_grad():
        torch.testing.assert_close(plain(x), net(x).clamp(0, 1), atol=1e-5, rtol=0)


def test_default_size_is_the_fixers_and_references_are_ignored_once(tiny_file: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    fixer = load_fixer(str(tiny_file))
    assert fixer.policy.size == (576, 1024) and fixer.net.value_range == (-1.0, 1.0)
    x = _images(1, 12, 16)
    refs = torch.rand(1, 2, 3, 12, 16)
    with caplog.at_level(logging.INFO, logger="difix3d.fixer"):
        a, b = fixer(x, refs), fixer(x, refs)
        c = fixer(x)
    torch.testing.assert_close(a, c)  # the references change nothing
    said = [r.getMessage() for r in caplog.records]
    assert sum("reference(s) per render are ignored" in m for m in said) == 1
    assert sum("TorchScript" in m and "runs at 576x1024 (bilinear" in m and "reference view: none" in m for m in said) == 1
    assert torch.equal(a, b)


def test_bilinear_equals_pillows() -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for (h, w), size in (((30, 45), (144, 256)), ((144, 256), (30, 45))):
        a = rng.random((h, w)).astype(np.float32)
        pil = np.asarray(Image.fromarray(a, mode="F").resize(size[::-1], Image.BILINEAR))
        policy = SizePolicy("fixed", size=size, filter="bilinear")
        ours = policy.to_model(torch.from_numpy(a)[None, None].expand(1, 3, h, w).clamp(0, 1))[0, 0].numpy()
        assert np.abs(pil.clip(0, 1) - ours).max() < 1e-4


def test_names_resolve_to_the_file(tiny_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from huggingface_hub import constants

    # A folder of `hf download nvidia/Fixer --local-dir DIR` (and DIR/models, as its README downloads).
    for sub in ("repo/pretrained", "parent/models/pretrained"):
        (tmp_path / sub).mkdir(parents=True)
        shutil.copy(tiny_file, tmp_path / sub / "pretrained_fixer_jit.pt")
    assert load_fixer(str(tmp_path / "repo")).net.path == tmp_path / "repo/pretrained/pretrained_fixer_jit.pt"
    assert load_fixer(str(tmp_path / "parent")).net.path == tmp_path / "parent/models/pretrained/pretrained_fixer_jit.pt"

    # A cached copy of the withdrawn export, nothing newer in the cache (huggingface_hub's layout:
    # models--org--name/refs/main -> snapshots/<commit>/...): nvidia/Fixer runs that copy.
    cache = tmp_path / "hf"
    snap = cache / "models--nvidia--Fixer" / "snapshots" / ("a" * 40) / "pretrained"
    snap.mkdir(parents=True)
    shutil.copy(tiny_file, snap / "pretrained_fixer_jit.pt")
    (cache / "models--nvidia--Fixer" / "refs").mkdir()
    (cache / "models--nvidia--Fixer" / "refs" / "main").write_text("a" * 40)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    fixer = load_fixer("nvidia/Fixer")
    assert fixer.net.path == snap / "pretrained_fixer_jit.pt" and "NVIDIA Open Model License" in fixer.describe()

    # Offline and nothing cached: nvidia/Fixer is the current release now, and says what to download.
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match=r"hf download nvidia/Fixer --local-dir DIR"):
        check_fixer("nvidia/Fixer")
    with pytest.raises(ValueError, match="TorchScript fixer: it runs as it is"):
        build_difix_net(str(tiny_file))
    with pytest.raises(ValueError, match="fixed size"):
        load_fixer(FixerSpec(name=str(tiny_file), size="pad")).net  # noqa: B018
    with pytest.raises(ValueError, match="value_range and operator_libraries are for TorchScript fixers"):
        load_fixer(FixerSpec(name="tiny", value_range=(0.0, 1.0), operator_libraries=["x"]))
    with pytest.raises(ValueError, match="latent are Difix options"):
        load_fixer(FixerSpec(name=str(tiny_file), latent="sample"))


def test_missing_operator_libraries_are_named(tmp_path: Path) -> None:
    shift, gemm = write_files_needing_operators(tmp_path)
    assert required_operator_libraries(shift) == {"difix3d_test": ["shift"]}
    assert required_operator_libraries(gemm) == {"tex_ts": ["te_gemm_ts"]}
    with pytest.raises(ValueError, match=r"needs_te.pt.*operator library 'transformer_engine', which is not installed"):
        check_fixer(str(gemm))
    with pytest.raises(ValueError, match=r"needs_shift.pt calls operators no loaded library registers: difix3d_test::shift"):
        check_fixer(str(shift))
    with pytest.raises(ValueError, match="operator library 'no_such_module'"):
        load_fixer(FixerSpec(name=str(shift), operator_libraries=["no_such_module"]))
    # Named, the library is imported first and the file runs.
    fixer = load_fixer(FixerSpec(name=str(shift), size=(8, 8), value_range=(0.0, 1.0),
                                 operator_libraries=["helpers.custom_ops"]))
    x = torch.full((1, 3, 8, 8), 0.5)
    torch.testing.assert_close(fixer(x), x + 0.01)


class Half(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, ::2]


class Nan(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * float("nan")


class AllInf(torch.nn.Module):  # issue recipe: clamped to [0, 1] it would be an all-white image
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 0 + float("inf")


class Bytes(torch.nn.Module):  # the right shape, but 0..255 integers
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ((x + 1) * 127.5).to(torch.uint8)


class Raises(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("broken export")


class TwoInputs(torch.nn.Module):
    def forward(self, x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        return x + ref


def test_a_bad_output_is_refused_before_any_clamp(tmp_path: Path) -> None:
    files = {name: script_module(module, tmp_path / f"{name}.pt") for name, module in (
        ("half", Half()), ("nan", Nan()), ("allinf", AllInf()), ("bytes", Bytes()))}
    x = torch.rand(2, 3, 8, 8)
    with pytest.raises(FixerOutputError, match=r"half.pt.*returned \(1, 3, 4, 8\) for an input of shape \(1, 3, 8, 8\)"):
        load_fixer(FixerSpec(name=str(files["half"]), size=(8, 8)))(x)
    with pytest.raises(FixerOutputError, match="nan.pt: non-finite output"):
        load_fixer(FixerSpec(name=str(files["nan"]), size=(8, 8)))(x)
    with pytest.raises(FixerOutputError, match="allinf.pt: non-finite output"):
        load_fixer(FixerSpec(name=str(files["allinf"]), size=(8, 8)))(x)
    with pytest.raises(FixerOutputError, match=r"bytes.pt: returned uint8 values; a fixer returns floating point"):
        load_fixer(FixerSpec(name=str(files["bytes"]), size=(8, 8)))(x)


def test_a_failing_fixer_is_named_and_tried_before_step_1(tmp_path: Path) -> None:
    raises = script_module(Raises(), tmp_path / "raises.pt")
    two = script_module(TwoInputs(), tmp_path / "two_inputs.pt")
    for path, said in ((raises, "broken export"), (two, "ref")):
        fixer = load_fixer(FixerSpec(name=str(path), size=(8, 8)))
        assert fixer.needs_trial  # TorchScript is code: one tiny call at on_fit_start / before the viewer serves
        with pytest.raises(FixerError, match=rf"fixer {path}: failed on 1 image\(s\) of 8x8.*{said}"):
            fixer.try_once()
    assert not ReadyFixer("tiny").needs_trial


@pytest.mark.gpu
def test_the_published_fixer_runs_on_cuda_when_cached() -> None:
    """nvidia/Fixer's own TorchScript export (Transformer Engine, bfloat16, 576 x 1024) when it is in
    the Hugging Face cache; a render comes back at its size, changed, finite."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from huggingface_hub import try_to_load_from_cache

    if not isinstance(try_to_load_from_cache("nvidia/Fixer", "pretrained/pretrained_fixer_jit.pt"), str):
        pytest.skip("nvidia/Fixer's pretrained/pretrained_fixer_jit.pt is not in the Hugging Face cache")
    pytest.importorskip("transformer_engine")
    fixer = load_fixer("nvidia/Fixer")
    x = _images(1, 270, 480).cuda()
    out = fixer(x)
    assert out.shape == x.shape and bool(torch.isfinite(out).all()) and float((out - x).abs().mean()) > 1e-3
