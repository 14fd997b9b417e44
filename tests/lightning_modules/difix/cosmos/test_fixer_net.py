"""FixerNet: the fixer contract, Fixer's one-step schedule, its trainable set, loading NVIDIA's layout."""
from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

from helpers.fixer_files import tiny_config, write_fixer_folder
from helpers.tolerances import CROSS_PATH
from lightning_modules.difix.cosmos.files import find_fixer_files
from lightning_modules.difix.cosmos.load import load_fixer_net, save_fixer_folder
from lightning_modules.difix.cosmos.net import FixerNet
from lightning_modules.difix.cosmos.schedule import rectified_flow_coefficients
from lightning_modules.safe_load import UnsafeFileError


def test_contract_sizes_range_references_and_describe() -> None:
    net = FixerNet(tiny_config()).eval()
    assert net.default_size == (576, 1024) and net.size_multiple == 16 and net.uses_references is False
    images = torch.rand(2, 3, 32, 48)
    with torch.no_grad():
        out = net(images)
        with_refs = net(images, torch.rand(2, 1, 3, 32, 48))
    assert out.shape == images.shape and out.dtype == torch.float32  # raw: the ready fixer checks, then clamps
    torch.testing.assert_close(out, with_refs)
    from lightning_modules.difix.fixers.ready import ReadyFixer

    fixed = ReadyFixer.around(net, "tiny Fixer", size=(32, 48))(images)
    assert 0 <= fixed.min() and fixed.max() <= 1
    torch.testing.assert_close(fixed, out.clamp(0, 1))
    assert net.size_policy().size == (576, 1024) and net.size_policy().filter == "bilinear"
    with pytest.raises(ValueError, match="multiples of 16"):
        net(torch.rand(1, 3, 40, 48))
    line = net.describe()
    assert "references are ignored" in line and "NVIDIA Open Model License" in line and "\n" not in line


def test_to_dtype_bfloat16_runs_close_to_float32() -> None:
    net = FixerNet(tiny_config()).eval()
    images = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        ref = net(images)
        half = net.to_dtype("bfloat16")(images)
    assert net.dtype == torch.bfloat16 and half.dtype == torch.float32
    assert (half - ref).abs().max() < 0.1


def test_schedule_at_timestep_250_in_the_latents_dtype() -> None:
    c_skip, c_out, c_in, c_noise = rectified_flow_coefficients(250, 2, torch.float32, torch.device("cpu"))
    assert c_skip.shape == (2, 1, 1, 1, 1)
    for value, want in ((c_skip, 0.8), (c_out, -0.2), (c_in, 0.8), (c_noise, 0.2)):
        torch.testing.assert_close(value, torch.full_like(value, want))
    # In bfloat16 NVIDIA's forward divides a bfloat16 timestep: t rounds to 0.2001953125.
    _, c_out_bf16, c_in_bf16, _ = rectified_flow_coefficients(250, 1, torch.bfloat16, torch.device("cpu"))
    assert c_out_bf16.item() == -0.2001953125 and c_in_bf16.item() == 0.80078125


def test_set_trainable_freezes_only_tokenizer_time_conv() -> None:
    net = FixerNet(tiny_config())
    net.tokenizer.encoder.time_conv = nn.Conv3d(4, 4, (3, 1, 1))  # as in Wan-style tokenizers
    trainable = net.set_trainable()
    frozen = [n for n, p in net.named_parameters() if not p.requires_grad]
    assert frozen == ["tokenizer.encoder.time_conv.weight", "tokenizer.encoder.time_conv.bias"]
    assert len(trainable) == len(list(net.parameters())) - 2


def test_nvidia_folder_loads_with_the_pkls_weights(tmp_path: Path) -> None:
    root, expected = write_fixer_folder(tmp_path / "models")
    net = load_fixer_net(find_fixer_files(str(root))).eval()  # NVIDIA's pkl has no config: sizes from its weights
    assert net.config.dit == tiny_config().dit
    images = torch.rand(2, 3, 32, 48)
    with torch.no_grad():
        torch.testing.assert_close(net(images), expected(images), **CROSS_PATH)
    assert "TorchScript programs of tokenizer_fast.pth" in net.describe()


def test_base_start_reads_net_prefixed_base_dit(tmp_path: Path) -> None:
    root, fixture = write_fixer_folder(tmp_path / "models")
    base = load_fixer_net(find_fixer_files(str(root)), start="base", config=tiny_config())
    saved = torch.load(root / "base" / "model_fast_tokenizer.pt", weights_only=True)
    torch.testing.assert_close(base.dit.state_dict()["time_embed.norm.weight"], saved["net.t_embedding_norm.weight"])
    # the pkl's DiT wins over the base when both are there
    pretrained = load_fixer_net(find_fixer_files(str(root)), config=tiny_config())
    torch.testing.assert_close(pretrained.dit.state_dict()["time_embed.norm.weight"],
                               fixture.dit.state_dict()["time_embed.norm.weight"])


def test_saved_folder_reads_back_with_the_same_outputs(tmp_path: Path) -> None:
    net = FixerNet(tiny_config()).eval()
    pkl = save_fixer_folder(net, tmp_path / "out")
    assert pkl == tmp_path / "out/pretrained/pretrained_fixer.pkl"
    back = load_fixer_net(find_fixer_files(str(tmp_path / "out"))).eval()
    images = torch.rand(1, 3, 48, 32)
    with torch.no_grad():
        torch.testing.assert_close(back(images), net(images), **CROSS_PATH)


class _Payload:
    def __reduce__(self):  # a pickle that would run code
        return (print, ("ran",))


def test_a_pkl_that_asks_for_code_is_refused_with_a_way_out(tmp_path: Path) -> None:
    root, _ = write_fixer_folder(tmp_path / "models")
    pkl = root / "pretrained" / "pretrained_fixer.pkl"
    with open(pkl, "wb") as stream:
        pickle.dump({"state_dict_unet": {"dit.x": _Payload()}}, stream)
    with pytest.raises(UnsafeFileError, match="convert it once"):
        load_fixer_net(find_fixer_files(str(root)), config=tiny_config())


def test_broken_tokenizer_file_is_named(tmp_path: Path) -> None:
    root, _ = write_fixer_folder(tmp_path / "models")
    torch.save({"encoder": b"not a zip", "decoder": b"nor this", "mean_std": (torch.zeros(16), torch.ones(16))},
               root / "base" / "tokenizer_fast.pth")
    with pytest.raises(ValueError, match=r"tokenizer_fast\.pth.*encoder does not load as TorchScript"):
        load_fixer_net(find_fixer_files(str(root)), config=tiny_config())
