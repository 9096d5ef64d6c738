"""The Flask application factory."""

from __future__ import annotations

import os

import sqlalchemy as sa
from flask import Flask

from session_core.channels.wakeups import WakeupHub, start_tail_feed
from session_core.config import Settings
from session_core.db.engine import make_engine
from session_core.db.uow import UnitOfWork
from session_core.launchers import CelerySender, WebhookSender
from session_core.repositories.ports import SessionLister
from session_core.repositories.sql import SqlSessionLister
from session_core.services.launches import Dispatcher, DispatchPolicy, LaunchSender, OutboxLauncher
from session_core.services.runs import RecordingLauncher, RunLauncher
from session_web import auth_api, console, control, cors, durable, openapi, realtime, runs, s2
from session_web.errors import register_error_handlers
from session_web.health import bp as health_bp
from session_web.metrics import count_run_launch, watch_pool
from session_web.request_log import observe_requests
from session_web.routing import SessionRefConverter, refuse_unstorable_request_text
from session_web.services import Services

#: Werkzeug refuses bodies past this before any route runs; routes set tighter limits.
MAX_CONTENT_LENGTH = 2 * 1024 * 1024


def _make_lister(settings: Settings, engine: sa.Engine) -> SessionLister:
    """ClickHouse serves lists when configured; otherwise the SQL repository, with the same semantics."""
    if settings.clickhouse_url:
        from session_core.repositories.clickhouse import ClickHouseSessionLister

        return ClickHouseSessionLister(settings.clickhouse_url, engine)
    return SqlSessionLister(engine)


def _make_launcher(settings: Settings, engine: sa.Engine, hub: WakeupHub) -> RunLauncher:
    """``SESSIONS_RUN_LAUNCHER``: record runs only, or deliver their launches from the outbox."""
    if settings.run_launcher == "record":
        return RecordingLauncher(settings.run_lease_seconds)
    sender: LaunchSender
    if settings.run_launcher == "webhook":
        assert settings.webhook_url is not None and settings.webhook_secret is not None
        sender = WebhookSender(settings.webhook_url, settings.webhook_secret, settings.launch_timeout_seconds)
    else:
        assert settings.celery_broker_url is not None
        sender = CelerySender(settings.celery_broker_url)
    policy = DispatchPolicy(hold_seconds=3.0 * settings.launch_timeout_seconds)
    dispatcher = Dispatcher(
        lambda: UnitOfWork(engine, hub),
        sender,
        settings.run_lease_seconds,
        policy,
        on_delivered=lambda launch: count_run_launch(settings.run_launcher, launch.reason),
    )
    return OutboxLauncher(settings.run_lease_seconds, dispatcher)


def create_app(settings: Settings | None = None, launcher: RunLauncher | None = None) -> Flask:
    """Build the web app; ``settings`` default to the environment's, as in flaskr's ``test_config``."""
    settings = settings or Settings.from_env(os.environ)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_CONTENT_LENGTH
    app.json.sort_keys = False  # type: ignore[attr-defined]
    engine = make_engine(settings.database_url)
    watch_pool(engine)
    # Live readers' wake-ups; the cross-process feed starts with the first live read.
    hub = WakeupHub(start_feed=lambda hub: start_tail_feed(engine, hub))
    app.extensions["sessions"] = Services(
        settings=settings,
        engine=engine,
        lister=_make_lister(settings, engine),
        launcher=launcher or _make_launcher(settings, engine, hub),
        hub=hub,
    )
    observe_requests(app)  # first: a CORS preflight answers early and skips later hooks
    cors.init_app(app)
    register_error_handlers(app)
    app.url_map.converters["session"] = SessionRefConverter
    app.url_value_preprocessor(refuse_unstorable_request_text)
    app.register_blueprint(control.bp)
    app.register_blueprint(health_bp)
    app.register_blueprint(runs.bp)
    app.register_blueprint(auth_api.bp)
    app.register_blueprint(realtime.bp)
    app.register_blueprint(s2.bp)
    app.register_blueprint(openapi.bp)
    app.register_blueprint(console.bp)
    app.register_blueprint(durable.bp)
    app.add_url_rule("/healthz", "healthz", lambda: {"ok": True})
    return app
