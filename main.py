"""difix3d command line from a checkout (the installed `difix3d` command is the same CLI).

    python main.py fit --config configs/demo/difix.yaml
    python main.py fit --config configs/scene.yaml
    python main.py test --config configs/scene.yaml --ckpt_path path/to/last.ckpt
"""
import os

# Spinning OpenMP waits make small CPU ops many times slower when cores are shared; this must
# be set before torch loads (difix3d/cli.py says so again for the installed command).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from difix3d.cli import cli_main  # noqa: E402

if __name__ == "__main__":
    cli_main()
