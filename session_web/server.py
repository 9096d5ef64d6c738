"""Run gunicorn in-process with our config: ``sessions serve`` without a separate gunicorn command."""

from __future__ import annotations

import os
from typing import Any

from gunicorn.app.base import BaseApplication

from session_web import gunicorn_conf


class _Server(BaseApplication):  # type: ignore[misc]
    def __init__(self, options: dict[str, Any]) -> None:
        self._options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in vars(gunicorn_conf).items():
            if key in self.cfg.settings and value is not None:
                self.cfg.set(key, value)
        for key, value in self._options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        # Imported in the worker, after gevent patched it, so psycogreen's patch lands first.
        from session_web.wsgi import app

        return app


def run(host: str, port: int, workers: int | None) -> None:
    # Workers build their Settings from the environment: the port bound here is the one that
    # ``Settings.base_url`` (and so every URL we hand out) names when SESSIONS_PUBLIC_URL is unset.
    os.environ["PORT"] = str(port)
    options: dict[str, Any] = {"bind": f"{host}:{port}"}
    if workers is not None:
        options["workers"] = workers
    _Server(options).run()
