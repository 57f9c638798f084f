"""Tests for bot.eta: business calendar and response-time promises.

All moments are fixed ISO strings with explicit offsets; nothing reads the clock.
Results are compared as ISO strings, because two datetimes sharing a tzinfo compare
by wall clock and would hide a wrong UTC offset.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from bot.eta.calendar import (
    END_OF_DAY,
    BusinessCalendar,
    CalendarError,
    NoOpeningHoursError,
    first_instant_at,
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
from tests.eta_support import LONDON, TARGETS, assert_promise, at, every_day, northwind

# --- calendar: is_open ------------------------------------------------------------


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        ("2026-11-30T07:59:59+00:00", False),  # Monday, before opening
        ("2026-11-30T08:00:00+00:00", True),
        ("2026-11-30T19:59:59+00:00", True),
        ("2026-11-30T20:00:00+00:00", False),  # closing time is closed
        ("2026-11-30T02:59:00-05:00", False),  # 07:59 in London
        ("2026-11-30T03:00:00-05:00", True),  # 08:00 in London
        ("2026-12-05T08:59:59+00:00", False),  # Saturday
        ("2026-12-05T09:00:00+00:00", True),
        ("2026-12-05T17:00:00+00:00", False),
        ("2026-12-06T10:00:00+00:00", True),  # Sunday
        ("2026-12-06T16:00:00+00:00", False),
        ("2026-12-06T23:59:59+00:00", False),
        ("2026-12-07T00:00:00+00:00", False),  # Monday midnight
        ("2026-12-25T12:00:00+00:00", False),  # Christmas Day, a Friday
        ("2026-12-26T12:00:00+00:00", False),  # Boxing Day, a Saturday
        ("2026-12-27T12:00:00+00:00", True),
        ("2026-12-28T12:00:00+00:00", False),  # substitute day
        # 2027-03-27: Saturday, still GMT.
        ("2027-03-27T16:59:00+00:00", True),
        ("2027-03-27T17:00:00+00:00", False),
        # 2027-03-28: clocks go forward at 01:00 UTC; Sunday 10:00-16:00 BST.
        ("2027-03-28T08:59:00+00:00", False),  # 09:59 BST
        ("2027-03-28T09:00:00+00:00", True),  # 10:00 BST
        ("2027-03-28T14:59:00+00:00", True),  # 15:59 BST
        ("2027-03-28T15:00:00+00:00", False),  # 16:00 BST
        # 2026-10-24: Saturday, still BST.
        ("2026-10-24T07:59:00+00:00", False),  # 08:59 BST
        ("2026-10-24T08:00:00+00:00", True),  # 09:00 BST
        ("2026-10-24T16:00:00+00:00", False),  # 17:00 BST
        # 2026-10-25: clocks go back at 01:00 UTC; Sunday 10:00-16:00 GMT.
        ("2026-10-25T09:59:00+00:00", False),
        ("2026-10-25T10:00:00+00:00", True),
        ("2026-10-25T15:59:00+00:00", True),
        ("2026-10-25T16:00:00+00:00", False),
    ],
)
def test_is_open(moment: str, expected: bool) -> None:
    assert northwind().is_open(at(moment)) is expected


# --- calendar: next_opening -------------------------------------------------------


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        ("2026-11-30T10:00:00+00:00", "2026-11-30T10:00:00+00:00"),  # open: itself
        ("2026-11-30T05:00:00-05:00", "2026-11-30T10:00:00+00:00"),  # ...in London time
        ("2026-11-30T06:00:00+00:00", "2026-11-30T08:00:00+00:00"),
        ("2026-11-30T20:00:00+00:00", "2026-12-01T08:00:00+00:00"),
        ("2026-12-04T21:00:00+00:00", "2026-12-05T09:00:00+00:00"),  # Friday night
        ("2026-12-05T17:30:00+00:00", "2026-12-06T10:00:00+00:00"),  # Saturday evening
        ("2026-12-06T23:59:00+00:00", "2026-12-07T08:00:00+00:00"),  # over midnight
        ("2026-12-07T00:00:00+00:00", "2026-12-07T08:00:00+00:00"),
        ("2026-12-24T20:30:00+00:00", "2026-12-27T10:00:00+00:00"),  # Christmas, Boxing Day
        ("2026-12-27T16:00:00+00:00", "2026-12-29T08:00:00+00:00"),  # substitute day
        ("2026-12-31T20:00:00+00:00", "2027-01-02T09:00:00+00:00"),  # New Year's Day
        ("2027-03-25T20:00:00+00:00", "2027-03-27T09:00:00+00:00"),  # Good Friday
        ("2027-03-27T17:00:00+00:00", "2027-03-28T10:00:00+01:00"),  # into BST
        ("2027-03-28T15:00:00+00:00", "2027-03-30T08:00:00+01:00"),  # Easter Monday
        ("2026-10-24T16:00:00+00:00", "2026-10-25T10:00:00+00:00"),  # into GMT
    ],
)
def test_next_opening(moment: str, expected: str) -> None:
    opening = northwind().next_opening(at(moment))

    assert opening.isoformat() == expected
    assert opening.tzinfo is LONDON


# --- calendar: add_business_minutes -------------------------------------------------


@pytest.mark.parametrize(
    ("start", "minutes", "expected"),
    [
        ("2026-11-30T10:00:00+00:00", 30, "2026-11-30T10:30:00+00:00"),
        ("2026-11-30T10:00:00+00:00", 0.5, "2026-11-30T10:00:30+00:00"),
        ("2026-11-30T10:00:00+00:00", 0, "2026-11-30T10:00:00+00:00"),
        ("2026-11-30T19:40:00+00:00", 20, "2026-11-30T20:00:00+00:00"),  # ends at closing
        ("2026-11-30T19:50:00+00:00", 30, "2026-12-01T08:20:00+00:00"),
        ("2026-11-30T06:00:00+00:00", 15, "2026-11-30T08:15:00+00:00"),  # from closed
        ("2026-11-30T20:00:00+00:00", 0, "2026-12-01T08:00:00+00:00"),  # 0 while closed
        ("2026-12-04T19:00:00+00:00", 600, "2026-12-06T11:00:00+00:00"),  # 60+480+60
        ("2026-11-30T08:00:00+00:00", 4440, "2026-12-06T16:00:00+00:00"),  # a whole week
        ("2026-12-06T15:30:00+00:00", 60, "2026-12-07T08:30:00+00:00"),  # over midnight
        ("2026-12-24T19:30:00+00:00", 60, "2026-12-27T10:30:00+00:00"),  # over Christmas
        ("2027-03-27T16:30:00+00:00", 60, "2027-03-28T10:30:00+01:00"),  # spring forward
        ("2026-10-24T16:30:00+01:00", 60, "2026-10-25T10:30:00+00:00"),  # fall back
    ],
)
def test_add_business_minutes(start: str, minutes: float, expected: str) -> None:
    calendar = northwind()

    result = calendar.add_business_minutes(at(start), minutes)

    assert result.isoformat() == expected
    assert calendar.business_minutes_between(at(start), result) == minutes


# --- calendar: business_minutes_between ---------------------------------------------


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        ("2026-11-30T10:00:00+00:00", "2026-11-30T11:00:00+00:00", 60.0),
        ("2026-11-30T19:00:00+00:00", "2026-12-01T09:00:00+00:00", 120.0),
        ("2026-12-01T09:00:00+00:00", "2026-11-30T19:00:00+00:00", -120.0),
        ("2026-11-30T21:00:00+00:00", "2026-11-30T22:00:00+00:00", 0.0),
        ("2026-12-04T08:00:00+00:00", "2026-12-07T08:00:00+00:00", 1560.0),  # 720+480+360
        ("2026-12-24T08:00:00+00:00", "2026-12-29T08:00:00+00:00", 1080.0),  # 720+360
        ("2027-03-27T08:00:00+00:00", "2027-03-29T00:00:00+01:00", 840.0),  # 480+360
        ("2026-10-24T16:30:00+01:00", "2026-10-25T10:30:00+00:00", 60.0),
    ],
)
def test_business_minutes_between(start: str, end: str, expected: float) -> None:
    assert northwind().business_minutes_between(at(start), at(end)) == expected


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        ("2026-11-30T00:00:00+00:00", "2026-12-01T00:00:00+00:00", 1440.0),
        ("2026-10-25T00:00:00+01:00", "2026-10-26T00:00:00+00:00", 1500.0),  # 25-hour day
        ("2027-03-28T00:00:00+00:00", "2027-03-29T00:00:00+01:00", 1380.0),  # 23-hour day
    ],
)
def test_open_all_day_counts_real_minutes_on_dst_days(
    start: str, end: str, expected: float
) -> None:
    calendar = every_day((time(0), END_OF_DAY))

    assert calendar.business_minutes_between(at(start), at(end)) == expected


def test_open_all_day_adds_through_the_repeated_hour() -> None:
    calendar = every_day((time(0), END_OF_DAY))

    result = calendar.add_business_minutes(at("2026-10-24T23:00:00+01:00"), 120)

    # 22:00 UTC + 2 hours = 00:00 UTC, which is the first 01:00 (still BST).
    assert result.isoformat() == "2026-10-25T01:00:00+01:00"
    assert calendar.next_opening(at("2026-10-25T01:30:00+00:00")).isoformat() == (
        "2026-10-25T01:30:00+00:00"
    )


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        ("2026-11-30T00:00:00+00:00", "2026-12-01T00:00:00+00:00", 90.0),
        # 01:30 is skipped: open from the jump (02:00 BST) to 03:00 BST.
        ("2027-03-28T00:00:00+00:00", "2027-03-29T00:00:00+01:00", 60.0),
        # 01:30 happens twice: open from the first (BST) to 03:00 GMT.
        ("2026-10-25T00:00:00+01:00", "2026-10-26T00:00:00+00:00", 150.0),
    ],
)
def test_hours_inside_the_changing_hour(start: str, end: str, expected: float) -> None:
    calendar = every_day((time(1, 30), time(3)))

    assert calendar.business_minutes_between(at(start), at(end)) == expected


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        ("2027-03-28T00:30:00+00:00", "2027-03-28T02:00:00+01:00"),  # opens at the jump
        ("2026-10-25T00:00:00+00:00", "2026-10-25T00:30:00+00:00"),  # first 01:30 (BST)
        ("2026-10-25T01:15:00+00:00", "2026-10-25T01:15:00+00:00"),  # second 01:15: open
    ],
)
def test_next_opening_inside_the_changing_hour(moment: str, expected: str) -> None:
    calendar = every_day((time(1, 30), time(3)))

    assert calendar.next_opening(at(moment)).astimezone(timezone.utc).isoformat() == (
        at(expected).astimezone(timezone.utc).isoformat()
    )
    assert calendar.next_opening(at(moment)).isoformat() == (
        at(expected).astimezone(LONDON).isoformat()
    )


@pytest.mark.parametrize(
    ("day", "clock", "expected"),
    [
        (date(2026, 11, 30), time(9), "2026-11-30T09:00:00+00:00"),
        (date(2027, 3, 28), time(1, 0), "2027-03-28T01:00:00+00:00"),  # skipped: the jump
        (date(2027, 3, 28), time(1, 59), "2027-03-28T01:00:00+00:00"),
        (date(2027, 3, 28), time(2, 0), "2027-03-28T01:00:00+00:00"),
        (date(2026, 10, 25), time(1, 30), "2026-10-25T00:30:00+00:00"),  # repeated: first
        (date(2026, 10, 25), time(2, 0), "2026-10-25T02:00:00+00:00"),
    ],
)
def test_first_instant_at(day: date, clock: time, expected: str) -> None:
    assert first_instant_at(day, clock, LONDON).isoformat() == expected


def test_hours_ending_at_midnight_join_the_next_day() -> None:
    calendar = BusinessCalendar(
        LONDON, {4: ((time(20), END_OF_DAY),), 5: ((time(0), time(2)),)}, {}
    )

    assert calendar.add_business_minutes(at("2026-12-04T23:30:00+00:00"), 60).isoformat() == (
        "2026-12-05T00:30:00+00:00"
    )
    assert calendar.is_open(at("2026-12-04T23:59:59+00:00")) is True
    assert calendar.is_open(at("2026-12-05T00:00:00+00:00")) is True
    assert calendar.is_open(at("2026-12-05T02:00:00+00:00")) is False
    assert calendar.business_minutes_between(
        at("2026-12-04T19:00:00+00:00"), at("2026-12-05T03:00:00+00:00")
    ) == 360.0


# --- calendar: errors ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda c: c.is_open(datetime(2026, 11, 30, 10)),
            "at must be timezone-aware (got naive 2026-11-30T10:00:00)",
        ),
        (
            lambda c: c.next_opening(datetime(2026, 11, 30, 10)),
            "at must be timezone-aware (got naive 2026-11-30T10:00:00)",
        ),
        (
            lambda c: c.add_business_minutes(datetime(2026, 11, 30, 10), 5),
            "start must be timezone-aware (got naive 2026-11-30T10:00:00)",
        ),
        (
            lambda c: c.business_minutes_between(
                at("2026-11-30T10:00:00+00:00"), datetime(2026, 12, 1)
            ),
            "end must be timezone-aware (got naive 2026-12-01T00:00:00)",
        ),
        (
            lambda c: c.add_business_minutes(at("2026-11-30T10:00:00+00:00"), -1),
            "minutes must be a finite number of at least 0 (got -1)",
        ),
        (
            lambda c: c.add_business_minutes(at("2026-11-30T10:00:00+00:00"), float("inf")),
            "minutes must be a finite number of at least 0 (got inf)",
        ),
    ],
)
def test_calendar_rejects_bad_arguments(call: Any, message: str) -> None:
    with pytest.raises(CalendarError) as caught:
        call(northwind())

    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"weekly": {0: ((time(18), time(9)),)}},
            "weekday 0: interval must end after it starts (got 18:00-09:00)",
        ),
        (
            {"weekly": {0: ((time(9), time(9)),)}},
            "weekday 0: interval must end after it starts (got 09:00-09:00)",
        ),
        (
            {"weekly": {1: ((time(8), time(13)), (time(12), time(17)))}},
            "weekday 1: intervals must be sorted and not overlap "
            "(got 12:00-17:00 after 08:00-13:00)",
        ),
        (
            {"weekly": {2: ((time(22), END_OF_DAY), (time(23), time(23, 30)))}},
            "weekday 2: intervals must be sorted and not overlap "
            "(got 23:00-23:30 after 22:00-24:00)",
        ),
        (
            {"weekly": {7: ((time(9), time(17)),)}},
            "weekday must be 0 (Monday) to 6 (Sunday) (got 7)",
        ),
        (
            {"weekly": {0: ((time(9, tzinfo=timezone.utc), time(17)),)}},
            "weekday 0: interval times must be naive "
            "(got (datetime.time(9, 0, tzinfo=datetime.timezone.utc), datetime.time(17, 0)))",
        ),
        (
            {"holidays": {datetime(2026, 12, 25): "Christmas Day"}},
            "holiday keys must be dates (got datetime.datetime(2026, 12, 25, 0, 0))",
        ),
        (
            {"timezone": "Europe/London"},
            "timezone must be a zoneinfo.ZoneInfo (got 'Europe/London')",
        ),
    ],
)
def test_calendar_rejects_bad_hours(kwargs: dict[str, Any], message: str) -> None:
    arguments: dict[str, Any] = {"timezone": LONDON, "weekly": {}, "holidays": {}, **kwargs}

    with pytest.raises(CalendarError) as caught:
        BusinessCalendar(**arguments)

    assert str(caught.value) == message


def test_calendar_accepts_whole_days_and_is_read_only() -> None:
    calendar = BusinessCalendar(LONDON, {0: ((time(0), END_OF_DAY),)}, {})

    assert calendar.weekly == {0: ((time(0), END_OF_DAY),)}
    assert isinstance(calendar.weekly, MappingProxyType)
    with pytest.raises(TypeError):
        calendar.weekly[1] = ()  # type: ignore[index]


def test_never_open_calendar_says_so() -> None:
    calendar = BusinessCalendar(LONDON, {}, {})

    with pytest.raises(NoOpeningHoursError) as caught:
        calendar.next_opening(at("2026-11-30T10:00:00+00:00"))

    assert str(caught.value) == (
        "nothing opens in the 370 days from 2026-11-30 "
        "(no weekly hours, or holidays cover them all)"
    )
    with pytest.raises(NoOpeningHoursError):
        calendar.add_business_minutes(at("2026-11-30T10:00:00+00:00"), 15)


def test_holidays_covering_every_opening_for_a_year_say_so() -> None:
    mondays = {date(2026, 11, 30) + timedelta(weeks=week): "Closed" for week in range(60)}
    calendar = BusinessCalendar(LONDON, {0: ((time(9), time(17)),)}, mondays)

    with pytest.raises(NoOpeningHoursError):
        calendar.next_opening(at("2026-11-30T10:00:00+00:00"))
    # Beyond the holidays it opens again, if asked from close enough.
    assert calendar.next_opening(at("2027-12-01T10:00:00+00:00")).isoformat() == (
        "2028-01-24T09:00:00+00:00"
    )


# --- round_up_minutes ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("minutes", "expected"),
    [
        (0, 5),
        (0.1, 5),
        (5, 5),
        (5.01, 10),
        (14, 15),
        (15, 15),
        (15.000000000000002, 15),  # float noise from x * 1.5
        (16, 20),
        (21, 25),
        (31, 35),
        (46, 50),
        (60, 60),
        (60.0000001, 60),  # float noise
        (61, 75),
        (91, 105),
        (120, 120),
        (120.5, 135),
        (180, 180),
        (181, 210),
        (600, 600),
    ],
)
def test_round_up_minutes(minutes: float, expected: int) -> None:
    assert round_up_minutes(minutes) == expected


@pytest.mark.parametrize(
    ("minutes", "message"),
    [
        (-1, "minutes must be a finite number of at least 0 (got -1)"),
        (float("nan"), "minutes must be a finite number of at least 0 (got nan)"),
        (float("inf"), "minutes must be a finite number of at least 0 (got inf)"),
    ],
)
def test_round_up_minutes_rejects(minutes: float, message: str) -> None:
    with pytest.raises(EstimateError) as caught:
        round_up_minutes(minutes)

    assert str(caught.value) == message


# --- describe_deadline --------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "deadline", "open_now", "options", "expected"),
    [
        pytest.param(
            "2026-12-01T10:00:00+00:00", "2026-12-01T10:20:00+00:00", True, {},
            "within about 20 minutes", id="open-minutes",
        ),
        pytest.param(
            "2026-12-01T10:00:00+00:00", "2026-12-01T12:00:00+00:00", True, {},
            "within about 2 hours", id="open-hours",
        ),
        pytest.param(
            "2026-12-01T10:00:00+00:00", "2026-12-01T11:00:00+00:00", True, {},
            "within about an hour", id="open-one-hour",
        ),
        pytest.param(
            "2026-12-01T10:00:00+00:00", "2026-12-01T11:30:00+00:00", True, {},
            "within about an hour and a half", id="open-hour-and-half",
        ),
        pytest.param(
            "2026-12-01T10:00:00+00:00", "2026-12-01T10:14:30+00:00", True, {},
            "within about 15 minutes", id="open-rounds-up",
        ),
        pytest.param(
            "2026-12-01T10:00:00+00:00", "2026-12-01T13:20:00+00:00", True, {},
            "within about 3 and a half hours", id="open-rounds-up-to-half-hours",
        ),
        pytest.param(
            "2026-12-01T10:00:00+00:00", "2026-12-01T11:11:00+00:00", True, {},
            "within about an hour and a quarter", id="open-hour-and-a-quarter",
        ),
        pytest.param(
            "2026-12-01T10:00:00+00:00", "2026-12-01T12:35:00+00:00", True, {},
            "within about 2 and three quarter hours", id="open-quarters-past-two-hours",
        ),
        pytest.param(
            "2026-12-01T11:50:00+00:00", "2026-12-01T13:15:00+00:00", True,
            {"open_throughout": False}, "by 13:15 today", id="open-break-before-deadline",
        ),
        pytest.param(
            "2026-11-30T19:50:00+00:00", "2026-12-01T09:30:00+00:00", True, {},
            "by 9:30 tomorrow, Tuesday", id="open-deadline-tomorrow",
        ),
        pytest.param(
            "2026-11-24T10:00:00+00:00", "2026-11-30T14:00:00+00:00", True, {},
            "by 14:00 on Monday", id="six-days-ahead-weekday-only",
        ),
        pytest.param(
            "2026-11-24T10:00:00+00:00", "2026-12-01T14:00:00+00:00", True, {},
            "by 14:00 on Tuesday 1 December", id="seven-days-ahead-with-date",
        ),
        pytest.param(
            "2026-11-24T10:00:00+00:00", "2026-12-03T14:00:00+00:00", True, {},
            "by 14:00 on Thursday 3 December", id="next-week-with-date",
        ),
        pytest.param(
            "2026-12-01T20:00:00+00:00", "2026-12-01T23:59:30+00:00", True,
            {"open_throughout": False}, "by 0:00 tomorrow, Wednesday", id="rounds-over-midnight",
        ),
        pytest.param(
            "2026-11-30T21:00:00+00:00", "2026-12-01T09:30:00+00:00", False,
            {"opens_at": "2026-12-01T09:00:00+00:00"},
            "by 9:30 tomorrow, Tuesday — we are closed now", id="closed-tomorrow",
        ),
        pytest.param(
            "2026-12-25T11:00:00+00:00", "2026-12-28T10:15:00+00:00", False,
            {"closed_for": "Christmas Day", "opens_at": "2026-12-28T10:00:00+00:00"},
            "by 10:15 on Monday — we are closed for Christmas Day", id="closed-holiday",
        ),
        pytest.param(
            "2026-12-01T07:00:00+00:00", "2026-12-01T09:15:00+00:00", False,
            {"opens_at": "2026-12-01T09:00:00+00:00"},
            "by 9:15 today — we open at 9:00", id="closed-opens-later-today",
        ),
        pytest.param(
            "2026-12-01T07:00:00+00:00", "2026-12-01T09:15:00+00:00", False, {},
            "by 9:15 today — we are closed now", id="closed-opening-unknown",
        ),
        pytest.param(
            "2026-12-01T23:30:00-05:00", "2026-12-02T08:15:00+00:00", False,
            {"opens_at": "2026-12-02T08:00:00+00:00"},
            "by 8:15 today — we open at 8:00", id="today-is-the-brands-today",
        ),
        pytest.param(
            "2027-06-01T07:00:00+00:00", "2027-06-01T09:15:00+01:00", False,
            {"opens_at": "2027-06-01T08:00:00+00:00"},
            "by 9:15 today — we open at 9:00", id="summer-time-clock",
        ),
        pytest.param(
            "2027-06-01T21:00:00+01:00", "2027-06-02T08:15:00+01:00", False,
            {"show_timezone": True},
            "by 8:15 BST tomorrow, Wednesday — we are closed now", id="with-timezone",
        ),
        pytest.param(
            "2026-12-01T07:00:00+00:00", "2026-12-01T09:15:00+00:00", False,
            {"opens_at": "2026-12-01T09:00:00+00:00", "show_timezone": True},
            "by 9:15 GMT today — we open at 9:00 GMT", id="with-timezone-opening",
        ),
    ],
)
def test_describe_deadline(
    now: str, deadline: str, open_now: bool, options: dict[str, Any], expected: str
) -> None:
    if "opens_at" in options:
        options = {**options, "opens_at": at(options["opens_at"])}

    wording = describe_deadline(at(now), at(deadline).astimezone(LONDON), open_now, **options)

    assert wording == expected


@pytest.mark.parametrize(
    ("now", "deadline", "message"),
    [
        (
            at("2026-12-01T10:00:00+00:00"),
            at("2026-12-01T09:00:00+00:00"),
            "deadline must not be before now "
            "(got 2026-12-01T09:00:00+00:00 before 2026-12-01T10:00:00+00:00)",
        ),
        (
            datetime(2026, 12, 1, 10),
            at("2026-12-01T11:00:00+00:00"),
            "now must be timezone-aware (got naive 2026-12-01T10:00:00)",
        ),
        (
            at("2026-12-01T10:00:00+00:00"),
            datetime(2026, 12, 1, 11),
            "deadline must be timezone-aware (got naive 2026-12-01T11:00:00)",
        ),
    ],
)
def test_describe_deadline_rejects(now: datetime, deadline: datetime, message: str) -> None:
    with pytest.raises(EstimateError) as caught:
        describe_deadline(now, deadline, True)

    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("deadline", "expected"),
    [
        (datetime(2026, 12, 1, 10, 15, tzinfo=LONDON), "2026-12-01T10:15+00:00"),
        (datetime(2026, 12, 1, 10, 14, 30, tzinfo=LONDON), "2026-12-01T10:15+00:00"),
        (datetime(2027, 3, 28, 10, 15, 0, 500, tzinfo=LONDON), "2027-03-28T10:16+01:00"),
    ],
)
def test_deadline_iso_rounds_up_to_the_minute(deadline: datetime, expected: str) -> None:
    promise = Promise(deadline=deadline, business_minutes=15.0, open_now=True, wording="x")

    assert promise.deadline_iso() == expected


# --- estimate_promise ---------------------------------------------------------------


# The case tables of this module repeat one shape row after row, by design: a case is a row
# (with the arithmetic that gives its figures), and one test function checks them all.
@pytest.mark.parametrize(
    ("now", "queue", "deadline", "minutes", "open_now", "wording"),
    [
        pytest.param(
            # 0.5 * 12 / 2 * 1.5 = 4.5, below the 15-minute floor.
            "2026-12-01T10:00:00+00:00", QueueSnapshot(0, 0, None),
            "2026-12-01T10:15+00:00", 15.0, True, "within about 15 minutes",
            id="empty-queue-no-history",
        ),
        pytest.param(
            "2026-12-01T05:00:00-05:00", QueueSnapshot(0, 0, None),
            "2026-12-01T10:15+00:00", 15.0, True, "within about 15 minutes",
            id="now-in-another-timezone",
        ),
        pytest.param(
            # 3.5 * 20 / 2 = 35, * 1.5 = 52.5 -> 55.
            "2026-12-01T10:00:00+00:00", QueueSnapshot(3, 2, 20.0, recent_samples=8),
            "2026-12-01T10:55+00:00", 55.0, True, "within about 55 minutes",
            id="enough-history",
        ),
        pytest.param(
            # handle (2 * 30 + 3 * 12) / 5 = 19.2; 4.5 * 19.2 / 3 = 28.8, * 1.5 = 43.2 -> 45.
            "2026-12-01T10:00:00+00:00", QueueSnapshot(4, 3, 30.0, recent_samples=2),
            "2026-12-01T10:45+00:00", 45.0, True, "within about 45 minutes",
            id="thin-history-blends-with-prior",
        ),
        pytest.param(
            # No samples: prior 12; 4.5 * 12 / 3 = 18, * 1.5 = 27 -> 30.
            "2026-12-01T10:00:00+00:00", QueueSnapshot(4, 3, 30.0, recent_samples=0),
            "2026-12-01T10:30+00:00", 30.0, True, "within about 30 minutes",
            id="history-without-samples-ignored",
        ),
        pytest.param(
            # Default 2 agents: 9.5 * 12 / 2 = 57, * 1.5 = 85.5 -> 90.
            "2026-12-02T14:00:00+00:00", QueueSnapshot(9, 0, None),
            "2026-12-02T15:30+00:00", 90.0, True, "within about an hour and a half",
            id="zero-agents-uses-default",
        ),
        pytest.param(
            # 9.5 * 12 / 6 = 19, * 1.5 = 28.5 -> 30.
            "2026-12-02T14:00:00+00:00", QueueSnapshot(9, 6, None),
            "2026-12-02T14:30+00:00", 30.0, True, "within about 30 minutes",
            id="agents-on-shift",
        ),
        pytest.param(
            # 20.5 * 12 / 2 = 123, * 1.5 = 184.5 -> 210: 60 today, 150 from 08:00.
            "2026-11-30T19:00:00+00:00", QueueSnapshot(20, 2, None),
            "2026-12-01T10:30+00:00", 210.0, True, "by 10:30 tomorrow, Tuesday",
            id="long-queue-crosses-closing",
        ),
        pytest.param(
            # 60.5 * 12 / 1 = 726, * 1.5 = 1089 -> 1110: 30 Fri, 480 Sat, 360 Sun, 240 Mon.
            "2026-12-18T19:30:00+00:00", QueueSnapshot(60, 1, None),
            "2026-12-21T12:00+00:00", 1110.0, True, "by 12:00 on Monday",
            id="long-queue-over-the-weekend",
        ),
        pytest.param(
            "2026-11-30T21:00:00+00:00", QueueSnapshot(0, 0, None),
            "2026-12-01T08:15+00:00", 15.0, False,
            "by 8:15 tomorrow, Tuesday — we are closed now",
            id="closed-evening",
        ),
        pytest.param(
            "2026-12-06T23:30:00+00:00", QueueSnapshot(0, 0, None),
            "2026-12-07T08:15+00:00", 15.0, False,
            "by 8:15 tomorrow, Monday — we are closed now",
            id="closed-before-midnight",
        ),
        pytest.param(
            "2026-12-07T00:10:00+00:00", QueueSnapshot(0, 0, None),
            "2026-12-07T08:15+00:00", 15.0, False, "by 8:15 today — we open at 8:00",
            id="closed-after-midnight",
        ),
        pytest.param(
            # 10.5 * 12 / 2 = 63, * 1.5 = 94.5 -> 105, counted from Sunday 10:00.
            "2026-12-05T18:00:00+00:00", QueueSnapshot(10, 0, None),
            "2026-12-06T11:45+00:00", 105.0, False,
            "by 11:45 tomorrow, Sunday — we are closed now",
            id="queue-while-closed",
        ),
        pytest.param(
            "2026-12-25T11:00:00+00:00", QueueSnapshot(0, 0, None),
            "2026-12-27T10:15+00:00", 15.0, False,
            "by 10:15 on Sunday — we are closed for Christmas Day",
            id="christmas-day",
        ),
        pytest.param(
            "2026-12-26T12:00:00+00:00", QueueSnapshot(0, 0, None),
            "2026-12-27T10:15+00:00", 15.0, False,
            "by 10:15 tomorrow, Sunday — we are closed for Boxing Day",
            id="boxing-day-on-a-saturday",
        ),
        pytest.param(
            "2026-12-28T09:00:00+00:00", QueueSnapshot(0, 0, None),
            "2026-12-29T08:15+00:00", 15.0, False,
            "by 8:15 tomorrow, Tuesday — we are closed for Boxing Day (substitute day)",
            id="substitute-holiday",
        ),
        pytest.param(
            "2026-10-24T16:50:00+01:00", QueueSnapshot(0, 0, None),
            "2026-10-25T10:05+00:00", 15.0, True, "by 10:05 tomorrow, Sunday",
            id="across-autumn-clock-change",
        ),
        pytest.param(
            "2027-03-27T18:00:00+00:00", QueueSnapshot(0, 0, None),
            "2027-03-28T10:15+01:00", 15.0, False,
            "by 10:15 tomorrow, Sunday — we are closed now",
            id="across-spring-clock-change",
        ),
    ],
)
def test_estimate_promise(
    now: str, queue: QueueSnapshot, deadline: str, minutes: float, open_now: bool, wording: str
) -> None:
    calendar = northwind()

    promise = estimate_promise(at(now), calendar, queue, TARGETS)

    assert_promise(promise, calendar, deadline, minutes, wording)
    assert promise.open_now is open_now


@pytest.mark.parametrize(
    ("now", "wording"),
    [
        ("2026-10-24T16:50:00+01:00", "by 10:05 GMT tomorrow, Sunday"),
        ("2026-12-01T06:30:00+00:00", "by 8:15 GMT today — we open at 8:00 GMT"),
        ("2026-12-01T10:00:00+00:00", "within about 15 minutes"),
    ],
)
def test_estimate_promise_with_timezone(now: str, wording: str) -> None:
    promise = estimate_promise(
        at(now), northwind(), QueueSnapshot(0, 0, None), TARGETS, show_timezone=True
    )

    assert promise.wording == wording


def test_estimate_uses_a_lunch_break_honestly() -> None:
    calendar = BusinessCalendar(LONDON, {0: ((time(9), time(12)), (time(13), time(17)))}, {})
    queue = QueueSnapshot(cases_ahead=2, agents_on_shift=1, recent_handle_minutes=None)

    # 2.5 * 12 * 1.5 = 45: 10 minutes before lunch, 35 after.
    promise = estimate_promise(at("2026-11-30T11:50:00+00:00"), calendar, queue, TARGETS)

    assert promise.deadline_iso() == "2026-11-30T13:35+00:00"
    assert promise.wording == "by 13:35 today"


def test_estimate_with_a_never_open_calendar_raises() -> None:
    with pytest.raises(NoOpeningHoursError):
        estimate_promise(
            at("2026-12-01T10:00:00+00:00"),
            BusinessCalendar(LONDON, {}, {}),
            QueueSnapshot(0, 0, None),
            TARGETS,
        )


def test_estimate_rejects_naive_now() -> None:
    with pytest.raises(EstimateError) as caught:
        estimate_promise(
            datetime(2026, 12, 1, 10), northwind(), QueueSnapshot(0, 0, None), TARGETS
        )

    assert str(caught.value) == "now must be timezone-aware (got naive 2026-12-01T10:00:00)"


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: QueueSnapshot(-1, 0, None),
            "cases_ahead must be a whole number of at least 0 (got -1)",
        ),
        (
            lambda: QueueSnapshot(0, -2, None),
            "agents_on_shift must be a whole number of at least 0 (got -2)",
        ),
        (
            lambda: QueueSnapshot(0, 0, 0.0),
            "recent_handle_minutes must be None or a number greater than 0 (got 0.0)",
        ),
        (
            lambda: QueueSnapshot(0, 0, None, recent_samples=-1),
            "recent_samples must be a whole number of at least 0 (got -1)",
        ),
        (
            lambda: ServiceTargets(0, 12, 2),
            "first_response_minutes must be a number greater than 0 (got 0)",
        ),
        (
            lambda: ServiceTargets(15, float("nan"), 2),
            "average_handle_minutes must be a number greater than 0 (got nan)",
        ),
        (
            lambda: ServiceTargets(15, 12, 0),
            "default_agents_on_shift must be a whole number greater than 0 (got 0)",
        ),
        (
            lambda: ServiceTargets(15, 12, 2, min_history_samples=0),
            "min_history_samples must be a whole number greater than 0 (got 0)",
        ),
        (
            lambda: ServiceTargets(15, 12, 2, safety_factor=0.9),
            "safety_factor must be a number of at least 1 (got 0.9)",
        ),
    ],
)
def test_estimate_inputs_are_checked(build: Any, message: str) -> None:
    with pytest.raises(EstimateError) as caught:
        build()

    assert str(caught.value) == message
