"""What every part of the case store shares: the engine, short transactions, the outbox write.

Each part of the store (``bot.cases.store`` lists them) is a ``StorePart`` over one engine.
Every write is one short transaction; a change to a case queues the messages that follow
from it in that same transaction (``enqueue_in``), so a crash loses neither or both.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import update
from sqlalchemy.dialects import postgresql, sqlite

from bot.cases.records import OutboxMessage, json_ready, require_aware
from bot.cases.schema import IMMEDIATE, cases, outbox

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

ENV_CASE_DB = "FIRSTREPLY_CASE_DB"
# INSERT ... ON CONFLICT, per supported database (the generic insert() has no upsert).
# Keys: schema.SUPPORTED_BACKENDS.
UPSERTS = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}


def default_url() -> str:
    """Return the SQLite URL of ``var/cases.db`` under the repository root."""
    repo_root = Path(__file__).resolve().parents[2]
    return f"sqlite:///{repo_root / 'var' / 'cases.db'}"


class StorePart:
    """One concern of the case store, over an engine whose database is already migrated.

    All ``now`` arguments of its methods must be timezone-aware.
    """

    def __init__(self, engine: Engine) -> None:
        """Wrap ``engine`` (``CaseStore.from_url`` builds and migrates it)."""
        self._engine = engine

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """Yield a connection in a write transaction (on SQLite it takes the write lock up front)."""
        with self._engine.connect() as conn:
            conn.execution_options(**{IMMEDIATE: True})
            with conn.begin():
                yield conn

    def _change_case(
        self,
        case_id: int,
        now: datetime,
        conditions: Sequence[Any],
        values: Mapping[str, Any],
        queued: Sequence[OutboxMessage] = (),
    ) -> bool:
        """Set ``values`` (and ``updated_at``) on the case if ``conditions`` hold; queue ``queued`` if so.

        One conditional UPDATE: of callers racing to change the same case, the database
        lets exactly one through.

        Returns:
            True if this call changed the case.
        """
        require_aware(now, "now")
        change = update(cases).where(cases.c.id == case_id, *conditions).values(**values, updated_at=now)
        with self._write() as conn:
            done = bool(conn.execute(change).rowcount == 1)
            if done:
                enqueue_in(conn, queued, now)
        return done


def enqueue_in(conn: Connection, messages: Sequence[OutboxMessage], now: datetime) -> int:
    """Insert ``messages`` into the outbox, skipping keys already there; return how many went in."""
    if not messages:
        return 0
    insert_new = UPSERTS[conn.dialect.name](outbox).on_conflict_do_nothing(index_elements=["idempotency_key"])
    added = 0
    for message in messages:
        row = {
            "idempotency_key": message.key,
            "kind": message.kind,
            "target": message.target,
            "case_id": message.case_id,
            "payload": json_ready(message.payload),
            "attempts": 0,
            "created_at": now,
            "next_attempt_at": now,
        }
        added += conn.execute(insert_new.values(**row)).rowcount
    return added


def key_starts(key_prefix: str) -> Any:
    """Return a condition on ``outbox``: the idempotency key starts with ``key_prefix``."""
    return outbox.c.idempotency_key.like(_like_prefix(key_prefix), escape="\\")


def _like_prefix(prefix: str) -> str:
    """Return a LIKE pattern matching text that starts with ``prefix`` (its wildcards escaped)."""
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
