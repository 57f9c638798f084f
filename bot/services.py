"""The long-lived things actions and the desk need: the case store, the ops config, a clock.

Built once per process on first use (never at import time). Tests build their own
``Services`` around a temporary store and config and hand it to the actions.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable

from bot import clock
from bot.cases import CaseStore
from bot.cases.records import OPENING_QUEUE_KEY, opening_queue
from bot.eta import HandledCase, History, Promise, QueueSnapshot, estimate_promise
from bot.ops import SupportConfig, load_support_config

if TYPE_CHECKING:
    from bot.cases.read_models import ReadModels
    from bot.eta.calendar import BusinessCalendar


@dataclass
class Services:
    """What an action needs beyond the tracker.

    Attributes:
        store: The case store.
        support: The support-operations configuration (hours, targets, routing).
        now: Returns the current time (timezone-aware).
    """

    store: CaseStore
    support: SupportConfig
    now: Callable[[], datetime] = field(default=clock.now)


_lock = threading.Lock()
_default: Services | None = None


def default_services() -> Services:
    """Return this process's services, building them on first use.

    The case store URL comes from ``FIRSTREPLY_CASE_DB`` and the support file from
    ``FIRSTREPLY_SUPPORT_FILE`` (both with defaults; see docs/configuration.md).
    """
    global _default
    with _lock:
        if _default is None:
            _default = Services(store=CaseStore.from_url(), support=load_support_config())
        return _default


def promise_for(services: Services, priority: str, now: datetime) -> Promise:
    """Return the response-time promise for a new case of ``priority`` made at ``now``."""
    return promise_and_queue(services, priority, now)[0]


def promise_and_queue(services: Services, priority: str, now: datetime) -> tuple[Promise, QueueSnapshot]:
    """Return the promise for a new case of ``priority`` at ``now``, and the queue it was computed from.

    Reads the live queue, the agents on shift (and how many are on a case), the recent
    handle time and the recently answered cases from the store and leaves the
    arithmetic to ``bot.eta``. The caller records the queue with the case
    (``opening_record``).
    """
    store, support = services.store, services.support
    window = support.history_window_days
    handle_minutes, samples = store.figures.recent_handle_minutes(now, window)
    agents = store.desk.agents_on_shift()
    queue = QueueSnapshot(
        cases_ahead=store.figures.count_waiting_ahead(priority, now),
        agents_on_shift=agents,
        recent_handle_minutes=handle_minutes,
        recent_samples=samples,
        history=answered_history(store.figures, support.calendar, now, window),
        # Agents are counted busy only when their number is known: "0 on shift" means unknown.
        agents_busy=min(agents, store.figures.count_in_hand()) if agents else None,
        priority=priority,
    )
    return estimate_promise(now, support.calendar, queue, support.targets), queue


def opening_record(promise: Promise, queue: QueueSnapshot) -> dict[str, Any]:
    """Return what a new case records of the queue it opened into (its metadata's ``OPENING_QUEUE_KEY``).

    The staffing then (0 agents: not reported) and the wait its promise expected: what its
    wait will be compared with when it is history.
    """
    return {
        OPENING_QUEUE_KEY: opening_queue(
            queue.agents_on_shift, queue.agents_busy or 0, promise.expected_minutes
        )
    }


def answered_history(figures: ReadModels, calendar: BusinessCalendar, now: datetime, window_days: int) -> History:
    """Return the estimate's history: the cases people answered in the ``window_days`` days up to ``now``."""
    answered = [
        HandledCase(
            created_at=timing.created_at,
            first_reply_at=timing.first_human_reply_at,
            claimed_at=timing.claimed_at,
            cases_ahead=timing.cases_ahead,
            agents_on_shift=timing.agents_on_shift or None,
            agents_busy=timing.agents_busy if timing.agents_on_shift else None,
            expected_minutes=timing.expected_minutes,
            priority=timing.priority,
        )
        for timing in figures.handled_timings(now, window_days)
    ]
    return History.from_cases(calendar, answered)
