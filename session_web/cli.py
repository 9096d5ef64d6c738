"""The ``sessions`` command: serve, migrate, env create|list|rotate-key, replicate.

Heavy imports happen inside each command, so ``sessions replicate`` never loads the web stack or
psycogreen (the replication consumer cannot run in a psycogreen process). Every failure is one
line on stderr that says what to do, and a non-zero exit: never a traceback.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from session_core.config import ConfigError, Settings
from session_core.models import EnvironmentType

if TYPE_CHECKING:
    import sqlalchemy as sa


def _settings() -> Settings:
    try:
        return Settings.from_env(os.environ)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


class OneLineErrors(click.Group):
    """A click group whose usage errors are one line with a pointer to ``--help``, not a usage block."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except click.UsageError as exc:
            where = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
            click.echo(f"Error: {exc.format_message()}{where}", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(f"Error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


def _first_line(error: BaseException) -> str:
    orig = getattr(error, "orig", None) or error
    return (str(orig).strip().splitlines() or [type(orig).__name__])[0]


def _shown_url(url: str) -> str:
    """The database URL with its password hidden, for messages."""
    import sqlalchemy as sa

    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "DATABASE_URL"


def _database_error(settings: Settings, error: Exception, what: str) -> click.ClickException:
    """One line naming the database (password hidden), the cause and where to look."""
    import sqlalchemy as sa

    if isinstance(error, sa.exc.ArgumentError | ImportError):
        return click.ClickException(
            f"DATABASE_URL is not a database URL we can use ({_first_line(error)});"
            " use sqlite:///FILE or postgresql://USER:PASSWORD@HOST/DB"
        )
    hint = " (check DATABASE_URL and that the server is up)" if isinstance(error, sa.exc.DBAPIError) else ""
    return click.ClickException(f"{what} at {_shown_url(settings.database_url)}: {_first_line(error)}{hint}")


@contextmanager
def _database(settings: Settings) -> Iterator[sa.Engine]:
    """An engine on a migrated database; a missing, unmigrated or unreachable one is a one-line error."""
    import sqlalchemy as sa

    from session_core.db.engine import make_engine
    from session_core.db.migrate import is_schema_current

    try:
        url = sa.engine.make_url(settings.database_url)
        if url.get_backend_name() == "sqlite" and url.database and not Path(url.database).exists():
            raise click.ClickException(
                f"no database at {url.database}: run `sessions migrate` first"
                " (`sessions serve` also creates and migrates the SQLite file)"
            )
        engine = make_engine(settings.database_url)  # creates a missing SQLite file: checked above
    except (sa.exc.ArgumentError, ImportError) as exc:  # an unparsable URL or a driver we lack
        raise _database_error(settings, exc, "") from None
    try:
        if not is_schema_current(engine):
            raise click.ClickException(
                f"the database at {_shown_url(settings.database_url)} is not migrated:"
                " run `sessions migrate` first"
            )
        yield engine
    except sa.exc.DBAPIError as exc:
        raise _database_error(settings, exc, "cannot use the database") from None
    finally:
        engine.dispose()


@click.group(cls=OneLineErrors)
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
        raise _database_error(settings, exc, "migration failed") from None
    if settings.clickhouse_url:
        from session_core.replication.ddl import apply_clickhouse_schema

        try:
            apply_clickhouse_schema(settings.clickhouse_url)
        except Exception as exc:  # noqa: BLE001 - any failure becomes one readable line
            raise click.ClickException(
                f"ClickHouse schema failed: {type(exc).__name__}: {_first_line(exc)} (check CLICKHOUSE_URL)"
            ) from None


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
    from session_core.db.uow import UnitOfWork
    from session_core.errors import Conflict
    from session_core.models import utcnow
    from session_core.services.environments import create_environment

    with _database(_settings()) as engine:
        try:
            environment = create_environment(UnitOfWork(engine), slug, EnvironmentType(env_type), utcnow())
        except Conflict as exc:
            raise click.ClickException(exc.message) from None
    if as_json:
        click.echo(
            json.dumps({"id": environment.id, "slug": slug, "type": env_type, "apiKey": environment.api_key})
        )
    else:
        click.echo(f"environment {slug} ({env_type}) id={environment.id}")
        click.echo(f"secret API key: {environment.api_key}")


@env.command("list")
@click.option(
    "--json", "as_json", is_flag=True, help='Print one JSON object: {"data": [{id, slug, type, createdAt}]}.'
)
def env_list(as_json: bool) -> None:
    """List the environments (slug, type, id, created), oldest first; never their keys."""
    from session_core.db.uow import UnitOfWork
    from session_core.services.environments import list_environments

    with _database(_settings()) as engine:
        summaries = list_environments(UnitOfWork(engine, read_only=True))
    if as_json:
        data = [
            {"id": e.id, "slug": e.slug, "type": e.type.value, "createdAt": e.created_at.isoformat() + "Z"}
            for e in summaries
        ]
        click.echo(json.dumps({"data": data}))
        return
    rows = [("SLUG", "TYPE", "ID", "CREATED")]
    rows += [(e.slug, e.type.value, e.id, e.created_at.strftime("%Y-%m-%d %H:%M:%S")) for e in summaries]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        click.echo(
            "  ".join([*(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[3]])
        )


@env.command("rotate-key")
@click.argument("slug")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with id, slug, type, apiKey.")
def env_rotate_key(slug: str, as_json: bool) -> None:
    """Replace an environment's secret API key and print the new one once; the old one stops working."""
    from session_core.db.uow import UnitOfWork
    from session_core.errors import NotFound
    from session_core.services.environments import rotate_api_key

    settings = _settings()
    with _database(settings) as engine:
        try:
            environment = rotate_api_key(UnitOfWork(engine), slug)
        except NotFound as exc:
            raise click.ClickException(f"{exc.message}; `sessions env list` shows the slugs") from None
    if as_json:
        body = {
            "id": environment.id,
            "slug": slug,
            "type": environment.type.value,
            "apiKey": environment.api_key,
        }
        click.echo(json.dumps(body))
        return
    click.echo(f"environment {slug} id={environment.id}")
    click.echo(f"new secret API key (shown once): {environment.api_key}")
    click.echo(
        f"the old key stops working within {settings.auth_cache_seconds} s on running servers"
        " (SESSIONS_AUTH_CACHE_SECONDS); tokens signed with it stop working too",
        err=True,
    )


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
    from session_web import metrics_dir

    # Before the server module loads: prometheus_client picks its storage when first imported.
    made = metrics_dir.prepare_multiprocess_dir(os.environ) if settings.metrics_port else None
    from session_web.server import run

    master = os.getpid()
    try:
        run(host=host or settings.host, port=port or settings.port, workers=workers)
    finally:
        if os.getpid() == master:  # workers are forked inside run() and unwind through here too
            metrics_dir.remove_dir(made)


@main.command()
def replicate() -> None:
    """Run the replication worker: PostgreSQL logical replication into ClickHouse."""
    from replicator.worker import main as worker_main

    sys.exit(worker_main())
