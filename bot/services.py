"""The long-lived things actions and the desk need: the case store, the ops config, a clock.

Built once per process on first use (never at import time). Tests build their own
``Services`` around a temporary store and config and hand it to the actions.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Callable

from bot import clock
from bot.cases import CaseStore
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
    """Return the response-time promise for a new case of ``priority`` made at ``now``.

    Reads the live queue, the agents on shift, the recent handle time and the recently
    answered cases from the store and leaves the arithmetic to ``bot.eta``.
    """
    store, support = services.store, services.support
    window = support.history_window_days
    handle_minutes, samples = store.figures.recent_handle_minutes(now, window)
    queue = QueueSnapshot(
        cases_ahead=store.figures.count_waiting_ahead(priority, now),
        agents_on_shift=store.desk.agents_on_shift(),
        recent_handle_minutes=handle_minutes,
        recent_samples=samples,
        history=answered_history(store.figures, support.calendar, now, window),
    )
    return estimate_promise(now, support.calendar, queue, support.targets)


def answered_history(figures: ReadModels, calendar: BusinessCalendar, now: datetime, window_days: int) -> History:
    """Return the estimate's history: the cases people answered in the ``window_days`` days up to ``now``."""
    answered = [
        HandledCase(
            created_at=timing.created_at,
            first_reply_at=timing.first_human_reply_at,
            claimed_at=timing.claimed_at,
            cases_ahead=timing.cases_ahead,
        )
        for timing in figures.handled_timings(now, window_days)
    ]
    return History.from_cases(calendar, answered)
