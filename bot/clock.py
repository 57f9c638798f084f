"""The one place the current time is read.

``FIRSTREPLY_NOW`` (an ISO 8601 time with offset) pins the clock, so a demo or a test
can show what a customer would be told at another time, e.g. on a Sunday night.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone

NOW_ENV = "FIRSTREPLY_NOW"


def now() -> datetime:
    """Return the current time, timezone-aware (UTC unless pinned with an offset).

    Raises:
        ValueError: ``FIRSTREPLY_NOW`` is set but is not an ISO 8601 time with an offset.
    """
    pinned = os.environ.get(NOW_ENV)
    if not pinned:
        return datetime.now(timezone.utc)
    value = datetime.fromisoformat(pinned)
    if value.tzinfo is None:
        raise ValueError(f"{NOW_ENV} must include a UTC offset, e.g. 2026-11-22T23:00:00+00:00 (got {pinned!r})")
    return value


def seconds_from_env(name: str, default: float, *, allow_zero: bool = False) -> float:
    """Return a duration in seconds from the environment variable ``name`` (``default`` if unset).

    Raises:
        ValueError: the value is not a number, is negative, or is zero where that is not allowed.
    """
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number of seconds, not {raw!r}") from None
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'zero or more' if allow_zero else 'positive'}, not {raw!r}")
    return value
