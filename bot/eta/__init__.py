"""Response-time promises: business hours and the estimate built on them.

Pure functions only: no I/O and no clock reads, ``now`` is always passed in.
"""

from bot.eta.calendar import (
    END_OF_DAY,
    BusinessCalendar,
    CalendarError,
    NoOpeningHoursError,
)
from bot.eta.estimate import (
    EstimateError,
    Promise,
    QueueSnapshot,
    ServiceTargets,
    describe_deadline,
    estimate_promise,
    round_up_minutes,
)

__all__ = [
    "END_OF_DAY",
    "BusinessCalendar",
    "CalendarError",
    "EstimateError",
    "NoOpeningHoursError",
    "Promise",
    "QueueSnapshot",
    "ServiceTargets",
    "describe_deadline",
    "estimate_promise",
    "round_up_minutes",
]
