"""What the channel connectors remember between requests: updates seen, button payloads.

A platform retries a webhook it thinks failed, so a connector records each update id the
first time it arrives and drops any later copy, also after a restart. Telegram limits a
button's callback data to 64 bytes, so every button payload is kept here under a short
content-derived key and looked up again when the button is pressed.

SQLite file by default (``$FIRSTREPLY_CHANNEL_DB``, else ``var/channels.db``); a
SQLAlchemy URL there (PostgreSQL) lets several Rasa replicas share it. SQLAlchemy 1.4 Core.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from sqlalchemy import BigInteger, Column, MetaData, String, Table, Text, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from bot.cases.engine import sqlite_or_postgres_engine

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

log = logging.getLogger(__name__)

ENV_CHANNEL_DB = "FIRSTREPLY_CHANNEL_DB"
# Telegram keeps undelivered updates for 24 hours; a copy older than two days cannot come.
SEEN_TTL_SECONDS = 2 * 24 * 3600
# A button older than this answers "expired" when pressed.
PAYLOAD_TTL_SECONDS = 90 * 24 * 3600
PRUNE_EVERY_SECONDS = 3600
PAYLOAD_KEY_PREFIX = "p:"
# The insert-if-absent statement of each supported database.
UPSERTS = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}

metadata = MetaData()


def update_key() -> tuple[Column, Column]:
    """Return the key columns of a table of updates (here and in ``bot.channels.inbox``).

    The source says which connector (and which bot or app) an id belongs to: update ids
    count per bot. Lengths as in the inbox's columns; a connector shortens longer ids.
    """
    return Column("source", String(64), primary_key=True), Column("update_id", String(128), primary_key=True)


seen_updates = Table(
    "channel_seen_updates",
    metadata,
    *update_key(),
    Column("seen_at", BigInteger, nullable=False, index=True),
)

button_payloads = Table(
    "channel_button_payloads",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("payload", Text, nullable=False),
    Column("stored_at", BigInteger, nullable=False, index=True),
)


def default_url() -> str:
    """Return the SQLite URL of ``var/channels.db`` under the repository root."""
    repo_root = Path(__file__).resolve().parents[2]
    return f"sqlite:///{repo_root / 'var' / 'channels.db'}"


def url_from_env(value: str | None = None) -> str:
    """Turn ``$FIRSTREPLY_CHANNEL_DB`` (a file path or a SQLAlchemy URL) into a URL."""
    value = value if value is not None else os.environ.get(ENV_CHANNEL_DB, "")
    if not value:
        return default_url()
    if "://" in value:
        return value
    return f"sqlite:///{Path(value).resolve()}"


def create_tables(tables: MetaData, engine: Engine) -> None:
    """Create the tables of ``tables`` that ``engine``'s database lacks, also when another process does so too.

    ``create_all`` looks before it creates: two Rasa replicas starting at once on a new
    database can both find a table missing, and the second then fails with "already
    exists". Looking again settles it.
    """
    for attempt in range(3):
        try:
            tables.create_all(engine)
            return
        except (OperationalError, ProgrammingError, IntegrityError) as error:
            # SQLite and PostgreSQL say "already exists"; PostgreSQL may instead trip over its type catalogue.
            raced = "already exists" in str(error) or "pg_type_typname_nsp_index" in str(error)
            if not raced or attempt == 2:
                raise
            log.info("channel tables: created by another process meanwhile; looking again")


def payload_key(payload: str) -> str:
    """Return the short key a payload is kept under: same payload, same key (45 bytes)."""
    digest = hashlib.sha256(payload.encode("utf-8")).digest()
    return PAYLOAD_KEY_PREFIX + base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


# Several processes (Rasa, the poller, the desk) may write at once: wait, don't fail.
# A commit is flushed to the disk at the next checkpoint (``synchronous = NORMAL``): it
# survives any process being killed, only a power cut or a crash of the machine itself can
# take back the last ones. What a platform forgets once its webhook is answered, the inbox's
# new updates, is written through a ``durable`` engine instead, flushed at every commit.
_SQLITE_PRAGMAS = ("PRAGMA busy_timeout = 10000", "PRAGMA journal_mode = WAL", "PRAGMA synchronous = NORMAL")
_SQLITE_DURABLE_PRAGMAS = ("PRAGMA busy_timeout = 10000", "PRAGMA journal_mode = WAL", "PRAGMA synchronous = FULL")


def channel_engine(url: str, *, durable: bool = False) -> Engine:
    """Return an engine for the channels' database: a SQLite file (WAL) or PostgreSQL.

    Built like the case store's (``bot.cases.engine``), with the channels' own pragmas and
    a connection kept open per thread on a SQLite file: every write here is short and on a
    customer's path, and opening the file and running the pragmas took several times the
    write. ``durable``: on SQLite, every commit reaches the disk before it returns (the
    inbox's intake); PostgreSQL always does.

    Raises:
        ValueError: the URL names another kind of database.
    """
    backend = make_url(url).get_backend_name()
    if backend not in UPSERTS:
        raise ValueError(
            f"{ENV_CHANNEL_DB} must name a SQLite file or a PostgreSQL URL, not a {backend!r} database"
        )
    pragmas = _SQLITE_DURABLE_PRAGMAS if durable else _SQLITE_PRAGMAS
    return sqlite_or_postgres_engine(url, pragmas, sqlite_per_thread=True)


class ChannelStore:
    """Seen update ids and stored button payloads, in one small database.

    Build it with ``ChannelStore.from_url``. Every method is one short transaction and
    blocking; async callers run it in a thread (``asyncio.to_thread``).
    """

    def __init__(self, engine: Engine, clock: Callable[[], float] = time.time) -> None:
        """Wrap an engine whose tables exist (use ``from_url``)."""
        self._engine = engine
        self._clock = clock
        self._upsert = UPSERTS[engine.dialect.name]
        self._last_prune = 0.0

    @classmethod
    def from_url(cls, url: str | None = None, clock: Callable[[], float] = time.time) -> ChannelStore:
        """Connect to ``url`` (default: from ``$FIRSTREPLY_CHANNEL_DB``) and create the tables."""
        engine = channel_engine(url or url_from_env())
        create_tables(metadata, engine)
        store = cls(engine, clock)
        store.prune()
        return store

    @property
    def engine(self) -> Engine:
        """Return the engine (``bot.channels.inbox`` keeps its tables in the same database)."""
        return self._engine

    def dispose(self) -> None:
        """Close every pooled connection."""
        self._engine.dispose()

    def first_time(self, source: str, update_id: str) -> bool:
        """Record ``update_id`` of ``source``; return whether it had not been seen before.

        Insert-if-absent in one statement, so two copies racing in two processes still
        yield exactly one ``True``.
        """
        now = int(self._clock())
        statement = (
            self._upsert(seen_updates)
            .values(source=source, update_id=update_id, seen_at=now)
            .on_conflict_do_nothing(index_elements=["source", "update_id"])
        )
        with self._engine.begin() as conn:
            inserted = conn.execute(statement).rowcount == 1
        if now - self._last_prune >= PRUNE_EVERY_SECONDS:
            self.prune()
        return inserted

    def store_payloads(self, payloads: Sequence[str]) -> list[str]:
        """Keep each payload and return their keys, in order (storing again refreshes age)."""
        keys = [payload_key(payload) for payload in payloads]
        if not payloads:
            return keys
        now = int(self._clock())
        rows = [{"key": key, "payload": payload, "stored_at": now} for key, payload in zip(keys, payloads)]
        statement = self._upsert(button_payloads)
        statement = statement.on_conflict_do_update(
            index_elements=["key"], set_={"stored_at": statement.excluded.stored_at}
        )
        with self._engine.begin() as conn:
            conn.execute(statement, rows)
        return keys

    def payload_for(self, key: str) -> str | None:
        """Return the payload kept under ``key``, or ``None`` (unknown or expired)."""
        with self._engine.connect() as conn:
            found = conn.execute(select(button_payloads.c.payload).where(button_payloads.c.key == key)).scalar()
        return str(found) if found is not None else None

    def prune(self) -> int:
        """Delete seen ids and payloads past their time; return how many rows went."""
        now = self._clock()
        self._last_prune = now
        with self._engine.begin() as conn:
            removed = conn.execute(delete(seen_updates).where(seen_updates.c.seen_at < int(now - SEEN_TTL_SECONDS)))
            dropped = conn.execute(
                delete(button_payloads).where(button_payloads.c.stored_at < int(now - PAYLOAD_TTL_SECONDS))
            )
        count = int(removed.rowcount) + int(dropped.rowcount)
        if count:
            log.info("channel store: pruned %d old row(s)", count)
        return count
