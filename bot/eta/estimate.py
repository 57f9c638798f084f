"""The response-time promise: when a person will pick the case up, and how we say it.

Both start from the expected wait (``expected_wait``): with ``a`` agents each needing
``h`` minutes a case and ``n`` cases ahead that the free agents do not take at once, the
customer is served when the ``n + 1``-th agent frees up, about ``(n + 0.5) * h / a``
minutes (the half is the average rest of the case each agent is on now), with the agents
usually on shift in each coming hour taking over from those of now.

The prior, used until enough cases have been answered, is that times a safety factor.

The calibrated model learns how far real waits stray from what was expected: every
recently answered case is scored by its wait over the wait expected when it was opened,
and the promise is the expected wait now times the split-conformal ``promise_quantile``
(0.96 shipped) of the scores, a share that holds on average over weeks whose cases are
exchangeable with the recent ones, whatever their distribution.

Either way the promise is never below the first-response target, is rounded up to a
length people say, and is counted in business minutes from the next opening, so it
never falls while we are closed.

Everything here is pure: nothing reads the clock; callers pass ``now`` in.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone

from bot.eta.calendar import BusinessCalendar
from bot.eta.history import History, conformal_quantile, hour_of_week

# Promises are rounded up to lengths that read naturally: (up to these minutes, in
# steps of these), then steps of ``_LONG_STEP``.
MINUTE_STEPS: tuple[tuple[int, int], ...] = ((60, 5), (180, 15))
_LONG_STEP = 30
# Share of one handle time the first free agent still needs on average.
PICKUP_SHARE = 0.5
# Where a promise's length came from (``Promise.basis``).
BASIS_PRIOR = "prior"
BASIS_ALL_CASES = "all cases"
BASIS_SAME_PRIORITY = "same priority"

NO_HISTORY = History()

_UTC = timezone.utc
_ONE_HOUR = timedelta(hours=1)
# How far ahead ``expected_wait`` works off the queue before it stops looking at the rota.
_LOOKAHEAD_HOURS = 24 * 14
# Scores compare waits plus this many minutes, so that a case expected to be picked up
# at once (a wait of a few minutes) does not turn a minute's noise into a large multiple.
SCORE_OFFSET_MINUTES = 5.0
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
        agents_busy: Of the agents on shift, how many are on a case now (claimed and
            not resolved); None if unknown (every agent is then counted busy).
        priority: The new case's priority; None if not known. History is learned from
            cases of the same priority first (later arrivals of a more urgent one are
            served before it, so a low-priority case strays further from its queue).

    Raises:
        EstimateError: If a count is negative, the handle time is not positive or
            ``history`` is not a ``History``.
    """

    cases_ahead: int
    agents_on_shift: int
    recent_handle_minutes: float | None
    recent_samples: int = 0
    history: History = NO_HISTORY
    agents_busy: int | None = None
    priority: str | None = None

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
        _require(
            self.agents_busy is None or (_is_count(self.agents_busy) and self.agents_busy >= 0),
            "agents_busy",
            "None or a whole number of at least 0",
            self.agents_busy,
        )


@dataclass(frozen=True)
class ServiceTargets:
    """What the brand promises and assumes; see ``targets`` in support.yml.

    Attributes:
        first_response_minutes: The shortest pickup time promised, even with an empty queue.
        average_handle_minutes: Handle time assumed while history is too thin.
        default_agents_on_shift: Agents assumed when the snapshot says 0.
        min_history_samples: Cases of history needed to trust it fully: for the recent
            handle time, and for a calibration group (same priority, or all cases).
        safety_factor: Multiplies the expected wait while history is too thin.
        promise_quantile: With enough history, the share of customers the promise is
            kept for, on average over weeks like the recent ones (split-conformal).

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
        basis: Where the length came from: ``BASIS_PRIOR`` (the expected wait times
            the safety factor), ``BASIS_SAME_PRIORITY`` or ``BASIS_ALL_CASES`` (calibrated
            on the cases of the same priority, or on all).
        history_samples: How many answered cases the length was learned from.
        expected_minutes: The point prediction the length was built on
            (``WaitPrediction.expected_minutes``); stored with the case, so that its
            wait can later be compared with what was expected then.
    """

    deadline: datetime
    business_minutes: float
    open_now: bool
    wording: str
    basis: str = BASIS_PRIOR
    history_samples: int = 0
    expected_minutes: float = 0.0

    def deadline_iso(self) -> str:
        """Return the deadline as ISO 8601 with its UTC offset, rounded up to the minute."""
        return _ceil_minute(self.deadline).isoformat(timespec="minutes")


def round_up_minutes(minutes: float) -> int:
    """Round a duration up to a length people say.

    Steps of 5 minutes up to an hour ("within about 35 minutes"), of a quarter of an
    hour up to three hours ("an hour and a quarter"), then of half an hour. Finer steps
    than that would sound false; coarser ones make a promise longer than the estimate
    needs (from 60 to 90 minutes is half as long again). Float noise below a millionth
    of a minute is ignored, so 15.000000000000002 stays 15.

    Args:
        minutes: A duration in minutes; finite and not negative.

    Returns:
        The smallest step at least ``minutes`` long (at least 5).

    Raises:
        EstimateError: If ``minutes`` is negative or not finite.
    """
    _require(
        _is_number(minutes) and minutes >= 0, "minutes", "a finite number of at least 0", minutes
    )
    minutes = max(round(minutes, 6), MINUTE_STEPS[0][1])
    for up_to, step in MINUTE_STEPS:
        if minutes <= up_to:
            return step * math.ceil(minutes / step)
    return _LONG_STEP * math.ceil(minutes / _LONG_STEP)


_QUARTERS = {15: "a quarter", 30: "a half", 45: "three quarters"}


def _say_duration(minutes: int) -> str:
    hours, rest = divmod(minutes, 60)
    if hours == 0:
        return f"{minutes} minutes"
    whole = "an hour" if hours == 1 else f"{hours} hours"
    if rest == 0:
        return whole
    if rest in _QUARTERS:
        if hours == 1:
            return f"an hour and {_QUARTERS[rest]}"
        # "2 and three quarter hours": the fraction qualifies "hours", so no plural.
        return f"{hours} and {_QUARTERS[rest].removesuffix('s')} hours"
    return f"{whole} {rest} minutes"


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
    return _queue_minutes(queue.cases_ahead, _agents(queue, targets), None, _handle_minutes(queue, targets))


def _queue_minutes(cases_ahead: int, agents: int, busy: int | None, handle: float) -> float:
    """Return the wait the queue explains: cases to serve before this one, at the agents' pace.

    Agents free at the moment take the first cases at once, so only the cases beyond
    them wait for an agent to finish (``busy`` None: unknown, every agent counted busy).
    """
    free = 0 if busy is None else max(0, agents - busy)
    return (max(0, cases_ahead - free) + PICKUP_SHARE) * handle / agents


@dataclass(frozen=True)
class WaitPrediction:
    """How long the customer will wait, at the promise quantile, and why.

    Attributes:
        minutes: Business minutes, before the first-response floor and rounding.
        basis: ``BASIS_PRIOR``, ``BASIS_SAME_PRIORITY`` or ``BASIS_ALL_CASES``.
        samples: Answered cases it was learned from (0 for the prior).
        hour_of_week: The hour of week the wait starts counting in (see
            ``bot.eta.history.hour_of_week``).
        expected_minutes: The point prediction: the wait the queue and the staffing
            explain (``expected_wait``); recorded with the case, it is what the case's
            wait is later compared with.
        factor: The calibrated multiple of ``expected_minutes`` (the safety factor for
            the prior).
    """

    minutes: float
    basis: str
    samples: int
    hour_of_week: int
    expected_minutes: float = 0.0
    factor: float = 1.0


def predict_wait(
    now: datetime,
    calendar: BusinessCalendar,
    queue: QueueSnapshot,
    targets: ServiceTargets,
    *,
    waited_minutes: float = 0.0,
) -> WaitPrediction:
    """Predict the wait a promise should cover, from history when there is enough.

    The point prediction is ``expected_wait``: the work ahead of the customer (the cases
    the free agents do not take at once, plus ``PICKUP_SHARE`` of one) worked off by the
    agents on shift now and, in later hours, by the agents usually on shift then. Each
    answered case of the history is scored by how its wait compares with what was
    expected for it when it was opened, ``score = (reply + c) / (expected then + c)``
    with ``c = SCORE_OFFSET_MINUTES`` (the expectation recorded with the case; for a
    case recorded without one, the queue formula with the staffing then). The
    prediction is ``(expected now + c) x q - c``, where ``q`` is the split-conformal
    ``promise_quantile`` of the scores (``bot.eta.history.conformal_quantile``): if
    the coming week's cases are exchangeable with the window's, the promise holds for
    at least that share. Only cases answered before ``now`` are in the window, so no
    promise is built on what happened after it was made.

    The scores are those of the cases of the same priority when there are enough
    (``BASIS_SAME_PRIORITY``: later arrivals of a more urgent case are served first, so
    a low-priority case strays further from its queue than an urgent one), else of all
    cases (``BASIS_ALL_CASES``), whatever their hour: measured on the simulated weeks,
    scores kept apart by hour of the week, hour of the day or size of the expected
    wait came from too few cases and kept fewer promises (docs/promises.md); the
    expected wait already carries the hour (the rota) and the queue. "Enough" is at
    least ``min_history_samples`` and enough for the quantile (``q / (1 - q)``: 19 for
    0.95). Without, the prior: ``expected x safety_factor``. A group with at least
    ``min_history_samples`` cases but too few for the quantile still bounds the factor
    from below: never less than the largest of its scores, so falling back to a wider
    group (or the prior) never promises less than one of the like cases waited.

    For a customer who has already waited (a new estimate when a promise is at risk),
    a long wait so far is itself evidence: with ``waited_minutes`` > 0 the prediction is
    at least the conformal ``promise_quantile`` of how much longer the recent customers
    who had waited that long still waited, when there are enough of them; when there
    are too few (this customer is further into the tail than history reaches), at least
    as long again as the wait so far.

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
    longer = None
    if len(still_waiting) >= targets.min_history_samples:
        longer = conformal_quantile(still_waiting, targets.promise_quantile)
    if longer is None and len(queue.history) >= targets.min_history_samples:
        # Waited longer than nearly every recent case: history cannot say how much longer,
        # but a wait this far into the tail tends to go on as long again (a new estimate
        # that doubles each time needs few updates, where a short one would need many).
        longer = waited_minutes
    if longer is None or longer <= prediction.minutes:
        return prediction
    return replace(prediction, minutes=longer, samples=len(still_waiting))


def staffing_profile(history: History) -> dict[int, int]:
    """Return the agents usually on shift in each hour of the week, as history recorded them.

    The median of the staffing recorded with the cases opened in that hour (cases opened
    while closed, or without a record, say nothing).
    """
    seen: dict[int, list[int]] = {}
    for sample in history.samples:
        if sample.agents_on_shift:
            seen.setdefault(sample.hour_of_week, []).append(sample.agents_on_shift)
    return {hour: sorted(agents)[len(agents) // 2] for hour, agents in seen.items()}


def expected_wait(
    now: datetime,
    calendar: BusinessCalendar,
    queue: QueueSnapshot,
    targets: ServiceTargets,
    profile: Mapping[int, int] | None = None,
) -> float:
    """Return the open minutes until an agent is expected to pick the case up.

    The work ahead is the cases the free agents do not take at once, plus
    ``PICKUP_SHARE`` of one, each needing the recent handle time. It is worked off hour
    by hour of open time: in the hour of ``now`` by the agents on shift now, in later
    hours (and from the opening, when closed now) by the agents usually on shift then
    (``profile``; the agents of now where it does not say), so a shift that ends at
    14:00 or a second one that starts at noon is counted before it happens.

    Args:
        now: When the customer asked; timezone-aware.
        calendar: The brand's business hours.
        queue: The queue now.
        targets: The brand's targets (prior handle time, default staffing).
        profile: Agents by hour of week (``staffing_profile``); None: the agents of now
            throughout.
    """
    agents_now = _agents(queue, targets)
    alone = _queue_minutes(queue.cases_ahead, agents_now, queue.agents_busy, _handle_minutes(queue, targets))
    if not profile:
        return alone
    work = alone * agents_now  # agent-minutes
    moment = calendar.next_opening(now).astimezone(_UTC)
    # While closed nobody is on shift now: the rota says who opens.
    first_hour = hour_of_week(calendar, moment) if calendar.is_open(now) else None
    waited = 0.0
    agents = agents_now
    for _ in range(_LOOKAHEAD_HOURS):
        hour_end = moment.replace(minute=0, second=0, microsecond=0) + _ONE_HOUR
        local = moment.astimezone(calendar.timezone)
        hour = local.weekday() * 24 + local.hour
        agents = agents_now if hour == first_hour else max(1, profile.get(hour, agents_now))
        open_minutes = calendar.business_minutes_between(moment, hour_end)
        if agents * open_minutes >= work:
            return waited + work / agents
        work -= agents * open_minutes
        waited += open_minutes
        moment = hour_end
    return waited + work / agents


def _predict_new_case(
    now: datetime, calendar: BusinessCalendar, queue: QueueSnapshot, targets: ServiceTargets
) -> WaitPrediction:
    hour = hour_of_week(calendar, now)
    agents, handle = _agents(queue, targets), _handle_minutes(queue, targets)
    profile = staffing_profile(queue.history)
    expected = expected_wait(now, calendar, queue, targets, profile)
    scored = []
    for sample in queue.history.samples:
        expected_then = sample.expected_minutes
        if expected_then is None:
            # Recorded before expectations were: the queue formula with the staffing then.
            agents_then = sample.agents_on_shift or agents
            expected_then = _queue_minutes(sample.cases_ahead, agents_then, sample.agents_busy, handle)
        scored.append((sample.priority, _score(sample.reply_minutes, expected_then)))
    same_priority = [score for priority, score in scored if priority == queue.priority]
    levels = (
        (BASIS_SAME_PRIORITY, same_priority if queue.priority is not None else []),
        (BASIS_ALL_CASES, [score for _, score in scored]),
    )
    # Too few like cases for the quantile still say something: a factor below the
    # largest of them would promise less than one of them actually waited.
    floor: WaitPrediction | None = None
    for basis, scores in levels:
        if len(scores) < targets.min_history_samples:
            continue
        factor = conformal_quantile(scores, targets.promise_quantile)
        if factor is not None:
            if floor is not None and floor.factor > factor:
                return floor
            return WaitPrediction(_unscore(factor, expected), basis, len(scores), hour, expected, factor)
        if floor is None:
            largest = max(scores)
            floor = WaitPrediction(_unscore(largest, expected), basis, len(scores), hour, expected, largest)
    prior = WaitPrediction(
        expected * targets.safety_factor, BASIS_PRIOR, 0, hour, expected, targets.safety_factor
    )
    return floor if floor is not None and floor.minutes > prior.minutes else prior


def _score(actual: float, expected: float) -> float:
    return (actual + SCORE_OFFSET_MINUTES) / (expected + SCORE_OFFSET_MINUTES)


def _unscore(factor: float, expected: float) -> float:
    return max(0.0, factor * (expected + SCORE_OFFSET_MINUTES) - SCORE_OFFSET_MINUTES)


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
        expected_minutes=prediction.expected_minutes,
    )
