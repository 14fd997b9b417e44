"""The project's writer of NVIDIA's published Difix layout: what it writes loads back through the
same loader a user's download goes through, as the same fixer; what the layout cannot hold is
refused before anything is written."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from lightning_modules.difix.loading.base_models import tiny_net
from lightning_modules.difix.loading.builders import net_from_pretrained
from lightning_modules.difix.loading.export_published import save_published_folder
from lightning_modules.difix.net.architectures import TINY_CONFIG, build_components
from lightning_modules.difix.net.net import DifixNet
from helpers.difix_artefacts import trained_tiny

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")
TOL = {"atol": 1e-5, "rtol": 0}


def _encoder(seed: int = 0) -> tuple[torch.nn.Module, object]:
    """The text encoder and tokenizer tiny_net(seed) encoded its prompt with."""
    components = build_components(TINY_CONFIG, seed=seed)
    return components["text_encoder"], components["tokenizer"]


def _outputs(net: DifixNet) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    x, refs = torch.rand(1, 3, 32, 32, generator=gen), torch.rand(1, 1, 3, 32, 32, generator=gen)
    with torch.no_grad():
        return net.eval()(x, refs), net(x)


def test_an_exported_folder_loads_back_as_the_same_fixer(tmp_path: Path) -> None:
    net = trained_tiny(seed=0)
    folder = save_published_folder(net, tmp_path / "difix_ref", *_encoder())
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "DifixPipeline" and index["unet"] == ["unet_2d_condition", "UNet2DConditionModel"]
    assert not list(folder.rglob("*.py"))  # the loader needs no module file
    with safe_open(str(folder / "vae" / "diffusion_pytorch_model.safetensors"), framework="pt") as f:
        keys = set(f.keys())
    assert "decoder.skip_conv_1.lora_A.vae_skip.weight" in keys and not any(".default." in k for k in keys)
    loaded = net_from_pretrained(str(folder))
    assert loaded.reference_attention and loaded.build_config["vae_lora_rank"] == 4
    for got, want in zip(_outputs(loaded), _outputs(net)):
        torch.testing.assert_close(got, want, **TOL)
    assert not [p for p in tmp_path.iterdir() if p.name != "difix_ref"]  # no staging folder left


def test_a_unet_lora_is_merged_into_the_stock_unet_keys(tmp_path: Path) -> None:
    net = tiny_net(seed=0, unet_lora_rank=4).eval()
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, p in net.unet.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    folder = save_published_folder(net, tmp_path / "difix", *_encoder(), multiview=False)
    with safe_open(str(folder / "unet" / "diffusion_pytorch_model.safetensors"), framework="pt") as f:
        assert not [k for k in f.keys() if "lora" in k or "base_layer" in k]
    loaded = net_from_pretrained(str(folder), reference_attention=True)  # the stock entry alone would turn it off
    assert loaded.build_config["unet_lora_rank"] == 0
    for got, want in zip(_outputs(loaded), _outputs(net)):
        torch.testing.assert_close(got, want, **TOL)
    assert not net_from_pretrained(str(folder)).reference_attention  # nvidia/difix's stock UNet entry


def test_what_the_layout_cannot_hold_is_refused_and_the_old_folder_kept(tmp_path: Path) -> None:
    folder = save_published_folder(trained_tiny(seed=0), tmp_path / "difix_ref", *_encoder())
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    with pytest.raises(ValueError, match="vae_lora_rank=0"):
        save_published_folder(tiny_net(seed=0, vae_lora_rank=0), folder, *_encoder())
    with pytest.raises(ValueError, match="text encoder embeds the prompt"):
        save_published_folder(trained_tiny(seed=0), folder, *_encoder(seed=1))
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["difix_ref"]
