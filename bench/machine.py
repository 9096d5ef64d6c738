"""Facts about the machine at the time of a run, printed under the table.

The numbers move with what else runs on the box: on a shared 2-core machine a parallel test suite
halves a server's CPU and can make ``fdatasync`` 20x slower, which hits the reference (one
``fdatasync`` per append) and PostgreSQL commits alike. The load average and a short fdatasync probe,
taken before and after the run, tell a quiet run from a noisy one.
"""

from __future__ import annotations

import os
import tempfile
import time

from bench.stats import percentile


def load_average() -> float:
    """The 1-minute load average."""
    return round(os.getloadavg()[0], 2)


def fdatasync_probe(directory: str | None = None, count: int = 100) -> dict[str, float]:
    """p50/p99 of appending 100 bytes and fdatasync-ing, `count` times, in a temp file."""
    samples = []
    with tempfile.NamedTemporaryFile(dir=directory, prefix="bench-fsync-") as handle:
        for _ in range(count):
            started = time.perf_counter()
            os.write(handle.fileno(), b"x" * 100)
            os.fdatasync(handle.fileno())
            samples.append((time.perf_counter() - started) * 1000)
    return {"p50_ms": round(percentile(samples, 50), 3), "p99_ms": round(percentile(samples, 99), 3)}


def snapshot() -> dict[str, object]:
    """Load average and fdatasync latency right now."""
    return {"load_average_1m": load_average(), "fdatasync": fdatasync_probe()}
