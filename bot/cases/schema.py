"""Tables of the case store, the engine set up for them, and the migrations that build them.

The tables below describe the *current* schema. ``MIGRATIONS`` is the ordered list of
steps that gets a database there: step ``n`` (1-based) brings it to version ``n``, and
``firstreply_schema`` records the version a database is at. To change the schema, add
what the new version adds (the ``cases`` columns come in one group per version) and append
a step; never edit what an earlier step creates, or a database built by it would differ.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.schema import DDL, CreateColumn, CreateIndex
from sqlalchemy.types import TypeDecorator

from bot.cases.engine import sqlite_or_postgres_engine

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Dialect, Engine
    from sqlalchemy.schema import SchemaItem
    from sqlalchemy.types import TypeEngine

log = logging.getLogger(__name__)

# Fixed width, so that SQLite compares and sorts the stored strings in time order.
_SQLITE_FORMAT = "%Y-%m-%dT%H:%M:%S.%f+00:00"
# Any constant shared by all FirstReply processes; keys the PostgreSQL advisory lock.
_PG_MIGRATION_LOCK = 0x46525F4341534553  # "FR_CASES"
# Execution option: on SQLite, start this connection's transactions with BEGIN IMMEDIATE
# (take the write lock up front) instead of a deferred BEGIN; see ``create_case_engine``.
IMMEDIATE = "firstreply_sqlite_immediate"
SUPPORTED_BACKENDS: tuple[str, ...] = ("sqlite", "postgresql")
# Run on every new SQLite connection: a writer waits up to 30 s (busy_timeout, in ms) for
# another one instead of failing with "locked"; WAL lets readers run beside the writer.
_SQLITE_PRAGMAS: tuple[str, ...] = (
    "PRAGMA busy_timeout = 30000",
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = NORMAL",
)


class SchemaTooNewError(RuntimeError):
    """The database was migrated by a newer FirstReply than the one running."""


class UTCDateTime(TypeDecorator):  # type: ignore[type-arg]
    """A timezone-aware datetime that always reads back as UTC.

    PostgreSQL keeps it as ``timestamp with time zone``; SQLite has no date type, so it
    is kept as a fixed-width ISO 8601 string in UTC. Naive datetimes are refused.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        """Store as text on SQLite, as a native timestamp elsewhere."""
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(32))
        return dialect.type_descriptor(DateTime(timezone=True))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        """Convert an aware datetime to UTC (as text on SQLite)."""
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: case store times must be timezone-aware")
        utc = value.astimezone(timezone.utc)
        return utc.strftime(_SQLITE_FORMAT) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        """Read back an aware UTC datetime."""
        return None if value is None else as_utc(value)


def as_utc(value: Any) -> datetime:
    """Return a stored time as an aware UTC datetime (SQLite keeps it as ISO 8601 text).

    Also for values that lost their column type on the way out (e.g. through ``func.max``).
    """
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.astimezone(timezone.utc)  # type: ignore[no-any-return]


metadata = MetaData()

schema_version = Table(
    "firstreply_schema",
    metadata,
    Column("version", Integer, nullable=False),
)


# The columns of ``cases``, grouped by the schema version that added them. A group is
# never edited once released: a later version adds a group (and a migration step).
# (Table declarations here and in the channels' stores share the ``Column(name, type,
# nullable=...)`` shape; that likeness is the declaration syntax, not repeated logic.)
def _v1_case_columns() -> list[SchemaItem]:
    return [
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("handoff_key", String(255), nullable=False, unique=True),
        Column("channel", String(64), nullable=False),
        Column("sender_id", String(255), nullable=False),
        Column("customer_name", String(255), nullable=True),
        Column("case_type", String(64), nullable=False),
        Column("intent_confidence", Float, nullable=True),
        Column("answers", JSON, nullable=False),
        Column("summary", Text, nullable=False),
        Column("transcript", JSON, nullable=False),
        Column("language", String(16), nullable=False),
        Column("priority", String(16), nullable=False),
        Column("complaint_score", Float, nullable=False),
        Column("promised_by", UTCDateTime, nullable=False),
        Column("promise_wording", Text, nullable=False),
        Column("status", String(16), nullable=False),
        Column("created_at", UTCDateTime, nullable=False),
        Column("updated_at", UTCDateTime, nullable=False),
        Column("claimed_by", String(255), nullable=True),
        Column("claimed_at", UTCDateTime, nullable=True),
        Column("first_human_reply_at", UTCDateTime, nullable=True),
        Column("resolved_at", UTCDateTime, nullable=True),
        # Not called "metadata": that name is taken on Table and declarative classes.
        Column("case_metadata", JSON, nullable=False),
        Index("ix_cases_customer", "channel", "sender_id", "id"),
        Index("ix_cases_status_priority", "status", "priority"),
    ]


def _v2_case_columns() -> list[Column[Any]]:
    """The agent desk."""
    return [
        # Where the desk posted the case card (its thread is the conversation with the customer).
        Column("card_channel", String(64), nullable=True),
        Column("card_ts", String(32), nullable=True),
        # Digest of the card content last delivered to Slack: the desk updates the card when it changes.
        Column("card_digest", String(64), nullable=True),
        Column("resolved_by", String(255), nullable=True),
        Column("followup_asked_at", UTCDateTime, nullable=True),
        # The customer's answers to the follow-up: did it solve it, and a 1-5 rating.
        Column("solved", Boolean, nullable=True),
        Column("rating", Integer, nullable=True),
        Column("reopened_count", Integer, nullable=False, server_default="0"),
    ]


def _v3_case_columns() -> list[Column[Any]]:
    """The watchdog."""
    return [
        # When the promise in force was made (NULL: when the case was opened) and how many
        # times the watchdog replaced it with a new estimate before it fell due.
        Column("promise_made_at", UTCDateTime, nullable=True),
        Column("promise_updates", Integer, nullable=False, server_default="0"),
        # Why the last new estimate was needed (``bot.desk.watchdog`` names the reasons).
        Column("delay_reason", String(16), nullable=True),
        # The promise (its ``promise_updates`` number) last escalated to the leads: once per promise.
        Column("escalated_promise", Integer, nullable=True),
        # When an agent's reply last reached the customer, and when the watchdog then asked
        # the silent customer whether they need anything else.
        Column("last_agent_reply_at", UTCDateTime, nullable=True),
        Column("checkin_at", UTCDateTime, nullable=True),
        Column("closed_at", UTCDateTime, nullable=True),
    ]


def _agent_shifts_table(into: MetaData) -> Table:
    return Table(
        "agent_shifts",
        into,
        Column("agent", String(255), primary_key=True),
        Column("on_shift", Boolean, nullable=False),
        Column("changed_at", UTCDateTime, nullable=False),
    )


cases = Table(
    "cases",
    metadata,
    *_v1_case_columns(),
    *_v2_case_columns(),
    *_v3_case_columns(),
    Index("ix_cases_card", "card_channel", "card_ts"),
)

agent_shifts = _agent_shifts_table(metadata)

# Everything the agent desk sends (Slack posts, messages to customers, Rasa tracker
# events) is written here first, in the same transaction as the change that causes it,
# and delivered by the desk's worker: a crash or an outage loses nothing, and the
# unique idempotency key means nothing is queued twice.
outbox = Table(
    "outbox",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("idempotency_key", String(255), nullable=False, unique=True),
    Column("kind", String(32), nullable=False),
    # Messages with the same target are delivered one at a time, in id order.
    Column("target", String(255), nullable=False),
    Column("case_id", Integer, nullable=True),
    Column("payload", JSON, nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("created_at", UTCDateTime, nullable=False),
    # NULL while undelivered means given up (a permanent error; see last_error).
    Column("next_attempt_at", UTCDateTime, nullable=True),
    # Set while an attempt is under way; still set after a crash: the outcome is in doubt.
    Column("started_at", UTCDateTime, nullable=True),
    Column("delivered_at", UTCDateTime, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("result", JSON, nullable=True),
    Index("ix_outbox_pending", "delivered_at", "id"),
    Index("ix_outbox_case", "case_id", "kind"),
)


def _desk_state_table(name: str, *columns: Column[Any]) -> Table:
    """Return a table of the desk's shared state: one row per ``name``, with when it last changed."""
    return Table(
        name,
        metadata,
        Column("name", String(64), primary_key=True),
        *columns,
        Column("updated_at", UTCDateTime, nullable=False),
    )


# How far the desk has read other logs (Rasa's event broker table), so a restart
# neither skips nor repeats.
desk_cursors = _desk_state_table("desk_cursors", Column("position", Integer, nullable=False))

# Leases: which desk process does a job only one may do at a time (the watchdog), until
# when. Taken and renewed with one conditional UPDATE (see ``DeskState.take_lease``).
desk_leases = _desk_state_table(
    "desk_leases",
    Column("holder", String(255), nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
)


def create_case_engine(url: str) -> Engine:
    """Return an engine for the case database at ``url``, set up for concurrent writers.

    On SQLite: the file's directory is created, WAL lets readers run beside the writer,
    a busy timeout makes writers queue instead of failing, and transactions run with the
    ``IMMEDIATE`` option take the write lock when they begin.

    Raises:
        ValueError: the URL names a database other than SQLite or PostgreSQL.
    """
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend not in SUPPORTED_BACKENDS:
        supported = " and ".join(SUPPORTED_BACKENDS)
        raise ValueError(f"case store supports {supported} databases, not {backend!r}: {parsed!r}")
    engine = sqlite_or_postgres_engine(url, _SQLITE_PRAGMAS, sqlite_own_begin=True)
    if backend != "sqlite":
        return engine

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # Writers take the lock up front: a deferred transaction that reads, then writes
        # after another writer committed fails at once with SQLITE_BUSY in WAL mode.
        immediate = conn.get_execution_options().get(IMMEDIATE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def _frozen_v1_tables() -> list[Table]:
    """Return the tables as version 1 created them (the ``cases`` table has grown since)."""
    v1 = MetaData()
    return [Table("cases", v1, *_v1_case_columns()), _agent_shifts_table(v1)]


def _v1_initial_tables(conn: Connection) -> None:
    tables = _frozen_v1_tables()
    tables[0].metadata.create_all(conn, tables=tables)


def _v2_agent_desk(conn: Connection) -> None:
    """The agent desk: card, follow-up and reopen columns on cases; the outbox; read cursors."""
    _add_case_columns(conn, _v2_case_columns())
    conn.execute(CreateIndex(next(index for index in cases.indexes if index.name == "ix_cases_card")))
    metadata.create_all(conn, tables=[outbox, desk_cursors])


def _v3_watchdog(conn: Connection) -> None:
    """The watchdog: promise updates, escalations, check-ins and closing on cases; leases."""
    _add_case_columns(conn, _v3_case_columns())
    metadata.create_all(conn, tables=[desk_leases])


def _add_case_columns(conn: Connection, added: list[Column[Any]]) -> None:
    for column in added:
        # SQLAlchemy Core has no ADD COLUMN construct; the column definition is compiled
        # from the table above, so names and types come from code, never from input.
        definition = CreateColumn(cases.c[column.name]).compile(dialect=conn.dialect)
        conn.execute(DDL(f"ALTER TABLE cases ADD COLUMN {definition}"))


MIGRATIONS: tuple[Callable[[Connection], None], ...] = (_v1_initial_tables, _v2_agent_desk, _v3_watchdog)


def migrate(engine: Engine) -> int:
    """Bring the database up to the latest schema version, in one transaction.

    Safe when several processes start at once on the same database: on SQLite the
    transaction starts with ``BEGIN IMMEDIATE`` (see ``IMMEDIATE``), so the
    second process waits (busy_timeout) and then finds the work done; on PostgreSQL a
    transaction-scoped advisory lock serialises the migrators.

    Returns:
        The number of steps applied (0 when the database was already current).

    Raises:
        SchemaTooNewError: the database is at a version this code does not know.
    """
    with engine.connect() as conn:
        conn.execution_options(**{IMMEDIATE: True})
        with conn.begin():
            if conn.dialect.name == "postgresql":
                conn.execute(select(func.pg_advisory_xact_lock(_PG_MIGRATION_LOCK)))
            schema_version.create(conn, checkfirst=True)
            current = conn.execute(select(schema_version.c.version)).scalar_one_or_none()
            if current is None:
                conn.execute(insert(schema_version).values(version=0))
                current = 0
            if current > len(MIGRATIONS):
                raise SchemaTooNewError(
                    f"case database is at schema version {current}, this FirstReply "
                    f"knows versions up to {len(MIGRATIONS)}; upgrade FirstReply"
                )
            steps = MIGRATIONS[current:]
            for number, step in enumerate(steps, start=current + 1):
                log.info("case store: applying schema migration %d", number)
                step(conn)
            if steps:
                conn.execute(update(schema_version).values(version=len(MIGRATIONS)))
    return len(steps)
