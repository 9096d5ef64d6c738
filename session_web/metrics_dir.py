"""The directory gunicorn's workers write their metric samples to (prometheus_client multiprocess).

Kept apart from ``metrics`` because prometheus_client picks its storage when it is first imported:
``sessions serve`` must set ``PROMETHEUS_MULTIPROC_DIR`` before anything imports it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import MutableMapping

MULTIPROC_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


def prepare_multiprocess_dir(environ: MutableMapping[str, str]) -> str | None:
    """Give the workers a directory for their samples before any of them starts.

    An operator's own ``PROMETHEUS_MULTIPROC_DIR`` is emptied of old sample files (prometheus_client
    requires it); without one, a private temp dir is made and its path returned, for ``remove_dir``.
    """
    given = environ.get(MULTIPROC_DIR_VARIABLE)
    if given:
        os.makedirs(given, exist_ok=True)
        for name in os.listdir(given):
            if name.endswith(".db"):
                os.remove(os.path.join(given, name))
        return None
    made = tempfile.mkdtemp(prefix="sessions-metrics-")
    environ[MULTIPROC_DIR_VARIABLE] = made
    return made


def remove_dir(path: str | None) -> None:
    if path:
        shutil.rmtree(path, ignore_errors=True)
