"""The case store: cases handed from the assistant to the human team, and agent shifts.

SQLite (a file under ``var/`` by default) on one machine, PostgreSQL in production; the
same code runs on both. Every write is one short transaction; the races that matter
(two agents claiming one case, a handoff retried while the first attempt is still in
flight) are settled by the database, not by reading first and writing after.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from bot.cases.schema import IMMEDIATE, agent_shifts, cases, create_case_engine, migrate
from bot.constants import (
    OPEN_STATUSES,
    PRIORITIES,
    STATUS_CLAIMED,
    STATUS_RESOLVED,
    STATUS_WAITING,
    priority_rank,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine, Row

log = logging.getLogger(__name__)

ENV_CASE_DB = "FIRSTREPLY_CASE_DB"
# INSERT ... ON CONFLICT, per supported database (the generic insert() has no upsert).
# Keys: schema.SUPPORTED_BACKENDS.
_UPSERTS = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}
TRANSCRIPT_SPEAKERS: tuple[str, ...] = ("customer", "bot", "agent", "system")


def default_url() -> str:
    """Return the SQLite URL of ``var/cases.db`` under the repository root."""
    repo_root = Path(__file__).resolve().parents[2]
    return f"sqlite:///{repo_root / 'var' / 'cases.db'}"


def _require_aware(value: datetime, name: str) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got {value!r}")


@dataclass(frozen=True)
class TranscriptLine:
    """One message of the conversation that led to a case."""

    who: str
    text: str
    at: datetime

    def __post_init__(self) -> None:
        if self.who not in TRANSCRIPT_SPEAKERS:
            raise ValueError(
                f"transcript speaker must be one of {TRANSCRIPT_SPEAKERS}, got {self.who!r}"
            )
        _require_aware(self.at, "TranscriptLine.at")

    def to_dict(self) -> dict[str, str]:
        """Return the line as JSON-ready data, ``at`` in ISO 8601 with its offset."""
        return {"who": self.who, "text": self.text, "at": self.at.isoformat()}

    @classmethod
    def from_dict(cls, data: Mapping[str, str]) -> TranscriptLine:
        """Build a line from ``to_dict`` output."""
        return cls(who=data["who"], text=data["text"], at=datetime.fromisoformat(data["at"]))


@dataclass(frozen=True)
class NewCase:
    """Everything the assistant knows when it hands a conversation to a person.

    ``handoff_key`` makes opening idempotent: opening the same key again returns the case
    already opened for it.
    """

    channel: str
    sender_id: str
    customer_name: str | None
    case_type: str
    intent_confidence: float | None
    answers: Mapping[str, str]
    summary: str
    transcript: Sequence[TranscriptLine]
    language: str
    priority: str
    complaint_score: float
    promised_by: datetime
    promise_wording: str
    handoff_key: str
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.priority not in PRIORITIES:
            raise ValueError(f"priority must be one of {PRIORITIES}, got {self.priority!r}")
        _require_aware(self.promised_by, "NewCase.promised_by")
        if not self.handoff_key:
            raise ValueError("NewCase.handoff_key must not be empty")


@dataclass(frozen=True)
class Case:
    """A case as stored: the handoff plus its life in the queue. Times are UTC."""

    id: int
    channel: str
    sender_id: str
    customer_name: str | None
    case_type: str
    intent_confidence: float | None
    answers: Mapping[str, str]
    summary: str
    transcript: tuple[TranscriptLine, ...]
    language: str
    priority: str
    complaint_score: float
    promised_by: datetime
    promise_wording: str
    handoff_key: str
    metadata: Mapping[str, Any]
    status: str
    created_at: datetime
    updated_at: datetime
    previous_cases: tuple[int, ...]
    claimed_by: str | None
    claimed_at: datetime | None
    first_human_reply_at: datetime | None
    resolved_at: datetime | None

    def to_dict(self) -> dict[str, Any]:
        """Return the case as JSON-ready data (datetimes in ISO 8601 with offset)."""
        return {key: _json_ready(getattr(self, key)) for key in _CASE_DICT_KEYS}


# The keys of ``Case.to_dict``, in order. ``handoff_key`` is internal and left out.
_CASE_DICT_KEYS: tuple[str, ...] = (
    "id", "channel", "sender_id", "customer_name", "case_type", "intent_confidence", "answers",
    "summary", "transcript", "language", "priority", "complaint_score", "previous_cases",
    "promised_by", "promise_wording", "status", "created_at", "updated_at", "claimed_by",
    "claimed_at", "first_human_reply_at", "resolved_at", "metadata",
)  # fmt: skip


def _json_ready(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, TranscriptLine):
        return value.to_dict()
    if isinstance(value, Mapping):
        return {key: _json_ready(item) for key, item in value.items()}
    if isinstance(value, (tuple, list)):
        return [_json_ready(item) for item in value]
    return value


class CaseStore:
    """Opens, reads and moves cases through the queue; records which agents are on shift.

    Build it with ``CaseStore.from_url``. All ``now`` arguments must be timezone-aware.
    """

    def __init__(self, engine: Engine) -> None:
        """Wrap an engine whose database is already migrated (use ``from_url``)."""
        self._engine = engine

    @classmethod
    def from_url(cls, url: str | None = None) -> CaseStore:
        """Connect to ``url`` and bring its schema up to date.

        Args:
            url: SQLAlchemy URL. ``None`` takes ``$FIRSTREPLY_CASE_DB``, else the SQLite file
                ``var/cases.db`` under the repository root (its directory is created).
        """
        url = url or os.environ.get(ENV_CASE_DB) or default_url()
        engine = create_case_engine(url)
        applied = migrate(engine)
        if applied:
            # %r: the URL's repr hides the password.
            log.info("case store at %r: applied %d schema migration(s)", engine.url, applied)
        return cls(engine)

    def dispose(self) -> None:
        """Close every pooled connection."""
        self._engine.dispose()

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self._engine.connect() as conn:
            conn.execution_options(**{IMMEDIATE: True})
            with conn.begin():
                yield conn

    # --- opening and reading ---------------------------------------------------------

    def open_case(self, new: NewCase, now: datetime) -> Case:
        """Open a waiting case, or return the one already opened for ``new.handoff_key``."""
        _require_aware(now, "now")
        existing = self._get_by_key(new.handoff_key)
        if existing is not None:
            return existing
        row = {
            "handoff_key": new.handoff_key,
            "channel": new.channel,
            "sender_id": new.sender_id,
            "customer_name": new.customer_name,
            "case_type": new.case_type,
            "intent_confidence": new.intent_confidence,
            "answers": dict(new.answers),
            "summary": new.summary,
            "transcript": [line.to_dict() for line in new.transcript],
            "language": new.language,
            "priority": new.priority,
            "complaint_score": new.complaint_score,
            "promised_by": new.promised_by,
            "promise_wording": new.promise_wording,
            "status": STATUS_WAITING,
            "created_at": now,
            "updated_at": now,
            "case_metadata": dict(new.metadata),
        }
        try:
            with self._write() as conn:
                case_id = conn.execute(insert(cases).values(**row)).inserted_primary_key[0]
        except IntegrityError:
            # Another process opened the same handoff between our check and our insert.
            existing = self._get_by_key(new.handoff_key)
            if existing is None:
                raise
            return existing
        log.info("case %s opened (%s, %s)", case_id, new.case_type, new.priority)
        opened = self.get(case_id)
        assert opened is not None  # committed above; cases are never deleted
        return opened

    def get(self, case_id: int) -> Case | None:
        """Return the case with this id, or ``None``."""
        found = self._select(cases.c.id == case_id)
        return found[0] if found else None

    def list_cases(self, status: str | None = None) -> list[Case]:
        """Return all cases, or those with ``status``, oldest first."""
        return self._select(cases.c.status == status if status is not None else None)

    def cases_for_customer(self, channel: str, sender_id: str) -> list[Case]:
        """Return every case of one customer on one channel, oldest first."""
        return self._select(and_(cases.c.channel == channel, cases.c.sender_id == sender_id))

    def _get_by_key(self, handoff_key: str) -> Case | None:
        found = self._select(cases.c.handoff_key == handoff_key)
        return found[0] if found else None

    def _select(self, where: Any) -> list[Case]:
        query = select(cases).order_by(cases.c.created_at, cases.c.id)
        earlier = cases.alias("earlier")
        history = (
            select(cases.c.id, earlier.c.id)
            .join(
                earlier,
                and_(
                    earlier.c.channel == cases.c.channel,
                    earlier.c.sender_id == cases.c.sender_id,
                    earlier.c.id < cases.c.id,
                ),
            )
            .order_by(earlier.c.id)
        )
        if where is not None:
            query = query.where(where)
            history = history.where(where)
        with self._engine.connect() as conn:
            rows = conn.execute(query).all()
            previous: dict[int, list[int]] = {}
            for case_id, earlier_id in conn.execute(history):
                previous.setdefault(case_id, []).append(earlier_id)
        return [_case_from_row(row, tuple(previous.get(row.id, ()))) for row in rows]

    # --- queue figures for the promise ------------------------------------------------

    def count_waiting_ahead(self, priority: str, now: datetime) -> int:
        """Count the waiting cases agents will serve before a new case of ``priority``.

        Those are the cases waiting at ``now`` with the same or a more urgent priority.
        """
        _require_aware(now, "now")
        if priority not in PRIORITIES:
            raise ValueError(f"priority must be one of {PRIORITIES}, got {priority!r}")
        as_urgent = PRIORITIES[priority_rank(priority) :]
        query = (
            select(func.count())
            .select_from(cases)
            .where(cases.c.status == STATUS_WAITING)
            .where(cases.c.priority.in_(as_urgent))
            .where(cases.c.created_at <= now)
        )
        with self._engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def recent_handle_minutes(self, now: datetime, window_days: int) -> tuple[float | None, int]:
        """Return the mean minutes from claim to resolve, and the sample size.

        The sample is the claimed cases resolved in the ``window_days`` days up to ``now``;
        the mean is ``None`` when the sample is empty.
        """
        _require_aware(now, "now")
        query = select(cases.c.claimed_at, cases.c.resolved_at).where(
            cases.c.claimed_at.is_not(None),
            cases.c.resolved_at > now - timedelta(days=window_days),
            cases.c.resolved_at <= now,
        )
        with self._engine.connect() as conn:
            spans = [
                (resolved - claimed).total_seconds() / 60
                for claimed, resolved in conn.execute(query)
            ]
        if not spans:
            return None, 0
        return sum(spans) / len(spans), len(spans)

    # --- moving a case through the queue ----------------------------------------------

    def claim(self, case_id: int, agent: str, now: datetime) -> bool:
        """Give a waiting case to ``agent``. Of agents racing for one case, exactly one wins.

        Returns:
            True if this call claimed the case; False if it was not waiting (or unknown).
        """
        _require_aware(now, "now")
        claim = (
            update(cases)
            .where(cases.c.id == case_id, cases.c.status == STATUS_WAITING)
            .values(status=STATUS_CLAIMED, claimed_by=agent, claimed_at=now, updated_at=now)
        )
        with self._write() as conn:
            won = conn.execute(claim).rowcount == 1
        if won:
            log.info("case %s claimed by %s", case_id, agent)
        return won

    def record_human_reply(self, case_id: int, now: datetime) -> None:
        """Note when a person first answered the customer (later replies change nothing)."""
        _require_aware(now, "now")
        first_reply = (
            update(cases)
            .where(cases.c.id == case_id, cases.c.first_human_reply_at.is_(None))
            .values(first_human_reply_at=now, updated_at=now)
        )
        with self._write() as conn:
            conn.execute(first_reply)

    def resolve(self, case_id: int, now: datetime) -> bool:
        """Mark an open (waiting or claimed) case resolved.

        Returns:
            True if this call resolved it; False if it was not open (or unknown).
        """
        _require_aware(now, "now")
        resolve = (
            update(cases)
            .where(cases.c.id == case_id, cases.c.status.in_(OPEN_STATUSES))
            .values(status=STATUS_RESOLVED, resolved_at=now, updated_at=now)
        )
        with self._write() as conn:
            done = conn.execute(resolve).rowcount == 1
        if done:
            log.info("case %s resolved", case_id)
        return done

    # --- agent shifts -------------------------------------------------------------------

    def set_agent_shift(self, agent: str, on: bool, now: datetime) -> None:
        """Record that ``agent`` went on (``on=True``) or off shift."""
        _require_aware(now, "now")
        values = {"on_shift": on, "changed_at": now}
        with self._write() as conn:
            upsert = _UPSERTS[conn.dialect.name](agent_shifts).values(agent=agent, **values)
            conn.execute(upsert.on_conflict_do_update(index_elements=["agent"], set_=values))

    def agents_on_shift(self) -> int:
        """Return how many agents are on shift."""
        query = (
            select(func.count())
            .select_from(agent_shifts)
            .where(agent_shifts.c.on_shift.is_(True))
        )
        with self._engine.connect() as conn:
            return int(conn.execute(query).scalar_one())


def _case_from_row(row: Row, previous_cases: tuple[int, ...]) -> Case:
    values = dict(row._mapping)
    values["metadata"] = values.pop("case_metadata")
    values["transcript"] = tuple(TranscriptLine.from_dict(line) for line in values["transcript"])
    return Case(**values, previous_cases=previous_cases)
