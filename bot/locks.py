"""Lock stores for Rasa whose every step is atomic: Redis (replicas) and SQLite (workers of one machine).

Rasa 3.6's ``RedisLockStore`` keeps each conversation's ticket queue as one JSON value
and changes it by read-modify-write (GET, change, SET): two replicas receiving messages of
the same conversation at the same moment can both read "no lock", both issue ticket 0 and
both process at once (one message then goes missing from the tracker), and ``cleanup`` can
delete a lock another replica has just queued on. Here issuing a ticket, checking whose turn
it is and giving the turn up are each a Lua script, so Redis runs them one at a time. And a
ticket lives by a short lease its replica renews (``lease_seconds``), never past the lock's
lifetime: a replica killed holding a conversation's turn lets it go within a lease (10 s), not
after Rasa's whole ``TICKET_LOCK_LIFETIME`` (60 s).

endpoints.yml::

    lock_store:
      type: bot.locks.AtomicRedisLockStore
      url: ${REDIS_HOST}
      port: ${REDIS_PORT}
      lease_seconds: 10         (optional)
      ...                       (the same keys as Rasa's ``type: redis``)

``SQLiteLockStore`` does the same in a SQLite file, for several Rasa worker processes on one
machine (``make run`` starts one per core): each step is one transaction, and a ticket whose
process is gone (killed, restarted) is dropped at once rather than when it expires, so a
conversation a dead worker held goes on as soon as another takes it::

    lock_store:
      type: bot.locks.SQLiteLockStore
      db: var/locks.db
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncGenerator, Optional

from rasa.core.lock import TicketLock
from rasa.core.lock_store import LOCK_LIFETIME, LockError, LockStore, RedisLockStore
from rasa.utils.endpoints import EndpointConfig

log = logging.getLogger(__name__)

# KEYS: next-ticket counter, queue (ZSET ticket -> ticket), deadlines (HASH ticket -> ms), leases
# (HASH ticket -> ms). A ticket lives until its deadline (the lock's lifetime) but only while its
# lease is renewed: a replica that dies lets its tickets go within a lease, not a lifetime. A ticket
# without a lease (issued by an older release) lives to its deadline. Redis's own clock: replicas'
# clocks may differ.
_NOW = """
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
"""
# ARGV: lifetime in ms, lease in ms. Returns the new ticket.
_ISSUE = _NOW + """
local ticket = redis.call('INCR', KEYS[1])
local deadline = ms + tonumber(ARGV[1])
redis.call('ZADD', KEYS[2], ticket, ticket)
redis.call('HSET', KEYS[3], ticket, deadline)
redis.call('HSET', KEYS[4], ticket, math.min(ms + tonumber(ARGV[2]), deadline))
for _, key in ipairs(KEYS) do redis.call('PEXPIRE', key, 2 * tonumber(ARGV[1])) end
return ticket
"""
# ARGV: ticket, lease in ms. Drops tickets past their deadline or lease; renews the ticket's
# lease; returns 1 (its turn), 0 (wait) or -1 (it was dropped).
_TURN = _NOW + """
for _, ticket in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  local deadline = tonumber(redis.call('HGET', KEYS[3], ticket) or 0)
  local lease = tonumber(redis.call('HGET', KEYS[4], ticket) or deadline)
  if math.min(deadline, lease) <= ms then
    redis.call('ZREM', KEYS[2], ticket)
    redis.call('HDEL', KEYS[3], ticket)
    redis.call('HDEL', KEYS[4], ticket)
  end
end
if not redis.call('ZSCORE', KEYS[2], ARGV[1]) then return -1 end
local deadline = tonumber(redis.call('HGET', KEYS[3], ARGV[1]))
redis.call('HSET', KEYS[4], ARGV[1], math.min(ms + tonumber(ARGV[2]), deadline))
local head = redis.call('ZRANGE', KEYS[2], 0, 0)[1]
if head == ARGV[1] then return 1 end
return 0
"""
# ARGV: ticket, lease in ms. Renews the held ticket's lease (never past its deadline); 0 if it is gone.
_RENEW = _NOW + """
local deadline = tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or 0)
if deadline <= ms then return 0 end
redis.call('HSET', KEYS[4], ARGV[1], math.min(ms + tonumber(ARGV[2]), deadline))
return 1
"""
# ARGV: ticket. Gives the turn up; the last one out removes the keys.
_RELEASE = """
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('HDEL', KEYS[4], ARGV[1])
if redis.call('ZCARD', KEYS[2]) == 0 then redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4]) end
return 1
"""
FIRST_POLL_S = 0.01
# How long a Redis ticket outlives its replica's last renewal (``lease_seconds`` in endpoints.yml).
LEASE_SECONDS = 10.0
# Renewals per lease while a ticket is held: a few missed (a busy event loop) still keep it.
RENEWALS_PER_LEASE = 4


class TicketQueue:
    """A conversation's turn by tickets, first come first served: ``lock`` over three atomic steps.

    A store supplies ``_take_ticket``, ``_ticket_turn`` (1: yours, 0: wait, -1: expired) and
    ``_give_ticket_up``, each atomic in its engine; one whose tickets live by a lease also
    ``lease_seconds`` and ``_renew_ticket``, called while the turn is held.
    """

    lease_seconds: Optional[float] = None

    def _take_ticket(self, conversation_id: str, lifetime: float) -> int:
        raise NotImplementedError

    def _ticket_turn(self, conversation_id: str, ticket: int) -> int:
        raise NotImplementedError

    def _give_ticket_up(self, conversation_id: str, ticket: int) -> None:
        raise NotImplementedError

    def _renew_ticket(self, conversation_id: str, ticket: int) -> bool:
        """Renew a held ticket's lease; return False if it is gone (past the lock's lifetime)."""
        raise NotImplementedError

    @asynccontextmanager
    async def lock(
        self, conversation_id: str, lock_lifetime: float = LOCK_LIFETIME, wait_time_in_seconds: float = 1
    ) -> AsyncGenerator[TicketLock, None]:
        """Wait for this conversation's turn (first come, first served), hold it, give it up.

        Raises:
            LockError: the ticket expired (``lock_lifetime`` seconds) before its turn came.
        """
        ticket = self._take_ticket(conversation_id, lock_lifetime)
        renewing: Optional[asyncio.Task[None]] = None
        if self.lease_seconds is not None:  # each check renews the waiting ticket's lease
            wait_time_in_seconds = min(wait_time_in_seconds, self.lease_seconds / RENEWALS_PER_LEASE)
        try:
            poll = FIRST_POLL_S
            while True:
                turn = self._ticket_turn(conversation_id, ticket)
                if turn == 1:
                    break
                if turn == -1:
                    raise LockError(f"Could not acquire lock for conversation_id '{conversation_id}'.")
                await asyncio.sleep(poll)
                poll = min(poll * 2, wait_time_in_seconds)
            if self.lease_seconds is not None:
                renewing = asyncio.get_running_loop().create_task(self._keep_renewing(conversation_id, ticket))
            yield TicketLock(conversation_id)
        finally:
            if renewing is not None:
                renewing.cancel()
            self._give_ticket_up(conversation_id, ticket)

    async def _keep_renewing(self, conversation_id: str, ticket: int) -> None:
        """Renew the held ticket's lease until cancelled, or until the lock's lifetime is over."""
        assert self.lease_seconds is not None
        while True:
            await asyncio.sleep(self.lease_seconds / RENEWALS_PER_LEASE)
            try:
                if not self._renew_ticket(conversation_id, ticket):
                    log.warning("conversation %s: still handled after its lock's lifetime (TICKET_LOCK_LIFETIME)",
                                conversation_id)  # fmt: skip
                    return
            except Exception as error:  # the next renewal tries again; the lease covers a few misses
                log.warning("conversation %s: lock lease not renewed: %s", conversation_id, error)


class AtomicRedisLockStore(TicketQueue, RedisLockStore):
    """``RedisLockStore`` with atomic tickets: one conversation, one replica at a time, in order.

    A ticket lives while its replica renews it (every ``lease_seconds`` / 4 while it holds the
    turn, at every check while it waits), and never past the lock's lifetime: the tickets of a
    replica that died are dropped ``lease_seconds`` after its last renewal, so its customers'
    next messages wait that long, not the whole ``TICKET_LOCK_LIFETIME``.
    """

    def __init__(self, endpoint_config: Optional[EndpointConfig] = None, **kwargs: Any) -> None:
        """Take the ``lock_store`` section of endpoints.yml, or ``RedisLockStore``'s arguments.

        Besides Rasa's keys, ``lease_seconds`` (default 10): keep it well above the longest
        moment the event loop may be too busy to renew (its renewals come every quarter of it).
        """
        if endpoint_config is not None:
            kwargs = {"host": endpoint_config.url or "localhost", **endpoint_config.kwargs, **kwargs}
        lease = kwargs.pop("lease_seconds", None)
        self.lease_seconds = float(lease) if lease not in (None, "") else LEASE_SECONDS
        if self.lease_seconds <= 0:
            raise ValueError(f"lock_store: lease_seconds must be above 0, not {lease!r}")
        super().__init__(**kwargs)
        self._issue = self.red.register_script(_ISSUE)
        self._turn = self.red.register_script(_TURN)
        self._renew = self.red.register_script(_RENEW)
        self._release = self.red.register_script(_RELEASE)

    def _keys(self, conversation_id: str) -> list[str]:
        # One hash tag, so a Redis Cluster keeps the four keys on one node.
        base = f"{self.key_prefix}{{{conversation_id}}}"
        return [f"{base}:next", f"{base}:queue", f"{base}:expires", f"{base}:leases"]

    def _lease_ms(self) -> int:
        return int((self.lease_seconds or LEASE_SECONDS) * 1000)

    def _take_ticket(self, conversation_id: str, lifetime: float) -> int:
        return int(self._issue(keys=self._keys(conversation_id), args=[int(lifetime * 1000), self._lease_ms()]))

    def _ticket_turn(self, conversation_id: str, ticket: int) -> int:
        return int(self._turn(keys=self._keys(conversation_id), args=[ticket, self._lease_ms()]))

    def _renew_ticket(self, conversation_id: str, ticket: int) -> bool:
        return bool(self._renew(keys=self._keys(conversation_id), args=[ticket, self._lease_ms()]))

    def _give_ticket_up(self, conversation_id: str, ticket: int) -> None:
        self._release(keys=self._keys(conversation_id), args=[ticket])


def process_started(pid: int) -> Optional[str]:
    """Return when process ``pid`` started (clock ticks since boot, from /proc), or None if it is gone.

    A pid is reused after its process ends; the start time tells a new process from the old one.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22 (starttime); the command name (field 2) may hold spaces, so count after its ")".
    return stat.rsplit(")", 1)[1].split()[19]


class SQLiteLockStore(TicketQueue, LockStore):
    """Conversation locks in a SQLite file shared by the Rasa workers of one machine (module doc)."""

    def __init__(self, endpoint_config: Optional[EndpointConfig] = None, db: str = "var/locks.db") -> None:
        """Open (and create) the file: ``db`` from the ``lock_store`` section, or the argument."""
        if endpoint_config is not None:
            db = str(endpoint_config.kwargs.get("db") or db)
        Path(db).parent.mkdir(parents=True, exist_ok=True)
        self._path = db
        self._pid = -1
        self._connection()

    @property
    def _db(self) -> sqlite3.Connection:
        return self._connection()

    def _connection(self) -> sqlite3.Connection:
        """Return this process's connection (a worker forked after the store was made opens its own)."""
        if self._pid == os.getpid():
            return self._conn
        # Autocommit; each step below is one explicit transaction. Calls are short (an
        # insert, a delete, a lookup by key), so they run in the caller's thread.
        self._conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False, timeout=30)
        self._pid, self._started = os.getpid(), process_started(os.getpid()) or ""
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.executescript(
            """
            CREATE TABLE IF NOT EXISTS conversation_tickets (
                ticket INTEGER PRIMARY KEY AUTOINCREMENT,
                conversation_id TEXT NOT NULL,
                expires REAL NOT NULL,
                pid INTEGER NOT NULL,
                started TEXT NOT NULL
            );
            CREATE INDEX IF NOT EXISTS conversation_tickets_by_conversation
                ON conversation_tickets (conversation_id, ticket);
            """
        )
        return self._conn

    def _take_ticket(self, conversation_id: str, lifetime: float) -> int:
        cursor = self._db.execute(
            "INSERT INTO conversation_tickets (conversation_id, expires, pid, started) VALUES (?, ?, ?, ?)",
            (conversation_id, time.time() + lifetime, self._pid, self._started),
        )
        return int(cursor.lastrowid or 0)

    def _ticket_turn(self, conversation_id: str, ticket: int) -> int:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            ahead = self._db.execute(
                "SELECT ticket, expires, pid, started FROM conversation_tickets "
                "WHERE conversation_id = ? AND ticket <= ? ORDER BY ticket",
                (conversation_id, ticket),
            ).fetchall()
            now, gone = time.time(), []
            for other, expires, pid, started in ahead:
                if expires <= now or (other != ticket and process_started(pid) != started):
                    gone.append(other)
            if gone:
                self._db.executemany("DELETE FROM conversation_tickets WHERE ticket = ?", [(t,) for t in gone])
                log.info("conversation %s: %d ticket(s) of gone or expired workers dropped", conversation_id, len(gone))
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        alive = [row[0] for row in ahead if row[0] not in gone]
        if ticket not in alive:
            return -1
        return 1 if alive[0] == ticket else 0

    def _give_ticket_up(self, conversation_id: str, ticket: int) -> None:
        self._db.execute("DELETE FROM conversation_tickets WHERE ticket = ?", (ticket,))

    # Rasa's base class steps (read-modify-write of a whole lock) are not used: ``lock`` is.
    def get_lock(self, conversation_id: str) -> Optional[TicketLock]:
        """Not used: this store keeps tickets, not ``TicketLock`` objects."""
        raise NotImplementedError("SQLiteLockStore is used through lock()")

    def delete_lock(self, conversation_id: str) -> None:
        """Not used (see ``get_lock``)."""
        raise NotImplementedError("SQLiteLockStore is used through lock()")

    def save_lock(self, lock: TicketLock) -> None:
        """Not used (see ``get_lock``)."""
        raise NotImplementedError("SQLiteLockStore is used through lock()")
