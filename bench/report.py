"""Turn the results into the Markdown table the issue asks for: rows are metrics, columns servers.

A cell that failed shows ``error`` (the JSON file has the message); a fan-out cell that lost
deliveries says how many, because a fast p99 over records that never arrived would be a lie. The
last two columns are issue 12's goal for the line, if it has one, and whether each column of ours
meets it (against the reference's file store, the ``durable-streams`` column).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.workloads import Config


def _pair(summary: dict[str, Any]) -> str:
    return f"{summary['p50_ms']:.2f} / {summary['p99_ms']:.2f}"


def _latency(cell: dict[str, Any]) -> str:
    return _pair(cell)


def _throughput(cell: dict[str, Any]) -> str:
    text = f"{cell['appends_per_s']:,.0f}"
    return text if cell["appends"] else "0"


def _idle(cell: dict[str, Any]) -> str:
    text = _fanout(cell)
    return f"{text}, {cell['connect_seconds']:.0f} s to connect"


def _fanout(cell: dict[str, Any]) -> str:
    text = _pair(cell["delivery"])
    if cell["missing"]:
        text += f" ({cell['missing']} missing)"
    return text


def _catch_up(mode: str, wanted: int) -> Callable[[dict[str, Any]], str]:
    def render(cell: dict[str, Any]) -> str:
        text = f"{cell[mode]['median_ms']:,.0f}"
        if cell["records"] != wanted:  # the fill ran out of time: say what was really read
            text += f" ({cell['records']:,} records)"
        return text

    return render


def _cpu_per_append(cell: dict[str, Any]) -> str:
    cpu = cell["cpu_seconds"]
    server = cpu.get("server", 0.0) + cpu.get("database", 0.0)
    return f"{1000 * server / cell['appends']:.2f}" if cell["appends"] else "–"


#: The column our goals are measured against: the reference server's file store.
REFERENCE = "durable-streams"


@dataclass(frozen=True)
class Goal:
    """One of issue 12's goals: its text, and whether a cell of ours meets it against the reference's
    cell (None: the reference is needed and missing)."""

    text: str
    met: Callable[[dict[str, Any], dict[str, Any] | None], bool | None]


def _against(
    value: Callable[[dict[str, Any]], float], factor: float, more: bool = False
) -> Callable[..., bool | None]:
    """Ours at most (or, `more`, at least) `factor` times the reference's `value`."""

    def met(ours: dict[str, Any], reference: dict[str, Any] | None) -> bool | None:
        if reference is None or "error" in reference or math.isnan(value(reference)):
            return None
        if more:
            return value(ours) >= factor * value(reference)
        return value(ours) <= factor * value(reference)

    return met


def _complete(check: Callable[..., bool | None]) -> Callable[..., bool | None]:
    """A fan-out goal is only met with every delivery there."""

    def met(ours: dict[str, Any], reference: dict[str, Any] | None) -> bool | None:
        verdict = check(ours, reference)
        return verdict and not ours["missing"] if verdict is not None else None

    return met


APPEND_P50 = Goal("p50 ≤ DS file's", _against(lambda c: c["p50_ms"], 1.0))
THROUGHPUT = Goal("≥ 2× DS file's", _against(lambda c: c["appends_per_s"], 2.0, more=True))
FANOUT_P99 = Goal("p99 ≤ ½ DS file's", _complete(_against(lambda c: c["delivery"]["p99_ms"], 0.5)))
CATCH_UP_JSON = Goal("≤ DS file's", _against(lambda c: c["json"]["median_ms"], 1.0))
IDLE_P99 = Goal("p99 < 500 ms", _complete(lambda ours, _: ours["delivery"]["p99_ms"] < 500))
#: Fan-out sizes with a goal (issue 12: "at 100 and at 1000 subscribers").
FANOUT_GOAL_SIZES = (100, 1000)

Row = tuple[str, str, Callable[[dict[str, Any]], str], Goal | None]


def rows(cfg: Config) -> list[Row]:
    """(label, result key, renderer, goal) for every table row, in the order the issue lists them."""
    table: list[Row] = [
        ("Append latency, 1 writer, p50 / p99 (ms)", "append_latency", _latency, APPEND_P50),
        (f"Append throughput, {cfg.writers} writers (appends/s)", "throughput", _throughput, THROUGHPUT),
        ("Server + database CPU per append at that load (ms)", "throughput", _cpu_per_append, None),
    ]
    for size in cfg.subscribers:
        noun = "subscriber" if size == 1 else "subscribers"
        goal = FANOUT_P99 if size in FANOUT_GOAL_SIZES else None
        table.append((f"Append→SSE delivery, {size} {noun}, p50 / p99 (ms)", f"fanout_{size}", _fanout, goal))
    records = f"{cfg.records:,} records"
    table.append((f"Catch-up read of {records}, SSE (ms)", "catch_up", _catch_up("sse", cfg.records), None))
    table.append(
        (f"Catch-up read of {records}, JSON (ms)", "catch_up", _catch_up("json", cfg.records), CATCH_UP_JSON)
    )
    table.append(
        (
            f"{cfg.idle_subscribers:,} idle subscribers, one worker: delivery p50 / p99 (ms)",
            "idle",
            _idle,
            IDLE_P99,
        )
    )
    return table


def _verdict(goal: Goal | None, cell: dict[str, Any] | None, reference: dict[str, Any] | None) -> str:
    if goal is None:
        return ""
    if cell is None or "error" in cell:
        return "–"
    verdict = goal.met(cell, reference)
    return "–" if verdict is None else ("met" if verdict else "NOT met")


def markdown_table(results: dict[str, dict[str, Any]], cfg: Config) -> str:
    """The table: one column per server, then the goal and, per column of ours, met or not."""
    names = list(results)
    ours = [name for name in names if name.startswith("sessions")]
    met_header = "Met (" + " / ".join(ours) + ")" if ours else "Met"
    header = "| Metric | " + " | ".join(names) + f" | Goal (issue 12) | {met_header} |"
    lines = [header, "|---|" + "---:|" * len(names) + "---|---|"]
    for label, key, render, goal in rows(cfg):
        if not any(key in results[name] for name in names):
            continue
        cells = []
        for name in names:
            cell = results[name].get(key)
            if cell is None:
                cells.append("–")
            elif "error" in cell:
                cells.append("error")
            else:
                cells.append(render(cell))
        reference = results.get(REFERENCE, {}).get(key)
        verdicts = (
            " / ".join(_verdict(goal, results[name].get(key), reference) for name in ours) if goal else ""
        )
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {goal.text if goal else ''} | {verdicts} |")
    return "\n".join(lines)


def setup_line(setup: dict[str, Any]) -> str:
    """One line that says what was measured on what, for pasting under the table."""
    parts = [f"{setup['machine']['cpus']} CPUs", f"fd limit {setup['open_files_limit']}"]
    for name, info in setup.items():
        if isinstance(info, dict) and "pid" in info:
            if "workers" in info:
                fsync = "fsync on" if setup["pg_fsync"] else "fsync off"
                db = f"PostgreSQL ({fsync})" if info["database"] == "postgres" else "SQLite"
                plural = "s" if info["workers"] != 1 else ""
                by = f", sessions addressed by {info['address']}" if "address" in info else ""
                parts.append(f"{name}: {info['workers']} gevent worker{plural} on {db}{by}")
            else:
                store = info.get("store", "file")
                parts.append(f"{name}: @durable-streams/server {info['version']}, {store} store")
    parts.append(f"idempotent appends: {'yes' if setup['idempotent'] else 'no'}")
    for when in ("before", "after"):
        if when in setup:
            probe = setup[when]
            parts.append(
                f"{when}: load {probe['load_average_1m']}, fdatasync p50/p99"
                f" {probe['fdatasync']['p50_ms']:.2f}/{probe['fdatasync']['p99_ms']:.2f} ms"
            )
    return "Setup: " + "; ".join(parts) + "."
