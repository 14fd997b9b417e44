"""One function resolves every fixer name (`resolve_source`), for every caller: DifixModule's
`pretrained` and the one ReadyFixer each caller holds (callback, post-render fix, viewer,
fix_images.py), each with its options."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers.difix_artefacts import trained_tiny, write_published_folder, write_reference_pkl

import lightning_modules.difix.fixers.sources as sources
from lightning_modules.difix.fixers.ready import ReadyFixer
from lightning_modules.difix.fixers.spec import FixerSpec, as_fixer_spec
from lightning_modules.difix.training.module import DifixModule
from lightning_modules.difix.training.net_spec import DifixNetSpec
from lightning_modules.difix.training.settings import FixerLoss
from lightning_modules.difix.net.net import DifixNet
from lightning_modules.difix.loading.base_models import tiny_net
from lightning_modules.difix.loading.builders import net_from_pretrained
from helpers import REPO

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")
TOL = {"atol": 1e-5, "rtol": 0}


@pytest.fixture(scope="module")
def spellings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, DifixNet]]:
    """name -> (fixer name, a net with the weights that name must load)."""
    root = tmp_path_factory.mktemp("spellings")
    weights = trained_tiny(seed=0)
    folder = write_published_folder(weights, root / "difix_ref", multiview=True)
    pkl = write_reference_pkl(weights, root / "model_10.pkl", root / "sd-turbo-tiny")
    export = net_from_pretrained(str(folder)).export_weights(root / "fixer.safetensors")
    return {"published folder": (str(folder), weights), "reference pkl": (str(pkl), weights),
            "exported weights": (str(export), weights), "tiny": ("tiny:0", tiny_net(seed=0))}


@pytest.fixture
def local_reference_base(spellings, monkeypatch: pytest.MonkeyPatch) -> None:
    """The pkl's base is stabilityai/sd-turbo on the hub; here the tiny base folder beside it."""
    base = str(Path(spellings["reference pkl"][0]).parent / "sd-turbo-tiny")
    monkeypatch.setattr(sources, "REFERENCE_BASE", base)


def _inputs() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(7)
    return torch.rand(1, 3, 32, 32, generator=gen), torch.rand(1, 1, 3, 32, 32, generator=gen)


@pytest.mark.parametrize("spelling", ["published folder", "reference pkl", "exported weights", "tiny"])
def test_every_spelling_loads_the_same_weights_for_difix_module_and_a_ready_fixer(
        spelling: str, spellings, local_reference_base) -> None:
    name, weights = spellings[spelling]
    x, refs = _inputs()
    with torch.no_grad():
        expected = weights.eval()(x, refs)
        module = DifixModule(net=DifixNetSpec(pretrained=name), pretrained_backbone=False,
                             loss=FixerLoss(w_lpips=0.0, w_gram=0.0))
        module.configure_model()
        torch.testing.assert_close(module.net.eval()(x, refs), expected, **TOL)
    torch.testing.assert_close(ReadyFixer(FixerSpec(name=name, dtype="float32"))(x, refs), expected.clamp(0, 1), **TOL)


def test_callers_hold_one_ready_fixer_and_a_name_is_resolved_once(spellings, monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    from callbacks.progressive_fix import ProgressiveFixCallback

    resolved: list[str] = []
    built: list[tuple[str, dict]] = []
    real_resolve = sources.resolve_source

    def resolve_spy(name: str):
        resolved.append(name)
        source = real_resolve(name)
        real_build = source.build
        object.__setattr__(source, "build", lambda **options: built.append((name, options)) or real_build(**options))
        return source

    import lightning_modules.difix.fixers.ready as ready

    monkeypatch.setattr(ready, "resolve_source", resolve_spy)
    spec = FixerSpec(name=spellings["published folder"][0], size="pad", latent="sample", dtype="bfloat16")
    callback = ProgressiveFixCallback(fixer=spec)
    assert isinstance(callback.fixer, ReadyFixer) and callback.fixer.spec is spec
    callback.fixer.check()
    callback.fixer.check()
    assert callback.fixer.net.latent == "sample" and callback.fixer.policy.mode == "pad"
    assert resolved == [spec.name] and built == [(spec.name, {"latent": "sample"})]  # check and load share it
    import importlib.util

    script = REPO / "scripts" / "fix_images.py"
    module_spec = importlib.util.spec_from_file_location("fix_images", script)
    fix_images = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(fix_images)
    from datamodules.files.image_io import save_image

    save_image(torch.rand(3, 16, 16), tmp_path / "a.png")
    fix_images.main(["--fixer", spec.name, "--images", str(tmp_path / "a.png"), "--out", str(tmp_path / "out"),
                     "--size", "reference", "--reference-attention", "off", "--device", "cpu"])
    assert resolved == [spec.name] * 2 and built[-1] == (spec.name, {"reference_attention": False})


def test_one_function_classifies_every_name(spellings, tmp_path: Path) -> None:
    from helpers.torchscript_fixers import write_tiny_torchscript

    script = write_tiny_torchscript(tmp_path / "fixer.pt")
    write_tiny_torchscript(tmp_path / "Fixer" / "pretrained" / "pretrained_fixer_jit.pt")
    kinds = {name: sources.resolve_source(name).kind for name in (
        "identity", "tiny", "tiny:3", "nvidia/difix_ref", spellings["published folder"][0],
        spellings["reference pkl"][0], spellings["exported weights"][0], str(script), str(tmp_path / "Fixer"))}
    assert list(kinds.values()) == ["identity", "tiny", "tiny", "diffusers model", "diffusers model",
                                    "reference checkpoint", "DifixModule checkpoint", "TorchScript fixer",
                                    "TorchScript fixer"]
    for bad, err in (("tiny:x", ValueError), (str(tmp_path / "missing.pkl"), FileNotFoundError),
                     ("not a name", FileNotFoundError), (" ", ValueError)):
        with pytest.raises(err):
            sources.resolve_source(bad)
    with pytest.raises(ValueError, match="TorchScript fixer.*not a Difix network"):
        sources.build_difix_net(str(script))


def test_specs_are_checked_at_construction_and_identity_passes_through() -> None:
    assert as_fixer_spec("tiny") == FixerSpec(name="tiny")
    with pytest.raises(ValueError, match="size"):
        FixerSpec(name="tiny", size=(0, 64))
    with pytest.raises(ValueError, match="dtype"):
        FixerSpec(name="tiny", dtype="half")
    with pytest.raises(ValueError, match="non-empty"):
        FixerSpec(name=" ")
    fixer = ReadyFixer("identity")
    x = torch.rand(2, 3, 8, 8)
    assert fixer.check().kind == "identity" and torch.equal(fixer(x), x)  # the same tensor values, unchanged
    with pytest.raises(ValueError, match="value_range.*TorchScript"):
        ReadyFixer(FixerSpec(name="tiny", value_range=(0.0, 1.0))).check()
