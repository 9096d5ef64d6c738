"""Where ClickHouse is: parse ``CLICKHOUSE_URL`` into a database name and a client factory.

Clients connect without a default database so the same URL works before ``CREATE DATABASE``
has run; every statement names its table as ``database.table``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from clickhouse_driver import Client
from clickhouse_driver.util.helpers import parse_url

__all__ = ["DEFAULT_DATABASE", "ClickHouseTarget", "parse_clickhouse_url"]

DEFAULT_DATABASE = "sessions"
TABLE = "sessions_v1"
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class ClickHouseTarget:
    host: str
    database: str
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def table(self) -> str:
        """The fully qualified ``sessions_v1`` name."""
        return f"{self.database}.{TABLE}"

    @property
    def address(self) -> str:
        """Host and port for log lines; never includes credentials."""
        return f"{self.host}:{self.options.get('port', 9000)}"

    def connect(self) -> Client:
        """Return a new client; clickhouse-driver clients are not thread-safe, so one per thread."""
        return Client(self.host, **self.options)


def parse_clickhouse_url(url: str) -> ClickHouseTarget:
    """Parse ``clickhouse://[user:password@]host:port[/database][?option=value]``.

    The path names the database (``sessions`` when absent). Timeouts default low enough that an
    unreachable server is reported within seconds. Raises ``ValueError`` for a URL we cannot use.
    """
    if not url.startswith(("clickhouse://", "clickhouses://")):
        raise ValueError(f"CLICKHOUSE_URL must start with clickhouse:// or clickhouses://, got {url!r}")
    host, options = parse_url(url)
    if not host:
        raise ValueError("CLICKHOUSE_URL has no host")
    database = options.pop("database", None) or DEFAULT_DATABASE
    if not _IDENTIFIER.fullmatch(database):
        raise ValueError(f"CLICKHOUSE_URL names an invalid database {database!r}")
    options.setdefault("connect_timeout", 5)
    options.setdefault("send_receive_timeout", 60)
    options.setdefault("client_name", "sessions")
    return ClickHouseTarget(host=host, database=database, options=options)
