"""Business hours in the brand's own timezone, and how business time adds up.

Opening hours are wall-clock hours: "09:00-17:00" means 09:00 to 17:00 on the local
clock every day, including the days the clocks change. Internally every interval is
turned into a pair of UTC instants and all arithmetic is done in UTC, because Python
compares and subtracts two datetimes that share a ``tzinfo`` by their wall-clock
fields, which is wrong across a DST change.

Everything here is pure: nothing reads the clock; callers pass ``now`` in.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from types import MappingProxyType
from zoneinfo import ZoneInfo

# An interval that ends at ``time(0)`` ends at midnight at the end of its day
# ("24:00"); ``time`` itself cannot hold 24:00.
END_OF_DAY = time(0)
# How far ahead to look for the next open interval before giving up.
SEARCH_DAYS = 370

_UTC = timezone.utc
_ONE_SECOND = timedelta(seconds=1)

Interval = tuple[time, time]


class CalendarError(ValueError):
    """A business calendar was built or used with a value it cannot work with."""


class NoOpeningHoursError(CalendarError):
    """The calendar has no open interval within ``SEARCH_DAYS`` days of a moment."""


def _require_aware(name: str, value: datetime) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise CalendarError(f"{name} must be timezone-aware (got naive {value.isoformat()})")


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(_UTC)


def _clock_offset(value: time) -> timedelta:
    return timedelta(
        hours=value.hour,
        minutes=value.minute,
        seconds=value.second,
        microseconds=value.microsecond,
    )


def _end_offset(end: time) -> timedelta:
    return timedelta(days=1) if end == END_OF_DAY else _clock_offset(end)


def _format_interval(interval: Interval) -> str:
    start, end = interval
    end_text = "24:00" if end == END_OF_DAY else end.isoformat(timespec="minutes")
    return f"{start.isoformat(timespec='minutes')}-{end_text}"


def first_instant_at(day: date, clock: time, zone: ZoneInfo) -> datetime:
    """Return the first instant at which the local clock shows ``clock`` or later on ``day``.

    This is what a wall-clock opening time means on the days the clocks change:
    in the repeated hour of autumn it is the first of the two moments the clock
    shows that time; a time skipped by the spring change happens at the jump.

    Args:
        day: The local date.
        clock: The local wall-clock time (naive).
        zone: The timezone the clock is in.

    Returns:
        The instant, as an aware datetime in UTC.
    """
    naive = datetime.combine(day, clock)
    earlier = naive.replace(tzinfo=zone, fold=0).astimezone(_UTC)
    later = naive.replace(tzinfo=zone, fold=1).astimezone(_UTC)
    if earlier <= later:
        # An ordinary time (equal) or the repeated hour (fold=0 is the first pass).
        return earlier
    # The clock skips ``naive``: find the jump, the first whole second after
    # ``later`` (which reads before ``naive``) whose local time is at or after it.
    # Searching whole seconds keeps the answer exact; offsets are whole seconds.
    low, high = 0, math.ceil((earlier - later) / _ONE_SECOND)
    while high - low > 1:
        middle = (low + high) // 2
        if (later + middle * _ONE_SECOND).astimezone(zone).replace(tzinfo=None) >= naive:
            high = middle
        else:
            low = middle
    return later + high * _ONE_SECOND


@dataclass(frozen=True)
class BusinessCalendar:
    """When a brand is open, in its own timezone.

    Attributes:
        timezone: The brand's timezone; opening hours are wall-clock times in it.
        weekly: Open intervals per weekday (0 is Monday). Each interval is
            ``(start, end)`` with ``start < end`` on the same day, sorted and not
            overlapping; an ``end`` of ``END_OF_DAY`` (``time(0)``) means 24:00. A
            weekday that is missing or maps to ``()`` is closed.
        holidays: Dates closed all day, with the holiday's name.

    Raises:
        CalendarError: At construction, when an interval or key is invalid.
    """

    timezone: ZoneInfo
    weekly: Mapping[int, tuple[Interval, ...]]
    holidays: Mapping[date, str]

    def __post_init__(self) -> None:
        if not isinstance(self.timezone, ZoneInfo):
            raise CalendarError(f"timezone must be a zoneinfo.ZoneInfo (got {self.timezone!r})")
        weekly: dict[int, tuple[Interval, ...]] = {}
        for weekday, intervals in self.weekly.items():
            if not isinstance(weekday, int) or isinstance(weekday, bool) or not 0 <= weekday <= 6:
                raise CalendarError(f"weekday must be 0 (Monday) to 6 (Sunday) (got {weekday!r})")
            weekly[weekday] = _checked_intervals(weekday, tuple(intervals))
        holidays: dict[date, str] = {}
        for day, name in self.holidays.items():
            if isinstance(day, datetime) or not isinstance(day, date):
                raise CalendarError(f"holiday keys must be dates (got {day!r})")
            holidays[day] = name
        # Frozen means frozen: callers cannot change the hours behind our back.
        object.__setattr__(self, "weekly", MappingProxyType(weekly))
        object.__setattr__(self, "holidays", MappingProxyType(holidays))

    def is_open(self, at: datetime) -> bool:
        """Return whether the brand is open at the instant ``at``.

        Args:
            at: A timezone-aware moment, in any timezone.

        Raises:
            CalendarError: If ``at`` is naive.
        """
        _require_aware("at", at)
        instant = _to_utc(at)
        return any(
            start <= instant < end for start, end in self._open_intervals(self._local_date(instant))
        )

    def next_opening(self, at: datetime) -> datetime:
        """Return ``at`` if open then, else the start of the next open interval.

        Args:
            at: A timezone-aware moment, in any timezone.

        Returns:
            The moment, in the calendar's timezone.

        Raises:
            CalendarError: If ``at`` is naive.
            NoOpeningHoursError: If nothing opens within ``SEARCH_DAYS`` days.
        """
        _require_aware("at", at)
        for start, _end in self._open_from(_to_utc(at)):
            return start.astimezone(self.timezone)
        raise AssertionError("unreachable: _open_from never ends without raising")

    def add_business_minutes(self, start: datetime, minutes: float) -> datetime:
        """Return the moment ``minutes`` of open time after ``start``.

        Closed time does not count. Starting while closed counts from the next
        opening, so adding 0 minutes gives the next opening.

        Args:
            start: A timezone-aware moment, in any timezone.
            minutes: Open minutes to add; finite and not negative.

        Returns:
            The moment, in the calendar's timezone.

        Raises:
            CalendarError: If ``start`` is naive or ``minutes`` is negative or not finite.
            NoOpeningHoursError: If the calendar stays closed for ``SEARCH_DAYS`` days.
        """
        _require_aware("start", start)
        if not math.isfinite(minutes) or minutes < 0:
            raise CalendarError(f"minutes must be a finite number of at least 0 (got {minutes!r})")
        remaining = timedelta(minutes=minutes)
        for interval_start, interval_end in self._open_from(_to_utc(start)):
            available = interval_end - interval_start
            if remaining <= available:
                return (interval_start + remaining).astimezone(self.timezone)
            remaining -= available
        raise AssertionError("unreachable: _open_from never ends without raising")

    def business_minutes_between(self, start: datetime, end: datetime) -> float:
        """Return the open minutes from ``start`` to ``end``.

        Args:
            start: A timezone-aware moment.
            end: A timezone-aware moment; if before ``start`` the result is negative.

        Raises:
            CalendarError: If either moment is naive.
        """
        _require_aware("start", start)
        _require_aware("end", end)
        first, last = _to_utc(start), _to_utc(end)
        if last < first:
            return -self.business_minutes_between(end, start)
        total = timedelta(0)
        day = self._local_date(first)
        last_day = self._local_date(last)
        while day <= last_day:
            for interval_start, interval_end in self._open_intervals(day):
                overlap = min(interval_end, last) - max(interval_start, first)
                if overlap > timedelta(0):
                    total += overlap
            day += timedelta(days=1)
        return total.total_seconds() / 60

    def _local_date(self, instant: datetime) -> date:
        return instant.astimezone(self.timezone).date()

    def _open_intervals(self, day: date) -> list[tuple[datetime, datetime]]:
        """Return the open intervals of a local date as UTC instants."""
        if day in self.holidays:
            return []
        result = []
        for start, end in self.weekly.get(day.weekday(), ()):
            opens = first_instant_at(day, start, self.timezone)
            if end == END_OF_DAY:
                closes = first_instant_at(day + timedelta(days=1), END_OF_DAY, self.timezone)
            else:
                closes = first_instant_at(day, end, self.timezone)
            # Both ends inside one skipped hour: the interval never happens that day.
            if closes > opens:
                result.append((opens, closes))
        return result

    def _open_from(self, instant: datetime) -> Iterator[tuple[datetime, datetime]]:
        """Yield the open time from ``instant`` on, interval by interval, in UTC.

        The first interval is clipped to start at ``instant`` if it is open then.

        Raises:
            NoOpeningHoursError: After ``SEARCH_DAYS`` days in a row with nothing open.
        """
        day = self._local_date(instant)
        closed_since = day
        while (day - closed_since).days <= SEARCH_DAYS:
            for start, end in self._open_intervals(day):
                if end > instant:
                    closed_since = day + timedelta(days=1)
                    yield max(start, instant), end
            day += timedelta(days=1)
        raise NoOpeningHoursError(
            f"nothing opens in the {SEARCH_DAYS} days from {closed_since.isoformat()}"
            " (no weekly hours, or holidays cover them all)"
        )


def _checked_intervals(weekday: int, intervals: tuple[Interval, ...]) -> tuple[Interval, ...]:
    where = f"weekday {weekday}"
    previous: Interval | None = None
    for interval in intervals:
        if not (isinstance(interval, tuple) and len(interval) == 2):
            raise CalendarError(f"{where}: intervals must be (start, end) pairs (got {interval!r})")
        start, end = interval
        if not (isinstance(start, time) and isinstance(end, time)):
            raise CalendarError(f"{where}: interval ends must be times (got {interval!r})")
        if start.tzinfo is not None or end.tzinfo is not None:
            raise CalendarError(f"{where}: interval times must be naive (got {interval!r})")
        shown = _format_interval(interval)
        if _end_offset(end) <= _clock_offset(start):
            raise CalendarError(f"{where}: interval must end after it starts (got {shown})")
        if previous is not None and _clock_offset(start) < _end_offset(previous[1]):
            raise CalendarError(
                f"{where}: intervals must be sorted and not overlap "
                f"(got {shown} after {_format_interval(previous)})"
            )
        previous = interval
    return intervals
