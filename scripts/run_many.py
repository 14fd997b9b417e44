"""Runs several `main.py` command lines one after another in one Python process.

    python scripts/run_many.py [--say TEXT] fit --config a.yaml ... --next [--say TEXT] fit --config b.yaml ...

`--next` separates the commands; an optional `--say TEXT` first in a command prints
`=== [Ns] TEXT` before it (N: seconds since this process started). Each command is exactly
what `python main.py ...` would run (same parsing, same FiniteGuard, its own seed_everything),
but the ~7-9 s of importing torch, Lightning, torchmetrics and diffusers are paid once:
`make demo` curates 15 small scenes, two lists of them side by side. The first command that
fails stops the list; the exit status is its own (a config error: 2; an exception: 1) and the
message names it, so the commands before it keep their outputs and none after it starts.
"""
from __future__ import annotations

import gc
import os
import sys
import time
import traceback
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads (difix3d/cli.py explains why)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SEPARATOR = "--next"


def split_commands(argv: list[str]) -> list[tuple[str | None, list[str]]]:
    """`[--say T] args... --next [--say T] args...` -> [(T or None, args), ...]; empty commands are errors."""
    commands: list[tuple[str | None, list[str]]] = []
    chunks: list[list[str]] = [[]]
    for token in argv:
        if token == SEPARATOR:
            chunks.append([])
        else:
            chunks[-1].append(token)
    for i, chunk in enumerate(chunks, 1):
        say = None
        if chunk[:1] == ["--say"]:
            if len(chunk) < 2:
                raise SystemExit(f"run_many: command {i}: --say needs a text")
            say, chunk = chunk[1], chunk[2:]
        if not chunk:
            raise SystemExit(f"run_many: command {i} of {len(chunks)} is empty (two {SEPARATOR} in a row, "
                             f"or one at the start or end)")
        commands.append((say, chunk))
    return commands


def main(argv: list[str]) -> int:
    commands = split_commands(argv)
    from difix3d.cli import cli_main  # after the argument check: a usage error costs no imports

    start = time.monotonic()
    for i, (say, args) in enumerate(commands, 1):
        if say:
            print(f"\n=== [{time.monotonic() - start:.0f}s] {say}", flush=True)
        try:
            cli_main(args)
        except SystemExit as exit_:  # jsonargparse reports config errors this way
            if exit_.code not in (None, 0):
                print(f"run_many: command {i} of {len(commands)} stopped (exit {exit_.code}): main.py {' '.join(args)}",
                      file=sys.stderr)
                return exit_.code if isinstance(exit_.code, int) else 1
        except Exception:
            traceback.print_exc()
            print(f"run_many: command {i} of {len(commands)} failed: main.py {' '.join(args)}", file=sys.stderr)
            return 1
        gc.collect()  # the finished run's model, data and trainer before the next one builds its own
    return 0


if __name__ == "__main__":
    argv = sys.argv[1:]
    del sys.argv[1:]  # LightningCLI warns about every command while sys.argv holds arguments too
    sys.exit(main(argv))
