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
