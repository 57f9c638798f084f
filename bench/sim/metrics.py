"""What a simulation run says about each promise policy.

For the customers arriving in the measured window:

- kept: the first human reply came at or before the deadline;
- promised / actual: promised business minutes over the business minutes actually
  waited (at least one minute, so an instant reply does not divide by zero); also over
  only the customers who waited at least ``first_response_minutes``, since a reply
  faster than the shortest promise makes any promise look long;
- at risk: promises that slipped (no reply by the deadline); updated before the deadline:
  of those, the share the watchdog told before the deadline passed;
- updates: customers who got an update; needless: updated, then answered in time anyway;
  new promise kept: for the calibrated policy, the first update's new deadline was met;
- every promise told before it slipped: of all the promises given (first ones and new
  estimates) that passed unanswered, those whose customer heard from the watchdog first.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any

from bench.sim.model import POLICY_CALIBRATED, Customer, Scenario
from bot.eta import quantile, round_up_minutes

# Float minutes are compared with this slack: a reply on the deadline is on time.
_EPSILON = 1e-6
_MIN_ACTUAL_MINUTES = 1.0


@dataclass(frozen=True)
class PolicySummary:
    """One policy's figures over the measured customers."""

    policy: str
    customers: int
    kept: int
    kept_share: float
    promised_p50: float
    promised_p90: float
    ratio_p50: float
    ratio_p90: float
    ratio_p50_long_waits: float | None
    slipped: int
    slipped_updated_before_deadline: int
    updated_before_deadline_share: float | None
    customers_updated: int
    needless_updates: int
    updated_promises_kept_share: float | None
    median_warning_lead_minutes: float | None
    promises_slipped: int = 0
    promises_slipped_told_before: int = 0


@dataclass(frozen=True)
class RunSummary:
    """A whole run: the waits everyone shared, and each policy's figures."""

    scenario: str
    customers: int
    actual_p50: float
    actual_p90: float
    calibrated_basis: dict[str, int]
    policies: tuple[PolicySummary, ...]
    oracle_ratio_p50: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return JSON-ready data."""
        return asdict(self)


def summarize(scenario: Scenario, customers: Sequence[Customer], policies: Sequence[str]) -> RunSummary:
    """Reduce a finished run to its figures.

    Raises:
        ValueError: If a measured customer was never answered (the run did not finish).
    """
    calendar, epoch = scenario.calendar, scenario.epoch
    measured = [
        customer
        for customer in customers
        if scenario.measure_from <= customer.arrival.at < scenario.measure_until
    ]
    if not measured:
        raise ValueError("no customers in the measured window")
    actual: dict[int, float] = {}
    for customer in measured:
        if customer.replied is None:
            raise ValueError(f"customer {customer.id} was never answered")
        actual[customer.id] = calendar.business_minutes_between(
            epoch + timedelta(minutes=customer.arrival.at),
            epoch + timedelta(minutes=customer.replied),
        )
    waits = list(actual.values())
    basis = Counter(customer.promises[POLICY_CALIBRATED].basis for customer in measured if POLICY_CALIBRATED in customer.promises)
    return RunSummary(
        scenario=scenario.name,
        customers=len(measured),
        actual_p50=quantile(waits, 0.5),
        actual_p90=quantile(waits, 0.9),
        calibrated_basis=dict(sorted(basis.items())),
        oracle_ratio_p50=_oracle_ratio_p50(measured, actual, scenario.targets.first_response_minutes),
        policies=tuple(
            _policy(name, measured, actual, scenario.targets.first_response_minutes)
            for name in policies
        ),
    )


# The oracle's classes: customers of one priority whose expected wait is within this
# many of them of each other (by rank), at least ``_ORACLE_CLASS`` each.
_ORACLE_CLASS = 20
ORACLE_SHARE = 0.95


def _oracle_ratio_p50(measured: Sequence[Customer], actual: dict[int, float], floor: float) -> float | None:
    """Return the median promised/actual of a promise that knew each class's waits in advance.

    Customers the estimate cannot tell apart — the same priority and about the same
    expected wait (classes of ``_ORACLE_CLASS`` neighbours by expected wait) — are each
    promised the ``ORACLE_SHARE`` quantile of their class's actual waits (the shortest
    promise that keeps that share in every class), with the same floor and rounding as
    FirstReply. No promise built on those features keeps as many with a lower median: it
    measures how much the waits themselves spread, not how good the estimate is.
    None when the run did not record expected waits.
    """
    by_priority: dict[int, list[Customer]] = {}
    for customer in measured:
        if customer.expected_minutes is None:
            return None
        by_priority.setdefault(customer.rank, []).append(customer)
    ratios = []
    for group in by_priority.values():
        group.sort(key=lambda customer: (customer.expected_minutes or 0.0, customer.id))
        classes = max(1, len(group) // _ORACLE_CLASS)
        for index in range(classes):
            members = group[index * len(group) // classes : (index + 1) * len(group) // classes]
            bound = quantile([actual[member.id] for member in members], ORACLE_SHARE)
            promised = round_up_minutes(max(floor, bound))
            ratios += [promised / max(actual[member.id], _MIN_ACTUAL_MINUTES) for member in members]
    return quantile(ratios, 0.5)


def _policy(
    name: str, measured: Sequence[Customer], actual: dict[int, float], floor: float
) -> PolicySummary:
    kept = slipped = warned = updated = needless = 0
    ratios: list[float] = []
    long_ratios: list[float] = []
    promised: list[float] = []
    leads: list[float] = []
    updated_kept = updated_with_new = 0
    chain_slipped = chain_told = 0
    for customer in measured:
        record = customer.promises[name]
        assert customer.replied is not None
        on_time = customer.replied <= record.deadline + _EPSILON
        kept += on_time
        promised.append(record.minutes)
        ratios.append(record.minutes / max(actual[customer.id], _MIN_ACTUAL_MINUTES))
        if actual[customer.id] >= floor:
            long_ratios.append(ratios[-1])
        warned_in_time = bool(record.updates) and record.updates[0] < record.deadline
        if record.updates:
            updated += 1
            needless += on_time
            leads.append(record.deadline - record.updates[0])
            if record.new_deadlines:
                updated_with_new += 1
                updated_kept += customer.replied <= record.new_deadlines[0] + _EPSILON
        if not on_time:
            slipped += 1
            warned += warned_in_time
        deadlines = [record.deadline, *record.new_deadlines]
        for number, deadline in enumerate(deadlines):
            if customer.replied > deadline + _EPSILON:
                chain_slipped += 1
                chain_told += len(record.updates) > number and record.updates[number] < deadline
    return PolicySummary(
        policy=name,
        customers=len(measured),
        kept=kept,
        kept_share=kept / len(measured),
        promised_p50=quantile(promised, 0.5),
        promised_p90=quantile(promised, 0.9),
        ratio_p50=quantile(ratios, 0.5),
        ratio_p90=quantile(ratios, 0.9),
        ratio_p50_long_waits=quantile(long_ratios, 0.5) if long_ratios else None,
        slipped=slipped,
        slipped_updated_before_deadline=warned,
        updated_before_deadline_share=warned / slipped if slipped else None,
        customers_updated=updated,
        needless_updates=needless,
        updated_promises_kept_share=updated_kept / updated_with_new if updated_with_new else None,
        median_warning_lead_minutes=quantile(leads, 0.5) if leads else None,
        promises_slipped=chain_slipped,
        promises_slipped_told_before=chain_told,
    )
