"""support.yml's ``hours`` section: the timezone, the weekly open hours and the holidays.

Read into a ``bot.eta.calendar.BusinessCalendar``; every mistake names its line.
"""

from __future__ import annotations

import difflib
import re
from datetime import date, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from yaml.nodes import MappingNode, Node, ScalarNode

from bot import clock
from bot.eta.calendar import END_OF_DAY, BusinessCalendar
from bot.ops.nodes import Entries, NodeReader, suggest

WEEKDAYS: tuple[str, ...] = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
HOURS_KEYS = ("timezone", "weekly", "holidays")
HOURS_REQUIRED = ("timezone", "weekly")
_HOLIDAY_KEYS = ("date", "name")
# ``hours.holidays`` as a mapping: a country's public holidays (the ``holidays``
# package), dates closed besides them, and dates open although the package closes them.
_HOLIDAY_SOURCE_KEYS = ("country", "subdivision", "closed", "open")
# The package's holidays are expanded for the years from one before the year the file
# is loaded to this many after it: promises look at most a year ahead, and processes
# are restarted far more often than that.
HOLIDAY_YEARS_AHEAD = 2
_TIME_RANGE = re.compile(r"(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})")

_Ranges = tuple[tuple[time, time], ...]


def read_calendar(nodes: NodeReader, entries: Entries) -> BusinessCalendar:
    """Read the ``hours`` section's entries (keys already checked) into a calendar.

    Args:
        nodes: The file's reader.
        entries: The section's keys and values.

    Raises:
        OpsConfigError: On the first mistake.
    """
    zone = _timezone(nodes, *entries["timezone"])
    weekly = _weekly(nodes, *entries["weekly"])
    holidays = nodes.optional(entries, "holidays", lambda e: _holidays(nodes, *e), {})
    return BusinessCalendar(timezone=zone, weekly=weekly, holidays=holidays)


def open_hours_per_week(calendar: BusinessCalendar) -> float:
    """Return how many hours a week the calendar is open (holidays aside)."""
    total = timedelta(0)
    for intervals in calendar.weekly.values():
        for start, end in intervals:
            end_offset = timedelta(days=1) if end == END_OF_DAY else _offset(end)
            total += end_offset - _offset(start)
    return total.total_seconds() / 3600


def _timezone(nodes: NodeReader, key_node: Node, node: Node) -> ZoneInfo:
    name = nodes.text(key_node, node, "hours.timezone", " like Europe/London")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        # available_timezones() scans the tz database; only worth it on this error.
        close = difflib.get_close_matches(name, sorted(available_timezones()), n=1)
        hint = f"did you mean '{close[0]}'?" if close else "use a name like Europe/London"
        raise nodes.error(node, f"hours.timezone: unknown timezone; {hint}", name) from None


def _weekly(nodes: NodeReader, key_node: Node, node: Node) -> dict[int, _Ranges]:
    days = nodes.section(node, "hours.weekly", key_node, WEEKDAYS, (), "day")
    for day in WEEKDAYS:
        if day not in days:
            raise nodes.error(
                key_node,
                f"hours.weekly is missing {day}; use {day}: [] for a day you are closed",
            )
    weekly = {number: _day(nodes, day, *days[day]) for number, day in enumerate(WEEKDAYS)}
    if not any(weekly.values()):
        raise nodes.error(key_node, "hours.weekly has no open hours on any day")
    return weekly


def _day(nodes: NodeReader, day: str, key_node: Node, node: Node) -> _Ranges:
    where = f"hours.weekly.{day}"
    ranges: list[tuple[timedelta, timedelta, Node]] = []
    for item in nodes.items(key_node, node, where, 'time ranges like ["09:00-17:00"], or []'):
        start, end = _time_range(nodes, item, where)
        ranges.append((start, end, item))
    ranges.sort(key=lambda entry: entry[0])
    for (_, earlier_end, earlier), (later_start, _, later) in zip(ranges, ranges[1:]):
        if later_start < earlier_end:
            # Report whichever of the two comes later in the file.
            first, second = sorted((earlier, later), key=lambda n: n.start_mark.index)
            raise nodes.bad(second, f"{where}: the range overlaps '{nodes.value(first)}'")
    return tuple(
        (_as_time(start), END_OF_DAY if end == timedelta(days=1) else _as_time(end))
        for start, end, _ in ranges
    )


def _time_range(nodes: NodeReader, node: Node, where: str) -> tuple[timedelta, timedelta]:
    value = nodes.value(node)
    match = _TIME_RANGE.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise nodes.error(node, f"{where}: a time range looks like '09:00-17:30'", value)
    start_hour, start_minute, end_hour, end_minute = (int(part) for part in match.groups())
    start = timedelta(hours=start_hour, minutes=start_minute)
    end = timedelta(hours=end_hour, minutes=end_minute)
    for hour, minute, offset in (
        (start_hour, start_minute, start),
        (end_hour, end_minute, end),
    ):
        if hour > 24 or minute > 59 or offset > timedelta(days=1):
            raise nodes.error(
                node, f"{where}: {hour:02d}:{minute:02d} is not a time of day", value
            )
    if start == timedelta(days=1):
        raise nodes.error(node, f"{where}: 24:00 can only end a range", value)
    if end == start:
        raise nodes.error(node, f"{where}: the range is empty", value)
    if end < start:
        raise nodes.error(
            node,
            f"{where}: the range ends before it starts; split hours past midnight into"
            " two ranges, like '22:00-24:00' and '00:00-02:00' the next day",
            value,
        )
    return start, end


def _holidays(nodes: NodeReader, key_node: Node, node: Node) -> dict[date, str]:
    """Read ``hours.holidays``: a list of dated entries, or a mapping naming a country too."""
    if not isinstance(node, MappingNode):
        return _listed_days(nodes, key_node, node, "hours.holidays")
    where = "hours.holidays"
    entries = nodes.section(node, where, key_node, _HOLIDAY_SOURCE_KEYS, ())
    closed: dict[date, str] = {}
    if "country" in entries:
        closed = _country_holidays(nodes, entries)
    elif "subdivision" in entries:
        raise nodes.error(entries["subdivision"][0], f"{where}.subdivision needs a country")
    if "open" in entries:
        for day in _open_days(nodes, *entries["open"], f"{where}.open"):
            closed.pop(day, None)
    if "closed" in entries:
        # Listed by hand, so they win: a name given here replaces the package's.
        closed.update(_listed_days(nodes, *entries["closed"], f"{where}.closed"))
    return closed


def _country_holidays(nodes: NodeReader, entries: Entries) -> dict[date, str]:
    """Return the public holidays of ``country`` (and ``subdivision``) from the ``holidays`` package."""
    # Imported here: only files that name a country need it, and it is slow to import.
    import holidays as public_holidays

    where = "hours.holidays"
    country_key, country_node = entries["country"]
    country = nodes.text(country_key, country_node, f"{where}.country", " like GB or US")
    supported: dict[str, Any] = public_holidays.list_supported_countries()
    if country not in supported:
        close = difflib.get_close_matches(country.upper(), list(supported), n=1)
        hint = f"did you mean '{close[0]}'?" if close else "use an ISO 3166-1 code like GB, US or DE"
        raise nodes.error(country_node, f"{where}.country: unknown country; {hint}", country)
    subdivision = None
    if "subdivision" in entries:
        sub_key, sub_node = entries["subdivision"]
        subdivision = nodes.text(sub_key, sub_node, f"{where}.subdivision", " like ENG")
        regions = [str(region) for region in supported[country]]
        if subdivision not in regions:
            hint = suggest(subdivision, regions, "its subdivisions") if regions else "it has none"
            raise nodes.error(sub_node, f"{where}.subdivision: unknown for {country}; {hint}", subdivision)
    this_year = clock.now().year
    found = public_holidays.country_holidays(
        country,
        subdiv=subdivision,
        years=range(this_year - 1, this_year + HOLIDAY_YEARS_AHEAD + 1),
        language="en_US",
    )
    return {day: str(name) for day, name in sorted(found.items())}


def _open_days(nodes: NodeReader, key_node: Node, node: Node, where: str) -> list[date]:
    days: list[date] = []
    for item in nodes.items(key_node, node, where, "dates (YYYY-MM-DD), or []"):
        day = _date(nodes, item, item, where)
        if day in days:
            raise nodes.error(item, f"{where}: listed twice", day.isoformat())
        days.append(day)
    return days


def _listed_days(nodes: NodeReader, key_node: Node, node: Node, where: str) -> dict[date, str]:
    holidays: dict[date, str] = {}
    lines: dict[date, int] = {}
    for item in nodes.items(key_node, node, where, "{date: YYYY-MM-DD, name: ...} entries"):
        entries = nodes.section(item, where, item, _HOLIDAY_KEYS, _HOLIDAY_KEYS)
        date_key, date_node = entries["date"]
        day = _date(nodes, date_key, date_node, where)
        if day in holidays:
            raise nodes.error(
                date_node, f"{where}: date already listed on line {lines[day]}", day.isoformat()
            )
        holidays[day] = nodes.text(*entries["name"], f"{where}: name")
        lines[day] = date_node.start_mark.line + 1
    return holidays


def _date(nodes: NodeReader, key_node: Node, node: Node, where: str) -> date:
    value = nodes.value(node)
    if isinstance(value, str):
        try:
            value = date.fromisoformat(value.strip())
        except ValueError:
            pass
    if not isinstance(value, date) or hasattr(value, "hour"):
        shown = node.value if isinstance(node, ScalarNode) else value
        raise nodes.error(
            nodes.line_node(key_node, node),
            f"{where}: not a valid date, write it as YYYY-MM-DD",
            shown,
        )
    return value


def _as_time(offset: timedelta) -> time:
    minutes = int(offset.total_seconds() // 60)
    return time(minutes // 60, minutes % 60)


def _offset(clock: time) -> timedelta:
    return timedelta(hours=clock.hour, minutes=clock.minute)
