"""DifixNet: reference attention, trainable sets, sizes, builders and weight round trips."""
from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from lightning_modules.difix.net.net import DifixNet
from lightning_modules.difix.loading.hub_files import PretrainedNotFoundError
from helpers.tolerances import CROSS_PATH
from lightning_modules.difix.net.architectures import TINY_CONFIG, build_components, save_components
from lightning_modules.difix.loading.base_models import tiny_net
from lightning_modules.difix.loading.builders import net_from_checkpoint, net_from_pretrained


@pytest.fixture(scope="module")
def net() -> DifixNet:
    return tiny_net(seed=0).eval()


@pytest.fixture(scope="module")
def plain_net() -> DifixNet:
    """Same weights, diffusers' default attention processors (no view mixing)."""
    return tiny_net(seed=0, reference_attention=False).eval()


def _images(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def test_k0_equals_plain_model_with_default_processors(net: DifixNet, plain_net: DifixNet) -> None:
    from diffusers.models.attention_processor import AttnProcessor2_0

    assert all(type(p) is AttnProcessor2_0 for p in plain_net.unet.attn_processors.values())
    x = _images(2, 3, 32, 32)
    with torch.no_grad():
        out = net(x)
        torch.testing.assert_close(out, plain_net(x), **CROSS_PATH)
        torch.testing.assert_close(out, net(x, torch.empty(2, 0, 3, 32, 32)), **CROSS_PATH)
        torch.testing.assert_close(out, net(x[:, None]), **CROSS_PATH)  # (B, V, 3, H, W) input, V = 1
    clamped = net.forward_views(x[:, None], all_views=False)[:, 0]  # the pipeline's clamp; forward is raw
    assert out.shape == clamped.shape == (2, 3, 32, 32) and 0 <= clamped.min() and clamped.max() <= 1
    torch.testing.assert_close(clamped, out.clamp(0, 1))


def test_reference_view_changes_fixed_view(net: DifixNet, plain_net: DifixNet) -> None:
    x = _images(2, 3, 32, 32)
    r1, r2 = _images(2, 1, 3, 32, 32, seed=2), _images(2, 1, 3, 32, 32, seed=3)
    with torch.no_grad():
        a, b = net(x, r1), net(x, r2)
        # Control: without joint attention a reference cannot reach the render's output.
        assert torch.equal(plain_net(x, r1), plain_net(x, r2))
    assert (a - b).abs().max() > 1e-4
    # Views mix within a sample only: changing sample 1's reference leaves sample 0 alone.
    r3 = r1.clone()
    r3[1] = r2[1]
    with torch.no_grad():
        c = net(x, r3)
    torch.testing.assert_close(c[0], a[0], rtol=0, atol=1e-5)
    assert (c[1] - a[1]).abs().max() > 1e-4


def test_all_views_output_decodes_every_slot(net: DifixNet) -> None:
    views = _images(1, 3, 3, 32, 32)
    with torch.no_grad():
        out = net.forward_views(views)
        first = net.forward_views(views, all_views=False)
    assert out.shape == (1, 3, 3, 32, 32) and first.shape == (1, 1, 3, 32, 32)
    torch.testing.assert_close(out[:, :1], first, rtol=0, atol=1e-5)


def test_trainable_and_frozen_sets() -> None:
    net = tiny_net(seed=0)
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    frozen = {n for n, p in net.named_parameters() if not p.requires_grad}
    assert not any(n.startswith("vae.encoder.") or n.startswith("vae.quant_conv") for n in trainable)
    assert not any("lora_" in n for n in net.vae.encoder.state_dict())  # no LoRA in the encoder
    decoder_lora = {n for n in trainable if n.startswith("vae.decoder.")}
    assert decoder_lora and all("lora_" in n for n in decoder_lora)
    assert {n for n in frozen if n.startswith("vae.decoder.")}  # base decoder weights stay frozen
    assert all(n in trainable for n in (f"skips.convs.{i}.weight" for i in range(4)))
    assert all(p.requires_grad for p in net.unet.parameters())  # full UNet fine-tune
    assert not any(type(m).__name__ == "CLIPTextModel" for m in net.modules())  # text encoder dropped
    assert all(c.weight.eq(1e-5).all() and c.bias is None for c in net.skips.convs)

    lora = tiny_net(seed=0, unet_lora_rank=4)
    unet_trainable = [n for n, p in lora.unet.named_parameters() if p.requires_grad]
    assert unet_trainable and all("lora_" in n for n in unet_trainable)
    assert any(not p.requires_grad for p in lora.unet.parameters())


def test_build_is_seeded_and_leaves_global_rng_alone() -> None:
    rng = torch.random.get_rng_state()
    a = tiny_net(seed=0, unet_lora_rank=2)
    assert torch.equal(torch.random.get_rng_state(), rng)
    b = tiny_net(seed=0, unet_lora_rank=2)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)  # LoRA A included


def test_gradient_checkpointing_keeps_skips_and_gradients() -> None:
    """Checkpointed blocks re-run their skip hooks on recompute: same outputs, same gradients."""
    views = _images(1, 2, 3, 32, 32)
    grads = []
    for checkpointing in (False, True):
        net = tiny_net(seed=0, gradient_checkpointing=checkpointing)
        with torch.no_grad():  # open the skips so their contribution is visible
            for conv in net.skips.convs:
                conv.weight.fill_(0.05)
        out = net.forward_views(views)
        out.square().mean().backward()
        grads.append((out.detach(), {n: p.grad for n, p in net.named_parameters() if p.requires_grad}))
    torch.testing.assert_close(grads[1][0], grads[0][0])
    assert grads[0][1].keys() == grads[1][1].keys()
    for name, grad in grads[0][1].items():
        torch.testing.assert_close(grads[1][1][name], grad, rtol=1e-4, atol=1e-6, msg=name)
    assert grads[0][1]["skips.convs.3.weight"].abs().sum() > 0


@pytest.mark.parametrize("size_mode", ["pad", "resize"])
def test_odd_sizes_run_through_the_size_policy_and_return_input_size(size_mode: str) -> None:
    from lightning_modules.difix.fixers.ready import ReadyFixer

    net = tiny_net(seed=0, size_mode=size_mode).eval()
    policy = net.size_policy()
    assert policy.mode == size_mode and policy.model_size(37, 50) in ((48, 64), (32, 48))
    x, refs = _images(1, 3, 37, 50), _images(1, 1, 3, 20, 30)  # refs go to the render's model size
    out = ReadyFixer.around(net, "tiny")(x, refs)
    assert out.shape == (1, 3, 37, 50)
    with pytest.raises(ValueError, match="not a multiple of 8"):
        net(x)  # the net itself runs only at sizes its policy gives


def test_residual_output_changes_the_image_only_by_the_denoising_step(tmp_path: Path) -> None:
    """output="residual": input + decode(x0) - decode(z); a step that leaves the latent alone is identity."""
    import types

    net = tiny_net(seed=0, output="residual").eval()
    x, refs = _images(2, 3, 32, 48), _images(2, 1, 3, 32, 48, seed=5)
    with torch.no_grad():
        moved = net(x, refs)
        all_views = net.forward_views(net.stack_views(x, refs), clamp=False)
    assert moved.shape == x.shape and (moved - x).abs().max() > 1e-2  # the random UNet moves the latent
    torch.testing.assert_close(all_views[:, 0], moved, **CROSS_PATH)  # same render slot either way
    # A scheduler step that returns its input latent as x0: the residual fixer is then exact
    # identity, while the paper's decode output is the (untrained) reconstruction.
    net.scheduler.step = lambda eps, t, latents, generator=None: types.SimpleNamespace(pred_original_sample=latents)
    with torch.no_grad():
        torch.testing.assert_close(net(x, refs), x, atol=1e-6, rtol=0)
        net.output = "decode"
        assert (net(x, refs) - x).abs().mean() > 0.05
    # The option is part of the build config: an export rebuilds a residual net.
    net.output = "residual"
    assert net_from_checkpoint(net.export_weights(tmp_path / "w.pt")).output == "residual"
    with pytest.raises(ValueError, match="output"):
        tiny_net(seed=0, output="blend")


def test_export_and_from_checkpoint_reproduce_outputs(tmp_path: Path) -> None:
    net = tiny_net(seed=0)
    with torch.no_grad():  # stand-in for training: move every trained tensor
        for p in net.trainable_parameters():
            p.add_(torch.randn_like(p) * 0.01)
    net.eval()
    x, refs = _images(1, 3, 32, 32), _images(1, 1, 3, 32, 32, seed=5)
    with torch.no_grad():
        expected = net(x, refs)
    for name in ("weights.safetensors", "weights.pt"):
        path = net.export_weights(tmp_path / name)
        loaded = net_from_checkpoint(path).eval()
        with torch.no_grad():
            torch.testing.assert_close(loaded(x, refs), expected, **CROSS_PATH)
    keys = set(net.trainable_state_dict())
    assert not any(k.startswith("vae.encoder") or "base_layer" in k for k in keys)
    assert "prompt_embeds" in keys


def test_from_checkpoint_names_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    torch.save({"x": torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match="bad.pt"):
        net_from_checkpoint(bad)


def test_from_pretrained_local_sd_folder(tmp_path: Path) -> None:
    folder = save_components(build_components(TINY_CONFIG, seed=0), tmp_path / "tiny-sd")
    assert {p.name for p in folder.iterdir()} == {"unet", "vae", "scheduler", "text_encoder", "tokenizer"}
    net = net_from_pretrained(str(folder)).eval()
    assert net.build_config["base"] == {"kind": "pretrained", "name_or_path": str(folder), "revision": None}
    assert not any(type(m).__name__ == "CLIPTextModel" for m in net.modules())
    x = _images(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(net(x), tiny_net(seed=0).eval()(x), **CROSS_PATH)
    # Exported weights of a folder-based net rebuild from the folder (no text encoder needed).
    path = net.export_weights(tmp_path / "w.safetensors")
    with torch.no_grad():
        torch.testing.assert_close(net_from_checkpoint(path).eval()(x), net(x), **CROSS_PATH)


def test_offline_pretrained_error_says_what_to_download(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(PretrainedNotFoundError) as info:
            net_from_pretrained("stabilityai/sd-turbo", cache_dir=str(tmp_path / "empty-cache"))
    message = str(info.value)
    assert "hf download stabilityai/sd-turbo --local-dir" in message
    assert "huggingface-cli download stabilityai/sd-turbo" in message
    assert "HF_HOME" in message
    (tmp_path / "partial" / "unet").mkdir(parents=True)
    with pytest.raises(PretrainedNotFoundError, match="missing subfolders.*vae"):
        net_from_pretrained(str(tmp_path / "partial"))


def test_processors_are_per_instance(net: DifixNet) -> None:
    from diffusers import UNet2DConditionModel
    from diffusers.models.attention_processor import AttnProcessor2_0

    from lightning_modules.difix.net.attention import MultiViewAttnProcessor

    kinds = {name: type(p) for name, p in net.unet.attn_processors.items()}
    assert all(k is MultiViewAttnProcessor for n, k in kinds.items() if n.endswith("attn1.processor"))
    fresh = UNet2DConditionModel(**TINY_CONFIG["unet"])
    assert all(type(p) is AttnProcessor2_0 for p in fresh.attn_processors.values())


def test_single_step_gives_x0(net: DifixNet) -> None:
    """The scheduler step at t=199 returns the epsilon-parameterised x0, no noise added."""
    assert net.scheduler.timesteps.tolist() == [199]
    z, eps = torch.randn(1, 4, 4, 4), torch.randn(1, 4, 4, 4)
    alpha = net.scheduler.alphas_cumprod[199]
    x0 = net.scheduler.step(eps, 199, z).pred_original_sample
    torch.testing.assert_close(x0, (z - (1 - alpha).sqrt() * eps) / alpha.sqrt())
