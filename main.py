"""difix3d command line: Lightning's own subcommands (fit / validate / test / predict).

    python main.py fit --config configs/demo/difix.yaml
    python main.py fit --config configs/scene.yaml
    python main.py test --config configs/scene.yaml --ckpt_path path/to/last.ckpt

Model and data are chosen by `class_path` in the YAML; the typed `__init__` signatures of
the LightningModules and LightningDataModules are the config schema.
"""
import os

# OpenMP threads that spin while waiting make small CPU ops up to 20x slower when cores are
# shared (measured on 2 cores: 10k-Gaussian render 5.7 s spinning vs 0.3 s passive). Must be
# set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from lightning.pytorch.cli import LightningCLI  # noqa: E402


def cli_main(args: list[str] | None = None, run: bool = True) -> LightningCLI:
    """Parses `args` (default: sys.argv) and runs the subcommand; with run=False the args
    hold no subcommand and the CLI only builds trainer, model and datamodule."""
    return LightningCLI(
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
    )


if __name__ == "__main__":
    cli_main()
