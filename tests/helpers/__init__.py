"""Test helpers: fixture writers in the layouts users bring, CLI runs, fakes, tolerances."""
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]  # the project's root
