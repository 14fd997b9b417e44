"""Package exports that import their module only when first used (PEP 562), so importing a
package of this project never pulls in Lightning, diffusers or a reader it does not need.

    __getattr__, __all__ = lazy_exports(__name__, {"Cameras": "datamodules.cameras.cameras", ...})
"""
from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], list[str]]:
    """A module-level ``__getattr__`` resolving ``exports`` (name -> module) on first use, and ``__all__``."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(module), name)

    return __getattr__, list(exports)
