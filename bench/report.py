"""Turn the results into the Markdown table the issue asks for: rows are metrics, columns servers.

A cell that failed shows ``error`` (the JSON file has the message); a fan-out cell that lost
deliveries says how many, because a fast p99 over records that never arrived would be a lie.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench.workloads import Config


def _pair(summary: dict[str, Any]) -> str:
    return f"{summary['p50_ms']:.2f} / {summary['p99_ms']:.2f}"


def _latency(cell: dict[str, Any]) -> str:
    return _pair(cell)


def _throughput(cell: dict[str, Any]) -> str:
    text = f"{cell['appends_per_s']:,.0f}"
    return text if cell["appends"] else "0"


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


def rows(cfg: Config) -> list[tuple[str, str, Callable[[dict[str, Any]], str]]]:
    """(label, result key, renderer) for every table row, in the order the issue lists them."""
    table = [
        ("Append latency, 1 writer, p50 / p99 (ms)", "append_latency", _latency),
        (f"Append throughput, {cfg.writers} writers (appends/s)", "throughput", _throughput),
        ("Server + database CPU per append at that load (ms)", "throughput", _cpu_per_append),
    ]
    for size in cfg.subscribers:
        noun = "subscriber" if size == 1 else "subscribers"
        table.append((f"Append→SSE delivery, {size} {noun}, p50 / p99 (ms)", f"fanout_{size}", _fanout))
    table.append(
        (f"Catch-up read of {cfg.records:,} records, SSE (ms)", "catch_up", _catch_up("sse", cfg.records))
    )
    table.append(
        (f"Catch-up read of {cfg.records:,} records, JSON (ms)", "catch_up", _catch_up("json", cfg.records))
    )
    return table


def markdown_table(results: dict[str, dict[str, Any]], cfg: Config) -> str:
    names = list(results)
    lines = ["| Metric | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for label, key, render in rows(cfg):
        cells = []
        for name in names:
            cell = results[name].get(key)
            if cell is None:
                cells.append("–")
            elif "error" in cell:
                cells.append("error")
            else:
                cells.append(render(cell))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
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
                parts.append(f"{name}: {info['workers']} gevent worker{plural} on {db}")
            else:
                parts.append(f"{name}: @durable-streams/server {info['version']}, file store")
    parts.append(f"idempotent appends: {'yes' if setup['idempotent'] else 'no'}")
    for when in ("before", "after"):
        if when in setup:
            probe = setup[when]
            parts.append(
                f"{when}: load {probe['load_average_1m']}, fdatasync p50/p99"
                f" {probe['fdatasync']['p50_ms']:.2f}/{probe['fdatasync']['p99_ms']:.2f} ms"
            )
    return "Setup: " + "; ".join(parts) + "."
