"""The objects a process wires together once (engine, listers, launcher) and views reach them by."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from flask import current_app

from session_core.config import Settings
from session_core.db.uow import UnitOfWork
from session_core.repositories.ports import SessionLister
from session_core.services.runs import RunLauncher
from session_core.streams.wakeups import WakeupHub


@dataclass
class Services:
    settings: Settings
    engine: sa.Engine
    lister: SessionLister
    launcher: RunLauncher
    hub: WakeupHub

    def uow(self) -> UnitOfWork:
        return UnitOfWork(self.engine, self.hub)


def services() -> Services:
    """The current app's services (set up by ``create_app``)."""
    found: Services = current_app.extensions["sessions"]
    return found
