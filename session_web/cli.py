"""The ``sessions`` command: serve, migrate, env create, replicate.

Heavy imports happen inside each command, so ``sessions replicate`` never loads the web stack or
psycogreen (the replication consumer cannot run in a psycogreen process).
"""

from __future__ import annotations

import json
import os
import sys

import click

from session_core.config import ConfigError, Settings
from session_core.models import EnvironmentType


def _settings() -> Settings:
    try:
        return Settings.from_env(os.environ)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


@click.group()
def main() -> None:
    """Durable, bidirectional agent streams (Trigger.dev Sessions compatible)."""


@main.command()
def migrate() -> None:
    """Apply the database schema (and the ClickHouse tables when CLICKHOUSE_URL is set)."""
    settings = _settings()
    _migrate(settings)
    click.echo("database is up to date", err=True)


def _migrate(settings: Settings) -> None:
    from session_core.db.migrate import upgrade_database

    try:
        upgrade_database(settings.database_url)
    except Exception as exc:  # noqa: BLE001 - any failure becomes one readable line
        raise click.ClickException(f"migration failed: {type(exc).__name__}: {exc}".splitlines()[0]) from None
    if settings.clickhouse_url:
        from session_core.replication.ddl import apply_clickhouse_schema

        apply_clickhouse_schema(settings.clickhouse_url)


@main.group()
def env() -> None:
    """Manage environments and their secret API keys."""


@env.command("create")
@click.option("--slug", required=True, help="A short name, unique in the project.")
@click.option(
    "--type", "env_type", type=click.Choice([t.value for t in EnvironmentType]), default="DEVELOPMENT"
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with id, slug, type, apiKey.")
def env_create(slug: str, env_type: str, as_json: bool) -> None:
    """Create an environment and print its id and secret API key."""
    from session_core.db.engine import make_engine
    from session_core.db.uow import UnitOfWork
    from session_core.errors import Conflict
    from session_core.models import utcnow
    from session_core.services.environments import create_environment

    settings = _settings()
    engine = make_engine(settings.database_url)
    try:
        environment = create_environment(UnitOfWork(engine), slug, EnvironmentType(env_type), utcnow())
    except Conflict as exc:
        raise click.ClickException(exc.message) from None
    finally:
        engine.dispose()
    if as_json:
        click.echo(
            json.dumps({"id": environment.id, "slug": slug, "type": env_type, "apiKey": environment.api_key})
        )
    else:
        click.echo(f"environment {slug} ({env_type}) id={environment.id}")
        click.echo(f"secret API key: {environment.api_key}")


def _ensure_dev_environment(settings: Settings) -> None:
    """On the embedded default's first start, create a ``dev`` environment and show its key once."""
    from session_core.db.engine import make_engine
    from session_core.db.uow import UnitOfWork
    from session_core.models import utcnow
    from session_core.services.environments import create_environment

    engine = make_engine(settings.database_url)
    try:
        with UnitOfWork(engine) as uow:
            exists = uow.environments.first() is not None
        if not exists:
            environment = create_environment(UnitOfWork(engine), "dev", EnvironmentType.DEVELOPMENT, utcnow())
            click.echo(f"created environment dev id={environment.id}")
            click.echo(f"secret API key (shown once): {environment.api_key}")
    finally:
        engine.dispose()


@main.command()
@click.option(
    "--host",
    default=None,
    help="Interface to listen on (default: $SESSIONS_HOST or 127.0.0.1; 0.0.0.0 for all, behind a proxy).",
)
@click.option("--port", type=int, default=None, help="Port (default: $PORT or 3030).")
@click.option(
    "--workers", type=int, default=None, help="gevent worker processes (default: $WEB_CONCURRENCY or 2)."
)
def serve(host: str | None, port: int | None, workers: int | None) -> None:
    """Start the web service (gunicorn + gevent)."""
    settings = _settings()
    if settings.database_url.startswith("sqlite"):
        _migrate(settings)
        _ensure_dev_environment(settings)
    from session_web.server import run

    run(host=host or settings.host, port=port or settings.port, workers=workers)


@main.command()
def replicate() -> None:
    """Run the replication worker: PostgreSQL logical replication into ClickHouse."""
    from replicator.worker import main as worker_main

    sys.exit(worker_main())
