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

**Conversations kept in memory between messages** (``CachedSQLTrackerStore``, which
``SQLiteTrackerStore`` is, and which production names for PostgreSQL). Rasa reads a
customer's whole conversation from the database and replays it on every message, and with
an event broker it reads it a second time on every save to find the new events: the cost
of a message grows with the conversation (measured in docs/benchmarks.md). Here a saved
conversation stays in memory, and the next message takes it from there when the database
shows that nothing was added since (the customer's newest event id is still the one saved:
one indexed query). So a conversation another replica went on with, or one whose handling
failed before its save, is read from the database as before. The database stays the truth:
every save is written through in full, and what is written and published is exactly what
Rasa's own store writes and publishes.

**A save without a count.** Rasa's save first counts the events the database holds for the
conversation's latest session, to write only those after them; a new conversation it even saves
twice (when it is created, and after its first message). Here a conversation read or created
under its lock is noted with how many events the database held then, and its save writes the
events after those in one statement, with no count; a new conversation is written once.

**Off the event loop.** Rasa's store runs its queries inside the server's event loop, so every
read and save of a conversation held up every other customer's message and webhook for as long
as the database took (a PostgreSQL round trip, a SQLite file another worker was writing). Here
the queries, and the decoding of the rows, run on a small thread pool of the store's own; the
loop only waits for them. Publishing to the event broker stays on the loop, in Rasa's order
(before the events are written).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import weakref
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, TypeVar

from prometheus_client import Counter
from rasa.core.brokers.broker import EventBroker
from rasa.core.tracker_store import SQLTrackerStore
from rasa.shared.core.domain import Domain
from rasa.shared.core.constants import ACTION_LISTEN_NAME
from rasa.shared.core.events import ActionExecuted, Event, SessionStarted
from rasa.shared.core.trackers import DialogueStateTracker
from rasa.shared.nlu.constants import INTENT_NAME_KEY
from sqlalchemy import create_engine, event, func, or_, select
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import QueuePool

from bot.threads import named_pool

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 30_000
# Threads each Rasa process gives its tracker store's queries (SQLite writes one at a time anyway).
QUERY_THREADS = 4
T = TypeVar("T")
# Conversations read or created whose save has not come yet, noted per process (the oldest
# notes dropped beyond it: their save counts what the database holds, as Rasa's does).
FRESH_NOTED = 10_000
# How many conversations each Rasa process keeps in memory between messages (0: none).
ENV_CACHE_SIZE = "FIRSTREPLY_TRACKER_CACHE"
# Off by default: with it on, the two-replica Telegram tests (tests/integration/test_telegram_stack.py)
# find a message's events missing from a conversation. One cause is found and fixed (a
# conversation another replica wrote to while this one had it lent was kept), another is not yet.
# Saves still publish without reading the conversation back.
DEFAULT_CACHE_SIZE = 0

CACHE_READS = Counter(
    "firstreply_tracker_cache_reads",
    "Conversations asked of the tracker store, by where they came from: memory (hit) or the database (miss).",
    ("outcome",),
)


def cache_size_from_env(environ: Optional[dict[str, str]] = None) -> int:
    """Return ``$FIRSTREPLY_TRACKER_CACHE`` (default 0: off); raise ``ValueError`` naming it if malformed."""
    raw = (os.environ if environ is None else environ).get(ENV_CACHE_SIZE, "").strip()
    if not raw:
        return DEFAULT_CACHE_SIZE
    try:
        size = int(raw)
    except ValueError:
        size = -1
    if size < 0:
        raise ValueError(f"{ENV_CACHE_SIZE} must be a whole number of conversations (0 turns the cache off), not {raw!r}")
    return size


@dataclass
class _Kept:
    """A conversation as saved: its tracker, and what the database held for it then."""

    tracker: DialogueStateTracker
    newest_id: Optional[int]  # the sender's newest event row
    domain: Optional[Domain]  # the domain its slots came from (a new model reads afresh)
    stored: int  # the events of its latest session in the database: all of the tracker's


def _row(sender_id: str, new_event: Event) -> dict[str, Any]:
    """Return the ``events`` row of one event, as Rasa's ``SQLTrackerStore.save`` writes it."""
    data = new_event.as_dict()
    return {
        "sender_id": sender_id,
        "type_name": new_event.type_name,
        "timestamp": data.get("timestamp"),
        "intent_name": data.get("parse_data", {}).get("intent", {}).get(INTENT_NAME_KEY),
        "action_name": data.get("name"),
        "data": json.dumps(data),
    }


def _finished(start: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
    """Run a coroutine of Rasa's that never waits (its database calls are synchronous) to its end, here."""
    coroutine = start(*args)
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coroutine.close()
    raise RuntimeError(f"{getattr(start, '__qualname__', start)} waited for something; it cannot run off the loop")


# Sentinel: a save's conversation is not kept in memory.
_NOT_KEPT = object()


class CachedSQLTrackerStore(SQLTrackerStore):
    """``SQLTrackerStore`` that keeps saved conversations in memory (see module doc).

    Extra argument: ``cache_size`` (default ``$FIRSTREPLY_TRACKER_CACHE``, else 0: off),
    the most conversations kept, least recently used dropped first.
    """

    def __init__(self, *args: Any, cache_size: Optional[int] = None, **kwargs: Any) -> None:
        """Open the store as ``SQLTrackerStore`` does; keep up to ``cache_size`` conversations."""
        super().__init__(*args, **kwargs)
        self.cache_size = cache_size_from_env() if cache_size is None else int(cache_size)
        self._kept: OrderedDict[str, _Kept] = OrderedDict()
        # Trackers handed out from memory, with how many of their events the database holds and
        # the sender's newest event row then: their save need not count them again, and checks
        # that nobody else wrote to the conversation meanwhile.
        self._lent: OrderedDict[str, tuple[DialogueStateTracker, int, Optional[int]]] = OrderedDict()
        # Conversations read from the database (latest session) or created since a read found
        # nothing, with how many of their events the database held then: their save writes the
        # events after those without counting them again (the conversation's lock keeps other
        # writers out meanwhile). Weak: a tracker whose handling failed is simply forgotten.
        self._fresh: OrderedDict[str, tuple[weakref.ref[DialogueStateTracker], int]] = OrderedDict()
        self._pool: Optional[ThreadPoolExecutor] = None
        self._pool_pid = -1

    async def _off_loop(self, work: Callable[..., T], *args: Any) -> T:
        """Run ``work(*args)`` (database calls) on the store's threads; wait for it without holding the loop."""
        if self._pool is None or self._pool_pid != os.getpid():  # a forked worker makes its own
            self._pool = named_pool(QUERY_THREADS, "firstreply-trackers")
            self._pool_pid = os.getpid()
        return await asyncio.get_running_loop().run_in_executor(self._pool, lambda: work(*args))

    async def _retrieve(self, sender_id: str, fetch_events_from_all_sessions: bool) -> Optional[DialogueStateTracker]:
        """Rasa's read of a conversation (``SQLTrackerStore._retrieve``), run on the store's threads.

        Its latest session is noted with how many rows it was read from (``_fresh``).
        """
        tracker, rows = await self._off_loop(self._read, sender_id, fetch_events_from_all_sessions)
        if tracker is not None and not fetch_events_from_all_sessions:
            self._note_fresh(tracker, rows)
        return tracker

    def _read(self, sender_id: str, all_sessions: bool) -> tuple[Optional[DialogueStateTracker], int]:
        """Return the conversation as Rasa's ``_retrieve`` builds it (None: no events), and its number of rows."""
        with self.session_scope() as session:
            rows = self._event_query(session, sender_id, fetch_events_from_all_sessions=all_sessions).all()
            events = [json.loads(row.data) for row in rows]
        if not self.domain or not events:
            return None, 0
        return DialogueStateTracker.from_dict(sender_id, events, self.domain.slots), len(rows)

    def _note_fresh(self, tracker: DialogueStateTracker, stored: int) -> None:
        self._fresh[tracker.sender_id] = (weakref.ref(tracker), stored)
        self._fresh.move_to_end(tracker.sender_id)
        while len(self._fresh) > FRESH_NOTED:
            self._fresh.popitem(last=False)

    async def keys(self) -> Any:
        """Rasa's list of conversations (``SQLTrackerStore.keys``), run on the store's threads."""
        return await self._off_loop(_finished, super().keys)

    async def retrieve(self, sender_id: str) -> Optional[DialogueStateTracker]:
        """Return the latest session of ``sender_id``'s conversation: from memory when still current.

        A kept tracker is handed out once (taken out of memory): the caller changes it, and
        only its save puts it back. Meanwhile anyone else reads the database, as Rasa does.
        """
        kept = self._kept.pop(sender_id, None)
        if kept is not None and kept.domain is self.domain:
            current = await self._off_loop(self._newest_id_now, sender_id)
            if current == kept.newest_id:
                CACHE_READS.labels("hit").inc()
                self._lent[sender_id] = (kept.tracker, kept.stored, kept.newest_id)
                while len(self._lent) > self.cache_size:
                    self._lent.popitem(last=False)
                return kept.tracker
        CACHE_READS.labels("miss").inc()
        return await super().retrieve(sender_id)

    async def create_tracker(self, sender_id: str, append_action_listen: bool = True) -> DialogueStateTracker:
        """Rasa's new conversation (``TrackerStore.create_tracker``), not written yet.

        Rasa saves a new conversation's first event at once and the rest when the message has
        been handled: two writes (and two counts of what the database holds) for every new
        customer. Here the message's save writes them all, in the same order, to the store and
        the event broker; a handling that fails before its save leaves nothing, and the
        customer's message is handled again from scratch as before.
        """
        tracker = self.init_tracker(sender_id)
        if append_action_listen:
            tracker.update(ActionExecuted(ACTION_LISTEN_NAME))
        self._note_fresh(tracker, 0)
        return tracker

    async def save(self, tracker: DialogueStateTracker) -> None:
        """Store (and publish) the events the database does not have yet; keep the tracker.

        The same events Rasa's ``SQLTrackerStore.save`` stores and its ``stream_events``
        publishes (those after the ones the database holds for the latest session), without
        reading the whole conversation back to find them.
        """
        sender_id = tracker.sender_id
        self._kept.pop(sender_id, None)
        lent = self._lent.pop(sender_id, None)
        fresh = self._fresh.pop(sender_id, None)
        stored: Optional[int]
        if fresh is not None and fresh[0]() is tracker and len(tracker.events) >= fresh[1]:
            stored = fresh[1]  # as read (or created) under this conversation's lock
        elif lent is not None and lent[0] is tracker and len(tracker.events) >= lent[1]:
            stored = lent[1]
        elif self.event_broker is None:
            stored = None  # counted by the write itself: one trip to the store's threads, not two
        else:  # the new events are published before they are written, as Rasa does
            stored = await self._off_loop(self._stored_now, sender_id)
        if stored is not None and self.event_broker is not None:
            await self._stream_new_events(self.event_broker, self._new_events(tracker, stored), sender_id)
        newest_id = await self._off_loop(self._write, tracker, stored, lent)
        if newest_id is not _NOT_KEPT:
            self._keep(tracker, newest_id)  # type: ignore[arg-type]

    @staticmethod
    def _new_events(tracker: DialogueStateTracker, stored: int) -> list[Event]:
        """Return the events of ``tracker`` after the ``stored`` ones the database holds."""
        return list(itertools.islice(tracker.events, stored, len(tracker.events)))

    def _stored_now(self, sender_id: str) -> int:
        with self.session_scope() as session:
            return self._in_session(session, sender_id)

    def _in_session(self, session: Session, sender_id: str) -> int:
        """Return how many events of ``sender_id``'s latest session the database holds.

        What ``_event_query(..., fetch_events_from_all_sessions=False).count()`` returns, as one
        statement: the ORM's count wrapped that query, with its sort, in a subquery (1.2 ms on
        SQLite).
        """
        events = self.SQLEvent.__table__
        session_start = (  # as Rasa finds it: the latest SessionStarted's timestamp; none, all events
            select(func.max(events.c.timestamp))
            .where(events.c.sender_id == sender_id, events.c.type_name == SessionStarted.type_name)
            .scalar_subquery()
        )
        counted = select(func.count()).select_from(events).where(
            events.c.sender_id == sender_id, or_(events.c.timestamp >= session_start, session_start.is_(None))
        )
        return int(session.execute(counted).scalar() or 0)

    def _newest_id_now(self, sender_id: str) -> Optional[int]:
        with self.session_scope() as session:
            return self._newest_id(session, sender_id)

    def _write(
        self, tracker: DialogueStateTracker, stored: Optional[int],
        lent: Optional[tuple[DialogueStateTracker, int, Optional[int]]],
    ) -> Any:  # fmt: skip
        """Write the events after the ``stored`` ones (``None``: as many as the database holds now).

        Returns the sender's newest event row if the tracker may be kept, else ``_NOT_KEPT``.
        """
        sender_id = tracker.sender_id
        with self.session_scope() as session:
            if stored is None:  # read outside a transaction: SQLite's starts with the insert below
                stored = self._in_session(session, sender_id)
            new_events = self._new_events(tracker, stored)
            if new_events:
                session.execute(self.SQLEvent.__table__.insert(), [_row(sender_id, e) for e in new_events])
            session.commit()
            if not self.cache_size or self.domain is None:
                return _NOT_KEPT
            # Kept only if the database would give back exactly these events: a new
            # conversation's events begin with one before its session start that a read
            # leaves out, so its next message reads the database once; and a
            # conversation someone else wrote to since it was lent (another replica whose
            # lock outlived, an event appended over the HTTP API) is read again next time.
            if (lent is not None and stored == lent[1] and not any(isinstance(e, SessionStarted) for e in new_events)
                    and self._written_since(session, sender_id, lent[2]) == len(new_events)):
                in_session = stored + len(new_events)
            else:
                in_session = self._in_session(session, sender_id)
            if in_session != len(tracker.events):
                return _NOT_KEPT
            return self._newest_id(session, sender_id)

    def _written_since(self, session: Session, sender_id: str, newest_id: Optional[int]) -> int:
        """Return how many events of ``sender_id`` the database holds after row ``newest_id`` (indexed, only those rows)."""
        query = session.query(func.count(self.SQLEvent.id)).filter(self.SQLEvent.sender_id == sender_id)
        if newest_id is not None:
            query = query.filter(self.SQLEvent.id > newest_id)
        return int(query.scalar() or 0)

    def _newest_id(self, session: Session, sender_id: str) -> Optional[int]:
        return session.query(func.max(self.SQLEvent.id)).filter(self.SQLEvent.sender_id == sender_id).scalar()

    def _keep(self, tracker: DialogueStateTracker, newest_id: Optional[int]) -> None:
        self._kept[tracker.sender_id] = _Kept(tracker, newest_id, self.domain, len(tracker.events))
        while len(self._kept) > self.cache_size:
            self._kept.popitem(last=False)


def _tune(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cursor.close()


class SQLiteTrackerStore(CachedSQLTrackerStore):
    """``CachedSQLTrackerStore`` on a SQLite file in WAL mode."""

    def __init__(
        self,
        domain: Optional[Domain] = None,
        db: str = "var/trackers.db",
        event_broker: Optional[EventBroker] = None,
        **kwargs: Any,
    ) -> None:
        """Open (and create) the SQLite file ``db``; other arguments as ``CachedSQLTrackerStore``."""
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
