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
    BASIS_ALL_CASES,
    BASIS_SAME_PRIORITY,
    BASIS_PRIOR,
    EstimateError,
    Promise,
    QueueSnapshot,
    ServiceTargets,
    WaitPrediction,
    describe_deadline,
    estimate_promise,
    expected_wait,
    predict_wait,
    round_up_minutes,
)
from bot.eta.history import (
    HandledCase,
    History,
    HistoryError,
    WaitSample,
    conformal_quantile,
    quantile,
)

__all__ = [
    "BASIS_ALL_CASES",
    "BASIS_SAME_PRIORITY",
    "BASIS_PRIOR",
    "END_OF_DAY",
    "BusinessCalendar",
    "CalendarError",
    "EstimateError",
    "HandledCase",
    "History",
    "HistoryError",
    "NoOpeningHoursError",
    "Promise",
    "QueueSnapshot",
    "ServiceTargets",
    "WaitPrediction",
    "WaitSample",
    "conformal_quantile",
    "describe_deadline",
    "estimate_promise",
    "expected_wait",
    "predict_wait",
    "quantile",
    "round_up_minutes",
]
