"""Registers the operator `difix3d_test::shift` (x + 0.01) that a test TorchScript file calls: an
"operator library" a fixer names in `operator_libraries` (as nvidia/Fixer needs transformer_engine)."""
from __future__ import annotations

import torch

LIBRARY = torch.library.Library("difix3d_test", "DEF")
LIBRARY.define("shift(Tensor x) -> Tensor")
LIBRARY.impl("shift", lambda x: x + 0.01, "CompositeExplicitAutograd")
