"""Test helpers: fixture writers in the layouts users bring, CLI runs, fakes, tolerances."""
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]  # the project's root


def main_py_configs() -> list[str]:
    """The shipped configs that main.py runs (configs/**.yaml except configs/dataset/, which holds
    the dataset command's), relative to the repository."""
    root = REPO / "configs"
    return sorted(p.relative_to(REPO).as_posix() for p in root.rglob("*.yaml")
                  if not p.relative_to(root).as_posix().startswith("dataset/"))
