"""Sample our server with py-spy while the benchmark runs, and summarize where its time went.

``python -m bench --profile`` records every gunicorn worker (``--subprocesses``) into collapsed
stacks (``--format raw``) under bench/results/ (the idle-subscribers line in two files, ``-connect``
while its readers connect and ``-fanout`` while records go out); ``python -m bench.profile FILE``
prints the functions with the most samples, inclusive and self, plus the idle share, so a slow line
in the table can be traced to code without a flame-graph viewer. py-spy needs ptrace rights (root,
or CAP_SYS_PTRACE).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

# Frames that mean "waiting, not working" in a gevent worker.
IDLE_MARKERS = ("gevent/hub.py", "select", "epoll", "wait (", "_wait", "recv_into", "run (gevent/libev")


class Profiler:
    """A py-spy recording of one process tree, stopped with SIGINT so that it writes its file."""

    def __init__(self, pid: int, out: Path, rate: int = 250) -> None:
        binary = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        self.out = out
        command = [binary, "record", "--pid", str(pid), "--subprocesses", "--rate", str(rate)]
        command += ["--format", "raw", "--nonblocking", "-o", str(out)]
        self.log = open(out.with_suffix(".log"), "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT)

    def stop(self) -> Path:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.out


class Phases:
    """One py-spy recording per phase of a workload (``STEM-PHASE.txt``): awaiting ``phases(name)``
    ends the current phase's recording and starts the next; `stop` ends the last."""

    def __init__(self, pid: int, stem: Path) -> None:
        self.pid = pid
        self.stem = stem
        self.current: Profiler | None = None

    async def __call__(self, name: str) -> None:
        await asyncio.to_thread(self.stop)
        self.current = Profiler(self.pid, self.stem.with_name(f"{self.stem.name}-{name}.txt"))
        await asyncio.sleep(1.0)  # py-spy attaches to every worker before the phase starts

    def stop(self) -> None:
        if self.current is not None:
            self.current.stop()
            self.current = None


def load(path: Path) -> list[tuple[list[str], int]]:
    """Collapsed stacks: ``frame;frame;… count`` per line, outermost frame first."""
    stacks = []
    for line in path.read_text().splitlines():
        frames, _, count = line.rpartition(" ")
        if frames and count.isdigit():
            stacks.append((frames.split(";"), int(count)))
    return stacks


def summarize(path: Path, top: int = 25, contains: str | None = None) -> str:
    """Top functions by inclusive and self samples; `contains` keeps only stacks through a frame."""
    stacks = load(path)
    if contains:
        stacks = [(f, c) for f, c in stacks if any(contains in frame for frame in f)]
    total = sum(c for _, c in stacks) or 1
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    idle = 0
    for frames, count in stacks:
        for frame in set(frames):
            inclusive[frame] += count
        own[frames[-1]] += count
        if any(marker in frames[-1] for marker in IDLE_MARKERS):
            idle += count
    lines = [f"{path.name}: {total} samples, leaf in a wait/idle frame: {100 * idle / total:.0f}%"]
    for title, counter in (("inclusive", inclusive), ("self", own)):
        lines.append(f"\n-- top {top} by {title} --")
        for frame, count in counter.most_common(top):
            lines.append(f"{100 * count / total:5.1f}%  {frame[:150]}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Summarize a py-spy raw (collapsed) profile.")
    parser.add_argument("file", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--contains", help="only stacks that pass through a frame containing this text")
    args = parser.parse_args(argv)
    print(summarize(args.file, args.top, args.contains))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
