"""How fixer names are spelled (see `spec.py`): weight-file suffixes, the reference pkl, "tiny[:SEED]",
"identity", hub ids. A leaf that both the spec and its checks import."""
from __future__ import annotations

import re

WEIGHT_SUFFIXES = (".ckpt", ".safetensors", ".pt", ".pth")
REFERENCE_SUFFIX = ".pkl"
IDENTITY = "identity"
TINY = re.compile(r"^tiny(:-?\d+)?$")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
