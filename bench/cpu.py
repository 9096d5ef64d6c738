"""CPU seconds spent by process trees during a workload, read from /proc.

On a 2-core machine the servers, PostgreSQL and this client compete for the same cores, so a
latency number alone cannot say who was busy. Each cell therefore also records the CPU its server
tree (gunicorn master + workers, or node), its database tree (the postmaster + backends) and the
load generator used, which turns into "CPU per append" in the JSON.
"""

from __future__ import annotations

import os
import resource
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds) of a live process, or None if it is gone.

    The CPU counts the process itself and its reaped children (utime+stime+cutime+cstime), so a
    PostgreSQL backend or gunicorn worker that exits mid-workload still counts, in its parent.
    """
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # the command name may hold spaces
    return int(fields[1]), sum(int(f) for f in fields[11:15]) / _TICKS


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds of `root`, its live descendants, and the descendants it or they have reaped."""
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            found = _stat(int(entry))
            if found is not None:
                parents[int(entry)], cpu[int(entry)] = found
    members = {root}
    grew = True
    while grew:
        grew = False
        for pid, parent in parents.items():
            if parent in members and pid not in members:
                members.add(pid)
                grew = True
    return sum(cpu.get(pid, 0.0) for pid in members)


def client_cpu_seconds() -> float:
    """CPU seconds of this (load generator) process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class CpuMeter:
    """Snapshot CPU of named process trees and of the client; `delta()` gives seconds since start."""

    def __init__(self, roots: dict[str, int | None]) -> None:
        self.roots = {name: pid for name, pid in roots.items() if pid is not None}
        self.start = self._sample()

    def _sample(self) -> dict[str, float]:
        sample = {name: tree_cpu_seconds(pid) for name, pid in self.roots.items()}
        sample["client"] = client_cpu_seconds()
        return sample

    def delta(self) -> dict[str, float]:
        end = self._sample()
        return {name: round(end[name] - self.start[name], 3) for name in end}
