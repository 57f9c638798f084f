"""The response-time promise: when a person will pick the case up, and how we say it.

Two models, chosen by how much history there is.

The prior, used until enough cases have been answered, is deliberately simple and
pessimistic. With ``a`` agents each needing ``h`` minutes a case and ``n`` cases ahead,
the customer is served when the ``n + 1``-th agent frees up: about
``(n + 0.5) * h / a`` minutes (the half is the average rest of the case each agent is
on now). The promise is that times a safety factor.

The calibrated model keeps that (formula times safety factor) for the part of the wait
that grows with the queue, and learns the rest from history: for every recently
answered case, how much later the first human reply came than the formula said,
``lateness = actual - formula * safety_factor`` (business minutes, with today's handle
time and staffing). The promise is the formula for the queue now plus the
``promise_quantile`` (0.9: nine in ten) of those latenesses, taken from the same hour of
the week when that hour has enough cases (Monday 08:00 is not Wednesday 15:00), else
from all hours. Without history the lateness is taken as 0: the prior.

Either way the promise is never below the first-response target, is rounded up to a
length people say, and is counted in business minutes from the next opening, so it
never falls while we are closed.

Everything here is pure: nothing reads the clock; callers pass ``now`` in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone

from bot.eta.calendar import BusinessCalendar
from bot.eta.history import History, hour_of_week, quantile

# Rounded-up lengths of time that read naturally; beyond the last, whole hours.
MINUTE_BUCKETS: tuple[int, ...] = (5, 10, 15, 20, 30, 45, 60, 90, 120)
# Share of one handle time the first free agent still needs on average.
PICKUP_SHARE = 0.5
# Where a promise's length came from (``Promise.basis``).
BASIS_PRIOR = "prior"
BASIS_ALL_HOURS = "all hours"
BASIS_HOUR_OF_WEEK = "hour of week"
NO_HISTORY = History()

_UTC = timezone.utc
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
# Deadlines this many days ahead or more also name the date, not just the weekday.
_DATE_AFTER_DAYS = 7


class EstimateError(ValueError):
    """An estimate input is out of range, or a moment is not timezone-aware."""


def _require_aware(name: str, value: datetime) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise EstimateError(f"{name} must be timezone-aware (got naive {value.isoformat()})")


def _require(condition: bool, name: str, rule: str, value: object) -> None:
    if not condition:
        raise EstimateError(f"{name} must be {rule} (got {value!r})")


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _ceil_minute(moment: datetime) -> datetime:
    """Round up to the whole minute, so a shown time is never earlier than promised."""
    instant = moment.astimezone(_UTC)
    if instant.second or instant.microsecond:
        instant = instant.replace(second=0, microsecond=0) + timedelta(minutes=1)
    return instant.astimezone(moment.tzinfo)


@dataclass(frozen=True)
class QueueSnapshot:
    """The queue as it is when the customer asks.

    Attributes:
        cases_ahead: Open unclaimed cases that will be served before this one.
        agents_on_shift: Agents working now; 0 means "unknown", use the default.
        recent_handle_minutes: Recent average minutes an agent needs per case,
            or None without history.
        recent_samples: How many cases ``recent_handle_minutes`` averages.
        history: Recently answered cases; the default, no history, gives the prior.

    Raises:
        EstimateError: If a count is negative, the handle time is not positive or
            ``history`` is not a ``History``.
    """

    cases_ahead: int
    agents_on_shift: int
    recent_handle_minutes: float | None
    recent_samples: int = 0
    history: History = NO_HISTORY

    def __post_init__(self) -> None:
        _require(
            _is_count(self.cases_ahead) and self.cases_ahead >= 0,
            "cases_ahead",
            "a whole number of at least 0",
            self.cases_ahead,
        )
        _require(
            _is_count(self.agents_on_shift) and self.agents_on_shift >= 0,
            "agents_on_shift",
            "a whole number of at least 0",
            self.agents_on_shift,
        )
        _require(
            self.recent_handle_minutes is None
            or (_is_number(self.recent_handle_minutes) and self.recent_handle_minutes > 0),
            "recent_handle_minutes",
            "None or a number greater than 0",
            self.recent_handle_minutes,
        )
        _require(
            _is_count(self.recent_samples) and self.recent_samples >= 0,
            "recent_samples",
            "a whole number of at least 0",
            self.recent_samples,
        )
        _require(
            isinstance(self.history, History), "history", "a History", type(self.history).__name__
        )


@dataclass(frozen=True)
class ServiceTargets:
    """What the brand promises and assumes; see ``targets`` in support.yml.

    Attributes:
        first_response_minutes: The shortest pickup time promised, even with an empty queue.
        average_handle_minutes: Handle time assumed while history is too thin.
        default_agents_on_shift: Agents assumed when the snapshot says 0.
        min_history_samples: Cases of history needed to trust it fully: for the recent
            handle time, and for the calibrated promise (all hours, or one hour of week).
        safety_factor: Multiplies the expected wait: the part of every promise that
            grows with the queue.
        promise_quantile: With enough history, the share of recent customers the
            promise would have been kept for (0.9: nine in ten).

    Raises:
        EstimateError: If a value is out of range.
    """

    first_response_minutes: float
    average_handle_minutes: float
    default_agents_on_shift: int
    min_history_samples: int = 5
    safety_factor: float = 1.5
    promise_quantile: float = 0.9

    def __post_init__(self) -> None:
        for name in ("first_response_minutes", "average_handle_minutes"):
            value = getattr(self, name)
            _require(_is_number(value) and value > 0, name, "a number greater than 0", value)
        for name in ("default_agents_on_shift", "min_history_samples"):
            value = getattr(self, name)
            _require(_is_count(value) and value > 0, name, "a whole number greater than 0", value)
        _require(
            _is_number(self.safety_factor) and self.safety_factor >= 1,
            "safety_factor",
            "a number of at least 1",
            self.safety_factor,
        )
        _require(
            _is_number(self.promise_quantile) and 0.5 <= self.promise_quantile <= 1,
            "promise_quantile",
            "a number from 0.5 to 1",
            self.promise_quantile,
        )


@dataclass(frozen=True)
class Promise:
    """When a person will pick the case up, as told to the customer.

    Attributes:
        deadline: The latest pickup moment, in the calendar's timezone.
        business_minutes: Open minutes from now to the deadline.
        open_now: Whether the brand was open when the promise was made.
        wording: What the customer reads, e.g. "within about 20 minutes".
        basis: Where the length came from: ``BASIS_PRIOR`` (the formula times the
            safety factor), ``BASIS_ALL_HOURS`` or ``BASIS_HOUR_OF_WEEK`` (history).
        history_samples: How many answered cases the length was learned from.
    """

    deadline: datetime
    business_minutes: float
    open_now: bool
    wording: str
    basis: str = BASIS_PRIOR
    history_samples: int = 0

    def deadline_iso(self) -> str:
        """Return the deadline as ISO 8601 with its UTC offset, rounded up to the minute."""
        return _ceil_minute(self.deadline).isoformat(timespec="minutes")


def round_up_minutes(minutes: float) -> int:
    """Round a duration up to a length people say.

    Buckets are 5, 10, 15, 20, 30, 45, 60, 90 and 120 minutes, then whole hours.
    Float noise below a millionth of a minute is ignored, so 15.000000000000002
    stays 15.

    Args:
        minutes: A duration in minutes; finite and not negative.

    Returns:
        The smallest bucket at least ``minutes`` long.

    Raises:
        EstimateError: If ``minutes`` is negative or not finite.
    """
    _require(
        _is_number(minutes) and minutes >= 0, "minutes", "a finite number of at least 0", minutes
    )
    minutes = round(minutes, 6)
    for bucket in MINUTE_BUCKETS:
        if minutes <= bucket:
            return bucket
    return math.ceil(minutes / 60) * 60


def _say_duration(minutes: int) -> str:
    if minutes == 60:
        return "an hour"
    if minutes == 90:
        return "an hour and a half"
    if minutes > 60 and minutes % 60 == 0:
        return f"{minutes // 60} hours"
    return f"{minutes} minutes"


def _say_clock(moment: datetime, show_timezone: bool) -> str:
    clock = f"{moment.hour}:{moment.minute:02d}"
    return f"{clock} {moment.tzname()}" if show_timezone else clock


def _say_moment(local_now: datetime, moment: datetime, show_timezone: bool) -> str:
    """Say a moment relative to ``local_now``: "9:30 tomorrow, Tuesday", "14:00 on Thursday"."""
    clock = _say_clock(moment, show_timezone)
    weekday = _WEEKDAYS[moment.weekday()]
    days_ahead = (moment.date() - local_now.date()).days
    if days_ahead == 0:
        return f"{clock} today"
    if days_ahead == 1:
        return f"{clock} tomorrow, {weekday}"
    if days_ahead < _DATE_AFTER_DAYS:
        return f"{clock} on {weekday}"
    return f"{clock} on {weekday} {moment.day} {_MONTHS[moment.month - 1]}"


def describe_deadline(
    now: datetime,
    deadline: datetime,
    open_now: bool,
    *,
    open_throughout: bool | None = None,
    opens_at: datetime | None = None,
    closed_for: str | None = None,
    show_timezone: bool = False,
) -> str:
    """Word a deadline for the customer.

    Times are H:MM on a 24-hour clock in the deadline's timezone (the brand's),
    rounded up to the minute; "today" and "tomorrow" are relative to ``now`` in
    that timezone.

    - Open, and open all the way to the deadline: "within about 20 minutes".
    - Open, but we close before the deadline: "by 9:30 tomorrow, Tuesday",
      "by 14:00 on Thursday 3 December".
    - Closed for a holiday: "by 10:15 on Monday — we are closed for Christmas Day".
    - Closed, opening later today: "by 9:15 today — we open at 9:00".
    - Closed otherwise: "by 9:30 tomorrow, Tuesday — we are closed now".

    Args:
        now: When the customer asked; timezone-aware.
        deadline: The promised moment; timezone-aware, in the brand's timezone.
        open_now: Whether the brand is open at ``now``.
        open_throughout: Whether it stays open from ``now`` to ``deadline``; None
            means "if the deadline is today" (true when there is no break today).
        opens_at: When closed, the next opening.
        closed_for: When closed for a holiday today, its name.
        show_timezone: Add the timezone abbreviation ("9:30 GMT") to clock times.

    Returns:
        The wording, without a trailing full stop.

    Raises:
        EstimateError: If a moment is naive or the deadline is before ``now``.
    """
    _require_aware("now", now)
    _require_aware("deadline", deadline)
    if opens_at is not None:
        _require_aware("opens_at", opens_at)
    elapsed = deadline.astimezone(_UTC) - now.astimezone(_UTC)
    if elapsed < timedelta(0):
        raise EstimateError(
            f"deadline must not be before now (got {deadline.isoformat()} before {now.isoformat()})"
        )
    zone = deadline.tzinfo
    local_now = now.astimezone(zone)
    shown = _ceil_minute(deadline)
    if open_now:
        if open_throughout is None:
            open_throughout = shown.date() == local_now.date()
        if open_throughout:
            return f"within about {_say_duration(round_up_minutes(elapsed.total_seconds() / 60))}"
        return f"by {_say_moment(local_now, shown, show_timezone)}"
    when = f"by {_say_moment(local_now, shown, show_timezone)}"
    if closed_for:
        return f"{when} — we are closed for {closed_for}"
    if opens_at is not None:
        opening = _ceil_minute(opens_at.astimezone(zone))
        if opening.date() == local_now.date():
            return f"{when} — we open at {_say_clock(opening, show_timezone)}"
    return f"{when} — we are closed now"


def _handle_minutes(queue: QueueSnapshot, targets: ServiceTargets) -> float:
    """Trust recent history once there is enough; before that, lean on the prior."""
    recent = queue.recent_handle_minutes
    samples = queue.recent_samples
    if recent is None or samples == 0:
        return targets.average_handle_minutes
    if samples >= targets.min_history_samples:
        return recent
    # Each real case counts as much as one of the prior's imagined ones.
    needed = targets.min_history_samples
    return (samples * recent + (needed - samples) * targets.average_handle_minutes) / needed


def _agents(queue: QueueSnapshot, targets: ServiceTargets) -> int:
    return max(1, queue.agents_on_shift or targets.default_agents_on_shift)


def expected_wait_minutes(queue: QueueSnapshot, targets: ServiceTargets) -> float:
    """Return the expected open minutes until an agent picks the case up.

    Args:
        queue: The queue now.
        targets: The brand's targets, for the prior handle time and default staffing.

    Returns:
        ``(cases_ahead + PICKUP_SHARE) * handle / agents``, before any safety factor.
    """
    return _formula_minutes(queue.cases_ahead, queue, targets)


def _formula_minutes(cases_ahead: int, queue: QueueSnapshot, targets: ServiceTargets) -> float:
    return (cases_ahead + PICKUP_SHARE) * _handle_minutes(queue, targets) / _agents(queue, targets)


@dataclass(frozen=True)
class WaitPrediction:
    """How long the customer will wait, at the promise quantile, and why.

    Attributes:
        minutes: Business minutes, before the first-response floor and rounding.
        basis: ``BASIS_PRIOR``, ``BASIS_ALL_HOURS`` or ``BASIS_HOUR_OF_WEEK``.
        samples: Answered cases it was learned from (0 for the prior).
        hour_of_week: The hour of week the wait starts counting in (see
            ``bot.eta.history.hour_of_week``).
        extra_minutes: The learned lateness added to the queue part (0 for the prior).
    """

    minutes: float
    basis: str
    samples: int
    hour_of_week: int
    extra_minutes: float


def predict_wait(
    now: datetime,
    calendar: BusinessCalendar,
    queue: QueueSnapshot,
    targets: ServiceTargets,
    *,
    waited_minutes: float = 0.0,
) -> WaitPrediction:
    """Predict the wait a promise should cover, from history when there is enough.

    - At least ``min_history_samples`` answered cases whose wait started in the same
      hour of week as this one would: learn from those (``BASIS_HOUR_OF_WEEK``).
    - Else at least that many in all: learn from all of them (``BASIS_ALL_HOURS``).
      Learning: for each case, ``lateness = reply_minutes - formula(its cases_ahead) *
      safety_factor``; the prediction is ``formula(cases_ahead now) * safety_factor +
      quantile(lateness, promise_quantile)`` (nearest rank; never below 0).
    - Else the prior: ``formula(cases_ahead now) * safety_factor``.

    ``formula(n)`` is ``(n + PICKUP_SHARE) * handle / agents`` with the handle time and
    staffing of now: the store keeps each case's queue position but not the staffing
    then.

    For a customer who has already waited (a new estimate when a promise is at risk),
    a long wait so far is itself evidence: with ``waited_minutes`` > 0 the prediction is
    at least the ``promise_quantile`` of how much longer the recent customers who had
    waited that long still waited, when there are ``min_history_samples`` of them.

    Args:
        now: When the customer asked; timezone-aware.
        calendar: The brand's business hours.
        queue: The queue now, with its history; for an update, ``cases_ahead`` is the
            customer's place in the queue now.
        targets: The brand's targets.
        waited_minutes: Business minutes the customer has already waited (0: a new case).

    Raises:
        EstimateError: If ``now`` is naive.
        NoOpeningHoursError: If the calendar never opens.
    """
    _require_aware("now", now)
    _require(
        _is_number(waited_minutes) and waited_minutes >= 0,
        "waited_minutes",
        "a finite number of at least 0",
        waited_minutes,
    )
    prediction = _predict_new_case(now, calendar, queue, targets)
    if waited_minutes == 0:
        return prediction
    still_waiting = [
        sample.reply_minutes - waited_minutes
        for sample in queue.history.samples
        if sample.reply_minutes > waited_minutes
    ]
    if len(still_waiting) < targets.min_history_samples:
        return prediction
    longer = quantile(still_waiting, targets.promise_quantile)
    if longer <= prediction.minutes:
        return prediction
    return replace(prediction, minutes=longer, samples=len(still_waiting))


def _predict_new_case(
    now: datetime, calendar: BusinessCalendar, queue: QueueSnapshot, targets: ServiceTargets
) -> WaitPrediction:
    hour = hour_of_week(calendar, now)
    queue_part = _formula_minutes(queue.cases_ahead, queue, targets) * targets.safety_factor
    needed = targets.min_history_samples
    same_hour = queue.history.in_hour(hour)
    if len(same_hour) >= needed:
        basis, learned = BASIS_HOUR_OF_WEEK, same_hour
    elif len(queue.history) >= needed:
        basis, learned = BASIS_ALL_HOURS, queue.history.samples
    else:
        return WaitPrediction(queue_part, BASIS_PRIOR, 0, hour, 0.0)
    lateness = [
        sample.reply_minutes
        - _formula_minutes(sample.cases_ahead, queue, targets) * targets.safety_factor
        for sample in learned
    ]
    extra = quantile(lateness, targets.promise_quantile)
    return WaitPrediction(max(0.0, queue_part + extra), basis, len(learned), hour, extra)


def estimate_promise(
    now: datetime,
    calendar: BusinessCalendar,
    queue: QueueSnapshot,
    targets: ServiceTargets,
    *,
    show_timezone: bool = False,
    waited_minutes: float = 0.0,
) -> Promise:
    """Promise a pickup time the brand can keep.

    The length is ``predict_wait`` (history at ``targets.promise_quantile`` when there
    is enough, else the prior), at least ``first_response_minutes``, rounded up by
    ``round_up_minutes``; the deadline is that many business minutes after the next
    opening (``now`` when open).

    Args:
        now: When the customer asked; timezone-aware.
        calendar: The brand's business hours.
        queue: The queue now, with its history (``QueueSnapshot.history``).
        targets: The brand's targets.
        show_timezone: Add the timezone abbreviation to clock times in the wording.
        waited_minutes: For a new estimate to a customer already waiting, the business
            minutes waited so far (see ``predict_wait``); the promise counts from now.

    Returns:
        The promise; its deadline is never while closed.

    Raises:
        EstimateError: If ``now`` is naive.
        NoOpeningHoursError: If the calendar never opens.
    """
    prediction = predict_wait(now, calendar, queue, targets, waited_minutes=waited_minutes)
    open_now = calendar.is_open(now)
    promised = round_up_minutes(max(targets.first_response_minutes, prediction.minutes))
    opening = calendar.next_opening(now)
    deadline = calendar.add_business_minutes(opening, promised)
    local_now = now.astimezone(calendar.timezone)
    # Open now, and wall time to the deadline equals the open time: no closing in between.
    open_throughout = open_now and (
        deadline.astimezone(_UTC) - now.astimezone(_UTC) == timedelta(minutes=promised)
    )
    wording = describe_deadline(
        now,
        deadline,
        open_now,
        open_throughout=open_throughout,
        opens_at=None if open_now else opening,
        closed_for=None if open_now else calendar.holidays.get(local_now.date()),
        show_timezone=show_timezone,
    )
    return Promise(
        deadline=deadline,
        business_minutes=float(promised),
        open_now=open_now,
        wording=wording,
        basis=prediction.basis,
        history_samples=prediction.samples,
    )
