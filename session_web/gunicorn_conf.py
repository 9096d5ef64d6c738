"""gunicorn settings for the web service: gevent workers sized for thousands of SSE subscribers."""

import os

from gunicorn.workers.base import Worker

bind = f"{os.environ.get('SESSIONS_HOST', '0.0.0.0')}:{os.environ.get('PORT', '3030')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# gevent's pywsgi under gunicorn's process management (see the module).
worker_class = "session_web.gunicorn_worker.Worker"
# Each idle SSE subscriber holds one connection; the default of 1000 would queue the rest.
worker_connections = int(os.environ.get("SESSIONS_WORKER_CONNECTIONS", "10000"))
# Open streams end on shutdown instead of holding it for the default 30 s.
graceful_timeout = int(os.environ.get("SESSIONS_GRACEFUL_TIMEOUT", "5"))
timeout = 60
# Seconds a keep-alive connection may sit idle between requests.
keepalive = int(os.environ.get("SESSIONS_KEEPALIVE", "5"))
accesslog = None
# No shared $HOME/.gunicorn/gunicorn.ctl: several servers on one machine would fight over it.
control_socket_disable = True


def post_worker_init(worker: Worker) -> None:
    """End this worker's live reads as soon as it is told to stop.

    SSE responses otherwise stay open until ``graceful_timeout`` and are then cut. Closing the
    wake-up hub ends each one with an ``error`` event (S2's client resumes elsewhere), so the worker
    exits as soon as the open responses have flushed.
    """
    import gevent

    from session_web.services import services

    with worker.wsgi.app_context():
        hub = services().hub

    def close_hub_when_stopping() -> None:
        while worker.alive:
            gevent.sleep(0.2)
        hub.close()

    gevent.spawn(close_hub_when_stopping)
