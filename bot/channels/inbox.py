"""Durable intake for webhook channels: no customer message lost, no reply sent twice.

A platform such as Telegram forgets an update once the webhook answered 200, and the
webhook answers before Rasa has read the message (the platform waits only seconds). So a
Rasa server killed in between would lose the message, and one killed after sending some
replies but before saving the conversation would, once the message is handled again, send
those replies a second time. Two tables close both gaps:

``channel_inbox``
    Every update is written here *before* the webhook answers, with a lease held by the
    process that handles it (renewed while it works). It is marked done only when Rasa has
    saved the conversation. A sweeper in every Rasa process takes over updates whose lease
    ran out (their process died) or whose handling failed (action server, database or
    platform down), with back-off. The row doubles as the duplicate filter for platform
    retries.

``channel_replies``
    Every reply sent for an update is recorded under (update, position in the reply
    sequence): "sending" just before the platform call, "sent" once it answered. When an
    update is handled again, the replies already sent are skipped. A reply left "sending"
    by a crash is ambiguous (the platform may or may not have it): it is sent again, and
    recorded as ``resent``, because a customer who gets a line twice is better served than
    one who gets nothing; the log says so. (Where the platform can be asked, the connector
    asks first: Slack's posts carry an idempotency key found in the DM's history.)

A process leases to itself only the updates it has room to handle now; the rest of a burst is
stored *queued*, leased to nobody, and the first process with room (any Rasa worker or
replica on this database) takes the oldest (``claim_queued``, ``claim_due``). So a burst is
shared by every process, whichever accepted its webhooks, and none holds what it cannot start.

A lease names its process: host, process id and a token of this run (``bot.channels.leases``).
A process that finds a lease of a process on its own machine that is gone (its id no longer
runs, or it is its own id from an earlier run: a restarted container) takes the update over
at once, so a restarted ``make run`` resumes its customers' answers within a sweep rather
than a lease later. Across machines only the lease decides.

A reply's "sent" record is written by the caller right after the platform's answer, on the
thread that made the call (``bot.channels.replies.RecordedOutput.recorded``), so the window in
which a crash leaves a reply in doubt is the platform call and one short write. The greeting
is never sent again once it may have reached the customer: ``claim_greeting`` keeps one
record of it per customer and session.

Same database as ``bot.channels.dedupe`` (``$FIRSTREPLY_CHANNEL_DB``: SQLite or PostgreSQL),
so several Rasa replicas share one inbox; a lease is taken with a conditional ``UPDATE``, so
two replicas never handle one update at once.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, NamedTuple, Sequence

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    delete,
    or_,
    select,
    update,
)

from bot.channels.dedupe import SEEN_TTL_SECONDS, UPSERTS, channel_engine, create_tables, update_key
from bot.channels.leases import owner_gone, process_owner
from bot.clock import seconds_from_env

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

log = logging.getLogger(__name__)

ENV_LEASE_SECONDS = "FIRSTREPLY_INBOX_LEASE_SECONDS"
ENV_SWEEP_SECONDS = "FIRSTREPLY_INBOX_SWEEP_SECONDS"
DEFAULT_LEASE_SECONDS = 60.0
DEFAULT_SWEEP_SECONDS = 5.0
# Back-off between attempts at one update: 2 s, 4 s, ... up to this.
MAX_RETRY_DELAY_SECONDS = 60.0
SWEEP_BATCH = 20
# After this many failed attempts (about 40 minutes of trying) an update is set aside as
# "dead" and reported at ERROR level: something is wrong that retrying will not mend.
MAX_ATTEMPTS = 45
PRUNE_EVERY_SECONDS = 3600
# How long a greeting counts as the customer's greeting of this conversation: Rasa's session
# expiry (domain/core.yml ``session_expiration_time``, 60 minutes). A new session starts only
# after that long without a message, so two greetings closer together are one sent twice.
ENV_GREETING_MEMORY_SECONDS = "FIRSTREPLY_GREETING_MEMORY_SECONDS"
DEFAULT_GREETING_MEMORY_SECONDS = 3600.0
# The reply records' key of a customer's greeting: (``greeting:<channel>:<recipient>``, 0).
GREETING_KEY = "greeting:{channel}:{recipient}"

PENDING = "pending"
DONE = "done"
DEAD = "dead"
SENDING = "sending"
SENT = "sent"
FAILED = "failed"

metadata = MetaData()

inbox = Table(
    "channel_inbox",
    metadata,
    *update_key(),
    Column("conversation", String(255), nullable=False, index=True),
    Column("body", Text, nullable=False),
    Column("received_at", Float, nullable=False, index=True),
    Column("state", String(16), nullable=False, index=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("lease_owner", String(64), nullable=True),
    Column("lease_until", Float, nullable=False),
    Column("last_error", Text, nullable=True),
    Column("done_at", Float, nullable=True),
)

replies = Table(
    "channel_replies",
    metadata,
    # The update a reply answers (the Rasa message id, e.g. "telegram-4711") and its place
    # in the sequence of platform calls made for that update.
    Column("message_id", String(160), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("digest", String(64), nullable=False),
    Column("state", String(16), nullable=False),
    Column("resent", Integer, nullable=False, default=0),
    Column("updated_at", BigInteger, nullable=False, index=True),
)


class Arrival(NamedTuple):
    """An update to store (``Inbox.accept_many``): held by this process, or queued for any with room."""

    source: str
    update_id: str
    conversation: str
    body: str
    held: bool = True


@dataclass(frozen=True)
class InboxEntry:
    """One update as the inbox holds it."""

    source: str
    update_id: str
    conversation: str
    body: str
    attempts: int
    # Taken over by a sweeper: an earlier attempt may have got part of the way.
    replay: bool = False
    received_at: float = 0.0
    # The process holding its lease when it was read (``process_owner``), if any.
    lease_owner: str | None = None


def lease_seconds_from_env() -> float:
    """Return the lease length (``$FIRSTREPLY_INBOX_LEASE_SECONDS``, default 60 s)."""
    return seconds_from_env(ENV_LEASE_SECONDS, DEFAULT_LEASE_SECONDS)


def sweep_seconds_from_env() -> float:
    """Return the sweep period (``$FIRSTREPLY_INBOX_SWEEP_SECONDS``, default 5 s)."""
    return seconds_from_env(ENV_SWEEP_SECONDS, DEFAULT_SWEEP_SECONDS)


def greeting_memory_from_env() -> float:
    """Return how long a greeting is remembered (``$FIRSTREPLY_GREETING_MEMORY_SECONDS``, default 3600 s)."""
    return seconds_from_env(ENV_GREETING_MEMORY_SECONDS, DEFAULT_GREETING_MEMORY_SECONDS)


def reply_digest(*parts: object) -> str:
    """Return a fingerprint of a reply (recipient, text, options), for the log only."""
    return hashlib.sha256(repr(parts).encode("utf-8", "surrogateescape")).hexdigest()[:32]


class Inbox:
    """The two tables above, one short transaction per call (blocking; use threads)."""

    def __init__(
        self,
        engine: Engine,
        *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        clock: Callable[[], float] = time.time,
        owner: str | None = None,
    ) -> None:
        """Use ``engine`` (tables are created if missing)."""
        self._engine = engine
        self._clock = clock
        self.lease_seconds = lease_seconds
        # A fixed owner (tests, tools), else this process's: read when a lease is written,
        # since Rasa builds the channels before Sanic forks its workers (each names itself).
        self._fixed_owner = owner
        self._owner_pid = -1
        self._process_owner = ""
        self._upsert = UPSERTS[engine.dialect.name]
        self._last_prune = 0.0
        create_tables(metadata, engine)
        # New updates are flushed to the disk before the webhook is answered (the platform then
        # forgets them); on a SQLite file the rest is flushed at the next checkpoint
        # (``bot.channels.dedupe``), which survives any process killed.
        database = engine.url.database or ""
        file_backed = engine.dialect.name == "sqlite" and database not in ("", ":memory:")
        self._intake = channel_engine(str(engine.url), durable=True) if file_backed else engine

    # --- updates -----------------------------------------------------------------------

    def accept(self, source: str, update_id: str, conversation: str, body: str) -> InboxEntry | None:
        """Store a new update, leased to this process; return it, or ``None`` for a copy."""
        return self.accept_many([Arrival(source, update_id, conversation, body)])[0]

    def accept_many(self, updates: Sequence[tuple[str, str, str, str] | Arrival]) -> list[InboxEntry | None]:
        """Store new updates (``Arrival``s, or tuples of its first four) in one transaction: one flush to disk for all.

        Returns, in order, each one stored or ``None`` for a copy (also of one earlier in
        ``updates``). One stored ``held`` is leased to this process; one stored queued is
        leased to nobody, for the first process with room to take (``claim_queued``).
        Nothing is stored if the transaction fails.
        """
        now = self._clock()
        stored: list[InboxEntry | None] = []
        with self._intake.begin() as conn:
            for update in updates:
                source, update_id, conversation, body, held = Arrival(*update)
                statement = (
                    self._upsert(inbox)
                    .values(
                        source=source, update_id=update_id, conversation=conversation, body=body, received_at=now,
                        state=PENDING, attempts=0, lease_owner=self.owner if held else None,
                        lease_until=now + self.lease_seconds if held else now,
                    )  # fmt: skip
                    .on_conflict_do_nothing(index_elements=["source", "update_id"])
                )
                inserted = conn.execute(statement).rowcount == 1
                stored.append(InboxEntry(source, update_id, conversation, body, 0, received_at=now) if inserted else None)
        if now - self._last_prune >= PRUNE_EVERY_SECONDS:
            self.prune()
        return stored

    def claim_due(self, source: str, limit: int = SWEEP_BATCH) -> list[InboxEntry]:
        """Lease to this process up to ``limit`` pending updates nobody holds; oldest first.

        Nobody holds an update whose lease ran out, nor one leased to a process of this
        machine that is gone (``owner_gone``): that one is taken over before its lease ends.
        """
        now = self._clock()
        due = self._pending_query().where(inbox.c.source == source)
        with self._engine.connect() as conn:
            gone = self._gone_owners(conn, source, now)
            free = inbox.c.lease_until <= now
            if gone:
                free = or_(free, inbox.c.lease_owner.in_(gone))
            rows = conn.execute(due.where(free).order_by(inbox.c.received_at).limit(limit)).all()
        return self._take_over_rows(source, rows)

    def claim_queued(self, source: str, limit: int) -> list[InboxEntry]:
        """Lease to this process up to ``limit`` updates stored queued (held by no process yet); oldest first.

        One indexed read when there are none: every process with room asks often, so the
        processes of one machine (or of several) share a burst whichever accepted it.
        """
        queued = self._pending_query().where(
            inbox.c.source == source, inbox.c.lease_owner.is_(None), inbox.c.attempts == 0,
            inbox.c.lease_until <= self._clock(),
        )  # fmt: skip
        with self._engine.connect() as conn:
            rows = conn.execute(queued.order_by(inbox.c.received_at).limit(limit)).all()
        return self._take_over_rows(source, rows)

    def _take_over_rows(self, source: str, rows: Sequence[Any]) -> list[InboxEntry]:
        """Lease to this process the pending ``rows`` read of ``source`` that nobody took meanwhile."""
        claimed = (self.take_over(self._entry(source, row)) for row in rows)
        return [entry for entry in claimed if entry is not None]

    def _gone_owners(self, conn: Any, source: str, now: float) -> list[str]:
        """Return the processes of this machine that hold leases of ``source`` but are gone."""
        machine = self.owner.split(":", 1)[0]
        holders = conn.execute(
            select(inbox.c.lease_owner)
            .where(
                inbox.c.source == source, inbox.c.state == PENDING, inbox.c.lease_until > now,
                inbox.c.lease_owner != self.owner, inbox.c.lease_owner.startswith(f"{machine}:", autoescape=True),
            )  # fmt: skip
            .distinct()
        ).scalars()
        return [str(owner) for owner in holders if owner_gone(owner, self.owner)]

    @staticmethod
    def _pending_query() -> Any:
        return select(
            inbox.c.update_id, inbox.c.conversation, inbox.c.body, inbox.c.attempts, inbox.c.received_at,
            inbox.c.lease_owner, inbox.c.lease_until,
        ).where(inbox.c.state == PENDING)  # fmt: skip

    @staticmethod
    def _entry(source: str, row: Any) -> InboxEntry:
        # An entry read back is handled again (an earlier attempt may have got part of the way),
        # unless it was stored queued and nobody has taken it since: no attempt was made.
        holder = None if row[5] is None else str(row[5])
        never_taken = holder is None and not row[3]
        return InboxEntry(source, *row[:4], replay=not never_taken, received_at=row[4], lease_owner=holder)

    @property
    def owner(self) -> str:
        """Return the lease owner id of the process using this inbox (``process_owner``)."""
        if self._fixed_owner:
            return self._fixed_owner
        if self._owner_pid != os.getpid():
            self._owner_pid, self._process_owner = os.getpid(), process_owner()
        return self._process_owner

    def take_over(self, entry: InboxEntry) -> InboxEntry | None:
        """Lease ``entry`` to this process if nobody holds it; return it, or ``None``.

        Nobody holds it when its lease ran out, or when ``entry.lease_owner`` (the holder
        when it was read) is a process of this machine that is gone and holds it still.
        """
        now = self._clock()
        free = inbox.c.lease_until <= now
        if entry.lease_owner and entry.lease_owner != self.owner and owner_gone(entry.lease_owner, self.owner):
            free = or_(free, inbox.c.lease_owner == entry.lease_owner)
        # Conditional on the lease still being free: of two sweepers, one wins.
        with self._engine.begin() as conn:
            taken = conn.execute(
                update(inbox)
                .where(
                    inbox.c.source == entry.source, inbox.c.update_id == entry.update_id,
                    inbox.c.state == PENDING, free,
                )  # fmt: skip
                .values(lease_owner=self.owner, lease_until=now + self.lease_seconds)
            ).rowcount
        return entry if taken == 1 else None

    def older_pending(self, entry: InboxEntry) -> list[InboxEntry]:
        """Return the same customer's updates that came before ``entry`` and are not handled yet."""
        with self._engine.connect() as conn:
            rows = conn.execute(
                self._pending_query()
                .where(
                    inbox.c.source == entry.source, inbox.c.conversation == entry.conversation,
                    inbox.c.received_at < entry.received_at,
                )  # fmt: skip
                .order_by(inbox.c.received_at)
            ).all()
        return [self._entry(entry.source, row) for row in rows]

    def renew(self, entry: InboxEntry) -> bool:
        """Extend this process's lease on ``entry``; return False if it no longer holds it."""
        with self._engine.begin() as conn:
            return (
                conn.execute(
                    update(inbox)
                    .where(self._held(entry))
                    .values(lease_until=self._clock() + self.lease_seconds)
                ).rowcount
                == 1
            )

    def done(self, entry: InboxEntry) -> None:
        """Mark ``entry`` handled."""
        with self._engine.begin() as conn:
            conn.execute(
                update(inbox)
                .where(inbox.c.source == entry.source, inbox.c.update_id == entry.update_id)
                .values(state=DONE, lease_owner=None, done_at=self._clock(), last_error=None)
            )

    def failed(self, entry: InboxEntry, error: str) -> float | None:
        """Give ``entry`` back for a later attempt; return the delay before it, in seconds.

        Returns ``None`` when the entry has used up its attempts and is now ``dead``.
        """
        attempts = entry.attempts + 1
        delay = min(2.0**attempts, MAX_RETRY_DELAY_SECONDS)
        state = DEAD if attempts >= MAX_ATTEMPTS else PENDING
        with self._engine.begin() as conn:
            conn.execute(
                update(inbox)
                .where(self._held(entry))
                .values(
                    attempts=attempts, state=state, lease_owner=None, lease_until=self._clock() + delay,
                    last_error=error[:2000],
                )  # fmt: skip
            )
        return None if state == DEAD else delay

    def dead(self, source: str | None = None) -> list[tuple[str, str, str]]:
        """Return (source, update id, last error) of every update given up on."""
        query = select(inbox.c.source, inbox.c.update_id, inbox.c.last_error).where(inbox.c.state == DEAD)
        if source is not None:
            query = query.where(inbox.c.source == source)
        with self._engine.connect() as conn:
            return [(str(a), str(b), str(c or "")) for a, b, c in conn.execute(query.order_by(inbox.c.received_at))]

    def _held(self, entry: InboxEntry) -> Any:
        return and_(
            inbox.c.source == entry.source,
            inbox.c.update_id == entry.update_id,
            inbox.c.state == PENDING,
            inbox.c.lease_owner == self.owner,
        )

    def earlier_message(self, entry: InboxEntry, within_seconds: float) -> bool:
        """Return whether the customer of ``entry`` wrote before it, less than ``within_seconds`` before."""
        with self._engine.connect() as conn:
            found = conn.execute(
                select(inbox.c.update_id)
                .where(
                    inbox.c.source == entry.source, inbox.c.conversation == entry.conversation,
                    inbox.c.update_id != entry.update_id, inbox.c.received_at <= entry.received_at,
                    inbox.c.received_at >= entry.received_at - within_seconds,
                )  # fmt: skip
                .limit(1)
            ).first()
        return found is not None

    def sources(self, prefix: str) -> list[str]:
        """Return the sources starting with ``prefix`` that have updates not handled yet.

        For a connector whose sources are known only from what arrives (Slack: one per app),
        so its sweeper finds what a process that died left behind.
        """
        query = (
            select(inbox.c.source)
            .where(inbox.c.state == PENDING, inbox.c.source.startswith(prefix, autoescape=True))
            .distinct()
        )
        with self._engine.connect() as conn:
            return sorted(str(source) for source in conn.execute(query).scalars())

    def pending(self, source: str | None = None) -> int:
        """Return how many updates are not handled yet."""
        query = select(inbox.c.update_id).where(inbox.c.state == PENDING)
        if source is not None:
            query = query.where(inbox.c.source == source)
        with self._engine.connect() as conn:
            return len(conn.execute(query).all())

    # --- replies -----------------------------------------------------------------------

    def begin_reply(self, message_id: str, seq: int, digest: str, *, resend_in_doubt: bool = True) -> str | None:
        """Record that reply ``seq`` of ``message_id`` is about to be sent.

        Returns ``None`` for a new reply, ``SENT`` if it went out before (skip it),
        ``FAILED`` if an earlier attempt saw its call fail (send again) and ``SENDING`` if an
        earlier attempt died mid-call: the reply is in doubt. With ``resend_in_doubt`` it is
        sent again and marked resent, as the platform may have it; without, it stays as it is
        (the caller does not send it: a greeting).
        """
        now = int(self._clock())
        with self._engine.begin() as conn:
            inserted = conn.execute(
                self._upsert(replies)
                .values(message_id=message_id, seq=seq, digest=digest, state=SENDING, resent=0, updated_at=now)
                .on_conflict_do_nothing(index_elements=["message_id", "seq"])
            ).rowcount
            if inserted == 1:
                return None
            state, sent_digest = conn.execute(
                select(replies.c.state, replies.c.digest).where(replies.c.message_id == message_id, replies.c.seq == seq)
            ).one()
            if state == FAILED or (state == SENDING and resend_in_doubt):
                conn.execute(
                    update(replies)
                    .where(replies.c.message_id == message_id, replies.c.seq == seq)
                    .values(state=SENDING, resent=replies.c.resent + int(state == SENDING), updated_at=now)
                )
        if sent_digest != digest:
            log.info("reply %d to %s differs from the one recorded before; the recorded one stands", seq, message_id)
        return str(state)

    def reply_states(self, message_id: str) -> dict[int, str]:
        """Return the recorded replies of ``message_id``: state by place."""
        with self._engine.connect() as conn:
            rows = conn.execute(select(replies.c.seq, replies.c.state).where(replies.c.message_id == message_id))
            return {int(seq): str(state) for seq, state in rows}

    def finish_reply(self, message_id: str, seq: int) -> None:
        """Record that reply ``seq`` of ``message_id`` reached the platform."""
        with self._engine.begin() as conn:
            conn.execute(
                update(replies)
                .where(replies.c.message_id == message_id, replies.c.seq == seq)
                .values(state=SENT, updated_at=int(self._clock()))
            )

    def fail_reply(self, message_id: str, seq: int) -> None:
        """Record that the call sending reply ``seq`` of ``message_id`` failed (it is sent again later)."""
        with self._engine.begin() as conn:
            conn.execute(
                update(replies)
                .where(replies.c.message_id == message_id, replies.c.seq == seq, replies.c.state == SENDING)
                .values(state=FAILED, updated_at=int(self._clock()))
            )

    def claim_greeting(self, key: str, message_id: str, memory_seconds: float) -> bool:
        """Return whether the update ``message_id`` may greet the customer of ``key`` (``GREETING_KEY``).

        The first update to greet a customer claims their greeting; a later update (its
        tracker lost or never saved by a crash) within ``memory_seconds`` of that may not: the
        customer was greeted, or the greeting was in flight, and reads it once at most. The
        claiming update itself may (its own reply record then decides). A claim older than
        ``memory_seconds`` belongs to an earlier conversation and passes to this update.
        """
        now = int(self._clock())
        mine = reply_digest(message_id)
        with self._engine.begin() as conn:
            inserted = conn.execute(
                self._upsert(replies)
                .values(message_id=key, seq=0, digest=mine, state=SENT, resent=0, updated_at=now)
                .on_conflict_do_nothing(index_elements=["message_id", "seq"])
            ).rowcount
            if inserted == 1:
                return True
            taken = conn.execute(
                update(replies)
                .where(
                    replies.c.message_id == key, replies.c.seq == 0,
                    or_(replies.c.digest == mine, replies.c.updated_at <= now - int(memory_seconds)),
                )  # fmt: skip
                .values(digest=mine, updated_at=now)
            ).rowcount
        return taken == 1

    def prune(self) -> int:
        """Delete handled updates and reply records older than two days; return how many."""
        now = self._clock()
        self._last_prune = now
        with self._engine.begin() as conn:
            gone = conn.execute(delete(inbox).where(inbox.c.state == DONE, inbox.c.done_at < now - SEEN_TTL_SECONDS))
            dropped = conn.execute(delete(replies).where(replies.c.updated_at < int(now - SEEN_TTL_SECONDS)))
        return int(gone.rowcount) + int(dropped.rowcount)
