"""NVIDIA's published Difix folders as they really are (see difix_artefacts.py for each fact's
source): reference attention follows the folder, the reference pipeline's pre/post-processing,
the load line, dtypes, and reference pkls with converters' extras."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.difix_artefacts import DIFIX_REF_UNET, LEGACY_GUESS_UNET, trained_tiny, write_published_folder, write_reference_pkl

from lightning_modules.difix.fixers.ready import ReadyFixer
from lightning_modules.difix.fixers.spec import FixerSpec
from lightning_modules.difix.net.lanczos import lanczos_resize
from lightning_modules.difix.net.net import DifixNet
from lightning_modules.difix.loading.published import WeightKeyError
from lightning_modules.difix.loading.base_models import tiny_net
from lightning_modules.difix.loading.builders import net_from_pretrained
from lightning_modules.difix.loading.published import net_from_reference_checkpoint
from helpers import REPO

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")
TOL = {"atol": 1e-5, "rtol": 0}


def _pair(seed: int = 0, size: tuple[int, int] = (32, 32)) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, *size, generator=gen), torch.rand(1, 1, 3, *size, generator=gen)


def _run(net: torch.nn.Module | ReadyFixer, x: torch.Tensor, refs: torch.Tensor | None) -> torch.Tensor:
    if isinstance(net, ReadyFixer):
        return net(x, refs)
    with torch.no_grad():
        return net.eval()(x, refs)


def _same_weights(weights: DifixNet, reference_attention: bool) -> DifixNet:
    """A net built from the constructor with `weights`' tensors, reference attention as asked."""
    net = tiny_net(seed=0, reference_attention=reference_attention)
    net.load_state_dict(weights.state_dict())
    return net.eval()


def test_difix_ref_layout_loads_with_reference_attention_on_and_runs_no_remote_code(difix_ref: Path,
                                                                                   weights: DifixNet) -> None:
    index = json.loads((difix_ref / "model_index.json").read_text())
    assert index["unet"] == DIFIX_REF_UNET and index["vae"] == ["autoencoder_kl", "AutoencoderKL"]
    assert (difix_ref / "unet" / "unet_2d_condition.py").is_file()  # raises if imported
    net = net_from_pretrained(str(difix_ref))
    assert net.reference_attention
    x, refs = _pair()
    on, off = _same_weights(weights, True), _same_weights(weights, False)
    torch.testing.assert_close(_run(net, x, refs), _run(on, x, refs), **TOL)
    assert (_run(net, x, refs) - _run(off, x, refs)).abs().max() > 1e-3
    assert "reference attention: on" in net.describe()
    assert "unet_2d_condition" in net.describe() and "non-commercial" in net.describe()


def test_any_custom_unet_entry_or_module_file_means_multi_view(difix_ref: Path, weights: DifixNet,
                                                               tmp_path: Path) -> None:
    legacy = write_published_folder(weights, tmp_path / "legacy", multiview=True, unet_entry=LEGACY_GUESS_UNET)
    assert net_from_pretrained(str(legacy)).reference_attention
    # A stock entry beside a module file in unet/ (a hand-edited index): the file decides.
    edited = Path(shutil.copytree(difix_ref, tmp_path / "edited"))
    index = json.loads((edited / "model_index.json").read_text())
    (edited / "model_index.json").write_text(json.dumps({**index, "unet": ["diffusers", "UNet2DConditionModel"]}))
    net = net_from_pretrained(str(edited))
    assert net.reference_attention and "unet_2d_condition.py" in net.describe()
    plain = write_published_folder(weights, tmp_path / "difix", multiview=False)
    net = net_from_pretrained(str(plain))
    assert not net.reference_attention and "reference attention: off" in net.describe()
    # An explicit setting still wins, and the line says so.
    forced = net_from_pretrained(str(plain), reference_attention=True)
    assert forced.reference_attention and "set explicitly" in forced.describe()


def test_published_models_use_the_reference_pipelines_resizing_by_default(difix_ref: Path) -> None:
    net = net_from_pretrained(str(difix_ref)).eval()
    assert net.size_mode == "reference" and net.size_policy().mode == "reference"
    fixer = ReadyFixer.around(net, "difix_ref")
    x, refs = _pair(1, size=(37, 50))  # not a multiple of 8
    seen = []
    hook = net.vae.encoder.register_forward_pre_hook(lambda m, a: seen.append(tuple(a[0].shape[-2:])))
    out = _run(fixer, x, refs)
    hook.remove()
    assert seen == [(32, 48)] and out.shape == x.shape  # rounded down to 8, back to the input size
    # The same as resizing by hand with Pillow-weight Lanczos around the net at that size.
    small = _run(net, lanczos_resize(x, (32, 48)).clamp(0, 1), lanczos_resize(refs, (32, 48)).clamp(0, 1))
    expected = ((lanczos_resize(small.clamp(0, 1) * 2 - 1, (37, 50)).clamp(-1, 1) + 1) / 2)
    torch.testing.assert_close(out, expected, **TOL)
    assert net_from_pretrained(str(difix_ref), size_mode="pad").size_policy().mode == "pad"


def test_clip_sample_is_forced_off_as_difix_pipeline_does(weights: DifixNet, difix_ref: Path, tmp_path: Path) -> None:
    clipped = write_published_folder(weights, tmp_path / "clip", multiview=True, scheduler_extra={"clip_sample": True})
    net = net_from_pretrained(str(clipped))
    assert net.scheduler.config.clip_sample is False
    x, refs = _pair(2)
    torch.testing.assert_close(_run(net, x, refs), _run(net_from_pretrained(str(difix_ref)), x, refs), **TOL)


def test_a_ready_fixer_logs_one_line_of_what_it_built(difix_ref: Path, caplog: pytest.LogCaptureFixture) -> None:
    fixer = ReadyFixer(FixerSpec(name=str(difix_ref), dtype="float32"))
    x, refs = _pair(3)
    with caplog.at_level(logging.INFO, logger="difix3d.fixer"):
        _run(fixer, x, refs)
        _run(fixer, x, refs)
    lines = [r.getMessage() for r in caplog.records if r.name == "difix3d.fixer"]
    assert len(lines) == 1, lines  # once, at the first call
    for part in ("published Difix", "reference attention: on", "decoder LoRA rank 4", "latent: mode",
                 "dtype: float32", "pre-processing: reference", "non-commercial"):
        assert part in lines[0], (part, lines[0])


def test_dtype_casts_weights_and_keeps_an_fp16_vae_in_float32(difix_ref: Path) -> None:
    x, refs = _pair(4)
    fp32 = _run(ReadyFixer(FixerSpec(name=str(difix_ref), dtype="float32")), x, refs)
    bf16 = ReadyFixer(FixerSpec(name=str(difix_ref), dtype="bfloat16"))
    out = _run(bf16, x, refs)
    assert next(bf16.net.unet.parameters()).dtype == torch.bfloat16 and out.dtype == torch.float32
    assert (out - fp32).abs().mean() < 0.02  # bf16 rounding, not another result
    net = net_from_pretrained(str(difix_ref))
    net.vae.register_to_config(force_upcast=True)
    net.to_dtype(torch.float16)
    assert next(net.unet.parameters()).dtype == torch.float16
    assert next(net.vae.parameters()).dtype == torch.float32 and net.skips.convs[0].weight.dtype == torch.float32
    assert net.prompt_embeds.dtype == torch.float32


def test_lanczos_matches_pillows_float_resize() -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for (h, w), (oh, ow) in [((37, 53), (32, 48)), ((100, 100), (576, 1024)), ((400, 400), (37, 91))]:
        a = rng.random((h, w)).astype(np.float32)
        pil = np.asarray(Image.fromarray(a, mode="F").resize((ow, oh), Image.LANCZOS))
        ours = lanczos_resize(torch.from_numpy(a)[None], (oh, ow))[0].numpy()
        np.testing.assert_allclose(ours, pil, atol=1e-5, rtol=0)
    same = torch.rand(1, 3, 8, 8)
    assert lanczos_resize(same, (8, 8)) is same


def test_reference_pkl_extras_are_used_or_named(weights: DifixNet, tmp_path: Path) -> None:
    pkl = write_reference_pkl(weights, tmp_path / "model_1.pkl", tmp_path / "base")
    base = str(tmp_path / "base")
    assert net_from_reference_checkpoint(pkl, base=base).reference_attention  # mv_unet on by default
    ckpt = torch.load(pkl, weights_only=True)
    torch.save({**ckpt, "mv_unet": False}, tmp_path / "flag.pkl")
    net = net_from_reference_checkpoint(tmp_path / "flag.pkl", base=base)
    assert not net.reference_attention and "mv_unet flag is False" in net.describe()
    torch.save({**ckpt, "ema": {}}, tmp_path / "odd.pkl")
    with pytest.raises(WeightKeyError, match=r"odd\.pkl.*'ema'"):
        net_from_reference_checkpoint(tmp_path / "odd.pkl", base=base)
    for field, value in (("rank_vae", "four"), ("state_dict_unet", [1, 2]), ("mv_unet", "yes")):
        torch.save({**ckpt, field: value}, tmp_path / f"{field}.pkl")
        with pytest.raises(ValueError, match=rf"{field}\.pkl: field '{field}'"):
            net_from_reference_checkpoint(tmp_path / f"{field}.pkl", base=base)


def test_fix_images_prints_the_load_line(difix_ref: Path, tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    import subprocess
    import sys

    from datamodules.files.image_io import save_image

    save_image(torch.rand(3, 37, 45), tmp_path / "in" / "a.png")
    save_image(torch.rand(3, 37, 45), tmp_path / "ref.png")
    repo = REPO
    run = subprocess.run([sys.executable, str(repo / "scripts" / "fix_images.py"), "--fixer", str(difix_ref),
                          "--images", str(tmp_path / "in"), "--refs", str(tmp_path / "ref.png"),
                          "--out", str(tmp_path / "out"), "--device", "cpu"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    line = next(ln for ln in run.stderr.splitlines() if ln.startswith(f"fixer {difix_ref}:"))
    assert "reference attention: on" in line and "non-commercial" in line, line
    assert (tmp_path / "out" / "a.png").is_file()
