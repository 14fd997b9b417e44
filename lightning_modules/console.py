"""The project's own console messages: loggers under "difix3d" (e.g. what a fixer load built).

Library code logs to `logging.getLogger("difix3d.<part>")` and configures nothing; entry points
(main.py, scripts/) call `console_logging()` once, which shows those messages at INFO on stderr
while other libraries stay at Python's default (warnings and above).
"""
from __future__ import annotations

import logging

ROOT = "difix3d"


def console_logging(level: int = logging.INFO) -> None:
    """Shows "difix3d.*" messages at `level` on stderr (idempotent)."""
    logger = logging.getLogger(ROOT)
    logger.setLevel(level)
    if not any(getattr(h, "_difix3d", False) for h in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._difix3d = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.propagate = False
