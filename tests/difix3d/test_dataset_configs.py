"""Every shipped dataset-command config parses, and the scene configs it names resolve through main.py."""
from __future__ import annotations

import contextlib
import io

import pytest
import yaml

from helpers import REPO

CONFIGS = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "configs" / "dataset").glob("*.yaml"))


@pytest.mark.parametrize("config", CONFIGS)
def test_dataset_config_parses_and_its_scene_configs_resolve(config: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from difix3d.dataset.command import main, resolve_config
    from difix3d.dataset.jobs import Protocol, protocol_overrides

    monkeypatch.chdir(REPO)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
        main(["--config", config, "--print_config"])
    assert exit_info.value.code in (0, None)
    doc = yaml.safe_load(out.getvalue())
    assert (doc["table"] is None) != (doc["curation"] is None)
    if doc["table"]:
        given = doc["protocol"] or {}
        protocol = Protocol(**{**given, "name_split": tuple(given.get("name_split") or ()) or None})
        jobs = [["--config", doc["table"]["config"], *protocol_overrides(protocol), *doc["table"]["overrides"]]]
    else:
        jobs = [["--config", s["config"], *s["overrides"]] for s in doc["curation"]["stages"]]
    for args in jobs:
        assert "class_path" in resolve_config([*args, "--data.init_args.path=/scene"])
