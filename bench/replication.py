"""Replication lag and list latency at scale: ``python -m bench.replication``.

Issue 5, item 4. Two phases on one private PostgreSQL (``wal_level=logical``) and one ClickHouse
server, both on 127.0.0.1 and stopped by PID at the end:

1. **lag**: ``python -m replicator`` with its default settings streams a steady mix of session
   inserts and closes; how long each change takes to become visible in ClickHouse
   (`bench.replication_lag` says exactly how it is measured).
2. **list**: a million sessions of one environment are loaded into PostgreSQL and ClickHouse
   (`bench.replication_load`), then ``list_sessions`` is timed on the ClickHouse lister and on
   the SQL lister, page by page (`bench.replication_list`).

It prints Markdown tables and writes the full results as JSON under bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/replication.py`: make `bench` and `tests` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import machine  # noqa: E402
from bench.cpu import CpuMeter  # noqa: E402
from bench.replication_data import Dataset  # noqa: E402
from bench.replication_lag import LagConfig, measure_lag, scrape_lag_histogram  # noqa: E402
from bench.replication_list import ListConfig, measure_lists  # noqa: E402
from bench.replication_load import load  # noqa: E402
from bench.replication_report import render  # noqa: E402
from bench.replication_servers import Replicator, Servers, settle_clickhouse  # noqa: E402
from session_core.config import ReplicationSettings  # noqa: E402
from session_core.models import utcnow  # noqa: E402
from session_core.repositories.clickhouse import ClickHouseSessionLister  # noqa: E402
from session_core.repositories.ports import SessionLister  # noqa: E402
from session_core.repositories.sql import SqlSessionLister  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.replication", description=__doc__.splitlines()[0])
    lag, lists = LagConfig(), ListConfig()
    p.add_argument("--phases", default="lag,list", help="comma list of: lag, list")
    p.add_argument("--writes-per-second", type=float, default=lag.writes_per_second)
    p.add_argument("--seconds", type=float, default=lag.seconds, help="how long the writes run")
    p.add_argument("--close-share", type=float, default=lag.close_share, help="closes among the writes")
    p.add_argument("--poll-ms", type=float, default=lag.poll_ms, help="pause between ClickHouse polls")
    p.add_argument("--sessions", type=int, default=1_000_000, help="sessions loaded for the list phase")
    p.add_argument("--days", type=int, default=90, help="how far back their created_at reaches")
    p.add_argument(
        "--load-via",
        choices=["direct", "backfill"],
        default="direct",
        help="into ClickHouse through the replicator's row mapping and sink, or its backfill",
    )
    p.add_argument(
        "--clickhouse-dir",
        help="parent directory for ClickHouse's data (default: the system temp dir), e.g. /dev/shm",
    )
    p.add_argument("--repetitions", type=int, default=lists.repetitions, help="timed requests per cell")
    p.add_argument("--deep-pages", type=int, default=lists.deep_pages, help="next cursors to follow")
    p.add_argument(
        "--replicator-env",
        action="append",
        type=_setting,
        default=[],
        metavar="NAME=VALUE",
        help="override a SESSION_REPLICATION_* setting of the replicator (repeatable; default: none)",
    )
    p.add_argument("--out", type=Path, help="JSON results file (default: bench/results/replication-*.json)")
    return p.parse_args(argv)


def _setting(text: str) -> tuple[str, str]:
    name, _, value = text.partition("=")
    if not name.startswith("SESSION_REPLICATION_") or not value:
        raise argparse.ArgumentTypeError(f"expected SESSION_REPLICATION_NAME=VALUE, got {text!r}")
    return name, value


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    phases = {phase.strip() for phase in args.phases.split(",") if phase.strip()}
    overrides = dict(args.replicator_env)
    started = time.monotonic()
    results: dict[str, Any] = {
        "started_at": utcnow().isoformat(timespec="seconds") + "Z",
        "argv": sys.argv[1:],
        "cpus": os.cpu_count(),
        "replication_settings": asdict(ReplicationSettings.from_env(overrides)),
        "replication_overrides": overrides,
        "machine_before": machine.snapshot(),
    }
    with ExitStack() as stack:
        servers = stack.enter_context(Servers.start(args.clickhouse_dir))
        results["servers"] = servers.describe()
        if "lag" in phases:
            results["lag"] = _lag_phase(servers, args, overrides)
        if "list" in phases:
            results["load"], results["list"] = _list_phase(servers, args, overrides)
    results["machine_after"] = machine.snapshot()
    results["wall_seconds"] = round(time.monotonic() - started, 1)
    print(render(results))
    out = args.out or RESULTS_DIR / f"replication-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str))
    print(f"\nresults: {out}")
    return 0


def _lag_phase(servers: Servers, args: argparse.Namespace, overrides: dict[str, str]) -> dict[str, Any]:
    """Replicate a steady stream of writes (replicator on its defaults bar overrides); measure the lag."""
    environment = servers.environment("lag")
    config = LagConfig(
        writes_per_second=args.writes_per_second,
        seconds=args.seconds,
        close_share=args.close_share,
        poll_ms=args.poll_ms,
    )
    with Replicator(servers, overrides) as replicator:
        replicator.wait_for("replication started", timeout=60)
        # Who used the two cores meanwhile: our servers, this poller, the writer, and the whole machine.
        roots = {"postgres": servers.postgres.pid, "clickhouse": servers.clickhouse.pid}
        meter = CpuMeter({**roots, "replicator": replicator.pid})
        busy = _machine_busy_seconds()
        lag = measure_lag(servers.dsn, servers.clickhouse_url, servers.table, environment, config)
        used = meter.delta()
        cpu = {name: used[name] for name in (*roots, "replicator")}
        cpu |= {"poller": used["client"], "writer": lag.pop("writer_cpu_s")}
        machine_s = _machine_busy_seconds() - busy
        lag["cpu_seconds"] = cpu | {"machine": round(machine_s, 2)}
        lag["replicator_histogram"] = scrape_lag_histogram(replicator.metrics_url)
    return lag


def _machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy (neither idle nor waiting on I/O) since boot, from /proc/stat."""
    ticks = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle, iowait = ticks[3], ticks[4]
    return (sum(ticks) - idle - iowait) / os.sysconf("SC_CLK_TCK")


def _list_phase(
    servers: Servers, args: argparse.Namespace, overrides: dict[str, str]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Load the sessions, let ClickHouse settle, then time every list cell on both listers."""
    environment = servers.environment("list")
    dataset = Dataset(environment, args.sessions, args.days, utcnow())
    direct = args.load_via == "direct"
    loaded: dict[str, Any] = {"sessions": args.sessions, "days": args.days, "via": args.load_via}
    loaded.update(load(dataset, servers.dsn, servers.clickhouse_url if direct else None))
    if not direct:
        started = time.monotonic()
        with Replicator(servers, overrides) as replicator:  # a fresh slot: the replicator backfills
            replicator.wait_for("backfill done", timeout=1800)
            loaded["clickhouse_s"] = round(time.monotonic() - started, 2)  # start-up included
    loaded["clickhouse_settle"] = settle_clickhouse(servers, timeout=120)
    clickhouse = ClickHouseSessionLister(servers.clickhouse_url, servers.engine)
    listers: dict[str, SessionLister] = {"clickhouse": clickhouse, "sql": SqlSessionLister(servers.engine)}
    try:
        config = ListConfig(repetitions=args.repetitions, deep_pages=args.deep_pages)
        return loaded, measure_lists(servers.engine, listers, environment, config)
    finally:
        clickhouse.close()


if __name__ == "__main__":
    raise SystemExit(main())
