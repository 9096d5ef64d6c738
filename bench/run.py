"""Run the benchmark: start every server, measure each workload on each, print a table, save JSON.

Workloads alternate between the servers (latency on all, then throughput on all, …) rather than
running one server's whole suite and then the other's, so slow drift on the machine (page cache,
checkpoints, other tenants) lands on every column alike. Servers that are not being measured sit
idle. Everything listens on 127.0.0.1 and is stopped by the PID it was started with.

The columns: ``sessions`` (ours, each session addressed by its externalId), ``sessions-id`` (the same
server, the same kind of session, addressed by its ``session_…`` friendly id), ``durable-streams``
(the reference, file store) and ``durable-streams-memory`` (the reference, in-memory store). The
idle-subscribers line starts ours again with one worker, for that line only.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/run.py`: make `bench` and `tests` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import machine, report, servers  # noqa: E402
from bench.cpu import CpuMeter  # noqa: E402
from bench.idle import idle_subscribers  # noqa: E402
from bench.profile import Phases, Profiler  # noqa: E402
from bench.targets import DurableStreamsTarget, SessionsTarget, Target  # noqa: E402
from bench.workloads import Config, append_latency, catch_up, client, fanout, throughput  # noqa: E402
from tests.servers import LiveServer  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent / "results"
ALL_TARGETS = "sessions,sessions-id,durable-streams,durable-streams-memory"
ALL_WORKLOADS = "latency,throughput,fanout,catchup,idle"
IDLE_TARGETS = "sessions,durable-streams,durable-streams-memory"


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
    p.add_argument("--targets", default=ALL_TARGETS, help="comma list of servers to measure")
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
        "--idle-subscribers",
        type=int,
        default=d.idle_subscribers,
        help="idle SSE readers on one stream (ours: on a one-worker server)",
    )
    p.add_argument("--idle-appends", type=int, default=d.idle_appends, help="records fanned out to them")
    p.add_argument(
        "--idle-targets",
        default=IDLE_TARGETS,
        help="the targets that run the idle line (sessions-id costs another ~45 s and differs from"
        " sessions only in how each reader's session is looked up)",
    )
    p.add_argument(
        "--idle-processes", type=int, default=d.idle_processes, help="client processes holding the readers"
    )
    p.add_argument("--workloads", default=ALL_WORKLOADS, help=f"comma list of: {ALL_WORKLOADS}")
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
        idle_subscribers=args.idle_subscribers,
        idle_appends=args.idle_appends,
        idle_processes=args.idle_processes,
    )
    if args.quick:
        cfg.latency_appends, cfg.records, cfg.subscribers, cfg.fanout_appends = 100, 500, (1, 10), 10
        cfg.fanout_min_deliveries = 10
        cfg.throughput_seconds = 2.0
        cfg.catchup_repeats = 1
        cfg.idle_subscribers, cfg.idle_appends, cfg.idle_settle_seconds = 300, 3, 0.5
    return cfg


def raise_open_files_limit(wanted: int = 65536) -> int:
    """Lift the soft fd limit toward the hard one: 1000 subscribers need 2000+ sockets on loopback."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


@dataclass
class OneWorker:
    """Our server on the same database with ONE gevent worker, for the idle-subscribers line only.

    Started for that line's cell and stopped after it, so it sits idle through nothing else, and each
    id form gets a fresh one. Its live-read limit is lifted to the line's size (the default admits 10,000).
    """

    database_url: str
    database_pid: int | None
    protocol: str
    idempotent: bool
    live: LiveServer | None = None
    api_key: str = ""
    starts: int = 0

    def target(self, like: Target, readers: int) -> Target:
        """A target like `like` (its name and id form) on the one-worker server, started if need be."""
        if self.live is None:
            env = {"SESSIONS_MAX_LIVE_READS": str(max(10_000, readers + 100))}
            self.starts += 1
            slug = f"bench-idle-{self.starts}"
            self.live, self.api_key = servers.start_sessions(self.database_url, 1, env, slug=slug)
        by_id = isinstance(like, SessionsTarget) and like.by_id
        target = _sessions_target(self.live.base_url, self.api_key, self.protocol, self.idempotent, by_id)
        target.name = like.name
        target.pid = self.live.pid
        target.cpu_roots = {"server": self.live.pid, "database": self.database_pid}
        return target

    def stop(self) -> None:
        if self.live is not None:
            self.live.close()
            self.live = None


def _sessions_target(base_url: str, api_key: str, protocol: str, idempotent: bool, by_id: bool) -> Target:
    if protocol == "ds":  # the DS protocol addresses streams by path: there is no second id form
        return DurableStreamsTarget(base_url, idempotent=idempotent, api_key=api_key)
    return SessionsTarget(base_url, api_key, idempotent=idempotent, by_id=by_id)


def start_targets(
    args: argparse.Namespace, stack: ExitStack, setup: dict[str, Any]
) -> tuple[list[Target], dict[str, OneWorker]]:
    """Start the requested servers, each one's stop registered on `stack`; also return, per target of
    ours, the one-worker server its idle-subscribers line runs on (not started yet)."""
    wanted = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = set(wanted) - set(ALL_TARGETS.split(","))
    if unknown:
        raise SystemExit(f"unknown targets: {', '.join(sorted(unknown))} (choose from {ALL_TARGETS})")
    targets: list[Target] = []
    one_worker: dict[str, OneWorker] = {}
    forms = [form for form in ("sessions", "sessions-id") if form in wanted]
    if args.protocol == "ds":
        forms = forms[:1]
    databases = ["postgres", "sqlite"] if args.db == "both" else [args.db]
    for db in databases if forms else []:
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
        idle = OneWorker(url, database_pid, args.protocol, args.idempotent)
        stack.callback(idle.stop)
        for form in forms:
            target = _sessions_target(
                live.base_url, api_key, args.protocol, args.idempotent, form == "sessions-id"
            )
            target.name = form if len(databases) == 1 else f"{form} ({db})"
            target.pid = live.pid
            target.cpu_roots = {"server": live.pid, "database": database_pid}
            targets.append(target)
            one_worker[target.name] = idle
            setup[target.name] = {
                "pid": live.pid,
                "workers": args.workers,
                "database": db,
                "address": "session_… id" if form == "sessions-id" else "externalId",
            }
    version = (
        servers.node_package_version("@durable-streams/server") if "durable-streams" in str(wanted) else ""
    )
    for name, store in (("durable-streams", "file"), ("durable-streams-memory", "memory")):
        if name not in wanted:
            continue
        ds = servers.DurableStreamsServer(store).start()
        stack.callback(ds.stop)
        reference = DurableStreamsTarget(ds.base_url, idempotent=args.idempotent)
        reference.name = name
        reference.pid = ds.pid
        reference.cpu_roots = {"server": ds.pid}
        targets.append(reference)
        setup[name] = {"pid": ds.pid, "version": version, "store": store}
    return targets, one_worker


async def measure(
    targets: list[Target],
    one_worker: dict[str, OneWorker],
    cfg: Config,
    run_id: str,
    workloads: set[str],
    profile_dir: Path | None,
    idle_targets: set[str] | None = None,
) -> dict[str, dict[str, Any]]:
    """Each workload on each target in turn; an error is recorded for its cell and the run goes on."""
    results: dict[str, dict[str, Any]] = {t.name: {} for t in targets}

    def profile_stem(target: Target, key: str) -> Path | None:
        """Where `target`'s profile of `key` goes, if this run profiles it (ours only)."""
        if profile_dir is None or not target.name.startswith("sessions"):
            return None
        slug = target.name.replace(" ", "").replace("(", "-").replace(")", "")
        return profile_dir / f"{run_id}-{slug}-{key}"

    async def cell(target: Target, key: str, work: Any, profile: bool = True) -> Any:
        profiler = None
        stem = profile_stem(target, key) if profile else None
        if stem is not None:
            assert target.pid is not None
            profiler = Profiler(target.pid, stem.with_suffix(".txt"))
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
        print(f"  {target.name:<24} {key:<18} {time.perf_counter() - started:6.1f} s", file=sys.stderr)
        results[target.name][key] = value
        return value

    async def idle_target(target: Target) -> Target | None:
        """Where `target`'s idle line runs: ours on its one-worker server (started on first use)."""
        if target.name not in one_worker:
            return target
        try:
            return await asyncio.to_thread(one_worker[target.name].target, target, cfg.idle_subscribers)
        except Exception as exc:  # noqa: BLE001 - recorded in the cell, the run goes on
            results[target.name]["idle"] = {"error": f"one-worker server: {type(exc).__name__}: {exc}"[:500]}
            return None

    def stream(target: Target, key: str) -> str:
        """A stream name of its own per target: both id forms of ours share one server."""
        return f"{run_id}-{key}-{targets.index(target)}"

    async with client() as http:
        for target in targets if "latency" in workloads else []:
            await cell(target, "append_latency", append_latency(target, http, stream(target, "lat"), cfg))
        for target in targets if "throughput" in workloads else []:
            await cell(target, "throughput", throughput(target, http, stream(target, "tput"), cfg))
        for size in cfg.subscribers if "fanout" in workloads else ():
            for target in targets:
                await cell(target, f"fanout_{size}", fanout(target, stream(target, f"fan{size}"), size, cfg))
        for target in targets if "catchup" in workloads else []:
            await cell(target, "catch_up", catch_up(target, http, stream(target, "catchup"), cfg))
        if "idle" in workloads and cfg.idle_subscribers > 0:
            try:
                for target in targets:
                    if idle_targets is not None and target.name.split(" ")[0] not in idle_targets:
                        continue
                    on = await idle_target(target)
                    if on is not None:
                        stem = profile_stem(on, "idle")
                        phases = Phases(on.pid, stem) if stem is not None and on.pid is not None else None
                        name = stream(target, "idle")
                        try:
                            work = idle_subscribers(on, http, name, cfg.idle_subscribers, cfg, phases)
                            await cell(on, "idle", work, profile=False)
                        finally:
                            if phases is not None:
                                await asyncio.to_thread(phases.stop)
                    if target.name in one_worker:
                        # A fresh server per id form: the readers just reset still hold their live-read
                        # slots in the old one until its next ping finds them gone.
                        await asyncio.to_thread(one_worker[target.name].stop)
            finally:
                for server in {id(s): s for s in one_worker.values()}.values():
                    await asyncio.to_thread(server.stop)
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
        targets, one_worker = start_targets(args, stack, setup)
        print(f"servers up in {time.perf_counter() - started:.1f} s; measuring", file=sys.stderr)
        workloads = {w.strip() for w in args.workloads.split(",") if w.strip()}
        args.out.mkdir(parents=True, exist_ok=True)
        profile_dir = args.out if args.profile else None
        idle_targets = {t.strip() for t in args.idle_targets.split(",") if t.strip()}
        results = asyncio.run(measure(targets, one_worker, cfg, run_id, workloads, profile_dir, idle_targets))
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
