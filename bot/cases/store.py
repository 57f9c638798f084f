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
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, exists, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from bot.cases.schema import (
    IMMEDIATE,
    agent_shifts,
    cases,
    create_case_engine,
    desk_cursors,
    desk_leases,
    migrate,
    outbox,
)
from bot.constants import (
    OPEN_STATUSES,
    PRIORITIES,
    STATUS_CLAIMED,
    STATUS_CLOSED,
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
    # The agent desk's fields (schema version 2). ``to_dict`` leaves them out: it is the
    # hand-off record, and these describe the case's life in Slack.
    card_channel: str | None = None
    card_ts: str | None = None
    card_digest: str | None = None
    resolved_by: str | None = None
    followup_asked_at: datetime | None = None
    solved: bool | None = None
    rating: int | None = None
    reopened_count: int = 0
    # The watchdog's fields (schema version 3); also left out of ``to_dict``.
    promise_made_at: datetime | None = None
    promise_updates: int = 0
    delay_reason: str | None = None
    escalated_promise: int | None = None
    last_agent_reply_at: datetime | None = None
    checkin_at: datetime | None = None
    closed_at: datetime | None = None

    @property
    def promise_start(self) -> datetime:
        """Return when the promise in force was made (the opening, until the watchdog replaced it)."""
        return self.promise_made_at or self.created_at

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


@dataclass(frozen=True)
class HandledTiming:
    """When an answered case was opened, claimed and first answered, and its queue position.

    Attributes:
        case_id: The case.
        created_at: When it was opened (UTC).
        claimed_at: When an agent claimed it (UTC), or None if it was answered unclaimed.
        first_human_reply_at: When a person first answered (UTC).
        cases_ahead: Cases waiting ahead of it when it was opened, counted as
            ``count_waiting_ahead`` counts them: same or more urgent priority, opened
            before it, neither claimed nor resolved yet.
    """

    case_id: int
    created_at: datetime
    claimed_at: datetime | None
    first_human_reply_at: datetime
    cases_ahead: int


@dataclass(frozen=True)
class OutboxMessage:
    """Something to send, queued in the outbox before it is sent.

    Attributes:
        key: Idempotency key: queueing the same key again queues nothing.
        kind: What the desk's worker does with it (``bot.desk.outbox`` names the kinds).
        target: Messages with the same target are delivered one at a time, in order.
        payload: JSON-ready data for the worker.
        case_id: The case it belongs to, if any.
    """

    key: str
    kind: str
    target: str
    payload: Mapping[str, Any] = field(default_factory=dict)
    case_id: int | None = None


@dataclass(frozen=True)
class OutboxItem:
    """A queued message as stored, with its delivery state. Times are UTC.

    ``next_attempt_at`` is None for a message given up on (undelivered, permanent error).
    ``result`` holds what delivery returned, and ``{"in_doubt": true}`` once an attempt
    was cut off (the desk stopped while it was under way).
    """

    id: int
    key: str
    kind: str
    target: str
    case_id: int | None
    payload: Mapping[str, Any]
    attempts: int
    created_at: datetime
    next_attempt_at: datetime | None
    started_at: datetime | None
    delivered_at: datetime | None
    last_error: str | None
    result: Mapping[str, Any] | None

    @property
    def in_doubt(self) -> bool:
        """Return whether an earlier attempt was cut off, so it may have gone through."""
        return bool((self.result or {}).get("in_doubt"))


@dataclass(frozen=True)
class CaseFigures:
    """What the desk's metrics need of a case. Times are UTC.

    Attributes:
        first_customer_at: The customer's first message in the transcript, if any.
        first_bot_at: The assistant's first message after it, if any.
    """

    id: int
    channel: str
    case_type: str
    priority: str
    status: str
    created_at: datetime
    claimed_at: datetime | None
    first_human_reply_at: datetime | None
    resolved_at: datetime | None
    closed_at: datetime | None
    promised_by: datetime
    promise_updates: int
    escalated_promise: int | None
    checkin_at: datetime | None
    rating: int | None
    first_customer_at: datetime | None
    first_bot_at: datetime | None


@dataclass(frozen=True)
class CardPlacement:
    """Where a case card is in Slack, and a digest of the content it shows."""

    channel: str | None
    ts: str | None
    digest: str


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

    def cases_opened_between(
        self, since: datetime | None = None, until: datetime | None = None
    ) -> list[Case]:
        """Return the cases opened at or after ``since`` and before ``until``, oldest first.

        ``None`` leaves that end open.
        """
        conditions = []
        if since is not None:
            _require_aware(since, "since")
            conditions.append(cases.c.created_at >= since)
        if until is not None:
            _require_aware(until, "until")
            conditions.append(cases.c.created_at < until)
        return self._select(and_(*conditions) if conditions else None)

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

    def handled_timings(self, now: datetime, window_days: int) -> list[HandledTiming]:
        """Return the cases first answered by a person in the ``window_days`` days up to ``now``.

        Each comes with its queue position when it was opened, rebuilt from the stored
        timestamps (a case waits from ``created_at`` until it is claimed, answered or
        resolved, whichever comes first), so the estimate can tell a slow reply from a long
        queue. Oldest first. A reopened case's second wait is not counted: the store keeps
        only its latest claim.
        """
        _require_aware(now, "now")
        handled_query = (
            select(
                cases.c.id,
                cases.c.priority,
                cases.c.created_at,
                cases.c.claimed_at,
                cases.c.first_human_reply_at,
            )
            .where(
                cases.c.first_human_reply_at > now - timedelta(days=window_days),
                cases.c.first_human_reply_at <= now,
            )
            .order_by(cases.c.created_at, cases.c.id)
        )
        with self._engine.connect() as conn:
            handled = conn.execute(handled_query).all()
            if not handled:
                return []
            first_opened = min(row.created_at for row in handled)
            last_opened = max(row.created_at for row in handled)
            # Every case that may have been waiting while one of those was opened.
            queue_query = select(
                cases.c.id,
                cases.c.priority,
                cases.c.created_at,
                cases.c.claimed_at,
                cases.c.first_human_reply_at,
                cases.c.resolved_at,
            ).where(
                cases.c.created_at <= last_opened,
                or_(cases.c.claimed_at.is_(None), cases.c.claimed_at >= first_opened),
                or_(
                    cases.c.first_human_reply_at.is_(None),
                    cases.c.first_human_reply_at >= first_opened,
                ),
                or_(cases.c.resolved_at.is_(None), cases.c.resolved_at >= first_opened),
            )
            queued = conn.execute(queue_query).all()
        ahead = _waiting_ahead_at_opening(queued, {row.id for row in handled})
        return [
            HandledTiming(
                case_id=row.id,
                created_at=row.created_at,
                claimed_at=row.claimed_at,
                first_human_reply_at=row.first_human_reply_at,
                cases_ahead=ahead.get(row.id, 0),
            )
            for row in handled
        ]

    # --- moving a case through the queue ----------------------------------------------

    def claim(
        self, case_id: int, agent: str, now: datetime, *, outbox: Sequence[OutboxMessage] = ()
    ) -> bool:
        """Give a waiting case to ``agent``. Of agents racing for one case, exactly one wins.

        Args:
            outbox: Messages queued in the same transaction, only if this call wins.

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
                _enqueue(conn, outbox, now)
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

    def resolve(
        self,
        case_id: int,
        now: datetime,
        *,
        by: str | None = None,
        only_if_claimed_by: str | None = None,
        outbox: Sequence[OutboxMessage] = (),
    ) -> bool:
        """Mark an open (waiting or claimed) case resolved.

        Args:
            by: Who resolved it.
            only_if_claimed_by: Resolve only a case this agent holds (so an owner who lost
                the case to a reassignment a moment ago cannot resolve it).
            outbox: Messages queued in the same transaction, only if this call resolves it.

        Returns:
            True if this call resolved it; False if it was not open (or unknown).
        """
        _require_aware(now, "now")
        conditions = [cases.c.id == case_id, cases.c.status.in_(OPEN_STATUSES)]
        if only_if_claimed_by is not None:
            conditions += [cases.c.status == STATUS_CLAIMED, cases.c.claimed_by == only_if_claimed_by]
        resolve = (
            update(cases)
            .where(*conditions)
            .values(status=STATUS_RESOLVED, resolved_at=now, resolved_by=by, updated_at=now)
        )
        with self._write() as conn:
            done = conn.execute(resolve).rowcount == 1
            if done:
                _enqueue(conn, outbox, now)
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

    # --- the agent desk: the case's life in Slack ----------------------------------------

    def reassign(
        self,
        case_id: int,
        from_agent: str,
        to_agent: str,
        now: datetime,
        *,
        outbox: Sequence[OutboxMessage] = (),
    ) -> bool:
        """Hand a claimed case from ``from_agent`` to ``to_agent``.

        Returns:
            True if this call moved it; False if ``from_agent`` no longer held it.
        """
        _require_aware(now, "now")
        move = (
            update(cases)
            .where(cases.c.id == case_id, cases.c.status == STATUS_CLAIMED, cases.c.claimed_by == from_agent)
            .values(claimed_by=to_agent, claimed_at=now, updated_at=now)
        )
        with self._write() as conn:
            moved = conn.execute(move).rowcount == 1
            if moved:
                _enqueue(conn, outbox, now)
        if moved:
            log.info("case %s reassigned from %s to %s", case_id, from_agent, to_agent)
        return moved

    def reopen(self, case_id: int, now: datetime, *, outbox: Sequence[OutboxMessage] = ()) -> bool:
        """Put a resolved case back in the queue: the customer says it is not solved.

        The case waits again for anyone to claim; ``reopened_count`` goes up by one and
        ``solved`` records the customer's answer.

        Returns:
            True if this call reopened it; False if it was not resolved (or unknown).
        """
        _require_aware(now, "now")
        reopen = (
            update(cases)
            .where(cases.c.id == case_id, cases.c.status == STATUS_RESOLVED)
            .values(
                status=STATUS_WAITING,
                claimed_by=None,
                claimed_at=None,
                resolved_at=None,
                resolved_by=None,
                followup_asked_at=None,
                solved=False,
                reopened_count=cases.c.reopened_count + 1,
                updated_at=now,
            )
        )
        with self._write() as conn:
            done = conn.execute(reopen).rowcount == 1
            if done:
                _enqueue(conn, outbox, now)
        if done:
            log.info("case %s reopened", case_id)
        return done

    def mark_followup_asked(self, case_id: int, now: datetime) -> bool:
        """Note that the customer was asked the follow-up questions of a resolved case.

        Returns:
            True the first time for a resolution; False if already asked (or not resolved).
        """
        _require_aware(now, "now")
        mark = (
            update(cases)
            .where(
                cases.c.id == case_id,
                cases.c.status == STATUS_RESOLVED,
                cases.c.followup_asked_at.is_(None),
            )
            .values(followup_asked_at=now, updated_at=now)
        )
        with self._write() as conn:
            return bool(conn.execute(mark).rowcount == 1)

    def record_followup(
        self,
        case_id: int,
        now: datetime,
        *,
        solved: bool | None = None,
        rating: int | None = None,
        outbox: Sequence[OutboxMessage] = (),
    ) -> bool:
        """Store the customer's follow-up answers on a resolved case (``None`` leaves one as it is).

        ``outbox`` messages are queued in the same transaction, only if the answers were stored.

        Returns:
            True if stored; False if the case is not resolved (or unknown).
        """
        _require_aware(now, "now")
        if rating is not None and not 1 <= rating <= 5:
            raise ValueError(f"rating must be 1 to 5, got {rating!r}")
        values: dict[str, Any] = {"updated_at": now}
        if solved is not None:
            values["solved"] = solved
        if rating is not None:
            values["rating"] = rating
        record = update(cases).where(cases.c.id == case_id, cases.c.status == STATUS_RESOLVED).values(**values)
        with self._write() as conn:
            stored = conn.execute(record).rowcount == 1
            if stored:
                _enqueue(conn, outbox, now)
        return stored

    def case_by_card(self, channel: str, ts: str) -> Case | None:
        """Return the case whose card is the Slack message ``ts`` in ``channel``, or ``None``."""
        found = self._select(and_(cases.c.card_channel == channel, cases.c.card_ts == ts))
        return found[0] if found else None

    def open_case_for_customer(self, channel: str, sender_id: str) -> Case | None:
        """Return the customer's newest open (waiting or claimed) case on ``channel``, or ``None``."""
        found = self._select(
            and_(cases.c.channel == channel, cases.c.sender_id == sender_id, cases.c.status.in_(OPEN_STATUSES))
        )
        return found[-1] if found else None

    def open_cases(self) -> list[Case]:
        """Return the open (waiting or claimed) cases, the earliest promise first."""
        found = self._select(cases.c.status.in_(OPEN_STATUSES))
        return sorted(found, key=lambda case: (case.promised_by, case.id))

    def cases_without_card(self) -> list[Case]:
        """Return the open cases whose card is not in Slack yet, oldest first."""
        return self._select(and_(cases.c.status.in_(OPEN_STATUSES), cases.c.card_ts.is_(None)))

    def cases_with_cards(self, changed_since: datetime) -> list[Case]:
        """Return the cases with a card that are open or changed since ``changed_since``."""
        _require_aware(changed_since, "changed_since")
        return self._select(
            and_(
                cases.c.card_ts.is_not(None),
                or_(cases.c.status.in_(OPEN_STATUSES), cases.c.updated_at >= changed_since),
            )
        )

    # --- the outbox -------------------------------------------------------------------------

    def enqueue(self, messages: Sequence[OutboxMessage], now: datetime) -> int:
        """Queue ``messages`` (those whose key is already queued are left out).

        Returns:
            How many were newly queued.
        """
        _require_aware(now, "now")
        with self._write() as conn:
            return _enqueue(conn, messages, now)

    def outbox_ready(
        self, now: datetime, limit: int = 50, *, first_kinds: Sequence[str] = (), scan: int = 5000
    ) -> list[OutboxItem]:
        """Return the messages to try now: per target, the oldest undelivered one, if due.

        Args:
            first_kinds: Kinds that go before the other messages of their target (a case's
                card before the replies in its thread, whatever was queued first).
            scan: How many undelivered messages to look at, oldest first.

        Messages given up on do not hold up the ones behind them. Oldest first.
        """
        _require_aware(now, "now")
        live = select(outbox.c.id, outbox.c.target, outbox.c.kind, outbox.c.next_attempt_at, outbox.c.started_at)
        live = live.where(outbox.c.delivered_at.is_(None), outbox.c.next_attempt_at.is_not(None))
        with self._engine.connect() as conn:
            rows = conn.execute(live.order_by(outbox.c.id).limit(scan)).all()
            heads: dict[str, Row] = {}
            for row in rows:
                current = heads.get(row.target)
                if current is None or (row.kind in first_kinds and current.kind not in first_kinds):
                    heads[row.target] = row
            due = sorted(
                row.id for row in heads.values() if row.started_at is None and row.next_attempt_at <= now
            )[:limit]
            if not due:
                return []
            found = conn.execute(select(outbox).where(outbox.c.id.in_(due)).order_by(outbox.c.id))
            return [_outbox_item(row) for row in found]

    def start_delivery(self, item_id: int, now: datetime) -> OutboxItem | None:
        """Mark an attempt at ``item_id`` as under way; ``None`` if it is delivered or already under way."""
        _require_aware(now, "now")
        start = (
            update(outbox)
            .where(outbox.c.id == item_id, outbox.c.delivered_at.is_(None), outbox.c.started_at.is_(None))
            .values(started_at=now, attempts=outbox.c.attempts + 1)
        )
        with self._write() as conn:
            if conn.execute(start).rowcount != 1:
                return None
            row = conn.execute(select(outbox).where(outbox.c.id == item_id)).one()
        return _outbox_item(row)

    def finish_delivery(
        self,
        item_id: int,
        now: datetime,
        result: Mapping[str, Any] | None = None,
        *,
        then: Sequence[OutboxMessage] = (),
        card: CardPlacement | None = None,
        human_reply: bool = False,
    ) -> None:
        """Mark ``item_id`` delivered and, in the same transaction, record what follows from it.

        Args:
            result: What the delivery returned (e.g. a Slack message ts).
            then: Messages that may only go once this one went.
            card: Where the message's case card now is (channel and ts are kept when None).
            human_reply: A person's reply reached the customer of the message's case.
        """
        _require_aware(now, "now")
        with self._write() as conn:
            item = conn.execute(select(outbox.c.case_id).where(outbox.c.id == item_id)).one()
            conn.execute(
                update(outbox)
                .where(outbox.c.id == item_id)
                .values(delivered_at=now, started_at=None, last_error=None, result=dict(result or {}))
            )
            _enqueue(conn, then, now)
            if card is not None and item.case_id is not None:
                values: dict[str, Any] = {"card_digest": card.digest}
                if card.channel is not None and card.ts is not None:
                    values.update(card_channel=card.channel, card_ts=card.ts)
                conn.execute(update(cases).where(cases.c.id == item.case_id).values(**values))
            if human_reply and item.case_id is not None:
                conn.execute(
                    update(cases)
                    .where(cases.c.id == item.case_id, cases.c.first_human_reply_at.is_(None))
                    .values(first_human_reply_at=now, updated_at=now)
                )
                conn.execute(update(cases).where(cases.c.id == item.case_id).values(last_agent_reply_at=now))

    def fail_delivery(self, item_id: int, error: str, retry_at: datetime | None) -> None:
        """Record a failed attempt: try again at ``retry_at``, or give up when it is ``None``."""
        if retry_at is not None:
            _require_aware(retry_at, "retry_at")
        with self._write() as conn:
            conn.execute(
                update(outbox)
                .where(outbox.c.id == item_id, outbox.c.delivered_at.is_(None))
                .values(started_at=None, last_error=error[:2000], next_attempt_at=retry_at)
            )

    def postpone_delivery(self, item_id: int, retry_at: datetime, reason: str) -> None:
        """Put an attempt back without counting it (what it needs is not there yet)."""
        _require_aware(retry_at, "retry_at")
        with self._write() as conn:
            conn.execute(
                update(outbox)
                .where(outbox.c.id == item_id, outbox.c.delivered_at.is_(None))
                .values(
                    started_at=None, attempts=outbox.c.attempts - 1, last_error=reason, next_attempt_at=retry_at
                )
            )

    def recover_interrupted(self) -> int:
        """Mark every attempt left under way as in doubt and due again; return how many.

        For the elected desk leader when it takes over (bot/election.py): an attempt still under
        way then was cut off by a crash of the previous leader, so it may or may not have gone through.
        """
        with self._write() as conn:
            return int(
                conn.execute(
                    update(outbox)
                    .where(outbox.c.delivered_at.is_(None), outbox.c.started_at.is_not(None))
                    .values(
                        started_at=None,
                        result={"in_doubt": True},
                        last_error="interrupted: the desk stopped during delivery",
                    )
                ).rowcount
            )

    def outbox_items(self, *, case_id: int | None = None, kind: str | None = None) -> list[OutboxItem]:
        """Return queued messages (of a case, of a kind), oldest first, delivered or not."""
        query = select(outbox).order_by(outbox.c.id)
        if case_id is not None:
            query = query.where(outbox.c.case_id == case_id)
        if kind is not None:
            query = query.where(outbox.c.kind == kind)
        with self._engine.connect() as conn:
            return [_outbox_item(row) for row in conn.execute(query)]

    def has_undelivered(self, case_id: int, kind: str) -> bool:
        """Return whether a message of ``kind`` for the case is still waiting to go."""
        query = (
            select(func.count())
            .select_from(outbox)
            .where(
                outbox.c.case_id == case_id,
                outbox.c.kind == kind,
                outbox.c.delivered_at.is_(None),
                outbox.c.next_attempt_at.is_not(None),
            )
        )
        with self._engine.connect() as conn:
            return int(conn.execute(query).scalar_one()) > 0

    def count_outbox(self, *, kind: str | None = None, key_prefix: str | None = None) -> int:
        """Return how many messages were ever queued (of ``kind``, with keys starting ``key_prefix``)."""
        query = select(func.count()).select_from(outbox)
        if kind is not None:
            query = query.where(outbox.c.kind == kind)
        if key_prefix is not None:
            query = query.where(outbox.c.idempotency_key.like(_like_prefix(key_prefix), escape="\\"))
        with self._engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def outbox_backlog(self) -> tuple[int, int]:
        """Return how many messages wait to be delivered, and how many were given up on."""
        query = select(
            func.count().filter(outbox.c.next_attempt_at.is_not(None)),
            func.count().filter(outbox.c.next_attempt_at.is_(None)),
        ).where(outbox.c.delivered_at.is_(None))
        with self._engine.connect() as conn:
            pending, failed = conn.execute(query).one()
        return int(pending or 0), int(failed or 0)

    # --- the watchdog ---------------------------------------------------------------------------

    def last_queued(self, case_ids: Sequence[int], key_prefix: str) -> dict[int, datetime]:
        """Return, per case, when a message with a key starting ``key_prefix`` was last queued.

        The desk relays each customer message to its case's thread under a key of its own
        (``bot.desk.messages.RELAY_IN_PREFIX``), so this is when the customer last wrote.
        """
        if not case_ids:
            return {}
        query = (
            select(outbox.c.case_id, func.max(outbox.c.created_at))
            .where(outbox.c.case_id.in_(list(case_ids)))
            .where(outbox.c.idempotency_key.like(_like_prefix(key_prefix), escape="\\"))
            .group_by(outbox.c.case_id)
        )
        with self._engine.connect() as conn:
            rows = conn.execute(query).all()
        # func.max loses the column type: read the stored value back as UTCDateTime does.
        return {int(case_id): _as_utc(latest) for case_id, latest in rows if latest is not None}

    def mark_escalated(
        self, case_id: int, promise_number: int, now: datetime, *, outbox: Sequence[OutboxMessage] = ()
    ) -> bool:
        """Record that promise ``promise_number`` of a waiting case was escalated (once per promise).

        ``outbox`` is queued in the same transaction, only if this call recorded it.

        Returns:
            True the first time for that promise; False if already escalated, or the case moved on.
        """
        _require_aware(now, "now")
        mark = (
            update(cases)
            .where(
                cases.c.id == case_id,
                cases.c.status == STATUS_WAITING,
                cases.c.promise_updates == promise_number,
                or_(cases.c.escalated_promise.is_(None), cases.c.escalated_promise < promise_number),
            )
            .values(escalated_promise=promise_number, updated_at=now)
        )
        with self._write() as conn:
            done = conn.execute(mark).rowcount == 1
            if done:
                _enqueue(conn, outbox, now)
        if done:
            log.info("case %s escalated (promise %d)", case_id, promise_number)
        return done

    def update_promise(
        self,
        case_id: int,
        promise_number: int,
        promised_by: datetime,
        wording: str,
        reason: str,
        now: datetime,
        *,
        outbox: Sequence[OutboxMessage] = (),
    ) -> bool:
        """Replace promise ``promise_number`` of a waiting, unanswered case with a new one.

        ``outbox`` (the message that tells the customer) is queued in the same transaction,
        only if the promise was replaced.

        Returns:
            True if replaced; False if the case was claimed, answered or updated meanwhile.
        """
        _require_aware(now, "now")
        _require_aware(promised_by, "promised_by")
        replace = (
            update(cases)
            .where(
                cases.c.id == case_id,
                cases.c.status == STATUS_WAITING,
                cases.c.first_human_reply_at.is_(None),
                cases.c.promise_updates == promise_number,
            )
            .values(
                promised_by=promised_by,
                promise_wording=wording,
                promise_made_at=now,
                promise_updates=cases.c.promise_updates + 1,
                delay_reason=reason,
                updated_at=now,
            )
        )
        with self._write() as conn:
            done = conn.execute(replace).rowcount == 1
            if done:
                _enqueue(conn, outbox, now)
        if done:
            log.info("case %s: promise %d replaced (%s)", case_id, promise_number, reason)
        return done

    def record_checkin(
        self,
        case_id: int,
        agent_reply_at: datetime,
        now: datetime,
        *,
        customer_key_prefix: str,
        outbox: Sequence[OutboxMessage] = (),
    ) -> bool:
        """Record that the customer of a claimed case was asked whether they need anything else.

        Only when the agent's last reply is still ``agent_reply_at``, the customer was not
        asked since it, and no customer message (keys starting ``customer_key_prefix``) was
        queued after it. ``outbox`` is queued in the same transaction, only if recorded.
        """
        _require_aware(now, "now")
        ask = (
            update(cases)
            .where(
                cases.c.id == case_id,
                cases.c.status == STATUS_CLAIMED,
                cases.c.last_agent_reply_at == agent_reply_at,
                or_(cases.c.checkin_at.is_(None), cases.c.checkin_at < agent_reply_at),
                ~_customer_wrote_since(customer_key_prefix, agent_reply_at),
            )
            .values(checkin_at=now, updated_at=now)
        )
        with self._write() as conn:
            done = conn.execute(ask).rowcount == 1
            if done:
                _enqueue(conn, outbox, now)
        if done:
            log.info("case %s: the silent customer was asked whether they need anything else", case_id)
        return done

    def close_stale(
        self,
        case_id: int,
        checkin_at: datetime,
        now: datetime,
        *,
        customer_key_prefix: str,
        outbox: Sequence[OutboxMessage] = (),
    ) -> bool:
        """Close a claimed case whose customer said nothing since the check-in at ``checkin_at``.

        Only when no agent reply reached the customer after the check-in and no customer
        message (keys starting ``customer_key_prefix``) was queued after it. ``outbox`` is
        queued in the same transaction, only if closed.
        """
        _require_aware(now, "now")
        close = (
            update(cases)
            .where(
                cases.c.id == case_id,
                cases.c.status == STATUS_CLAIMED,
                cases.c.checkin_at == checkin_at,
                or_(cases.c.last_agent_reply_at.is_(None), cases.c.last_agent_reply_at <= checkin_at),
                ~_customer_wrote_since(customer_key_prefix, checkin_at),
            )
            .values(status=STATUS_CLOSED, closed_at=now, updated_at=now)
        )
        with self._write() as conn:
            done = conn.execute(close).rowcount == 1
            if done:
                _enqueue(conn, outbox, now)
        if done:
            log.info("case %s closed: no answer to the check-in", case_id)
        return done

    # --- leases -----------------------------------------------------------------------------

    def take_lease(self, name: str, holder: str, now: datetime, seconds: float) -> bool:
        """Take or renew the lease ``name`` for ``holder`` until ``seconds`` after ``now``.

        One conditional UPDATE: it succeeds when ``holder`` already holds the lease or the
        lease has expired; the first holder ever inserts the row. Of several processes
        asking at once, one gets it. Expiry is judged by the callers' clocks, so replicas'
        clocks must agree to well within ``seconds``.

        Returns:
            True if ``holder`` holds the lease now.
        """
        _require_aware(now, "now")
        values = {"holder": holder, "expires_at": now + timedelta(seconds=seconds), "updated_at": now}
        renew = (
            update(desk_leases)
            .where(desk_leases.c.name == name, or_(desk_leases.c.holder == holder, desk_leases.c.expires_at <= now))
            .values(**values)
        )
        with self._write() as conn:
            if conn.execute(renew).rowcount == 1:
                return True
            first = _UPSERTS[conn.dialect.name](desk_leases).values(name=name, **values)
            return bool(conn.execute(first.on_conflict_do_nothing(index_elements=["name"])).rowcount == 1)

    def release_lease(self, name: str, holder: str, now: datetime) -> None:
        """Give the lease ``name`` up at ``now`` if ``holder`` holds it (another process may take it at once)."""
        _require_aware(now, "now")
        with self._write() as conn:
            conn.execute(
                update(desk_leases)
                .where(desk_leases.c.name == name, desk_leases.c.holder == holder)
                .values(expires_at=now, updated_at=now)
            )

    def lease_holder(self, name: str, now: datetime) -> str | None:
        """Return who holds the lease ``name`` at ``now``, or None if nobody does."""
        _require_aware(now, "now")
        query = select(desk_leases.c.holder).where(desk_leases.c.name == name, desk_leases.c.expires_at > now)
        with self._engine.connect() as conn:
            found = conn.execute(query).scalar()
        return None if found is None else str(found)

    # --- figures for the desk's metrics and dashboard ----------------------------------------

    def case_figures(self) -> list[CaseFigures]:
        """Return every case's timings, promise and rating (no summary or answers), oldest first."""
        query = select(
            cases.c.id, cases.c.channel, cases.c.case_type, cases.c.priority, cases.c.status, cases.c.transcript,
            cases.c.created_at, cases.c.claimed_at, cases.c.first_human_reply_at, cases.c.resolved_at,
            cases.c.closed_at, cases.c.promised_by, cases.c.promise_updates, cases.c.escalated_promise,
            cases.c.checkin_at, cases.c.rating,
        ).order_by(cases.c.created_at, cases.c.id)  # fmt: skip
        with self._engine.connect() as conn:
            rows = conn.execute(query).all()
        return [_figures_from_row(row) for row in rows]

    # --- read positions ---------------------------------------------------------------------

    def cursor(self, name: str) -> int | None:
        """Return how far the reader ``name`` got, or ``None`` if it never read."""
        with self._engine.connect() as conn:
            found = conn.execute(select(desk_cursors.c.position).where(desk_cursors.c.name == name)).scalar()
        return None if found is None else int(found)

    def advance_cursor(
        self, name: str, position: int, now: datetime, *, outbox: Sequence[OutboxMessage] = ()
    ) -> None:
        """Move the reader ``name`` to ``position`` and queue what it read, in one transaction."""
        _require_aware(now, "now")
        values = {"position": position, "updated_at": now}
        with self._write() as conn:
            _enqueue(conn, outbox, now)
            upsert = _UPSERTS[conn.dialect.name](desk_cursors).values(name=name, **values)
            conn.execute(upsert.on_conflict_do_update(index_elements=["name"], set_=values))


def _waiting_ahead_at_opening(rows: Sequence[Row], wanted: set[int]) -> dict[int, int]:
    """Count, for each case id in ``wanted``, the cases waiting ahead of it when it opened.

    One sweep through time: a case joins the queue when opened and leaves when claimed,
    answered or resolved; at each wanted case's opening, count the waiting cases of the same or a
    more urgent priority. Leaving at the very moment another case opens counts as gone,
    and cases opened at the same moment queue by id, as ``count_waiting_ahead`` sees them.
    """
    # (time, 0 = leaves / 1 = opens, id, rank, joins the queue)
    events: list[tuple[datetime, int, int, int, bool]] = []
    for row in rows:
        rank = priority_rank(row.priority)
        ends = [
            moment
            for moment in (row.claimed_at, row.first_human_reply_at, row.resolved_at)
            if moment is not None
        ]
        left = min(ends) if ends else None
        # Taken the moment it opened (or a clock fault): it never waited.
        joins = left is None or left > row.created_at
        events.append((row.created_at, 1, row.id, rank, joins))
        if joins and left is not None:
            events.append((left, 0, row.id, rank, False))
    events.sort()
    waiting = [0] * len(PRIORITIES)
    ahead: dict[int, int] = {}
    for _moment, opens, case_id, rank, joins in events:
        if not opens:
            waiting[rank] -= 1
            continue
        if case_id in wanted:
            ahead[case_id] = sum(waiting[rank:])
        if joins:
            waiting[rank] += 1
    return ahead


def _like_prefix(prefix: str) -> str:
    """Return a LIKE pattern matching text that starts with ``prefix`` (its wildcards escaped)."""
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _as_utc(value: Any) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.astimezone(timezone.utc)  # type: ignore[no-any-return]


def _customer_wrote_since(key_prefix: str, since: Any) -> Any:
    """Return a condition on ``cases``: a customer message of the case was queued after ``since``."""
    return exists(
        select(outbox.c.id).where(
            outbox.c.case_id == cases.c.id,
            outbox.c.idempotency_key.like(_like_prefix(key_prefix), escape="\\"),
            outbox.c.created_at > since,
        )
    )


def _figures_from_row(row: Row) -> CaseFigures:
    values = dict(row._mapping)
    lines = [TranscriptLine.from_dict(line) for line in values.pop("transcript") or []]
    customer = [line.at for line in lines if line.who == "customer"]
    first_customer = min(customer) if customer else None
    bot = [line.at for line in lines if line.who == "bot" and (first_customer is None or line.at >= first_customer)]
    return CaseFigures(**values, first_customer_at=first_customer, first_bot_at=min(bot) if bot and customer else None)


def _case_from_row(row: Row, previous_cases: tuple[int, ...]) -> Case:
    values = dict(row._mapping)
    values["metadata"] = values.pop("case_metadata")
    values["transcript"] = tuple(TranscriptLine.from_dict(line) for line in values["transcript"])
    return Case(**values, previous_cases=previous_cases)


def _enqueue(conn: Connection, messages: Sequence[OutboxMessage], now: datetime) -> int:
    """Insert ``messages`` into the outbox, skipping keys already there; return how many went in."""
    if not messages:
        return 0
    insert_new = _UPSERTS[conn.dialect.name](outbox).on_conflict_do_nothing(index_elements=["idempotency_key"])
    added = 0
    for message in messages:
        row = {
            "idempotency_key": message.key,
            "kind": message.kind,
            "target": message.target,
            "case_id": message.case_id,
            "payload": _json_ready(message.payload),
            "attempts": 0,
            "created_at": now,
            "next_attempt_at": now,
        }
        added += conn.execute(insert_new.values(**row)).rowcount
    return added


def _outbox_item(row: Row) -> OutboxItem:
    values = dict(row._mapping)
    values["key"] = values.pop("idempotency_key")
    return OutboxItem(**values)
