"""The difix3d command line: Lightning's own subcommands (fit / validate / test / predict).

    difix3d fit --config configs/demo/difix.yaml          # or: python main.py fit ...
    difix3d fit --config configs/scene.yaml
    difix3d test --config configs/scene.yaml --ckpt_path path/to/last.ckpt

Model and data are chosen by `class_path` in the YAML; the typed `__init__` signatures of
the LightningModules and LightningDataModules are the config schema.
"""
import os

# OpenMP threads that spin while waiting make small CPU ops up to 20x slower when cores are
# shared (measured on 2 cores: 10k-Gaussian render 5.7 s spinning vs 0.3 s passive). Must be
# set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import importlib  # noqa: E402
import sys  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI  # noqa: E402
from lightning.pytorch.utilities import rank_zero_warn  # noqa: E402

from callbacks.checkpoints import AtomicCheckpointIO, LastCheckpointAtFitEnd  # noqa: E402
from callbacks.disk_space import OutputFolderCheck  # noqa: E402
from lightning_modules.console import console_logging  # noqa: E402
from callbacks.finite_guard import FiniteGuard  # noqa: E402
from lightning_modules.safe_load import read_torch_file  # noqa: E402
from difix3d.renamed_options import renamed_hint  # noqa: E402

# Scene modules optimise manually; Lightning then warns at every periodic checkpoint that it
# holds the state after the step. That is the state a resume needs: its global_step counts
# that step, and tests/cli/test_run_safety.py resumes a killed run to the uninterrupted result.
warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization and every_n_train_steps")


class CheckpointOptionError(ValueError):
    """A command-line model option that a checkpoint's own value replaces."""


def _cli_model_keys(args: Any) -> set[str]:
    """Model options given explicitly on the command line (`--model.init_args.x`, `--model.x`)."""
    tokens = args if isinstance(args, list) else sys.argv[1:] if args is None else []
    keys = set()
    for tok in tokens:
        if isinstance(tok, str) and tok.startswith("--model."):
            parts = [p for p in tok[2:].split("=", 1)[0].split(".")[1:] if p not in ("init_args", "dict_kwargs")]
            if parts:
                keys.add(parts[0])
    return keys


class DifixArgumentParser(LightningArgumentParser):
    """LightningCLI's parser; an option it rejects because it moved into an option group is
    named with its new key (`difix3d.renamed_options`)."""

    def error(self, message: str, ex: Exception | None = None) -> Any:
        hint = renamed_hint(message)
        if hint is not None:
            message = f"{message}\nrenamed options (the old flat keys are gone):\n{hint}"
        return super().error(message, ex)


class DifixCLI(LightningCLI):
    """LightningCLI with the project's run-safety rules.

    - Every run gets a `FiniteGuard`: a NaN/Inf loss, gradient or parameter stops the run with
      a message naming the step and tensor, and no non-finite checkpoint is written (on a GPU
      its checks are read every 16 steps and before every save, not synced every step).
    - Every run writes checkpoints through `AtomicCheckpointIO`: a failed save (full disk)
      leaves the previous checkpoint whole; and reads them through it (weights only: a pickle
      payload or a damaged file is refused naming it, as `--ckpt_path` is checked at parse time).
    - Every run checks its log and checkpoint folders before the first step (`OutputFolderCheck`:
      a full disk is refused by name, not met at the first event or save) and writes last.ckpt
      once more at the end of training (`LastCheckpointAtFitEnd`: the last steps are in it).
    - With `--ckpt_path`, Lightning replaces the model options by the checkpoint's
      hyperparameters. Options a model class lists in `RUNTIME_OPTIONS` (output folders,
      metrics, rendering: they do not change the trained model) keep the value given to this
      run; any other option given on the command line that the checkpoint overrides stops the
      run with its name (it would be silently ignored otherwise).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._explicit_model_keys = _cli_model_keys(kwargs.get("args"))
        super().__init__(*args, **kwargs)

    def _parse_ckpt_path(self) -> None:
        sub = self.config.get("subcommand")
        if not sub or not self.config[sub].get("ckpt_path"):
            return super()._parse_ckpt_path()
        if Path(self.config[sub]["ckpt_path"]).is_file():
            # Lightning reads the hyperparameters with a bare torch.load, whose refusal of a pickle
            # payload or a damaged file names neither the file nor the option: read it safely first.
            read_torch_file(self.config[sub]["ckpt_path"], "--ckpt_path")
        before = _model_options(self.config[sub]["model"])
        super()._parse_ckpt_path()
        model = self.config[sub]["model"]
        after = _model_options(model)
        runtime = _runtime_options(model.get("class_path"))
        changed = {k for k in before.keys() & after.keys() if before[k] != after[k]}
        for key in sorted(changed & runtime):
            self._set_model_option(sub, key, before[key])
        ignored = sorted((changed - runtime) & self._explicit_model_keys)
        if ignored:
            raise CheckpointOptionError(
                f"--ckpt_path {self.config[sub]['ckpt_path']}: the checkpoint defines the model, so these "
                f"command-line options would be ignored: "
                + ", ".join(f"{k} (given {before[k]!r}, checkpoint {after[k]!r})" for k in ignored)
                + ". Drop them, or start a new run without --ckpt_path."
            )
        from_config = sorted(changed - runtime)
        if from_config:
            rank_zero_warn(f"--ckpt_path: the checkpoint's values replace the config's for {from_config}")

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Any]) -> Any:
        # Every run writes checkpoints atomically (callbacks/checkpoints.py), unless the config
        # brings its own checkpoint writer.
        from lightning.fabric.plugins.io.checkpoint_io import CheckpointIO

        plugins = config.get("plugins") or []
        plugins = list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            config["plugins"] = [*plugins, AtomicCheckpointIO()]
        return super()._instantiate_trainer(config, callbacks)

    def _set_model_option(self, sub: str, key: str, value: Any) -> None:
        model = self.config[sub]["model"]
        for group in ("init_args", "dict_kwargs"):
            if model.get(group) is not None and key in model[group]:
                model[group][key] = value


def _model_options(model: Any) -> dict[str, Any]:
    """init_args + dict_kwargs of the model's config node as one plain dict."""
    out: dict[str, Any] = {}
    for group in ("init_args", "dict_kwargs"):
        node = model.get(group) if model is not None else None
        if node:
            out.update(node.as_dict() if hasattr(node, "as_dict") else dict(node))
    return out


def _runtime_options(class_path: str | None) -> set[str]:
    if not class_path:
        return set()
    module, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return set()
    return set(getattr(cls, "RUNTIME_OPTIONS", ()))


def cli_main(args: list[str] | None = None, run: bool = True) -> LightningCLI:
    """Parses `args` (default: sys.argv) and runs the subcommand; with run=False the args
    hold no subcommand and the CLI only builds trainer, model and datamodule."""
    console_logging()
    return DifixCLI(
        parser_class=DifixArgumentParser,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={"callbacks": [FiniteGuard(), OutputFolderCheck(), LastCheckpointAtFitEnd()]},
        args=args,
        run=run,
    )


if __name__ == "__main__":
    cli_main()
