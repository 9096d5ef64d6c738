"""sessions' framework-free core: models, auth, schemas, services, repositories, streams, replication.

Other Python services import this package and call the same services the web app calls::

    from session_core import Settings, UnitOfWork, make_engine, services
"""

from session_core import errors
from session_core.config import Settings
from session_core.db.engine import make_engine
from session_core.db.uow import UnitOfWork
from session_core.services import channels, environments, sessions

services = sessions  # the control-plane use cases, by their most common name

__all__ = ["Settings", "UnitOfWork", "channels", "environments", "errors", "make_engine", "services", "sessions"]
