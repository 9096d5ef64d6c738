"""``/readyz``: can this process reach its stores? (``/healthz``, in ``app``, only says it runs.)

It needs no key and says no more than ``ok``/``unavailable``/``timeout`` per store: the causes go
to the log. Each readiness check runs on its own (green) thread and is given up after
``READY_TIMEOUT_SECONDS``, so a store that hangs makes ``/readyz`` answer 503 in bounded time
instead of holding the probe.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from flask import Blueprint

from session_core import health
from session_web.services import services

bp = Blueprint("health", __name__)

READY_TIMEOUT_SECONDS = 2.0
TIMEOUT = "timeout"


def run_checks(checks: dict[str, Callable[[], str | None]], seconds: float) -> dict[str, str | None]:
    """Run ``checks`` side by side; each answers its problem, None, or ``timeout`` after ``seconds``."""
    answers: dict[str, str | None] = dict.fromkeys(checks, TIMEOUT)

    def run(name: str, check: Callable[[], str | None]) -> None:
        answers[name] = check()

    threads = [
        threading.Thread(target=run, args=item, name="readiness-check", daemon=True)
        for item in checks.items()
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + seconds
    for thread in threads:
        thread.join(max(deadline - time.monotonic(), 0))
    return dict(answers)


@bp.get("/readyz")
def readyz() -> tuple[dict[str, object], int]:
    s = services()
    checks: dict[str, Callable[[], str | None]] = {"database": lambda: health.database_problem(s.engine)}
    clickhouse_url = s.settings.clickhouse_url
    if clickhouse_url:
        checks["clickhouse"] = lambda: health.clickhouse_problem(clickhouse_url)
    problems = run_checks(checks, READY_TIMEOUT_SECONDS)
    ok = all(problem is None for problem in problems.values())
    body = {"ok": ok, "checks": {name: problem or "ok" for name, problem in problems.items()}}
    return body, 200 if ok else 503
