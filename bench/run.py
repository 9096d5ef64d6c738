"""Run the benchmark: start every server, measure each workload on each, print a table, save JSON.

Workloads alternate between the servers (latency on all, then throughput on all, …) rather than
running one server's whole suite and then the other's, so slow drift on the machine (page cache,
checkpoints, other tenants) lands on both columns alike. Servers that are not being measured sit
idle. Everything listens on 127.0.0.1 and is stopped by the PID it was started with.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/run.py`: make `bench` and `tests` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import machine, report, servers  # noqa: E402
from bench.cpu import CpuMeter  # noqa: E402
from bench.profile import Profiler  # noqa: E402
from bench.targets import DurableStreamsTarget, SessionsTarget, Target  # noqa: E402
from bench.workloads import Config, append_latency, catch_up, client, fanout, throughput  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    d = Config()
    p.add_argument(
        "--db", choices=["postgres", "sqlite", "both"], default="postgres", help="our server's database"
    )
    p.add_argument("--workers", type=int, default=2, help="gunicorn gevent workers for our server")
    p.add_argument(
        "--pg-fsync",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run PostgreSQL durable (fsync on), like the reference's fdatasync per append",
    )
    p.add_argument("--targets", default="sessions,durable-streams", help="comma list of servers to measure")
    p.add_argument(
        "--protocol",
        choices=["realtime", "ds"],
        default="realtime",
        help="what our server speaks: its realtime routes, or Durable Streams (/v1/stream)",
    )
    p.add_argument(
        "--idempotent", action="store_true", help="X-Part-Id on ours, Producer-Id/Seq on the reference"
    )
    p.add_argument("--payload-bytes", type=int, default=d.payload_bytes)
    p.add_argument("--latency-appends", type=int, default=d.latency_appends)
    p.add_argument("--latency-seconds", type=float, default=d.latency_seconds)
    p.add_argument("--writers", type=int, default=d.writers)
    p.add_argument("--throughput-seconds", type=float, default=d.throughput_seconds)
    p.add_argument("--records", type=int, default=d.records, help="size of the stream the catch-up reads")
    p.add_argument("--fill-seconds", type=float, default=d.fill_seconds, help="bound on writing that stream")
    p.add_argument(
        "--subscribers", default=",".join(map(str, d.subscribers)), help="comma list of fan-out sizes"
    )
    p.add_argument("--fanout-appends", type=int, default=d.fanout_appends)
    p.add_argument(
        "--fanout-min-deliveries",
        type=int,
        default=d.fanout_min_deliveries,
        help="small fan-outs append until this many deliveries",
    )
    p.add_argument(
        "--fanout-interval",
        type=float,
        default=d.fanout_interval,
        help="pause after each fan-out completes (s)",
    )
    p.add_argument(
        "--fanout-seconds", type=float, default=d.fanout_seconds, help="bound on each fan-out cell"
    )
    p.add_argument("--catchup-repeats", type=int, default=d.catchup_repeats)
    p.add_argument(
        "--workloads",
        default="latency,throughput,fanout,catchup",
        help="comma list of: latency, throughput, fanout, catchup",
    )
    p.add_argument(
        "--profile", action="store_true", help="py-spy our workers per workload (bench/profile.py)"
    )
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test of the harness")
    p.add_argument("--out", type=Path, default=RESULTS_DIR, help="directory for the JSON results")
    return p.parse_args(argv)


def make_config(args: argparse.Namespace) -> Config:
    cfg = Config(
        payload_bytes=args.payload_bytes,
        latency_appends=args.latency_appends,
        latency_seconds=args.latency_seconds,
        writers=args.writers,
        throughput_seconds=args.throughput_seconds,
        records=args.records,
        fill_seconds=args.fill_seconds,
        subscribers=tuple(int(s) for s in args.subscribers.split(",") if s),
        fanout_appends=args.fanout_appends,
        fanout_min_deliveries=args.fanout_min_deliveries,
        fanout_interval=args.fanout_interval,
        fanout_seconds=args.fanout_seconds,
        catchup_repeats=args.catchup_repeats,
    )
    if args.quick:
        cfg.latency_appends, cfg.records, cfg.subscribers, cfg.fanout_appends = 100, 500, (1, 10), 10
        cfg.fanout_min_deliveries = 10
        cfg.throughput_seconds = 2.0
        cfg.catchup_repeats = 1
    return cfg


def raise_open_files_limit(wanted: int = 65536) -> int:
    """Lift the soft fd limit toward the hard one: 1000 subscribers need 2000+ sockets on loopback."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def start_targets(args: argparse.Namespace, stack: ExitStack, setup: dict[str, Any]) -> list[Target]:
    """Start the requested servers; each one's stop is registered on `stack`."""
    wanted = {t.strip() for t in args.targets.split(",") if t.strip()}
    targets: list[Target] = []
    if "sessions" in wanted:
        databases = ["postgres", "sqlite"] if args.db == "both" else [args.db]
        for db in databases:
            database_pid = None
            if db == "postgres":
                pg = servers.start_postgres(fsync=args.pg_fsync)
                stack.callback(pg.stop)
                url = pg.database_url(pg.create_database("bench"))
                database_pid = pg.pid
            else:
                tmp = tempfile.mkdtemp(prefix="bench-sqlite-")
                stack.callback(shutil.rmtree, tmp, True)
                url = f"sqlite:///{tmp}/sessions.db"
            live, api_key = servers.start_sessions(url, args.workers)
            stack.callback(live.close)
            target: Target = (
                DurableStreamsTarget(live.base_url, idempotent=args.idempotent, api_key=api_key)
                if args.protocol == "ds"
                else SessionsTarget(live.base_url, api_key, idempotent=args.idempotent)
            )
            target.name = "sessions" if len(databases) == 1 else f"sessions ({db})"
            target.pid = live.pid
            target.cpu_roots = {"server": live.pid, "database": database_pid}
            targets.append(target)
            setup[target.name] = {"pid": live.pid, "workers": args.workers, "database": db}
    if "durable-streams" in wanted:
        ds = servers.DurableStreamsServer().start()
        stack.callback(ds.stop)
        reference = DurableStreamsTarget(ds.base_url, idempotent=args.idempotent)
        reference.pid = ds.pid
        reference.cpu_roots = {"server": ds.pid}
        targets.append(reference)
        version = servers.node_package_version("@durable-streams/server")
        setup["durable-streams"] = {"pid": ds.pid, "version": version, "store": "file"}
    return targets


async def measure(
    targets: list[Target], cfg: Config, run_id: str, workloads: set[str], profile_dir: Path | None
) -> dict[str, dict[str, Any]]:
    """Each workload on each target in turn; an error is recorded for its cell and the run goes on."""
    results: dict[str, dict[str, Any]] = {t.name: {} for t in targets}

    async def cell(target: Target, key: str, work: Any) -> Any:
        profiler = None
        if profile_dir is not None and target.name.startswith("sessions"):
            slug = target.name.replace(" ", "").replace("(", "-").replace(")", "")
            assert target.pid is not None
            profiler = Profiler(target.pid, profile_dir / f"{run_id}-{slug}-{key}.txt")
            await asyncio.sleep(1.0)  # py-spy attaches to every worker before the load starts
        meter = CpuMeter(target.cpu_roots)
        started = time.perf_counter()
        try:
            value = await work
        except Exception as exc:  # noqa: BLE001 - one broken cell must not hide the others
            value = {"error": f"{type(exc).__name__}: {exc}"[:500]}
        value["cpu_seconds"] = meter.delta()
        if profiler is not None:
            await asyncio.to_thread(profiler.stop)
        print(f"  {target.name:<20} {key:<18} {time.perf_counter() - started:6.1f} s", file=sys.stderr)
        results[target.name][key] = value
        return value

    async with client() as http:
        for target in targets if "latency" in workloads else []:
            await cell(target, "append_latency", append_latency(target, http, f"{run_id}-lat", cfg))
        for target in targets if "throughput" in workloads else []:
            await cell(target, "throughput", throughput(target, http, f"{run_id}-tput", cfg))
        for size in cfg.subscribers if "fanout" in workloads else ():
            for target in targets:
                await cell(target, f"fanout_{size}", fanout(target, f"{run_id}-fan{size}", size, cfg))
        for target in targets if "catchup" in workloads else []:
            await cell(target, "catch_up", catch_up(target, http, f"{run_id}-catchup", cfg))
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = make_config(args)
    run_id = f"bench-{int(time.time())}"
    setup: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "open_files_limit": raise_open_files_limit(),
        "before": machine.snapshot(),
        "pg_fsync": args.pg_fsync,
        "idempotent": args.idempotent,
        "protocol": args.protocol,
    }
    started = time.perf_counter()
    with ExitStack() as stack:
        targets = start_targets(args, stack, setup)
        print(f"servers up in {time.perf_counter() - started:.1f} s; measuring", file=sys.stderr)
        workloads = {w.strip() for w in args.workloads.split(",") if w.strip()}
        args.out.mkdir(parents=True, exist_ok=True)
        results = asyncio.run(measure(targets, cfg, run_id, workloads, args.out if args.profile else None))
    setup["after"] = machine.snapshot()
    setup["total_seconds"] = round(time.perf_counter() - started, 1)
    document = {"run_id": run_id, "setup": setup, "config": vars(cfg), "results": results}
    print(report.markdown_table(results, cfg))
    print()
    print(report.setup_line(setup))
    path = args.out / f"{run_id}.json"
    path.write_text(json.dumps(document, indent=2, default=str))
    print(f"\nJSON: {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
