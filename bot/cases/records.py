"""The records the case store takes and gives: cases, transcript lines, outbox messages, figures.

Plain frozen dataclasses, no database code: they are what crosses the store's interface
(``bot.cases.store``), so a caller can build and read them without a connection.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bot.constants import PRIORITIES

TRANSCRIPT_SPEAKERS: tuple[str, ...] = ("customer", "bot", "agent", "system")


def require_aware(value: datetime, name: str) -> None:
    """Raise ValueError naming ``name`` unless ``value`` is timezone-aware."""
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
        require_aware(self.at, "TranscriptLine.at")

    def to_dict(self) -> dict[str, str]:
        """Return the line as JSON-ready data, ``at`` in ISO 8601 with its offset."""
        return {"who": self.who, "text": self.text, "at": self.at.isoformat()}

    @classmethod
    def from_dict(cls, data: Mapping[str, str]) -> TranscriptLine:
        """Build a line from ``to_dict`` output."""
        return cls(who=data["who"], text=data["text"], at=datetime.fromisoformat(data["at"]))


@dataclass(frozen=True)
class _Handoff:
    """What the assistant hands over with a conversation: a case to open, and every case stored."""

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


@dataclass(frozen=True)
class NewCase(_Handoff):
    """Everything the assistant knows when it hands a conversation to a person.

    ``handoff_key`` makes opening idempotent: opening the same key again returns the case
    already opened for it.
    """

    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.priority not in PRIORITIES:
            raise ValueError(f"priority must be one of {PRIORITIES}, got {self.priority!r}")
        require_aware(self.promised_by, "NewCase.promised_by")
        if not self.handoff_key:
            raise ValueError("NewCase.handoff_key must not be empty")


@dataclass(frozen=True)
class Case(_Handoff):
    """A case as stored: the handoff plus its life in the queue. Times are UTC."""

    transcript: tuple[TranscriptLine, ...]
    id: int
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
        return {key: json_ready(getattr(self, key)) for key in _CASE_DICT_KEYS}


# The keys of ``Case.to_dict``, in order. ``handoff_key`` is internal and left out.
_CASE_DICT_KEYS: tuple[str, ...] = (
    "id", "channel", "sender_id", "customer_name", "case_type", "intent_confidence", "answers",
    "summary", "transcript", "language", "priority", "complaint_score", "previous_cases",
    "promised_by", "promise_wording", "status", "created_at", "updated_at", "claimed_by",
    "claimed_at", "first_human_reply_at", "resolved_at", "metadata",
)  # fmt: skip


def json_ready(value: Any) -> Any:
    """Return ``value`` as JSON-ready data: datetimes in ISO 8601, transcript lines as dicts."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, TranscriptLine):
        return value.to_dict()
    if isinstance(value, Mapping):
        return {key: json_ready(item) for key, item in value.items()}
    if isinstance(value, (tuple, list)):
        return [json_ready(item) for item in value]
    return value


# The key of a case's metadata under which the queue it was opened into is recorded
# (``opening_queue``): the staffing then and the wait its promise expected, so that the
# estimate later judges its wait with the agents who were there, not today's.
OPENING_QUEUE_KEY = "opening_queue"


def opening_queue(agents_on_shift: int, agents_busy: int, expected_minutes: float) -> dict[str, Any]:
    """Return what a case records, in its metadata, of the queue it was opened into."""
    return {
        "agents_on_shift": agents_on_shift,
        "agents_busy": agents_busy,
        "expected_minutes": expected_minutes,
    }


def recorded_opening_queue(metadata: Mapping[str, Any] | None) -> tuple[int | None, int | None, float | None]:
    """Return the staffing and expected wait a case recorded at opening; Nones for what it did not.

    A value of the wrong type (metadata written by hand) counts as not recorded.
    """
    recorded = (metadata or {}).get(OPENING_QUEUE_KEY)
    if not isinstance(recorded, Mapping):
        return None, None, None
    agents, busy, expected = (recorded.get(key) for key in ("agents_on_shift", "agents_busy", "expected_minutes"))

    def count(value: Any) -> int | None:
        return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None

    number = isinstance(expected, (int, float)) and not isinstance(expected, bool)
    good_expected = number and math.isfinite(expected) and expected > 0
    return count(agents), count(busy), float(expected) if good_expected else None


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
        priority: Its priority.
        agents_on_shift: Agents on shift when it was opened, as recorded with it
            (``OPENING_QUEUE_KEY``); None for a case recorded without.
        agents_busy: Of those, how many were on a case then; None if not recorded.
        expected_minutes: The wait its promise expected; None if not recorded.
    """

    case_id: int
    created_at: datetime
    claimed_at: datetime | None
    first_human_reply_at: datetime
    cases_ahead: int
    priority: str | None = None
    agents_on_shift: int | None = None
    agents_busy: int | None = None
    expected_minutes: float | None = None


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
