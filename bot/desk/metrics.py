"""Prometheus metrics of the desk, computed from the case store when scraped (``GET /metrics``).

A collector on a dedicated ``CollectorRegistry`` reads every case's timings on each scrape
(``ReadModels.case_figures``: no summaries or answers), so the figures are exact, agree
with ``python -m bot report``, and are the same whichever desk replica is scraped. The
counters only ever grow, since cases are never deleted: a promise kept or broken stays
so. One exception: a promise that fell due unanswered while no watchdog ran, and was
then replaced by a new estimate, moves from broken back to pending (Prometheus reads the
dip as a counter reset).

Promises: every case is one promise, and every new estimate the watchdog sends is one
more. ``made = kept + broken + updated + pending``: a promise replaced by a new estimate
before it fell due counts as updated, not as kept or broken; the promise in force is
kept when a person's first reply came by its deadline (as in the report).

Reading every case on each scrape costs a query that grows with the store; scrape every
30 s or more, and see docs/promises.md for when to add a window.

One family is not from the store but from the outbox worker of the process scraped
(``DeliveryStats``, counted since it started): deliveries whose answer was lost after
sending, by what came of it. Only the desk that delivers (the leader) counts any.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from bot.constants import OPEN_STATUSES, PRIORITIES, STATUS_CLOSED
from bot.desk import messages

if TYPE_CHECKING:
    from bot.cases import CaseStore
    from bot.cases.records import CaseFigures

CONTENT_TYPE = CONTENT_TYPE_LATEST
# Seconds: a person's pace (a minute to a day), and the assistant's (instant to a minute).
HUMAN_BUCKETS: tuple[float, ...] = (60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400)
BOT_BUCKETS: tuple[float, ...] = (0.5, 1, 2, 5, 10, 30, 60)
RATING_BUCKETS: tuple[float, ...] = (1, 2, 3, 4, 5)
SATISFIED_RATING = 4
# What came of a delivery in doubt: its answer lost after sending, or cut off under way (``DeliveryStats``).
IN_DOUBT_FOUND = "found"  # looked up and found already posted: not sent again
IN_DOUBT_UNCHECKED = "unchecked"  # no way to look it up: sent again, may be seen twice


def _histogram(name: str, doc: str, values: Sequence[float], buckets: Iterable[float]) -> HistogramMetricFamily:
    counts = [(_le(bound), sum(1 for value in values if value <= bound)) for bound in buckets]
    counts.append(("+Inf", len(values)))
    return HistogramMetricFamily(name, doc, buckets=counts, sum_value=float(sum(values)))


def _le(bound: float) -> str:
    return str(float(bound))


def _seconds(start: datetime, end: datetime) -> float:
    return max(0.0, (end - start).total_seconds())


class DeliveryStats:
    """Counts of the outbox worker's deliveries in doubt, by platform and outcome (thread-safe).

    ``IN_DOUBT_FOUND``: an earlier try had posted it (a Slack lookup found it), so it was
    not sent again. ``IN_DOUBT_UNCHECKED``: its answer was lost and the platform has no
    lookup (Telegram), so it was sent again and the customer may see it twice.
    """

    def __init__(self) -> None:
        """Start at zero."""
        self._counts: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def count(self, platform: str, outcome: str) -> None:
        """Add one delivery of ``platform`` (``slack``, ``telegram``, ...) with ``outcome``."""
        with self._lock:
            self._counts[(platform, outcome)] = self._counts.get((platform, outcome), 0) + 1

    def counts(self) -> Mapping[tuple[str, str], int]:
        """Return the counts so far, by (platform, outcome)."""
        with self._lock:
            return dict(self._counts)


class DeliveryStatsCollector(Collector):
    """Yields ``firstreply_desk_deliveries_in_doubt_total`` from a ``DeliveryStats``."""

    def __init__(self, stats: DeliveryStats) -> None:
        """Report ``stats`` (the outbox worker's)."""
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        """Return the counter as of now."""
        family = CounterMetricFamily(
            "firstreply_desk_deliveries_in_doubt",
            "Desk deliveries in doubt (the answer lost after sending, or cut off under way by a stop or a lost "
            "lead), by outcome: found (already posted, not sent again) or unchecked (no lookup on the platform: "
            "sent again, may be seen twice). This process only.",
            labels=["platform", "outcome"],
        )
        for (platform, outcome), value in sorted(self.stats.counts().items()):
            family.add_metric([platform, outcome], value)
        yield family


class CaseStoreCollector(Collector):
    """Yields the desk's metrics from the case store on every scrape."""

    def __init__(self, store: CaseStore, clock: Callable[[], datetime]) -> None:
        """Read ``store``; ``clock`` says which promises are due (a pinned one in tests)."""
        self.store = store
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        """Return the metrics as of now (called by prometheus_client on each scrape)."""
        now = self.clock()
        cases = self.store.figures.case_figures()
        yield from self._cases(cases, now)
        yield from self._times(cases)
        yield from self._promises(cases, now)
        yield from self._ratings(cases)
        yield from self._desk(cases)

    def _cases(self, cases: Sequence[CaseFigures], now: datetime) -> Iterator[Metric]:
        opened = CounterMetricFamily("firstreply_cases_opened", "Cases handed to the team.", labels=["channel"])
        for channel in sorted({case.channel for case in cases}):
            opened.add_metric([channel], sum(1 for case in cases if case.channel == channel))
        yield opened
        queue = GaugeMetricFamily(
            "firstreply_open_cases", "Open cases now: waiting to be claimed, or claimed.", labels=["priority", "status"]
        )
        overdue = GaugeMetricFamily(
            "firstreply_overdue_cases",
            "Open cases whose promise has passed without a person's reply.",
            labels=["priority"],
        )
        for priority in PRIORITIES:
            for status in OPEN_STATUSES:
                queue.add_metric(
                    [priority, status], sum(1 for c in cases if c.priority == priority and c.status == status)
                )
            late = [
                c for c in cases
                if c.priority == priority and c.status in OPEN_STATUSES
                and c.first_human_reply_at is None and c.promised_by <= now
            ]  # fmt: skip
            overdue.add_metric([priority], len(late))
        yield queue
        yield overdue

    def _times(self, cases: Sequence[CaseFigures]) -> Iterator[Metric]:
        bot = [
            _seconds(c.first_customer_at, c.first_bot_at)
            for c in cases
            if c.first_customer_at is not None and c.first_bot_at is not None
        ]
        yield _histogram(
            "firstreply_first_bot_response_seconds",
            "From the customer's first message to the assistant's first answer (the case's transcript).",
            bot,
            BOT_BUCKETS,
        )
        claim = [_seconds(c.created_at, c.claimed_at) for c in cases if c.claimed_at is not None]
        yield _histogram(
            "firstreply_time_to_claim_seconds", "From the case being opened to an agent claiming it.", claim, HUMAN_BUCKETS
        )
        human = [_seconds(c.created_at, c.first_human_reply_at) for c in cases if c.first_human_reply_at is not None]
        yield _histogram(
            "firstreply_time_to_first_human_reply_seconds",
            "From the case being opened to a person's first reply reaching the customer.",
            human,
            HUMAN_BUCKETS,
        )

    def _updates_not_delivered(self) -> int:
        """Return the new estimates the customer never got (refused for good, outside a platform's window)."""
        return self.store.outbox.count(
            kind=messages.KIND_CUSTOMER, key_prefix=messages.PROMISE_UPDATE_PREFIX, given_up=True
        )

    def _promises(self, cases: Sequence[CaseFigures], now: datetime) -> Iterator[Metric]:
        answered = [c for c in cases if c.first_human_reply_at is not None]
        kept = sum(1 for c in answered if c.first_human_reply_at <= c.promised_by)  # type: ignore[operator]
        due = len(answered) + sum(1 for c in cases if c.first_human_reply_at is None and c.promised_by <= now)
        updated = sum(c.promise_updates for c in cases) - self._updates_not_delivered()
        made = len(cases) + updated
        yield CounterMetricFamily(
            "firstreply_promises_made", "Response-time promises told to customers (first ones and new estimates).", value=made
        )
        yield CounterMetricFamily(
            "firstreply_promises_kept", "Promises in force kept: a person's first reply came by the deadline.", value=kept
        )
        yield CounterMetricFamily(
            "firstreply_promises_broken",
            "Promises in force broken: answered after the deadline, or the deadline passed unanswered.",
            value=due - kept,
        )
        yield CounterMetricFamily(
            "firstreply_promises_updated", "Promises replaced by a new estimate before they fell due.", value=updated
        )
        yield GaugeMetricFamily("firstreply_promises_pending", "Promises in force not yet due and not answered.", value=made - updated - due)

    def _ratings(self, cases: Sequence[CaseFigures]) -> Iterator[Metric]:
        ratings = [float(c.rating) for c in cases if c.rating is not None]
        yield _histogram("firstreply_csat_rating", "Follow-up ratings, 1 (poor) to 5 (excellent).", ratings, RATING_BUCKETS)
        if ratings:
            satisfied = sum(1 for rating in ratings if rating >= SATISFIED_RATING) / len(ratings)
            yield GaugeMetricFamily("firstreply_csat_satisfied_ratio", "Share of ratings of 4 or 5 (CSAT).", value=satisfied)

    def _desk(self, cases: Sequence[CaseFigures]) -> Iterator[Metric]:
        actions = CounterMetricFamily("firstreply_watchdog_actions", "What the watchdog did.", labels=["action"])
        actions.add_metric(["escalation"], self.store.outbox.count(kind=messages.KIND_LEAD_POST))
        actions.add_metric(["promise_update"], sum(c.promise_updates for c in cases) - self._updates_not_delivered())
        actions.add_metric(["checkin"], self.store.outbox.count(key_prefix=messages.CHECKIN_PREFIX))
        actions.add_metric(["close"], sum(1 for c in cases if c.status == STATUS_CLOSED and c.closed_at is not None))
        yield actions
        pending, failed = self.store.outbox.backlog()
        backlog = GaugeMetricFamily(
            "firstreply_desk_outbox_messages",
            "Desk messages not delivered: waiting (or retrying), or given up on.",
            labels=["state"],
        )
        backlog.add_metric(["pending"], pending)
        backlog.add_metric(["failed"], failed)
        yield backlog
        working = self.store.desk.agents_on_shift()
        yield GaugeMetricFamily("firstreply_agents_on_shift", "Agents on shift (/shift on).", value=working)


def build_registry(
    store: CaseStore, clock: Callable[[], datetime], deliveries: DeliveryStats | None = None
) -> CollectorRegistry:
    """Return a registry of its own holding the case store collector (nothing of the process's default one).

    With ``deliveries`` (the outbox worker's ``stats``) it reports the deliveries in doubt too.
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(CaseStoreCollector(store, clock))
    if deliveries is not None:
        registry.register(DeliveryStatsCollector(deliveries))
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    """Return the registry's metrics in the Prometheus text format. Blocking (database work)."""
    return generate_latest(registry)
