"""Options that moved into typed groups: every old flat key has a new home, and a config or command
line that still gives one fails with a message that names the new key."""
from __future__ import annotations

import contextlib
import dataclasses
import importlib
import inspect
import io
import typing
from pathlib import Path

import pytest

from difix3d.cli import cli_main
from difix3d.renamed_options import RENAMED_OPTIONS, renamed_hint
from helpers import REPO


def _class(path: str) -> type:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _group_types(cls: type, group: str) -> list[type]:
    """The dataclasses a constructor parameter takes (`lr: LearningRates | None` -> [LearningRates])."""
    hint = typing.get_type_hints(cls.__init__)[group]
    return [t for t in typing.get_args(hint) or (hint,) if dataclasses.is_dataclass(t)]


@pytest.mark.parametrize("path", sorted(RENAMED_OPTIONS))
def test_every_old_key_is_gone_and_its_new_key_exists(path: str) -> None:
    cls = _class(path)
    params = inspect.signature(cls.__init__).parameters
    for old, new in RENAMED_OPTIONS[path].items():
        assert old not in params, f"{cls.__name__}.{old} is still a parameter"
        group, field = new.split(" ", 1)[0].split(".")
        fields = {f.name for t in _group_types(cls, group) for f in dataclasses.fields(t)}
        assert field in fields, f"{cls.__name__}: {old} -> {new}: {group} has no field {field}"


def test_constructors_take_option_groups_not_dozens_of_flat_options() -> None:
    counts = {path.rsplit(".", 1)[-1]: len(inspect.signature(_class(path).__init__).parameters) - 1
              for path in RENAMED_OPTIONS}
    assert counts["GaussianSceneModule"] <= 15 and counts["PairDataModule"] <= 12, counts
    assert counts["DifixModule"] <= 10, counts


def _fails(args: list[str]) -> str:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()), pytest.raises(SystemExit):
        cli_main(args)
    return err.getvalue()


def test_an_old_key_on_the_command_line_is_named_with_its_new_key() -> None:
    message = _fails(["fit", "--config", str(REPO / "configs/demo/difix3d.yaml"), "--model.init_args.means_lr=1e-4",
                      "--print_config"])
    assert "GaussianSceneModule: means_lr is now lr.means" in message
    message = _fails(["fit", "--config", str(REPO / "configs/demo/difix.yaml"), "--model.init_args.lr_schedule=cosine",
                      "--print_config"])
    assert "DifixModule: lr_schedule is now optimizer.schedule" in message


def test_an_old_config_names_every_old_key_it_holds(tmp_path: Path) -> None:
    old = tmp_path / "old.yaml"
    old.write_text(
        "model:\n  class_path: lightning_modules.scene.gaussians.module.GaussianSceneModule\n  init_args:\n"
        "    sh_degree: 1\n    init_type: random\n    backend: torch\n"
    )
    message = _fails(["fit", "--config", str(REPO / "configs/demo/scene.yaml"), "--config", str(old), "--print_config"])
    for line in ("sh_degree is now sh.degree", "init_type is now init.type", "backend is now rasterizer.backend"):
        assert f"GaussianSceneModule: {line}" in message
    pairs = tmp_path / "pairs.yaml"
    pairs.write_text(
        "data:\n  class_path: datamodules.pairs.datamodule.PairDataModule\n  init_args:\n"
        "    source: json\n    json_path: pairs.json\n"
    )
    message = _fails(["fit", "--config", str(REPO / "configs/demo/difix.yaml"), "--config", str(pairs), "--print_config"])
    assert "PairDataModule: json_path is now source.path" in message
    assert "PairDataModule: source is now an object" in message


def test_messages_about_other_keys_get_no_hint() -> None:
    assert renamed_hint("Problem with given class_path 'lightning_modules.scene.nerf.module.NerfSceneModule':\n"
                        "  Option 'means_lr' is not accepted") is None
    assert renamed_hint("Problem with given class_path 'lightning_modules.scene.gaussians.module.GaussianSceneModule':\n"
                        "  Option 'bogus' is not accepted") is None
