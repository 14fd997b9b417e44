"""Published Difix folders and reference model_*.pkl files load into the same fixer (tiny, offline)."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from helpers.difix_artefacts import LEGACY_GUESS_UNET, trained_tiny, write_published_folder, write_reference_pkl, write_vae
from safetensors.torch import load_file, save_file

from lightning_modules.difix.fixers.ready import ReadyFixer
from lightning_modules.difix.fixers.spec import FixerSpec
from lightning_modules.difix.net.net import DifixNet
from lightning_modules.difix.loading.hub_files import PretrainedNotFoundError
from lightning_modules.difix.loading.published import WeightKeyError
from lightning_modules.difix.loading.builders import net_from_checkpoint, net_from_pretrained
from lightning_modules.difix.loading.published import net_from_reference_checkpoint
from helpers import REPO

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")
TOL = {"atol": 1e-5, "rtol": 0}


@pytest.fixture(scope="module")
def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return torch.rand(1, 3, 32, 32, generator=gen), torch.rand(1, 1, 3, 32, 32, generator=gen)


def _out(net: DifixNet | ReadyFixer, inputs: tuple[torch.Tensor, torch.Tensor], with_ref: bool = True) -> torch.Tensor:
    """A net's raw output, or a ready fixer's (clamped, as the pipeline clamps)."""
    refs = inputs[1] if with_ref else None
    if isinstance(net, ReadyFixer):
        return net(inputs[0], refs)
    with torch.no_grad():
        return net.eval()(inputs[0], refs)


def check_fixer(spec: str | FixerSpec) -> None:
    ReadyFixer(spec).check()


def _copy(difix_ref: Path, dst: Path) -> Path:
    import shutil

    return Path(shutil.copytree(difix_ref, dst))


def test_published_folder_matches_the_net_holding_the_same_weights(difix_ref: Path, weights: DifixNet, inputs) -> None:
    net = net_from_pretrained(str(difix_ref))
    assert net.reference_attention and net.build_config["vae_lora_rank"] == 4
    torch.testing.assert_close(_out(net, inputs), _out(weights, inputs), **TOL)
    torch.testing.assert_close(_out(net, inputs, with_ref=False), _out(weights, inputs, with_ref=False), **TOL)
    # The same trainable set as a freshly built net: fine-tuning from the published weights works.
    assert {n for n, p in net.named_parameters() if p.requires_grad} == {
        n for n, p in weights.named_parameters() if p.requires_grad}
    # Decoder LoRA merged into the decoder (vae_lora_rank=0): same output, no LoRA tensors.
    merged = net_from_pretrained(str(difix_ref), vae_lora_rank=0)
    assert not any("lora" in k for k in merged.state_dict())
    torch.testing.assert_close(_out(merged, inputs), _out(weights, inputs), **TOL)


def test_skip_lora_decoder_lora_and_reference_attention_each_change_the_output(
        difix_ref: Path, inputs, tmp_path: Path) -> None:
    base = _out(net_from_pretrained(str(difix_ref)), inputs)
    state = load_file(str(difix_ref / "vae" / "diffusion_pytorch_model.safetensors"))
    for key in ("decoder.skip_conv_1.lora_B.vae_skip.weight", "decoder.skip_conv_4.lora_A.vae_skip.weight",
                "decoder.up_blocks.0.resnets.0.conv1.lora_B.vae_skip.weight"):
        edited = _copy(difix_ref, tmp_path / key)
        write_vae(edited, {**state, key: state[key] + 0.5})
        assert (_out(net_from_pretrained(str(edited)), inputs) - base).abs().max() > 1e-3, key
    # nvidia/difix (the UNet entry is the stock class, no module file): no reference attention.
    plain = write_published_folder(trained_tiny(seed=0), tmp_path / "difix", multiview=False)
    net = net_from_pretrained(str(plain))
    assert not net.reference_attention
    assert (_out(net, inputs) - base).abs().max() > 1e-3


def test_skip_convs_feed_the_decoder_as_the_reference_vae_forward_does(difix_ref: Path) -> None:
    """Independent of VaeSkips: the reference decoder adds skip_conv_n(encoder_acts[::-1][n-1]) to
    the input of up block n-1, where encoder_acts[i] is the input of encoder down block i."""
    import torch.nn.functional as F

    net = net_from_pretrained(str(difix_ref)).eval()
    state = load_file(str(difix_ref / "vae" / "diffusion_pytorch_model.safetensors"))
    skip = {n: state[f"decoder.skip_conv_{n}.base_layer.weight"] + 2.0 * torch.einsum(
        "or,rikl->oikl", state[f"decoder.skip_conv_{n}.lora_B.vae_skip.weight"].flatten(1),
        state[f"decoder.skip_conv_{n}.lora_A.vae_skip.weight"]) for n in range(1, 5)}
    vae, x = net.vae, torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        enc, dec, acts = vae.encoder, vae.decoder, []
        h = enc.conv_in(x)
        for block in enc.down_blocks:
            acts.append(h)
            h = block(h)
        h = enc.conv_out(enc.conv_act(enc.conv_norm_out(enc.mid_block(h))))
        z = vae.quant_conv(h).chunk(2, dim=1)[0]
        s = dec.mid_block(dec.conv_in(vae.post_quant_conv(z)), None)
        for i, block in enumerate(dec.up_blocks):
            s = block(s + F.conv2d(acts[::-1][i], skip[i + 1]), None)
        expected = dec.conv_out(dec.conv_act(dec.conv_norm_out(s)))
        with net.skips.capture() as captured:
            latent = vae.encode(x).latent_dist.mode()
        with net.skips.inject(list(captured)):
            got = vae.decode(latent).sample
    torch.testing.assert_close(got, expected, **TOL)


def test_folder_without_model_index_is_recognised_by_its_vae_keys(difix_ref: Path, weights: DifixNet, inputs,
                                                                     tmp_path: Path) -> None:
    bare = _copy(difix_ref, tmp_path / "bare")
    (bare / "model_index.json").unlink()
    net = net_from_pretrained(str(bare), reference_attention=True)
    torch.testing.assert_close(_out(net, inputs), _out(weights, inputs), **TOL)


def test_merged_layout_loads_for_inference_and_for_fine_tuning_with_new_lora(difix_ref: Path, weights: DifixNet, inputs,
                                                                              tmp_path: Path) -> None:
    merged = net_from_pretrained(str(difix_ref), vae_lora_rank=0)
    flat = _copy(difix_ref, tmp_path / "merged")
    vae = {k[4:]: v for k, v in merged.state_dict().items() if k.startswith("vae.")}
    vae.update({f"decoder.skip_conv_{j + 1}.weight": c.weight.detach() for j, c in enumerate(merged.skips.convs)})
    write_vae(flat, vae)
    torch.testing.assert_close(_out(net_from_pretrained(str(flat)), inputs), _out(weights, inputs), **TOL)
    with_lora = net_from_pretrained(str(flat), vae_lora_rank=4)
    assert any("lora_A" in n for n, p in with_lora.named_parameters() if p.requires_grad)
    torch.testing.assert_close(_out(with_lora, inputs), _out(weights, inputs), **TOL)
    unet_lora = net_from_pretrained(str(difix_ref), unet_lora_rank=4)  # fine-tune a UNet LoRA on it
    assert all("lora_" in n for n, p in unet_lora.unet.named_parameters() if p.requires_grad)
    torch.testing.assert_close(_out(unet_lora, inputs), _out(weights, inputs), **TOL)


def test_unknown_and_missing_weights_raise_naming_the_key(difix_ref: Path, tmp_path: Path) -> None:
    state = load_file(str(difix_ref / "vae" / "diffusion_pytorch_model.safetensors"))
    extra = _copy(difix_ref, tmp_path / "extra")
    write_vae(extra, {**state, "decoder.skip_conv_5.weight": torch.zeros(4, 4, 1, 1)})
    with pytest.raises(WeightKeyError, match="skip_conv_5"):
        net_from_pretrained(str(extra))
    odd = _copy(difix_ref, tmp_path / "odd")
    write_vae(odd, {**state, "decoder.conv_norm_out.lora_A.vae_skip.weight": torch.zeros(4, 64),
                    "decoder.conv_norm_out.lora_B.vae_skip.weight": torch.zeros(64, 4)})
    with pytest.raises(WeightKeyError, match="decoder.conv_norm_out.lora_A.vae_skip.weight"):
        net_from_pretrained(str(odd))
    for gone in ("decoder.skip_conv_2.base_layer.weight", "decoder.up_blocks.1.resnets.0.conv2.lora_A.vae_skip.weight",
                 "decoder.conv_out.base_layer.bias", "encoder.conv_in.weight"):
        cut = _copy(difix_ref, tmp_path / gone)
        write_vae(cut, {k: v for k, v in state.items() if k != gone})
        with pytest.raises(WeightKeyError, match=gone.replace(".", r"\.")):
            net_from_pretrained(str(cut))
    unet = _copy(difix_ref, tmp_path / "unet")
    unet_state = load_file(str(unet / "unet" / "diffusion_pytorch_model.safetensors"))
    gone = "conv_in.weight"
    save_file({k: v for k, v in unet_state.items() if k != gone}, str(unet / "unet" / "diffusion_pytorch_model.safetensors"))
    with pytest.raises(WeightKeyError, match="'conv_in.weight'"):
        net_from_pretrained(str(unet))


def test_reference_pkl_loads_on_its_base(weights: DifixNet, inputs, tmp_path: Path) -> None:
    pkl = write_reference_pkl(weights, tmp_path / "model_1000.pkl", tmp_path / "sd-turbo-tiny")
    net = net_from_reference_checkpoint(pkl, base=str(tmp_path / "sd-turbo-tiny"))
    torch.testing.assert_close(_out(net, inputs), _out(weights, inputs), **TOL)
    merged = net_from_reference_checkpoint(pkl, base=str(tmp_path / "sd-turbo-tiny"), vae_lora_rank=0)
    torch.testing.assert_close(_out(merged, inputs), _out(weights, inputs), **TOL)
    unet_lora = net_from_reference_checkpoint(pkl, base=str(tmp_path / "sd-turbo-tiny"), unet_lora_rank=4)
    torch.testing.assert_close(_out(unet_lora, inputs), _out(weights, inputs), **TOL)
    # A fixer fine-tuned from the pkl rebuilds from it (build_config base "reference_checkpoint").
    export = net.export_weights(tmp_path / "from_pkl.safetensors")
    torch.testing.assert_close(_out(net_from_checkpoint(export), inputs), _out(net, inputs), **TOL)
    # bf16 UNet (reference trained in bf16) loads too, within bf16 rounding.
    bf16 = write_reference_pkl(weights, tmp_path / "model_bf16.pkl", tmp_path / "base2", unet_dtype=torch.bfloat16)
    assert (_out(net_from_reference_checkpoint(bf16, base=str(tmp_path / "base2")), inputs)
            - _out(weights, inputs)).abs().max() < 0.05
    # Unknown / missing entries are named.
    ckpt = torch.load(pkl, weights_only=True)
    ckpt["state_dict_unet"]["not_a_unet_key.weight"] = torch.zeros(1)
    torch.save(ckpt, tmp_path / "bad.pkl")
    with pytest.raises(WeightKeyError, match="not_a_unet_key"):
        net_from_reference_checkpoint(tmp_path / "bad.pkl", base=str(tmp_path / "sd-turbo-tiny"))
    ckpt = torch.load(pkl, weights_only=True)
    del ckpt["state_dict_vae"]["decoder.skip_conv_3.base_layer.weight"]
    torch.save(ckpt, tmp_path / "noskip.pkl")
    with pytest.raises(WeightKeyError, match="skip_conv_3"):
        net_from_reference_checkpoint(tmp_path / "noskip.pkl", base=str(tmp_path / "sd-turbo-tiny"))


def test_checkpoints_and_exports_of_a_published_net_rebuild_from_it(difix_ref: Path, inputs, tmp_path: Path) -> None:
    net = net_from_pretrained(str(difix_ref))
    with torch.no_grad():
        net.skips.convs[0].weight.add_(0.1)  # "fine-tuned"
    path = net.export_weights(tmp_path / "ft.safetensors")
    torch.testing.assert_close(_out(net_from_checkpoint(path), inputs), _out(net, inputs), **TOL)


def test_every_fixer_spec_loads_through_a_ready_fixer(difix_ref: Path, weights: DifixNet, inputs, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))  # hermetic: nothing cached
    pkl = write_reference_pkl(weights, tmp_path / "model_5.pkl", tmp_path / "base")
    export = net_from_pretrained(str(difix_ref)).export_weights(tmp_path / "w.pt")
    expected = _out(weights, inputs).clamp(0, 1)  # a ready fixer clamps, as the reference pipeline
    for spec in (str(difix_ref), str(export)):
        torch.testing.assert_close(_out(ReadyFixer(spec), inputs), expected, **TOL)
    with pytest.raises(ValueError, match="stabilityai/sd-turbo"):  # the pkl's base (hub SD-Turbo): offline here
        check_fixer(str(pkl))
    # A fixed size runs the net at that size and returns the input size.
    fixer = ReadyFixer(FixerSpec(name=str(difix_ref), size=(64, 96), latent="sample"))
    assert fixer.net.latent == "sample" and fixer.policy.size == (64, 96)
    assert _out(fixer, inputs).shape == (1, 3, 32, 32)


def test_check_fixer_is_cheap_and_says_what_to_do(difix_ref: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    for spec in ("tiny", "tiny:3", str(difix_ref)):
        check_fixer(spec)
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))  # an empty cache
    with pytest.raises(ValueError, match="hf download nvidia/difix_ref"):
        check_fixer("nvidia/difix_ref")
    with pytest.raises(FileNotFoundError, match="missing.pkl"):
        check_fixer(str(tmp_path / "missing.pkl"))
    with pytest.raises(ValueError, match="tiny:x"):
        check_fixer("tiny:x")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(PretrainedNotFoundError, match="hf download nvidia/difix_ref --local-dir"):
            net_from_pretrained("nvidia/difix_ref", cache_dir=str(tmp_path / "empty"))


def test_difix_module_fine_tunes_from_a_published_folder(difix_ref: Path, weights: DifixNet, inputs) -> None:
    from lightning_modules.difix.training.module import DifixModule
    from lightning_modules.difix.training.net_spec import DifixNetSpec
    from lightning_modules.difix.training.settings import FixerLoss

    module = DifixModule(net=DifixNetSpec(pretrained=str(difix_ref)), pretrained_backbone=False,
                         loss=FixerLoss(w_lpips=0.0, w_gram=0.5, gram_cross_batch=True, gram_crop_size=None))
    module.configure_model()
    assert module.gram.cross_batch
    torch.testing.assert_close(_out(module.net, inputs), _out(weights, inputs), **TOL)
    assert module.net.build_config["base"]["name_or_path"] == str(difix_ref)


def test_latent_sample_draws_from_the_global_rng(weights: DifixNet, inputs) -> None:
    weights.latent = "sample"
    try:
        torch.manual_seed(0)
        a = _out(weights, inputs)
        torch.manual_seed(0)
        b = _out(weights, inputs)
        c = _out(weights, inputs)
    finally:
        weights.latent = "mode"
    torch.testing.assert_close(a, b, **TOL)
    assert (a - c).abs().max() > 1e-4 and (a - _out(weights, inputs)).abs().max() > 1e-4


def test_a_fixed_size_runs_the_net_there_for_renders_and_references_and_returns_the_input_size() -> None:
    from lightning_modules.difix.net.sizing import SizePolicy

    seen = []

    class Spy(torch.nn.Module):
        value_range, uses_references = (0.0, 1.0), True

        def size_policy(self, size):
            return SizePolicy("fixed", size=size, filter="lanczos") if isinstance(size, tuple) else SizePolicy()

        def to_dtype(self, dtype):
            return self

        def describe(self):
            return "spy"

        def forward(self, images, refs=None):
            seen.append((tuple(images.shape), None if refs is None else tuple(refs.shape)))
            return images

    x = torch.nn.functional.interpolate(torch.rand(2, 3, 4, 5), size=(30, 50), mode="bilinear")  # smooth
    out = ReadyFixer.around(Spy(), "spy", size=(64, 96))(x, torch.rand(2, 1, 3, 40, 40))
    assert seen == [((2, 3, 64, 96), (2, 1, 3, 64, 96))]  # renders and references alike, once
    assert out.shape == x.shape and (out - x).abs().mean() < 0.02  # there and back
    torch.testing.assert_close(ReadyFixer.around(Spy(), "spy")(x), x)
