"""Every shipped config parses through main.py (schema = typed __init__ signatures)."""
from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
import yaml

from difix3d.cli import cli_main
from helpers import REPO, main_py_configs

CONFIGS = main_py_configs()  # configs/dataset/: tests/difix3d/test_dataset_configs.py


@pytest.mark.parametrize("config", CONFIGS)
def test_config_parses(config: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
        cli_main(["fit", "--config", config, "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(out.getvalue())
    assert "class_path" in printed["model"]
    assert "class_path" in printed["data"]


def test_wrong_config_key_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    demo = yaml.safe_load((REPO / "configs/demo/difix.yaml").read_text())
    demo["model"]["init_args"]["no_such_option"] = 3
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(demo))
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exit_info:
        cli_main(["fit", "--config", str(bad), "--print_config"])
    assert exit_info.value.code != 0
    assert "no_such_option" in err.getvalue()


@pytest.mark.parametrize("config", CONFIGS)
def test_config_instantiates_model_data_trainer_and_callbacks(config: str, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Every shipped config builds its parts (no weights load: fixers and nets build lazily). Paper
    configs ask for GPUs: the trainer is built on the CPU here, everything else as configured."""
    monkeypatch.chdir(tmp_path)  # relative output folders land here
    doc = yaml.safe_load((REPO / config).read_text())
    overrides = ["--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.strategy=auto",
                 "--trainer.num_nodes=1"]
    with contextlib.redirect_stdout(io.StringIO()):
        cli = cli_main(["--config", str(REPO / config), *overrides], run=False)
    from lightning.pytorch import LightningDataModule, LightningModule

    assert isinstance(cli.model, LightningModule) and isinstance(cli.datamodule, LightningDataModule)
    assert type(cli.model).__name__ == doc["model"]["class_path"].rpartition(".")[2]
    assert type(cli.datamodule).__name__ == doc["data"]["class_path"].rpartition(".")[2]
    wanted = [c["class_path"].rpartition(".")[2] for c in (doc.get("trainer") or {}).get("callbacks") or []]
    built = [type(c).__name__ for c in cli.trainer.callbacks]
    assert all(name in built for name in wanted), (wanted, built)
