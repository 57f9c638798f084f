"""Tables of the case store, the engine set up for them, and the migrations that build them.

The tables below describe the *current* schema. ``MIGRATIONS`` is the ordered list of
steps that gets a database there: step ``n`` (1-based) brings it to version ``n``, and
``firstreply_schema`` records the version a database is at. To change the schema, edit
the tables and append a step; once a later step exists, step 1 must keep creating the
version-1 tables (freeze a copy of them) rather than the edited ones.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path
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
    create_engine,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.schema import DDL, CreateColumn, CreateIndex
from sqlalchemy.types import TypeDecorator

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Dialect, Engine
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

cases = Table(
    "cases",
    metadata,
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
    # --- added in version 2 (the agent desk) ---
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
    # --- added in version 3 (the watchdog) ---
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
    Index("ix_cases_customer", "channel", "sender_id", "id"),
    Index("ix_cases_status_priority", "status", "priority"),
    Index("ix_cases_card", "card_channel", "card_ts"),
)
# The columns step 2 adds to ``cases``, in order.
_V2_CASE_COLUMNS: tuple[str, ...] = (
    "card_channel", "card_ts", "card_digest", "resolved_by", "followup_asked_at", "solved", "rating",
    "reopened_count",
)  # fmt: skip

# The columns step 3 adds to ``cases``, in order.
_V3_CASE_COLUMNS: tuple[str, ...] = (
    "promise_made_at", "promise_updates", "delay_reason", "escalated_promise", "last_agent_reply_at", "checkin_at",
    "closed_at",
)  # fmt: skip

agent_shifts = Table(
    "agent_shifts",
    metadata,
    Column("agent", String(255), primary_key=True),
    Column("on_shift", Boolean, nullable=False),
    Column("changed_at", UTCDateTime, nullable=False),
)

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

# How far the desk has read other logs (Rasa's event broker table), so a restart
# neither skips nor repeats.
desk_cursors = Table(
    "desk_cursors",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("position", Integer, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

# Leases: which desk process does a job only one may do at a time (the watchdog), until
# when. Taken and renewed with one conditional UPDATE (see ``DeskState.take_lease``).
desk_leases = Table(
    "desk_leases",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("holder", String(255), nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
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
    if backend != "sqlite":
        return create_engine(url, future=True, pool_pre_ping=True)

    path = parsed.database
    if path and path != ":memory:" and not path.startswith("file:"):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, future=True)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide where transactions begin.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        # How long (ms) a writer waits for another one before failing with "locked".
        cursor.execute("PRAGMA busy_timeout = 30000")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

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
    v1_cases = Table(
        "cases",
        v1,
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
        Column("case_metadata", JSON, nullable=False),
        Index("ix_cases_customer", "channel", "sender_id", "id"),
        Index("ix_cases_status_priority", "status", "priority"),
    )
    v1_shifts = Table(
        "agent_shifts",
        v1,
        Column("agent", String(255), primary_key=True),
        Column("on_shift", Boolean, nullable=False),
        Column("changed_at", UTCDateTime, nullable=False),
    )
    return [v1_cases, v1_shifts]


def _v1_initial_tables(conn: Connection) -> None:
    tables = _frozen_v1_tables()
    tables[0].metadata.create_all(conn, tables=tables)


def _v2_agent_desk(conn: Connection) -> None:
    """The agent desk: card, follow-up and reopen columns on cases; the outbox; read cursors."""
    for name in _V2_CASE_COLUMNS:
        # SQLAlchemy Core has no ADD COLUMN construct; the column definition is compiled
        # from the table above, so names and types come from code, never from input.
        definition = CreateColumn(cases.c[name]).compile(dialect=conn.dialect)
        conn.execute(DDL(f"ALTER TABLE cases ADD COLUMN {definition}"))
    conn.execute(CreateIndex(next(index for index in cases.indexes if index.name == "ix_cases_card")))
    metadata.create_all(conn, tables=[outbox, desk_cursors])


def _add_case_columns(conn: Connection, names: tuple[str, ...]) -> None:
    for name in names:
        # SQLAlchemy Core has no ADD COLUMN construct; the column definition is compiled
        # from the table above, so names and types come from code, never from input.
        definition = CreateColumn(cases.c[name]).compile(dialect=conn.dialect)
        conn.execute(DDL(f"ALTER TABLE cases ADD COLUMN {definition}"))


def _v3_watchdog(conn: Connection) -> None:
    """The watchdog: promise updates, escalations, check-ins and closing on cases; leases."""
    _add_case_columns(conn, _V3_CASE_COLUMNS)
    metadata.create_all(conn, tables=[desk_leases])


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
