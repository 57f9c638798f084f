"""What the estimate's tests share: Northwind's opening hours, the test service targets, moments with offsets."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime, time, timedelta, timezone
from types import MappingProxyType
from zoneinfo import ZoneInfo

from bot.eta.calendar import BusinessCalendar
from bot.eta.estimate import Promise, ServiceTargets

LONDON = ZoneInfo("Europe/London")
TARGETS = ServiceTargets(first_response_minutes=15, average_handle_minutes=12, default_agents_on_shift=2)
# Mon-Fri 08:00-20:00, Sat 09:00-17:00, Sun 10:00-16:00 (weekday 0 is Monday).
NORTHWIND_WEEK: Mapping[int, tuple[tuple[time, time], ...]] = MappingProxyType(
    {
        **{weekday: ((time(8), time(20)),) for weekday in range(5)},
        5: ((time(9), time(17)),),
        6: ((time(10), time(16)),),
    }
)
# The English bank holidays of the winter and spring the tests run in.
NORTHWIND_HOLIDAYS: Mapping[date, str] = MappingProxyType(
    {
        date(2026, 12, 25): "Christmas Day",
        date(2026, 12, 26): "Boxing Day",
        date(2026, 12, 28): "Boxing Day (substitute day)",
        date(2027, 1, 1): "New Year's Day",
        date(2027, 3, 26): "Good Friday",
        date(2027, 3, 29): "Easter Monday",
    }
)


def assert_promise(promise: Promise, calendar: BusinessCalendar, deadline: str, minutes: float, wording: str) -> None:
    """Check a promise's deadline (ISO, in London's time zone), business minutes and wording.

    And that it is never a deadline while closed: the second before it is open time.
    """
    assert promise.deadline_iso() == deadline
    assert promise.deadline.tzinfo is LONDON
    assert promise.business_minutes == minutes
    assert promise.wording == wording
    assert calendar.is_open(promise.deadline.astimezone(timezone.utc) - timedelta(seconds=1)) is True


def at(text: str) -> datetime:
    """Parse an ISO moment with an explicit offset."""
    moment = datetime.fromisoformat(text)
    assert moment.tzinfo is not None, "test moments must carry an offset"
    return moment


def every_day(*intervals: tuple[time, time]) -> BusinessCalendar:
    """Open ``intervals`` every day of the week, Europe/London, no holidays."""
    return BusinessCalendar(LONDON, {weekday: intervals for weekday in range(7)}, {})


def northwind(holidays: Mapping[date, str] = NORTHWIND_HOLIDAYS) -> BusinessCalendar:
    """Mon-Fri 08:00-20:00, Sat 09:00-17:00, Sun 10:00-16:00, Europe/London, closed on ``holidays``."""
    return BusinessCalendar(timezone=LONDON, weekly=dict(NORTHWIND_WEEK), holidays=dict(holidays))
