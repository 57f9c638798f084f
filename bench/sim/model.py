"""A discrete-event simulation of the support queue, making real promises.

Customers arrive (``Arrival``), each gets a promise from every policy under test at the
moment it arrives (the policies only talk; they never change who is served when), and
agents on shift (``Shift``) take the waiting cases by priority, oldest first: claim, a
first reply a little later, then the rest of the handle time. A case that arrives with a
``pickup_minutes`` skips the agents: its first reply simply comes that many business
minutes later (the replay of an observed response-time distribution).

A watchdog checks every promise before it falls due: at 75 % of the promised business
minutes (on the next whole minute: it polls once a minute), and every 5 minutes while
agents are on shift, whether the predicted pickup (``(position + 0.5) * handle / agents``)
passes the deadline. Either way a customer not yet answered gets an update; for
FirstReply's policies (``UPDATING_POLICIES``) the update carries a new estimate from the
real ``estimate_promise``, and the watchdog then watches that one.

Time inside the simulation is float minutes since ``Scenario.epoch`` (UTC); the real
``bot.eta`` code gets real aware datetimes.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

import numpy as np

from bot.constants import PRIORITIES, priority_rank
from bot.eta import (
    BusinessCalendar,
    HandledCase,
    History,
    QueueSnapshot,
    ServiceTargets,
    WaitSample,
    estimate_promise,
    round_up_minutes,
)

# Watchdog: warn at this share of the promised business minutes...
WARN_AT_SHARE = 0.75
# ...checked on this poll interval (minutes),
POLL_MINUTES = 1.0
# ...and re-predict the pickup of every waiting case this often while agents are on.
SCAN_MINUTES = 5.0

POLICY_CALIBRATED = "calibrated (FirstReply)"
POLICY_SHORT = "short promise, then updates"
POLICY_PRIOR = "formula only (no history)"
POLICY_FIXED = "fixed: within 1 hour"
POLICY_MEDIAN = "trailing 7-day median"
POLICIES: tuple[str, ...] = (
    POLICY_CALIBRATED,
    POLICY_SHORT,
    POLICY_PRIOR,
    POLICY_FIXED,
    POLICY_MEDIAN,
)
# The policies whose watchdog update carries a new estimate from ``estimate_promise``.
UPDATING_POLICIES = (POLICY_CALIBRATED, POLICY_SHORT)
# The short promise: FirstReply's calibrated estimate at this share instead of the
# brand's ``promise_quantile``; the updates use the brand's.
SHORT_PROMISE_QUANTILE = 0.75
FIXED_PROMISE_MINUTES = 60
# The trailing median before any case has been answered.
MEDIAN_FALLBACK_MINUTES = 60

_ARRIVE, _SHIFT_START, _SHIFT_END, _REPLY, _DONE, _WATCH, _SCAN = range(7)


@dataclass(frozen=True)
class Arrival:
    """One customer handed to the team.

    Attributes:
        at: Minutes after the epoch.
        priority: One of ``bot.constants.PRIORITIES``.
        handle_minutes: Agent time from claim to resolve (wall minutes).
        reply_after_minutes: From claim to the first human reply (at most the handle time).
        pickup_minutes: Replay only: business minutes from arrival to the first human
            reply, whatever the agents do. None: agents serve it from the queue.
    """

    at: float
    priority: str = "normal"
    handle_minutes: float = 12.0
    reply_after_minutes: float = 2.0
    pickup_minutes: float | None = None


@dataclass(frozen=True)
class Shift:
    """An agent on shift from ``start`` to ``end`` (minutes after the epoch).

    An agent still on a case at the end of the shift finishes it first.
    """

    agent: str
    start: float
    end: float


@dataclass(frozen=True)
class Scenario:
    """Everything one run needs.

    Attributes:
        name: Shown in the results.
        epoch: The moment minute 0 stands for; timezone-aware.
        calendar: Business hours (from support.yml).
        targets: Service targets (from support.yml).
        arrivals: The customers, in any order.
        shifts: The agents' shifts.
        measure_from: Customers arriving at or after this minute are measured; earlier
            ones only build up history (warm-up).
        measure_until: ... and before this minute.
        window_days: Days of history the estimate learns from.
    """

    name: str
    epoch: datetime
    calendar: BusinessCalendar
    targets: ServiceTargets
    arrivals: tuple[Arrival, ...]
    shifts: tuple[Shift, ...]
    measure_from: float = 0.0
    measure_until: float = math.inf
    window_days: int = 7


@dataclass
class PromiseRecord:
    """One policy's promise to one customer, and what the watchdog did about it."""

    minutes: float
    deadline: float
    basis: str = ""
    updates: list[float] = field(default_factory=list)
    # Bumped by every update; a check scheduled for an older promise is stale.
    version: int = 0
    # The promise the watchdog watches now (the last update's, for ``UPDATING_POLICIES``).
    watched_deadline: float = 0.0
    watched_start: float = 0.0
    watched_minutes: float = 0.0
    # The deadline each update promised (``UPDATING_POLICIES`` only).
    new_deadlines: list[float] = field(default_factory=list)


@dataclass
class Customer:
    """A simulated customer and what happened to them."""

    id: int
    arrival: Arrival
    rank: int
    cases_ahead: int = 0
    # The staffing when it arrived, as the store records it with the case.
    agents_on_shift: int = 0
    agents_busy: int = 0
    # The wait FirstReply's estimate expected when it arrived, as the store records it.
    expected_minutes: float | None = None
    claimed: float | None = None
    replied: float | None = None
    resolved: float | None = None
    promises: dict[str, PromiseRecord] = field(default_factory=dict)


@dataclass
class _Agent:
    name: str
    on_shift: bool = False
    busy_with: int | None = None


class BusinessClock:
    """Open minutes since the epoch, at whole-minute resolution, for fast comparisons.

    Opening hours are whole minutes, so ``open_minutes(t)`` is exact. Used by the
    watchdog's 5-minute scans; promises and waits use the real calendar.
    """

    def __init__(self, calendar: BusinessCalendar, epoch: datetime, minutes: int) -> None:
        """Tabulate ``minutes`` minutes from ``epoch``."""
        is_open = np.fromiter(
            (calendar.is_open(epoch + timedelta(minutes=m)) for m in range(minutes)),
            dtype=np.float64,
            count=minutes,
        )
        self._open = is_open
        self._cumulative = np.concatenate(([0.0], np.cumsum(is_open)))

    def open_minutes(self, at: float) -> float:
        """Return the open minutes from the epoch to ``at``."""
        whole = min(int(at), len(self._open) - 1)
        return float(self._cumulative[whole] + (at - whole) * self._open[whole])


class Simulation:
    """Runs one scenario; read ``customers`` afterwards (or use ``run``)."""

    def __init__(self, scenario: Scenario, policies: Sequence[str] = POLICIES) -> None:
        """Prepare a run of ``scenario`` comparing ``policies`` (names from ``POLICIES``)."""
        unknown = [name for name in policies if name not in POLICIES]
        if unknown:
            raise ValueError(f"unknown policies {unknown}; known: {POLICIES}")
        self.scenario = scenario
        self.policies = tuple(policies)
        self.customers: list[Customer] = []
        self._events: list[tuple[float, int, int, int, str, int]] = []
        self._sequence = 0
        self._now = 0.0
        self._queue: list[tuple[int, float, int]] = []  # (-rank, arrival, id) for the agents
        self._waiting: set[int] = set()  # unclaimed, as the store counts them
        self._waiting_by_rank = [0] * len(PRIORITIES)
        self._agents: dict[str, _Agent] = {}
        self._samples: deque[tuple[float, WaitSample]] = deque()
        self._handles: deque[tuple[float, float]] = deque()
        self._handle_total = 0.0
        self._cached_history: tuple[History, float | None, int] | None = None
        last = max(
            [a.at for a in scenario.arrivals] + [s.end for s in scenario.shifts] + [0.0]
        )
        # Room for the queue to drain after the last arrival or shift.
        self._clock = BusinessClock(scenario.calendar, scenario.epoch, int(last) + 14 * 24 * 60)

    # --- the event loop ----------------------------------------------------------------

    def _at(self, when: float, kind: int, subject: int = 0, name: str = "", extra: int = 0) -> None:
        self._sequence += 1
        heapq.heappush(self._events, (when, self._sequence, kind, subject, name, extra))

    def run(self) -> list[Customer]:
        """Run to the end (every customer answered); return the customers by id."""
        scenario = self.scenario
        for index, arrival in enumerate(sorted(scenario.arrivals, key=lambda a: a.at)):
            if arrival.priority not in PRIORITIES:
                raise ValueError(f"unknown priority {arrival.priority!r}")
            self.customers.append(Customer(index, arrival, priority_rank(arrival.priority)))
            self._at(arrival.at, _ARRIVE, index)
        for shift in scenario.shifts:
            self._agents.setdefault(shift.agent, _Agent(shift.agent))
            self._at(shift.start, _SHIFT_START, 0, shift.agent)
            self._at(shift.end, _SHIFT_END, 0, shift.agent)
        if scenario.shifts:
            first = min(shift.start for shift in scenario.shifts)
            self._at(first, _SCAN)
        while self._events:
            when, _seq, kind, subject, name, extra = heapq.heappop(self._events)
            self._now = when
            if kind == _ARRIVE:
                self._arrive(subject)
            elif kind == _REPLY:
                self._reply(subject)
            elif kind == _WATCH:
                self._watch(subject, name, extra)
            elif kind == _SHIFT_START:
                self._agents[name].on_shift = True
            elif kind == _SHIFT_END:
                self._agents[name].on_shift = False
            elif kind == _DONE:
                self._done(subject, name)
            elif kind == _SCAN:
                self._scan()
            self._dispatch()
        return self.customers

    def _dispatch(self) -> None:
        for agent in self._agents.values():
            if not self._queue:
                return
            if agent.on_shift and agent.busy_with is None:
                _rank, _arrived, case_id = heapq.heappop(self._queue)
                self._claim(self.customers[case_id], self._now)
                customer = self.customers[case_id]
                agent.busy_with = case_id
                arrival = customer.arrival
                reply_after = min(arrival.reply_after_minutes, arrival.handle_minutes)
                self._at(self._now + reply_after, _REPLY, case_id)
                self._at(self._now + arrival.handle_minutes, _DONE, case_id, agent.name)

    def _claim(self, customer: Customer, when: float) -> None:
        customer.claimed = when
        self._waiting.discard(customer.id)
        self._waiting_by_rank[customer.rank] -= 1

    # --- events ----------------------------------------------------------------------

    def _arrive(self, case_id: int) -> None:
        customer = self.customers[case_id]
        customer.cases_ahead = sum(self._waiting_by_rank[customer.rank :])
        customer.agents_on_shift, customer.agents_busy = self._staffing()
        self._promise(customer)
        self._waiting.add(case_id)
        self._waiting_by_rank[customer.rank] += 1
        pickup = customer.arrival.pickup_minutes
        if pickup is None:
            heapq.heappush(self._queue, (-customer.rank, customer.arrival.at, case_id))
            return
        calendar, epoch = self.scenario.calendar, self.scenario.epoch
        reply_at = calendar.add_business_minutes(epoch + timedelta(minutes=self._now), pickup)
        self._at(self._minutes(reply_at), _REPLY, case_id)

    def _reply(self, case_id: int) -> None:
        customer = self.customers[case_id]
        customer.replied = self._now
        if customer.claimed is None:
            # Replay: claimed and answered at once; resolved after the handle time.
            self._claim(customer, self._now)
            self._at(self._now + customer.arrival.handle_minutes, _DONE, case_id)
        epoch = self.scenario.epoch
        assert customer.claimed is not None
        handled = HandledCase(
            created_at=epoch + timedelta(minutes=customer.arrival.at),
            first_reply_at=epoch + timedelta(minutes=self._now),
            claimed_at=epoch + timedelta(minutes=customer.claimed),
            cases_ahead=customer.cases_ahead,
            agents_on_shift=customer.agents_on_shift,
            agents_busy=customer.agents_busy,
            expected_minutes=customer.expected_minutes,
            priority=customer.arrival.priority,
        )
        (sample,) = History.from_cases(self.scenario.calendar, [handled]).samples
        self._samples.append((self._now, sample))
        self._cached_history = None

    def _done(self, case_id: int, agent_name: str) -> None:
        customer = self.customers[case_id]
        customer.resolved = self._now
        assert customer.claimed is not None
        handle = self._now - customer.claimed
        self._handles.append((self._now, handle))
        self._handle_total += handle
        self._cached_history = None
        if agent_name:
            self._agents[agent_name].busy_with = None

    # --- promises ----------------------------------------------------------------------

    def _minutes(self, moment: datetime) -> float:
        return (moment - self.scenario.epoch).total_seconds() / 60

    def _history(self) -> tuple[History, float | None, int]:
        """Return the history window and the recent handle time, as the store would."""
        horizon = self._now - self.scenario.window_days * 24 * 60
        while self._samples and self._samples[0][0] <= horizon:
            self._samples.popleft()
            self._cached_history = None
        while self._handles and self._handles[0][0] <= horizon:
            self._handle_total -= self._handles.popleft()[1]
            self._cached_history = None
        if self._cached_history is None:
            count = len(self._handles)
            self._cached_history = (
                History(tuple(sample for _, sample in self._samples)),
                self._handle_total / count if count else None,
                count,
            )
        return self._cached_history

    def _staffing(self) -> tuple[int, int]:
        """Return the agents on shift and, of those, how many are on a case."""
        on_shift = [agent for agent in self._agents.values() if agent.on_shift]
        return len(on_shift), sum(1 for agent in on_shift if agent.busy_with is not None)

    def _snapshot(
        self, cases_ahead: int, priority: str, history: History | None = None
    ) -> QueueSnapshot:
        full_history, handle, samples = self._history()
        agents, busy = self._staffing()
        return QueueSnapshot(
            cases_ahead=cases_ahead,
            agents_on_shift=agents,
            recent_handle_minutes=handle,
            recent_samples=samples,
            history=full_history if history is None else history,
            agents_busy=busy if agents else None,
            priority=priority,
        )

    def _promise(self, customer: Customer) -> None:
        scenario = self.scenario
        calendar, epoch = scenario.calendar, scenario.epoch
        now = epoch + timedelta(minutes=self._now)
        opening = calendar.next_opening(now)
        for name in self.policies:
            if name in (POLICY_CALIBRATED, POLICY_SHORT, POLICY_PRIOR):
                snapshot = self._snapshot(
                    customer.cases_ahead,
                    customer.arrival.priority,
                    History() if name == POLICY_PRIOR else None,
                )
                targets = scenario.targets
                if name == POLICY_SHORT:
                    targets = replace(targets, promise_quantile=SHORT_PROMISE_QUANTILE)
                promise = estimate_promise(now, calendar, snapshot, targets)
                if name == POLICY_CALIBRATED and promise.expected_minutes > 0:
                    customer.expected_minutes = promise.expected_minutes
                minutes, deadline, basis = (
                    promise.business_minutes,
                    promise.deadline,
                    promise.basis,
                )
            else:
                if name == POLICY_FIXED:
                    minutes = float(FIXED_PROMISE_MINUTES)
                else:
                    history, _, _ = self._history()
                    replies = sorted(sample.reply_minutes for sample in history.samples)
                    minutes = float(
                        round_up_minutes(_median(replies))
                        if replies
                        else MEDIAN_FALLBACK_MINUTES
                    )
                deadline = calendar.add_business_minutes(opening, minutes)
                basis = ""
            record = PromiseRecord(minutes=minutes, deadline=self._minutes(deadline), basis=basis)
            self._watch_promise(record, self._now, minutes, record.deadline)
            customer.promises[name] = record
            self._schedule_watch(customer.id, name, record)

    # --- the watchdog --------------------------------------------------------------------

    @staticmethod
    def _watch_promise(record: PromiseRecord, start: float, minutes: float, deadline: float) -> None:
        record.watched_start, record.watched_minutes, record.watched_deadline = (
            start,
            minutes,
            deadline,
        )

    def _schedule_watch(self, case_id: int, policy: str, record: PromiseRecord) -> None:
        calendar, epoch = self.scenario.calendar, self.scenario.epoch
        start = calendar.next_opening(epoch + timedelta(minutes=record.watched_start))
        mark = self._minutes(
            calendar.add_business_minutes(start, WARN_AT_SHARE * record.watched_minutes)
        )
        poll = math.ceil(mark / POLL_MINUTES) * POLL_MINUTES
        self._at(poll, _WATCH, case_id, policy, record.version)

    def _watch(self, case_id: int, policy: str, version: int) -> None:
        customer = self.customers[case_id]
        record = customer.promises[policy]
        if customer.replied is not None or version != record.version:
            return
        if self._now < record.watched_deadline:
            self._update(customer, policy, record)

    def _scan(self) -> None:
        agents = sum(1 for agent in self._agents.values() if agent.on_shift)
        if agents and self._waiting:
            _, handle, samples = self._history()
            targets = self.scenario.targets
            if handle is None or samples < targets.min_history_samples:
                handle = targets.average_handle_minutes
            order = sorted(
                self._waiting,
                key=lambda i: (-self.customers[i].rank, self.customers[i].arrival.at, i),
            )
            open_now = self._clock.open_minutes(self._now)
            for position, case_id in enumerate(order):
                customer = self.customers[case_id]
                if customer.arrival.pickup_minutes is not None:
                    continue  # replay: the queue does not decide its pickup
                predicted = (position + 0.5) * handle / agents
                for policy, record in customer.promises.items():
                    # The scan catches first promises early; updates are watched at 75 %.
                    if record.version or self._now >= record.watched_deadline:
                        continue
                    left = self._clock.open_minutes(record.watched_deadline) - open_now
                    if predicted > left:
                        self._update(customer, policy, record)
        if any(shift.end > self._now for shift in self.scenario.shifts):
            self._at(self._now + SCAN_MINUTES, _SCAN)

    def _update(self, customer: Customer, policy: str, record: PromiseRecord) -> None:
        """Tell the customer the promise is at risk, with a new estimate; watch that one."""
        record.updates.append(self._now)
        record.version += 1
        if policy not in UPDATING_POLICIES:
            # Only FirstReply's own estimates are re-asked; the others stop being watched.
            record.watched_deadline = self._now
            return
        scenario = self.scenario
        now = scenario.epoch + timedelta(minutes=self._now)
        ahead = sum(
            1
            for other in self._waiting
            if other != customer.id
            and (
                self.customers[other].rank > customer.rank
                or (
                    self.customers[other].rank == customer.rank
                    and (self.customers[other].arrival.at, other)
                    < (customer.arrival.at, customer.id)
                )
            )
        )
        waited = self._clock.open_minutes(self._now) - self._clock.open_minutes(
            customer.arrival.at
        )
        promise = estimate_promise(
            now,
            scenario.calendar,
            self._snapshot(ahead, customer.arrival.priority),
            scenario.targets,
            waited_minutes=max(0.0, waited),
        )
        record.new_deadlines.append(self._minutes(promise.deadline))
        self._watch_promise(record, self._now, promise.business_minutes, record.new_deadlines[-1])
        self._schedule_watch(customer.id, policy, record)


def _median(ordered: Sequence[float]) -> float:
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2
