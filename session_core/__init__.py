"""sessions' framework-free core: models, auth, schemas, services, repositories, streams, replication.

Other Python services import this package and call the same use cases the web app calls::

    from session_core import Settings, UnitOfWork, make_engine, sessions
"""

from session_core import errors
from session_core.config import Settings
from session_core.db.engine import make_engine
from session_core.db.uow import UnitOfWork
from session_core.services import environments, sessions

__all__ = ["Settings", "UnitOfWork", "environments", "errors", "make_engine", "sessions"]
