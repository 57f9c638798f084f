"""Leader election: of all the processes that share a database, one runs the singleton work.

Some work must run once however many replicas exist (the desk's outbox delivery and its
recovery after a crash, the watchdog, the relay that follows Rasa's event broker). Every
replica runs an ``Election`` on the database they share; the one that holds the lock leads
and runs the work, the others keep trying every ``period_seconds``.

- **PostgreSQL**: ``pg_try_advisory_lock(key)`` on a dedicated connection (session level,
  autocommit, outside any pool). The server releases the lock when the session ends, so a
  leader killed with ``kill -9``, or whose machine or connection died, hands over by itself.
  The leader checks twice a period that its session still holds the lock (``pg_locks``); if
  the query fails or the lock is gone, leadership is lost: the work is stopped, and the
  process tries again like any follower. The session also carries an
  ``idle_session_timeout`` (PostgreSQL 14 and newer) of a few periods, so that a leader
  frozen or cut off from the server loses its session on the server's side too, and TCP
  keepalives, so that a dead server is noticed instead of waited on. A newly elected
  leader waits one more period before it starts the work: a previous leader that is alive
  but lost its session checks within half a period, and has stopped by then.
- **SQLite** (one machine): an exclusive ``fcntl.flock`` on a lock file next to the
  database file (``cases.db.firstreply-desk-workers.lock``). The kernel releases it when
  the process dies. The lock file must stay on a local file system (``flock`` over NFS is
  not reliable); deleting it while a process leads makes that process step down.

The key of a name is the first 8 bytes of its SHA-256, as a signed 64-bit integer: stable
across processes, machines and versions. Leadership changes are logged at INFO with where
the lock is (host, port and database, never a user or password).
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import logging
import os
import re
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

    from sqlalchemy.engine import URL, Connection, Engine

log = logging.getLogger(__name__)

DEFAULT_PERIOD_SECONDS = 5.0
# Seconds: connecting, and any one query of the election, must be done within these.
CONNECT_TIMEOUT_SECONDS = 10
STATEMENT_TIMEOUT_SECONDS = 10
# A session idle this many periods (at least IDLE_SESSION_MIN_SECONDS) is ended by the server.
IDLE_SESSION_PERIODS = 6
IDLE_SESSION_MIN_SECONDS = 30
_IDLE_SESSION_SINCE = (14,)  # the PostgreSQL version that has idle_session_timeout
_FILE_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_HOLDS = text(
    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted"
    " AND classid = CAST(:high AS oid) AND objid = CAST(:low AS oid) AND objsubid = 1)"
)


def lock_key(name: str) -> int:
    """Return the advisory lock key of ``name``: a signed 64-bit integer, the same everywhere."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def lock_file(database: str | Path, name: str) -> Path:
    """Return the lock file of ``name`` next to the SQLite file ``database``."""
    path = Path(database).resolve()
    return path.with_name(f"{path.name}.{_FILE_NAME_UNSAFE.sub('-', name).strip('-')}.lock")


class LeaderLock(Protocol):
    """A lock that at most one process holds, released by the system when its holder dies.

    Blocking: ``Election`` calls these in a thread, one at a time.
    """

    description: str
    """Where the lock is, for logs (never a password)."""
    settle_seconds: float
    """How long a new holder waits before it acts (see ``Election``)."""

    def acquire(self) -> bool:
        """Take the lock if nobody holds it; return whether this process holds it now."""

    def holds(self) -> bool:
        """Return whether this process still holds the lock (False also when that cannot be checked)."""

    def release(self) -> None:
        """Give the lock up (if held) and close what holds it."""


class PostgresLock:
    """``pg_try_advisory_lock`` on a dedicated session (see the module docstring)."""

    def __init__(self, url: str | URL, key: int, *, period_seconds: float = DEFAULT_PERIOD_SECONDS) -> None:
        """Lock ``key`` on the database at ``url`` (nothing connects before ``acquire``)."""
        self.url = make_url(url)
        self.key = key
        self.settle_seconds = period_seconds
        self.description = (
            f"PostgreSQL advisory lock {key} on {self.url.host or 'localhost'}:{self.url.port or 5432}/{self.url.database}"
        )
        self._idle_ms = int(1000 * max(IDLE_SESSION_MIN_SECONDS, IDLE_SESSION_PERIODS * period_seconds))
        self._engine: Engine | None = None
        self._conn: Connection | None = None

    def _connect(self) -> Connection:
        if self._conn is None:
            options: dict[str, object] = {}
            if self.url.get_driver_name() == "psycopg2":
                options = {
                    "connect_timeout": CONNECT_TIMEOUT_SECONDS,
                    "keepalives": 1,
                    "keepalives_idle": 5,
                    "keepalives_interval": 2,
                    "keepalives_count": 3,
                    "tcp_user_timeout": 1000 * STATEMENT_TIMEOUT_SECONDS,
                }
            # Its own engine without a pool: a session lock must never go back to a pool.
            self._engine = create_engine(
                self.url, future=True, poolclass=NullPool, isolation_level="AUTOCOMMIT", connect_args=options
            )
            conn = self._engine.connect()
            try:
                settings = {"statement_timeout": str(1000 * STATEMENT_TIMEOUT_SECONDS)}
                if (conn.dialect.server_version_info or (0,)) >= _IDLE_SESSION_SINCE:
                    settings["idle_session_timeout"] = str(self._idle_ms)
                for setting, value in settings.items():
                    conn.execute(text("SELECT set_config(:name, :value, false)"), {"name": setting, "value": value})
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def acquire(self) -> bool:
        """Take the advisory lock if it is free; return whether this session holds it."""
        try:
            conn = self._connect()
            if self.holds():
                return True
            return bool(conn.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": self.key}).scalar())
        except BaseException:
            self._close()
            raise

    def holds(self) -> bool:
        """Return whether this session is alive and holds the lock (asks the server)."""
        if self._conn is None:
            return False
        high, low = (self.key >> 32) & 0xFFFFFFFF, self.key & 0xFFFFFFFF
        try:
            return bool(self._conn.execute(_HOLDS, {"high": high, "low": low}).scalar())
        except SQLAlchemyError as error:
            log.warning("election: %s: the session is gone (%s)", self.description, type(error.orig or error).__name__)
            self._close()
            return False

    def release(self) -> None:
        """Unlock and close the session (ending the session alone would release it too)."""
        if self._conn is not None:
            try:
                self._conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": self.key})
            except SQLAlchemyError as error:
                # The session is broken: the server released the lock with it.
                log.debug("election: unlock failed (%s); the session ends anyway", error)
        self._close()

    def _close(self) -> None:
        conn, engine, self._conn, self._engine = self._conn, self._engine, None, None
        if conn is not None:
            try:
                conn.close()
            except SQLAlchemyError as error:
                log.debug("election: closing a broken session: %s", error)
        if engine is not None:
            engine.dispose()


class FileLock:
    """An exclusive ``flock`` on a lock file (see the module docstring)."""

    settle_seconds = 0.0  # held until the process dies: there is no previous holder still acting

    def __init__(self, path: str | Path) -> None:
        """Lock the file at ``path`` (created when first taken)."""
        self.path = Path(path)
        self.description = f"lock file {self.path}"
        self._fd: int | None = None

    def acquire(self) -> bool:
        """Take the lock if no other process holds it; return whether this process holds it."""
        if self._fd is not None:
            return self.holds()
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        if not self._is_at_path(fd):
            os.close(fd)
            return False  # deleted (or replaced) just before the lock was taken: the next try opens the new file
        self._fd = fd
        # Who holds it, for whoever looks at the file.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{socket.gethostname()} {os.getpid()}\n".encode(), 0)
        return True

    def holds(self) -> bool:
        """Return whether this process holds the lock on the file that is at the path now."""
        if self._fd is None:
            return False
        if not self._is_at_path(self._fd):
            log.warning("election: %s was deleted or replaced while locked", self.path)
            self.release()
            return False
        return True

    def _is_at_path(self, fd: int) -> bool:
        """Return whether ``fd`` is the file at the path (another process opening the path locks the same one)."""
        try:
            here = os.stat(self.path)
        except FileNotFoundError:
            return False
        held = os.fstat(fd)
        return (here.st_dev, here.st_ino) == (held.st_dev, held.st_ino)

    def release(self) -> None:
        """Close the file, which releases the lock."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


class SoloLock:
    """The lock of a database no other process can open (SQLite in memory): always held."""

    settle_seconds = 0.0
    description = "an in-memory database (no other process)"

    def acquire(self) -> bool:
        """Return True: nobody else can lead."""
        return True

    def holds(self) -> bool:
        """Return True."""
        return True

    def release(self) -> None:
        """Nothing to give up."""


def lock_for_database(url: str | URL, name: str, *, period_seconds: float = DEFAULT_PERIOD_SECONDS) -> LeaderLock:
    """Return the lock that elects the leader for ``name`` among the processes using the database at ``url``.

    Raises:
        ValueError: the database is neither PostgreSQL nor SQLite.
    """
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        return PostgresLock(parsed, lock_key(name), period_seconds=period_seconds)
    if backend == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:") or database.startswith("file::memory:"):
            return SoloLock()
        return FileLock(lock_file(database, name))
    raise ValueError(f"leader election needs PostgreSQL or SQLite, not {backend!r}")


class Election:
    """Runs some work in exactly one of the processes that run this election.

    Build it with ``Election.for_database`` and call ``run``; ``leading`` says whether this
    process leads now.
    """

    def __init__(self, lock: LeaderLock, name: str, *, period_seconds: float = DEFAULT_PERIOD_SECONDS) -> None:
        """Elect by ``lock``; followers try every ``period_seconds``, the leader checks twice as often."""
        if period_seconds <= 0:
            raise ValueError(f"period_seconds must be more than 0, got {period_seconds!r}")
        self.lock = lock
        self.name = name
        self.period_seconds = period_seconds
        self.leading = False
        self._unreachable = False

    @classmethod
    def for_database(cls, url: str | URL, name: str, *, period_seconds: float = DEFAULT_PERIOD_SECONDS) -> Election:
        """Return the election of ``name`` among the processes that use the database at ``url``.

        Raises:
            ValueError: the database is neither PostgreSQL nor SQLite.
        """
        return cls(lock_for_database(url, name, period_seconds=period_seconds), name, period_seconds=period_seconds)

    async def try_lead(self) -> bool:
        """Take the lead if nobody has it; return whether this process leads now."""
        try:
            taken = await asyncio.to_thread(self.lock.acquire)
        except (SQLAlchemyError, OSError) as error:
            # Cannot reach the database: not the leader, and try again next period.
            level = logging.DEBUG if self._unreachable else logging.WARNING
            log.log(level, "election %s: cannot reach %s (%s)", self.name, self.lock.description, type(error).__name__)
            self._unreachable = True
            taken = False
        else:
            self._unreachable = False
        if taken and not self.leading:
            log.info("election %s: this process (pid %d) leads (%s)", self.name, os.getpid(), self.lock.description)
        self.leading = taken
        return taken

    async def still_leading(self) -> bool:
        """Check that the lock is still held; return whether this process still leads."""
        held = await asyncio.to_thread(self.lock.holds)
        if self.leading and not held:
            log.info("election %s: this process (pid %d) lost the lead (%s)", self.name, os.getpid(), self.lock.description)
        self.leading = held
        return held

    async def resign(self) -> None:
        """Give the lead up (the work must have stopped)."""
        was = self.leading
        self.leading = False
        await asyncio.to_thread(self.lock.release)
        if was:
            log.info("election %s: this process (pid %d) stepped down", self.name, os.getpid())

    async def run(
        self,
        stop: asyncio.Event,
        work: Callable[[asyncio.Event], Coroutine[Any, Any, None]],
        *,
        on_lost: Callable[[], None] | None = None,
    ) -> None:
        """Run ``work`` whenever this process leads, until ``stop`` is set.

        Args:
            stop: Set to end: the work is stopped, then the lead given up.
            work: Called with an event each time this process becomes the leader; it must
                return soon after the event is set (stop, or the lead was lost).
            on_lost: Called right after the event is set when the lead was lost (not on
                ``stop``): for what must stop at once rather than finish.

        Raises:
            Exception: what ``work`` raised (the lead is given up first).
        """
        try:
            while not stop.is_set():
                if not await self.try_lead() or not await self._settle(stop):
                    await _wait(stop, None, self.period_seconds)
                    continue
                ended = asyncio.Event()
                task = asyncio.create_task(work(ended), name=f"election-{self.name}")
                try:
                    lost = await self._watch(stop, task)
                except BaseException:
                    task.cancel()
                    raise
                ended.set()
                if lost and on_lost is not None:
                    on_lost()
                await task
                if not lost:
                    return  # stopped (or the work ended by itself)
                await self.resign()  # close the broken session; then try again like a follower
        finally:
            await self.resign()

    async def _settle(self, stop: asyncio.Event) -> bool:
        """Wait the lock's settle time after being elected; return whether this process still leads."""
        if self.lock.settle_seconds <= 0:
            return True
        log.info("election %s: starting the work in %.1f s", self.name, self.lock.settle_seconds)
        await _wait(stop, None, self.lock.settle_seconds)
        return not stop.is_set() and await self.still_leading()

    async def _watch(self, stop: asyncio.Event, task: asyncio.Task[None]) -> bool:
        """Check the lead twice a period while ``task`` runs; return True when it was lost."""
        while True:
            await _wait(stop, task, self.period_seconds / 2)
            if stop.is_set() or task.done():
                return False
            if not await self.still_leading():
                return True


async def _wait(stop: asyncio.Event, task: asyncio.Task[None] | None, seconds: float) -> None:
    """Wait ``seconds``, or until ``stop`` is set or ``task`` ends."""
    waiter = asyncio.ensure_future(stop.wait())
    waiters: set[asyncio.Future[Any]] = {waiter} if task is None else {waiter, task}
    await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
