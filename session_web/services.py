"""The objects a process wires together once (engine, listers, launcher) and views reach them by."""

from __future__ import annotations

import time
from collections.abc import Hashable
from dataclasses import dataclass, field

import sqlalchemy as sa
from flask import current_app

from session_core.auth import CachedEnvironments
from session_core.channels.flight import SingleFlight
from session_core.channels.group_commit import GroupCommit
from session_core.channels.records import ReadBatch
from session_core.channels.wakeups import WakeupHub
from session_core.config import Settings
from session_core.db.uow import UnitOfWork
from session_core.durable.service import DsAppendGroups, ReadResult
from session_core.repositories.ports import SessionLister
from session_core.services.channels import AppendGroups, SessionLookups
from session_core.services.runs import RunLauncher
from session_core.services.tokens import spend_one_time_token
from session_web.live_reads import LiveReads


@dataclass
class Services:
    settings: Settings
    engine: sa.Engine
    lister: SessionLister
    launcher: RunLauncher
    hub: WakeupHub
    #: Live readers of one channel woken together share one read of it.
    reads: SingleFlight[tuple[str, int, int], ReadBatch] = field(default_factory=SingleFlight)
    #: Live readers naming one session at once share one lookup of it.
    session_lookups: SessionLookups = field(default_factory=SingleFlight)
    #: Appends to one channel arriving together are written in one transaction.
    appends: AppendGroups = field(default_factory=GroupCommit)
    #: Live readers of one Durable Stream at one position at once share one read of it.
    ds_reads: SingleFlight[tuple[Hashable, int], ReadResult] = field(default_factory=SingleFlight)
    #: Appends to one Durable Stream arriving together are written in one transaction.
    ds_appends: DsAppendGroups = field(default_factory=GroupCommit)
    #: Environments by key and id, remembered so authenticating a request costs no round trip.
    environments: CachedEnvironments = field(init=False)
    #: The live reads (SSE) this worker holds, admitted up to ``settings.max_live_reads``.
    live_reads: LiveReads = field(init=False)

    def __post_init__(self) -> None:
        self.environments = CachedEnvironments(self.read_uow, self.settings.auth_cache_seconds)
        self.live_reads = LiveReads(self.settings.max_live_reads)

    def uow(self) -> UnitOfWork:
        return UnitOfWork(self.engine, self.hub, pg_prepare=self.settings.pg_prepare)

    def spend_token(self, token_hash: str, expires_at: int) -> bool:
        """Spend a one-time-use token (``authenticate``'s ``spend``); True for its first use only."""
        return spend_one_time_token(self.uow(), token_hash, expires_at, time.time())

    def read_uow(self) -> UnitOfWork:
        """A unit of work for use cases that only read (auth, retrieve, lists, channel reads)."""
        return UnitOfWork(self.engine, self.hub, read_only=True, pg_prepare=self.settings.pg_prepare)


def services() -> Services:
    """The current app's services (set up by ``create_app``)."""
    found: Services = current_app.extensions["sessions"]
    return found
