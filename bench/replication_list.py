"""Time ``list_sessions`` (the service layer the list endpoint calls) on ClickHouse and on SQL.

Each cell is one page request, repeated; the two listers alternate inside every repetition so
drift on the machine lands on both columns alike. Each cell also checks that both listers return
the same page: a fast wrong answer would be worthless.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from bench.replication_data import RARE_TAG
from bench.stats import summarize_ms
from session_core.cursors import SessionKey, encode_cursor
from session_core.db.tables import sessions
from session_core.db.uow import UnitOfWork
from session_core.models import Environment, SessionStatus, utcnow
from session_core.repositories.ports import SessionFilters, SessionLister, SessionListQuery
from session_core.repositories.sql import SqlSessionLister
from session_core.scopes import Principal, PrincipalKind
from session_core.services.sessions import SessionPage, list_sessions

__all__ = ["Cell", "ListConfig", "measure_lists"]

PAGE_SIZE = 20


@dataclass(frozen=True)
class ListConfig:
    repetitions: int = 30
    deep_pages: int = 50  # follow this many next cursors, then time the page after them
    warmup: int = 2


@dataclass(frozen=True)
class Cell:
    """One row of the table: a filter, and where the page starts (None: the first page)."""

    name: str
    filters: SessionFilters
    after: str | None = None


def base_cells() -> list[Cell]:
    """The first-page cells; the deep-page cells need cursors and are added by `measure_lists`."""
    return [
        Cell("first page, no filter", SessionFilters()),
        Cell("first page, status ACTIVE", SessionFilters(statuses=(SessionStatus.ACTIVE,))),
        Cell("first page, tag priority:high", SessionFilters(tags=("priority:high",))),
        Cell(
            "first page, type + taskIdentifier",
            SessionFilters(types=("voice.agent",), task_identifiers=("triage",)),
        ),
        Cell(f"first page, rare tag {RARE_TAG}", SessionFilters(tags=(RARE_TAG,))),
    ]


def measure_lists(
    engine: sa.Engine,
    listers: dict[str, SessionLister],
    environment: Environment,
    config: ListConfig,
) -> list[dict[str, Any]]:
    """Time every cell on every lister; returns one result dict per cell."""
    principal = Principal(environment, PrincipalKind.PRIVATE)

    def page(lister: SessionLister, cell: Cell) -> SessionPage:
        return list_sessions(
            lambda: UnitOfWork(engine, read_only=True),
            lister,
            principal,
            cell.filters,
            PAGE_SIZE,
            cell.after,
            None,
            utcnow(),
        )

    cells = base_cells()
    cells.append(_deep_cell(listers, page, config.deep_pages))
    cells.append(_middle_cell(engine, environment))
    results = []
    for cell in cells:
        results.append(_measure_cell(cell, listers, page, config, _matching_rows(engine, environment, cell)))
    return results


def _measure_cell(
    cell: Cell,
    listers: dict[str, SessionLister],
    page: Callable[[SessionLister, Cell], SessionPage],
    config: ListConfig,
    matching: int,
) -> dict[str, Any]:
    pages = {name: [s.id for s in page(lister, cell).sessions] for name, lister in listers.items()}
    for _ in range(config.warmup - 1):
        for lister in listers.values():
            page(lister, cell)
    samples: dict[str, list[float]] = {name: [] for name in listers}
    for _ in range(config.repetitions):
        for name, lister in listers.items():
            started = time.perf_counter()
            page(lister, cell)
            samples[name].append(time.perf_counter() - started)
    first = next(iter(pages.values()))
    return {
        "cell": cell.name,
        "matching_rows": matching,
        "page_rows": len(first),
        "same_pages": all(ids == first for ids in pages.values()),
        **{name: summarize_ms(values) for name, values in samples.items()},
    }


def _deep_cell(
    listers: dict[str, SessionLister], page: Callable[[SessionLister, Cell], SessionPage], depth: int
) -> Cell:
    """Follow ``depth`` next cursors from the first page; the cell is the page after them.

    Every lister walks the same path, and must arrive at the same cursor.
    """
    arrived = set()
    for lister in listers.values():
        cell = Cell("", SessionFilters())
        for _ in range(depth):
            after = page(lister, cell).next_cursor
            if after is None:
                break
            cell = Cell("", SessionFilters(), after)
        arrived.add(cell.after)
    if len(arrived) != 1:
        raise AssertionError(f"the listers disagree after {depth} pages: {sorted(map(str, arrived))}")
    return Cell(f"page {depth + 1} (after {depth} next cursors)", SessionFilters(), arrived.pop())


def _middle_cell(engine: sa.Engine, environment: Environment) -> Cell:
    """A cursor at the middle row of the environment, as a client deep in the list would hold."""
    with engine.connect() as conn:
        total = conn.execute(
            sa.select(sa.func.count()).where(sessions.c.environment_id == environment.id)
        ).scalar_one()
        row = conn.execute(
            sa.select(sessions.c.created_at, sessions.c.id)
            .where(sessions.c.environment_id == environment.id)
            .order_by(sessions.c.created_at.desc(), sessions.c.id.desc())
            .offset(total // 2)
            .limit(1)
        ).one()
    cursor = encode_cursor(SessionKey(row.created_at, row.id))
    return Cell(f"page at row {total // 2:,} (cursor mid-table)", SessionFilters(), cursor)


def _matching_rows(engine: sa.Engine, environment: Environment, cell: Cell) -> int:
    """How many rows the cell's filter matches (its selectivity), counted by the SQL lister."""
    query = SessionListQuery(
        environment.organization_id, environment.project_id, environment.id, filters=cell.filters
    )
    return SqlSessionLister(engine).count(query, utcnow())
