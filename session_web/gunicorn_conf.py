"""gunicorn settings for the web service: gevent workers sized for thousands of SSE subscribers.

Every value comes from ``Settings.from_env``, so a bad one names its variable.
"""

import os

from gunicorn.arbiter import Arbiter
from gunicorn.workers.base import Worker

from session_core.config import Settings

_settings = Settings.from_env(os.environ)

# Loopback unless SESSIONS_HOST (or `sessions serve --host`) opens it up.
bind = f"{_settings.host}:{_settings.port}"
workers = _settings.web_concurrency
# gevent's pywsgi under gunicorn's process management (see the module).
worker_class = "session_web.gunicorn_worker.Worker"
# Each idle SSE subscriber holds one connection; the default of 1000 would queue the rest. Live
# reads are admitted up to SESSIONS_MAX_LIVE_READS, below this, so short requests always find room.
worker_connections = _settings.worker_connections
# Open streams end on shutdown instead of holding it for the default 30 s.
graceful_timeout = _settings.graceful_timeout_seconds
timeout = 60
# Seconds a keep-alive connection may sit idle between requests.
keepalive = _settings.keepalive_seconds
accesslog = None
# No shared $HOME/.gunicorn/gunicorn.ctl: several servers on one machine would fight over it.
control_socket_disable = True

if _settings.log_format == "json":
    # gunicorn's own lines as JSON too (workers set up their own logging in ``wsgi``), each written
    # once. Its access log stays off: it would log query strings; ``request_log`` writes ours.
    logconfig_dict = {
        "root": {"level": "INFO", "handlers": ["error_console"]},
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": ["error_console"], "propagate": False},
            "gunicorn.access": {"level": "CRITICAL", "handlers": [], "propagate": False},
        },
        "formatters": {"generic": {"()": "session_core.logs.JsonFormatter"}},
    }


def when_ready(server: Arbiter) -> None:
    """Serve the workers' metrics from the master, on a port of their own (``session_web.metrics``)."""
    from session_web import metrics, metrics_dir

    if _settings.metrics_port and os.environ.get(metrics_dir.MULTIPROC_DIR_VARIABLE):
        metrics.serve(_settings.metrics_host, _settings.metrics_port)


def child_exit(server: Arbiter, worker: Worker) -> None:
    """Forget an exited worker's live gauges (open SSE readers, checked-out connections)."""
    from session_web import metrics, metrics_dir

    if os.environ.get(metrics_dir.MULTIPROC_DIR_VARIABLE):
        metrics.forget_worker(worker.pid)


def post_worker_init(worker: Worker) -> None:
    """Start this worker's launch dispatcher and GC policy; end its live reads as soon as it is told to stop.

    SSE responses otherwise stay open until ``graceful_timeout`` and are then cut. Closing the
    wake-up hub ends each one with an ``error`` event (S2's client resumes elsewhere), so the worker
    exits as soon as the open responses have flushed.
    """
    import gevent

    from session_web.gc_policy import start_gc_policy
    from session_web.services import services

    with worker.wsgi.app_context():
        hub = services().hub
        # Start this worker's launch dispatcher: it delivers launches a crashed process left behind.
        services().launcher.wake()

    def close_hub_when_stopping() -> None:
        while worker.alive:
            gevent.sleep(0.2)
        hub.close()

    gevent.spawn(close_hub_when_stopping)
    # Full collections on a schedule, not in the middle of a fan-out (``session_web.gc_policy``).
    start_gc_policy()
