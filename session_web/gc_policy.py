"""The worker's garbage-collection policy: full passes on a schedule, over young objects only.

A worker holding thousands of live reads keeps hundreds of thousands of long-lived objects (a
greenlet, a socket, a generator and a response each). CPython's automatic full pass traverses them
all, and it is triggered by allocation, so it lands in the middle of a fan-out: one pass over ten
thousand readers stalls every delivery for more than half a second. Instead:

- the automatic full pass is switched off (a very high gen-2 threshold); gen-0 and gen-1 passes
  still collect the short-lived cycles, but a gen-0 pass waits for ``YOUNG_THRESHOLD`` allocations,
  not 700: a fan-out allocates a wake-up per reader that lives until the readers run, and each
  pass over young objects also walks the big young containers holding them;
- every ``interval_seconds`` (``tick``), one full pass runs over whatever is not frozen (what
  survived since the last tick: cheap), and what survives it is frozen (``gc.freeze``): out of every
  later pass, since it has just proved itself alive. Its cost is that of the unfrozen objects alive
  at the tick, so ticks are seconds apart;
- a frozen object that dies is freed by its reference count, unless it dies in a cycle. Those are
  reclaimed by a deep pass (``gc.unfreeze``, full pass, ``gc.freeze``) once the frozen set has grown
  ``deep_growth`` times since the last deep pass: a pause as long as the automatic pass's, but
  rare, and the garbage it can leave waiting stays proportional to the live heap. Counting the
  frozen set walks it, so only every ``checks_every`` ticks look.
"""

from __future__ import annotations

import gc
import logging
import threading
import time

logger = logging.getLogger(__name__)

#: A gen-2 threshold no worker reaches: full passes run only in ``GcPolicy.tick``.
_NO_AUTOMATIC_FULL_PASS = 1_000_000_000
#: Net allocations between two gen-0 passes (CPython's default is 700).
YOUNG_THRESHOLD = 10_000


class GcPolicy:
    """Scheduled full passes and freezing (see the module); ``tick`` is one step of it."""

    def __init__(
        self, deep_growth: float = 2.0, min_deep_objects: int = 100_000, checks_every: int = 12
    ) -> None:
        self._deep_growth = deep_growth
        self._min_deep_objects = min_deep_objects
        self._checks_every = checks_every
        self._ticks = 0
        self._frozen_after_deep_pass = gc.get_freeze_count()

    def install(self) -> None:
        """Space young passes out, and hand full passes over to ``tick``."""
        young, middle, _ = gc.get_threshold()
        gc.set_threshold(max(young, YOUNG_THRESHOLD), middle, _NO_AUTOMATIC_FULL_PASS)

    def tick(self) -> None:
        """Collect what is young, freeze what survives; now and then, a deep pass over everything."""
        gc.collect()
        gc.freeze()
        self._ticks += 1
        if self._ticks % self._checks_every:
            return
        frozen = gc.get_freeze_count()
        if frozen >= max(self._min_deep_objects, self._deep_growth * self._frozen_after_deep_pass):
            gc.unfreeze()
            gc.collect()
            gc.freeze()
            self._frozen_after_deep_pass = gc.get_freeze_count()
            logger.debug("gc deep pass: %d objects frozen (were %d)", self._frozen_after_deep_pass, frozen)


def start_gc_policy(interval_seconds: float = 5.0) -> GcPolicy:
    """Install the policy and tick it every ``interval_seconds`` on a daemon thread (a greenlet
    under gevent's monkey-patching)."""
    policy = GcPolicy()
    policy.install()

    def run() -> None:
        while True:
            time.sleep(interval_seconds)
            policy.tick()

    threading.Thread(target=run, name="gc-policy", daemon=True).start()
    return policy
