"""Markdown tables for ``python -m bench.replication``: replication lag, then list latency.

Every number in them is in the JSON file as well, with the settings and the machine's load.
"""

from __future__ import annotations

from typing import Any

__all__ = ["render"]

LAG_GOAL_MS = 250
FIRST_PAGE_GOAL_MS = 100


def render(results: dict[str, Any]) -> str:
    parts = []
    if "lag" in results:
        parts.append(_lag(results["lag"], results["replication_settings"], results["replication_overrides"]))
    if "list" in results:
        parts.append(_lists(results["load"], results["list"]))
    before, after = results["machine_before"], results["machine_after"]
    clickhouse = results["servers"]["clickhouse"]
    parts.append(
        f"ClickHouse {clickhouse['version']}, parts on {clickhouse['filesystem']} ({clickhouse['mount']});"
        f" PostgreSQL {results['servers']['postgres']['server_version'].split()[0]}."
        f" {results['cpus']} CPUs; load average {before['load_average_1m']} before,"
        f" {after['load_average_1m']} after; whole run {results['wall_seconds']} s."
    )
    return "\n\n".join(parts)


def _lag(lag: dict[str, Any], settings: dict[str, Any], overrides: dict[str, str]) -> str:
    seen, hist = lag["lag"], lag["replicator_histogram"]
    config = lag["config"]
    head = (
        f"### Replication lag, {config['writes_per_second']:.0f} writes/s for {config['seconds']:.0f} s"
        f" (achieved {lag['achieved_writes_per_second']:.0f}/s: {lag['inserts']:,} inserts,"
        f" {lag['closes']:,} closes)\n\n"
        f"Replicator {'settings (overridden: ' + ', '.join(overrides) + ')' if overrides else 'defaults'}:"
        f" flush every {settings['flush_interval_ms']} ms or"
        f" {settings['flush_batch_size']} rows, {settings['max_flush_concurrency']} flush at a time."
        f" Goal: p99 < {LAG_GOAL_MS} ms.\n\n"
        "| measure | p50 ms | p99 ms | max ms | changes |\n|---|---:|---:|---:|---|\n"
    )
    missing = f", **{lag['not_visible']} never seen**" if lag["not_visible"] else ""
    missing += f"; max after the first second {lag['max_after_first_second_ms']:.1f} ms"
    rows = [
        f"| commit returned → row seen in ClickHouse (poll every ~{lag['poll_period_p50_ms']:.1f} ms)"
        f" | {seen['p50_ms']:.1f} | {seen['p99_ms']:.1f} | {seen['max_ms']:.1f}"
        f" | {seen['count']:,}{missing} |",
        f"| replicator's histogram: commit timestamp → insert done (bucket-interpolated)"
        f" | {hist['p50_ms']:.1f} | {hist['p99_ms']:.1f} | – | {hist['count']:,} in {hist['batches']:,}"
        f" batches of {hist['mean_batch_rows']:.1f} rows |",
        f"| replicator's histogram: one ClickHouse insert | {hist['flush_p50_ms']:.1f}"
        f" | {hist['flush_p99_ms']:.1f} | – | |",
    ]
    cpu = lag["cpu_seconds"]
    ours = ", ".join(
        f"{name} {cpu[name]:.1f}" for name in ("clickhouse", "postgres", "replicator", "writer", "poller")
    )
    foot = (
        f"\n\nCPU seconds while it ran: {ours}; all processes on the machine"
        f" {cpu['machine']:.1f} (/proc/stat, 2 cores)."
    )
    return head + "\n".join(rows) + foot


def _lists(loaded: dict[str, Any], cells: list[dict[str, Any]]) -> str:
    settle = loaded["clickhouse_settle"]
    how = "rows.py mapping + ClickHouseSink" if loaded["via"] == "direct" else "the replicator's backfill"
    head = (
        f"### list_sessions at {loaded['sessions']:,} sessions (page size 20;"
        f" {cells[0]['clickhouse']['count']} timed calls per cell)\n\n"
        f"Loaded over {loaded['days']} days: PostgreSQL COPY {loaded['postgres_s']:.0f} s"
        f" (+ VACUUM ANALYZE {loaded['analyze_s']:.0f} s);"
        f" ClickHouse via {how} {loaded['clickhouse_s']:.0f} s;"
        f" {settle['active_parts']} active parts in {settle['partitions']} partitions after merges settled."
        f" Goal: first page < {FIRST_PAGE_GOAL_MS} ms on ClickHouse.\n\n"
        "| page | rows matching | ClickHouse p50 / p99 ms | SQL lister (PostgreSQL) p50 / p99 ms"
        " | same page |\n|---|---:|---:|---:|---|\n"
    )
    rows = [
        f"| {cell['cell']} | {cell['matching_rows']:,} | {_pair(cell['clickhouse'])} | {_pair(cell['sql'])}"
        f" | {'yes' if cell['same_pages'] else '**no**'} |"
        for cell in cells
    ]
    return head + "\n".join(rows)


def _pair(summary: dict[str, Any]) -> str:
    return f"{summary['p50_ms']:.1f} / {summary['p99_ms']:.1f}"
