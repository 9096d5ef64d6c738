"""Logging setup; entry points call ``configure_logging`` and libraries only log."""

from __future__ import annotations

import logging
import sys


def configure_logging(level: str = "INFO") -> None:
    """One handler on the root logger, to stderr; noisy libraries turned down."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("alembic.runtime.migration", "clickhouse_driver", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
