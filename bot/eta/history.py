"""What recently answered cases say about how long the next customer will wait.

The case store remembers, for each case a person answered, when it was opened, when an
agent claimed it, when a person first replied, how many cases were waiting ahead of it,
and what it recorded when it was opened: the agents on shift and busy then, and the wait
its promise expected. This module turns those timestamps into waits counted in business
minutes (closed time does not count: a message sent on Saturday night waits from Sunday's
opening), keys each by the hour of the week in which it started counting (the staffing
recorded there makes the usual rota), and gives the split-conformal quantile the promise
is calibrated with.

Everything here is pure: nothing reads the clock or the database.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from bot.eta.calendar import BusinessCalendar

HOURS_PER_WEEK = 24 * 7
# Quantiles are computed on values rounded to this many decimals, so float noise
# (0.9 * 10 = 9.000000000000002) never moves the rank.
_RANK_DECIMALS = 9


class HistoryError(ValueError):
    """A history input is out of range, or a moment is not timezone-aware."""


def _require_aware(name: str, value: datetime) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise HistoryError(f"{name} must be timezone-aware (got naive {value.isoformat()})")


@dataclass(frozen=True)
class HandledCase:
    """One case a person answered, as the case store remembers it.

    Attributes:
        created_at: When the case was opened (the moment its promise was made).
        first_reply_at: When a person first answered the customer.
        claimed_at: When an agent took the case, or None if not recorded.
        cases_ahead: Waiting cases served before it when it was opened (same or more
            urgent priority), as ``ReadModels.count_waiting_ahead`` counted them.
        agents_on_shift: Agents on shift when it was opened, as recorded then; None if
            not recorded (the estimate then assumes the staffing of now).
        agents_busy: Of those, how many were on a case then; None if not recorded.
        priority: Its priority (``bot.constants.PRIORITIES``), or None if not known.
        expected_minutes: The wait the estimate expected when it was opened (the point
            prediction its promise was built on, ``WaitPrediction.expected_minutes``),
            or None if not recorded.

    Raises:
        HistoryError: If a moment is naive, a count is negative or the expected wait
            is not a positive number.
    """

    created_at: datetime
    first_reply_at: datetime
    claimed_at: datetime | None = None
    cases_ahead: int = 0
    agents_on_shift: int | None = None
    agents_busy: int | None = None
    expected_minutes: float | None = None
    priority: str | None = None

    def __post_init__(self) -> None:
        _require_aware("created_at", self.created_at)
        _require_aware("first_reply_at", self.first_reply_at)
        if self.claimed_at is not None:
            _require_aware("claimed_at", self.claimed_at)
        _require_count("cases_ahead", self.cases_ahead)
        for name in ("agents_on_shift", "agents_busy"):
            if getattr(self, name) is not None:
                _require_count(name, getattr(self, name))
        expected = self.expected_minutes
        if expected is not None and not (
            isinstance(expected, (int, float))
            and not isinstance(expected, bool)
            and math.isfinite(expected)
            and expected > 0
        ):
            raise HistoryError(f"expected_minutes must be a number above 0 (got {expected!r})")


def _require_count(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise HistoryError(f"{name} must be a whole number (got {value!r})")
    if value < 0:
        raise HistoryError(f"{name} must be at least 0 (got {value!r})")


@dataclass(frozen=True)
class WaitSample:
    """One answered case, reduced to what the estimate learns from.

    Attributes:
        hour_of_week: When the wait started counting, in the brand's local time:
            ``weekday * 24 + hour`` (0 is Monday 00:00-01:00). A case opened while
            closed starts counting at the next opening.
        cases_ahead: Waiting cases ahead of it when it was opened.
        reply_minutes: Business minutes from opening the case to the first human reply.
        claim_minutes: Business minutes from opening the case to the claim, or None.
        agents_on_shift: Agents on shift when it was opened, or None if not recorded.
        agents_busy: Of those, how many were on a case then, or None if not recorded.
        expected_minutes: The wait expected when it was opened, or None if not recorded.
        priority: Its priority, or None if not known.
    """

    hour_of_week: int
    cases_ahead: int
    reply_minutes: float
    claim_minutes: float | None = None
    agents_on_shift: int | None = None
    agents_busy: int | None = None
    expected_minutes: float | None = None
    priority: str | None = None


def hour_of_week(calendar: BusinessCalendar, moment: datetime) -> int:
    """Return the hour of the week in which a wait starting at ``moment`` starts counting.

    That is the local hour of ``moment`` when the brand is open then, else the local hour
    of the next opening: waits do not count while closed.

    Args:
        calendar: The brand's business hours.
        moment: A timezone-aware moment.

    Returns:
        ``weekday * 24 + hour`` in the calendar's timezone, 0 to 167.
    """
    local = calendar.next_opening(moment)
    return local.weekday() * 24 + local.hour


@dataclass(frozen=True)
class History:
    """Recently answered cases, as samples of how long customers waited.

    Build it with ``History.from_cases``; the default, ``History()``, is "no history".
    The caller chooses the window (``targets.history_window_days`` in support.yml).

    Attributes:
        samples: One sample per answered case, in any order.
    """

    samples: tuple[WaitSample, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.samples, tuple) or not all(
            isinstance(sample, WaitSample) for sample in self.samples
        ):
            raise HistoryError("samples must be a tuple of WaitSample")

    @classmethod
    def from_cases(cls, calendar: BusinessCalendar, cases: Iterable[HandledCase]) -> History:
        """Measure each case's waits in business minutes and key them by hour of week.

        A case whose first reply is recorded before it was opened (a clock fault) says
        nothing about waiting and is left out.

        Args:
            calendar: The brand's business hours.
            cases: The answered cases.
        """
        samples = []
        for case in cases:
            reply = calendar.business_minutes_between(case.created_at, case.first_reply_at)
            if reply < 0:
                continue
            claim = None
            if case.claimed_at is not None:
                claim = max(0.0, calendar.business_minutes_between(case.created_at, case.claimed_at))
            samples.append(
                WaitSample(
                    hour_of_week=hour_of_week(calendar, case.created_at),
                    cases_ahead=case.cases_ahead,
                    reply_minutes=reply,
                    claim_minutes=claim,
                    agents_on_shift=case.agents_on_shift,
                    agents_busy=case.agents_busy,
                    expected_minutes=case.expected_minutes,
                    priority=case.priority,
                )
            )
        return cls(tuple(samples))

    def __len__(self) -> int:
        """Return the number of samples."""
        return len(self.samples)


def conformal_quantile(scores: Sequence[float], q: float) -> float | None:
    """Return the split-conformal ``q`` quantile of ``scores``, or None if there are too few.

    That is the ``ceil((n + 1) * q)``-th smallest of the ``n`` scores: if the next case's
    score is exchangeable with these (drawn from the same pattern, in any order), it is
    at or below this value with probability at least ``q``, whatever the distribution.
    The ``+ 1`` counts the new case itself, so it needs ``n >= q / (1 - q)`` scores
    (19 for 0.95); with fewer no finite value carries the guarantee. A ``q`` of 1 asks
    for every case, which no finite sample guarantees: it gives the largest score.

    Args:
        scores: The calibration scores, in any order.
        q: The share, above 0 and at most 1.

    Raises:
        HistoryError: If ``q`` is out of range.
    """
    if isinstance(q, bool) or not isinstance(q, (int, float)) or not 0 < q <= 1:
        raise HistoryError(f"q must be a number above 0 and at most 1 (got {q!r})")
    if q == 1:
        return max(scores) if scores else None
    rank = math.ceil(round((len(scores) + 1) * q, _RANK_DECIMALS))
    if rank > len(scores):
        return None
    return sorted(scores)[rank - 1]


def quantile(values: Sequence[float], q: float) -> float:
    """Return the nearest-rank ``q`` quantile: the smallest value with at least ``q`` at or below it.

    Always one of the values, never an interpolation, so a figure can be checked by
    sorting and counting: of 10 values, the 0.9 quantile is the 9th smallest.

    Args:
        values: At least one number.
        q: The share, above 0 and at most 1.

    Raises:
        HistoryError: If ``values`` is empty or ``q`` is out of range.
    """
    if not values:
        raise HistoryError("quantile of no values")
    if isinstance(q, bool) or not isinstance(q, (int, float)) or not 0 < q <= 1:
        raise HistoryError(f"q must be a number above 0 and at most 1 (got {q!r})")
    ordered = sorted(values)
    rank = math.ceil(round(q * len(ordered), _RANK_DECIMALS))
    return ordered[max(rank, 1) - 1]
