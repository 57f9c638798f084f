"""Rasa's SQL tracker store on a SQLite file, tuned for a server that must not block.

Rasa's ``SQLTrackerStore`` saves a conversation synchronously, inside the server's
event loop, after every message. On SQLite's default rollback journal each save waits
for an fsync, which stalls every other conversation. Here the same store (same tables,
same code) runs with write-ahead logging and ``synchronous=NORMAL``: a save is one
sequential append, readers are not blocked by the writer, and a crashed or killed
process loses nothing. What WAL with NORMAL gives up is the last commits on a power
loss of the machine itself; production uses PostgreSQL (docs/configuration.md).

``endpoints.yml``::

    tracker_store:
      type: bot.trackers.SQLiteTrackerStore
      db: var/trackers.db
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from rasa.core.brokers.broker import EventBroker
from rasa.core.tracker_store import SQLTrackerStore
from rasa.shared.core.domain import Domain
from sqlalchemy import create_engine, event
from sqlalchemy.orm import sessionmaker
from sqlalchemy.pool import QueuePool

BUSY_TIMEOUT_MS = 30_000


def _tune(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cursor.close()


class SQLiteTrackerStore(SQLTrackerStore):
    """``SQLTrackerStore`` on a SQLite file in WAL mode."""

    def __init__(
        self,
        domain: Optional[Domain] = None,
        db: str = "var/trackers.db",
        event_broker: Optional[EventBroker] = None,
        **kwargs: Any,
    ) -> None:
        """Open (and create) the SQLite file ``db``; other arguments as ``SQLTrackerStore``."""
        for ignored in ("host", "dialect", "port", "username", "password", "login_db"):
            kwargs.pop(ignored, None)
        Path(db).parent.mkdir(parents=True, exist_ok=True)
        super().__init__(domain=domain, dialect="sqlite", db=db, event_broker=event_broker, **kwargs)
        # SQLAlchemy 1.4 opens and closes a SQLite file connection per session; a small
        # pool keeps them open (and tuned once), as it does for any other database.
        self.engine.dispose()
        self.engine = create_engine(
            self.engine.url, poolclass=QueuePool, pool_size=2, connect_args={"check_same_thread": False}
        )
        event.listen(self.engine, "connect", _tune)
        self.sessionmaker = sessionmaker(bind=self.engine)
