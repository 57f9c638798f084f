"""Engines for FirstReply's own databases: a SQLite file on one machine, PostgreSQL in production.

The case store builds its engine on this (``bot.cases.schema.create_case_engine``), and so
does the channels' database of dedupe keys, inbox and reply records
(``bot.channels.dedupe.channel_engine``), each with its own SQLite pragmas.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.pool import SingletonThreadPool

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine


def sqlite_or_postgres_engine(
    url: str, sqlite_pragmas: Sequence[str], *, sqlite_own_begin: bool = False, sqlite_per_thread: bool = False
) -> Engine:
    """Return a pooled engine for ``url`` (the caller has checked which database it names).

    PostgreSQL connections are checked before each use. On SQLite the file's directory is
    created and every new connection runs ``sqlite_pragmas`` (``PRAGMA`` statements such as
    the busy timeout and the journal mode).

    Args:
        sqlite_own_begin: Stop the sqlite3 module from starting transactions on its own, so
            the engine's ``begin`` event decides how each one starts.
        sqlite_per_thread: Keep one open connection per thread (``ConnectionPerThread``)
            instead of opening one per transaction: for short writes on a hot path, where
            opening the file and running the pragmas costs more than the write itself.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return _fresh_after_fork(create_engine(url, future=True, pool_pre_ping=True))
    database = parsed.database
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, future=True, **({"poolclass": ConnectionPerThread} if sqlite_per_thread else {}))

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        if sqlite_own_begin:
            dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        for pragma in sqlite_pragmas:
            cursor.execute(pragma)
        cursor.close()

    return _fresh_after_fork(engine)


class ConnectionPerThread(SingletonThreadPool):
    """SQLAlchemy's pool of one connection per thread, without its limit on threads.

    ``SingletonThreadPool`` closes arbitrary connections once more threads than its
    ``pool_size`` have used it, also one another thread is in the middle of using; a server's
    thread pools easily pass five. This one keeps every live thread's connection and only lets
    go of those whose thread has ended.
    """

    def __init__(self, creator: Any, pool_size: int = 5, **kw: Any) -> None:
        super().__init__(creator, pool_size=pool_size, **kw)
        self._owners: dict[Any, threading.Thread] = {}
        self._owners_lock = threading.Lock()

    def _do_get(self) -> Any:
        try:
            record = self._conn.current()
            if record:
                return record
        except AttributeError:
            pass
        record = self._create_connection()
        self._conn.current = weakref.ref(record)
        with self._owners_lock:
            for ended in [kept for kept, thread in self._owners.items() if not thread.is_alive()]:
                # Its thread is gone, so nobody uses it; sqlite3 closes it when it is collected.
                del self._owners[ended]
                self._all_conns.discard(ended)
            self._owners[record] = threading.current_thread()
            self._all_conns.add(record)
        return record

    def dispose(self) -> None:
        super().dispose()
        with self._owners_lock:
            self._owners.clear()


def _fresh_after_fork(engine: Engine) -> Engine:
    """Make a process forked from this one open its own connections (return ``engine``).

    Rasa builds its input channels, and so their engines, before it forks its workers
    (``SANIC_WORKERS``, what ``make run`` sets to the number of cores): a connection opened
    before the fork must not be used by two processes. In the child the pool forgets the
    parent's connections without closing them (the parent still uses them).
    """
    kept = weakref.ref(engine)

    def forget_parents_connections() -> None:
        forked = kept()
        if forked is not None:
            forked.dispose(close=False)

    os.register_at_fork(after_in_child=forget_parents_connections)
    return engine
