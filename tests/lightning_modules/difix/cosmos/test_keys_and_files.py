"""Fixer's weights and files in NVIDIA's naming and layout: the key map, errors that name keys,
and which names and folders are Fixers (fixtures: tests/helpers/fixer_files.py, from NVIDIA's facts)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helpers.fixer_files import minitrain_state, tiny_config, write_fixer_folder
from lightning_modules.difix.cosmos.files import complete_files, find_fixer_files, is_fixer_pickle
from lightning_modules.difix.cosmos.keys import dit_state, load_checked, nvidia_state_dicts
from lightning_modules.difix.cosmos.net import FixerNet


def test_minitrain_state_round_trips_through_the_key_map() -> None:
    config = tiny_config()
    net = FixerNet(config)
    cosmos = minitrain_state(config.dit, seed=3)
    state, dropped = dit_state({f"dit.{k}": v for k, v in cosmos.items()}, "dit.", "fixture")
    assert sorted(dropped) == sorted(f"dit.{k}" for k in cosmos if k.startswith(("pos_embedder.", "accum_")))
    load_checked(net.dit, state, "DiT", "fixture")
    unet, vae = nvidia_state_dicts(net.dit, net.tokenizer)
    back = {k[len("dit."):]: v for k, v in unet.items() if k.startswith("dit.")}
    weights = {k: v for k, v in cosmos.items() if not k.startswith(("pos_embedder.", "accum_"))}
    assert sorted(back) == sorted(weights)
    for key, value in weights.items():
        torch.testing.assert_close(back[key], value)
    assert {k[len("tokenizer."):] for k in unet if k.startswith("tokenizer.")} == set(vae)


def test_every_unknown_and_missing_key_is_named() -> None:
    config = tiny_config()
    net = FixerNet(config)
    cosmos = {f"dit.{k}": v for k, v in minitrain_state(config.dit).items()}
    with pytest.raises(ValueError, match=r"dit\.blocks\.0\.self_attn\.bogus\.weight.*dit\.extra_thing"):
        dit_state({**cosmos, "dit.blocks.0.self_attn.bogus.weight": torch.zeros(1), "dit.extra_thing": torch.zeros(1)},
                  "dit.", "fixture")
    state, _ = dit_state(cosmos, "dit.", "fixture")
    del state["transformer_blocks.1.attn2.to_k.weight"]
    state["transformer_blocks.0.ff.net.2.weight"] = torch.zeros(3, 3)
    with pytest.raises(ValueError, match=r"missing: transformer_blocks\.1\.attn2\.to_k\.weight.*another shape: "
                                         r"transformer_blocks\.0\.ff\.net\.2\.weight"):
        load_checked(net.dit, state, "DiT", "fixture")


def test_ema_and_transformer_engine_entries_are_dropped_not_loaded() -> None:
    config = tiny_config()
    cosmos = minitrain_state(config.dit)
    entries = {f"net.{k}": v for k, v in cosmos.items()}
    entries.update({"net_ema.t_embedding_norm.weight": torch.ones(24), "net.blocks.0.self_attn.attn_op._extra_state":
                    torch.empty(0, dtype=torch.uint8)})
    state, dropped = dit_state(entries, "net.", "base")
    assert "net_ema.t_embedding_norm.weight" in dropped and "net.blocks.0.self_attn.attn_op._extra_state" in dropped
    assert "time_embed.norm.weight" in state


@pytest.mark.parametrize("layout", ["", "models/"])
def test_find_fixer_files_in_download_folders(tmp_path: Path, layout: str) -> None:
    write_fixer_folder(tmp_path / "dl" / layout)
    files = find_fixer_files(str(tmp_path / "dl"))
    assert files is not None
    root = tmp_path / "dl" / layout
    assert files.pretrained == root / "pretrained/pretrained_fixer.pkl"
    assert files.tokenizer == root / "base/tokenizer_fast.pth"
    assert files.base_dit == root / "base/model_fast_tokenizer.pt"
    # the pkl itself: its base/ files are found beside pretrained/
    by_pkl = find_fixer_files(str(files.pretrained))
    assert by_pkl is not None and by_pkl.tokenizer == files.tokenizer and by_pkl.base_dit == files.base_dit


def test_what_is_not_a_fixer(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert find_fixer_files(str(tmp_path / "empty")) is None
    assert find_fixer_files(str(tmp_path / "nothing_here")) is None
    assert find_fixer_files("nvidia/difix_ref") is None
    difix_like = tmp_path / "model_1001.pkl"  # a Difix reference pkl has state_dict_unet / _vae too
    torch.save({"state_dict_unet": {"conv_in.weight": torch.zeros(1)}, "state_dict_vae": {}}, difix_like)
    assert not is_fixer_pickle(difix_like) and find_fixer_files(str(difix_like)) is None
    fixer_like = tmp_path / "model_2001.pkl"  # a Fixer training checkpoint of any name
    torch.save({"state_dict_unet": {"dit.blocks.0.mlp.layer1.weight": torch.zeros(1)}, "state_dict_vae": {}},
               fixer_like)
    assert is_fixer_pickle(fixer_like) and find_fixer_files(str(fixer_like)) is not None


def test_hub_id_offline_says_what_to_download_where(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "cache"))
    files = find_fixer_files("nvidia/Fixer")
    assert files is not None and files.repo_id == "nvidia/Fixer" and files.pretrained is None
    with pytest.raises(FileNotFoundError, match=r"hf download nvidia/Fixer .*--local-dir DIR"):
        complete_files(files)
    partial = find_fixer_files(str(write_fixer_folder(tmp_path / "dl", with_base=False)[0]))
    with pytest.raises(FileNotFoundError, match="base/model_fast_tokenizer.pt"):
        complete_files(partial, start="base")
