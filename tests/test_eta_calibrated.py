"""The calibrated promise: history from the case store turned into a quantile promise.

Frozen clock throughout: every moment is an ISO string with an explicit offset. History
is built from answered cases with chosen timestamps, so every expected figure can be
worked out by hand (the comments show the arithmetic). With the test targets (first
response 15, handle 12, 2 agents, safety 1.5, quantile 0.9, 5 samples needed):

    formula(n)  = (n + 0.5) * 12 / agents            the prior's expected wait
    queue part  = formula(n now) * 1.5
    lateness    = reply minutes - formula(n then) * 1.5, per answered case
    promise     = queue part + nearest-rank 0.9 quantile of lateness
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from bot.cases import CaseStore, NewCase
from bot.eta import (
    BASIS_ALL_HOURS,
    BASIS_HOUR_OF_WEEK,
    BASIS_PRIOR,
    BusinessCalendar,
    EstimateError,
    HandledCase,
    History,
    HistoryError,
    QueueSnapshot,
    ServiceTargets,
    WaitSample,
    estimate_promise,
    predict_wait,
    quantile,
)
from bot.eta.history import hour_of_week
from bot.ops import OpsConfigError, load_support_config
from bot.services import Services, promise_for
from tests.eta_support import TARGETS, assert_promise, at
from tests.eta_support import northwind as opening_hours

UTC = timezone.utc
REPO_ROOT = Path(__file__).resolve().parents[1]


def northwind() -> BusinessCalendar:
    """Northwind's hours, closed only on Christmas Day and Boxing Day 2026."""
    return opening_hours({date(2026, 12, 25): "Christmas Day", date(2026, 12, 26): "Boxing Day"})


def answered(created: str, waits: list[float], ahead: int = 0) -> list[HandledCase]:
    """Cases opened at ``created`` (one a minute apart) and answered ``waits`` minutes later.

    Wall minutes; the callers keep them inside opening hours, so they are business minutes.
    """
    start = at(created)
    return [
        HandledCase(
            created_at=start + timedelta(minutes=index),
            first_reply_at=start + timedelta(minutes=index + wait),
            cases_ahead=ahead,
        )
        for index, wait in enumerate(waits)
    ]


def history(*groups: list[HandledCase]) -> History:
    return History.from_cases(northwind(), [case for group in groups for case in group])


def handled(created: str, replied: str) -> list[HandledCase]:
    """One case opened at ``created`` and first answered at ``replied``."""
    return [HandledCase(created_at=at(created), first_reply_at=at(replied))]


def queue(
    *groups: list[HandledCase], ahead: int = 0, agents: int = 0, handle: float | None = None, samples: int = 0
) -> QueueSnapshot:
    """The queue now (``ahead`` cases, ``agents`` on shift, recent ``handle`` time of ``samples`` cases).

    Its history: the answered cases of ``groups``; none without them.
    """
    if not groups:
        return QueueSnapshot(ahead, agents, handle, recent_samples=samples)
    return QueueSnapshot(ahead, agents, handle, recent_samples=samples, history=history(*groups))


# Tuesday 24 November 2026, 14:00 GMT: hour of week 1 * 24 + 14 = 38.
OTHER_HOURS = answered("2026-11-24T14:00:00+00:00", [2, 4, 6, 8, 10, 12, 14, 16, 40, 90])
# Tuesday 24 November 2026, 10:00 GMT: hour of week 34, as for "now" on Tuesday 1 December.
TUESDAY_TEN = "2026-11-24T10:00:00+00:00"


# --- the estimate, table ---------------------------------------------------------------


# A table: each case is one row of the same shape (the history it is given, with the
# arithmetic that gives its figures), checked by the one test function below it.
@pytest.mark.parametrize(
    ("now", "queue", "deadline", "minutes", "wording", "basis", "samples"),
    [
        pytest.param(
            # No history: the prior, exactly as before calibration: 4.5 -> floor 15.
            "2026-12-01T10:00:00+00:00", queue(),
            "2026-12-01T10:15+00:00", 15.0, "within about 15 minutes", BASIS_PRIOR, 0,
            id="empty-history-is-the-prior",
        ),
        pytest.param(
            # Four cases are not enough (5 needed): still the prior. 3.5*12/2*1.5 = 31.5 -> 45.
            "2026-12-01T10:00:00+00:00", queue(answered(TUESDAY_TEN, [5, 5, 5, 5]), ahead=3),
            "2026-12-01T10:45+00:00", 45.0, "within about 45 minutes", BASIS_PRIOR, 0,
            id="thin-history-is-the-prior",
        ),
        pytest.param(
            # All hours: lateness = waits - 4.5; 9th of 10 = 40 - 4.5; 4.5 + 35.5 = 40 -> 45.
            "2026-12-01T10:00:00+00:00", queue(OTHER_HOURS),
            "2026-12-01T10:45+00:00", 45.0, "within about 45 minutes", BASIS_ALL_HOURS, 10,
            id="enough-history-all-hours",
        ),
        pytest.param(
            # Tuesday 10:00 has 5 cases of its own: 5th of 5 = 50 - 4.5; 50 -> 60.
            "2026-12-01T10:00:00+00:00", queue(OTHER_HOURS, answered(TUESDAY_TEN, [20, 25, 30, 35, 50])),
            "2026-12-01T11:00+00:00", 60.0, "within about an hour", BASIS_HOUR_OF_WEEK, 5,
            id="hour-of-week-bucket",
        ),
        pytest.param(
            # Only 4 in the bucket: all 14 cases; 13th of 14 = 40; 40 -> 45.
            "2026-12-01T10:00:00+00:00", queue(OTHER_HOURS, answered(TUESDAY_TEN, [20, 25, 30, 35])),
            "2026-12-01T10:45+00:00", 45.0, "within about 45 minutes", BASIS_ALL_HOURS, 14,
            id="thin-bucket-falls-back-to-all-hours",
        ),
        pytest.param(
            # 3 agents now; each old case had 4 ahead: formula 4.5*12/3 = 18, *1.5 = 27;
            # lateness 3, 8, 13, 18, 33 -> 33. Now 8 ahead: 8.5*4*1.5 = 51; 84 -> 90.
            "2026-12-01T10:00:00+00:00", queue(answered(TUESDAY_TEN, [30, 35, 40, 45, 60], ahead=4), ahead=8, agents=3),
            "2026-12-01T11:30+00:00", 90.0, "within about an hour and a half", BASIS_HOUR_OF_WEEK, 5,
            id="queue-scales-the-promise",
        ),
        pytest.param(
            # Faster than the floor: lateness 1 - 4.5 ... 6 - 4.5; 4.5 + 1.5 = 6 -> floor 15.
            "2026-12-01T10:00:00+00:00", queue(answered(TUESDAY_TEN, [1, 2, 3, 4, 6])),
            "2026-12-01T10:15+00:00", 15.0, "within about 15 minutes", BASIS_HOUR_OF_WEEK, 5,
            id="never-below-first-response",
        ),
        pytest.param(
            # Recent handle time 20 (8 samples) in both formulas: 0.5*20/2*1.5 = 7.5;
            # lateness 100 - 7.5 -> 92.5; 100 -> 120, crossing no closing.
            "2026-12-01T10:00:00+00:00", queue(answered(TUESDAY_TEN, [60, 70, 80, 90, 100]), handle=20.0, samples=8),
            "2026-12-01T12:00+00:00", 120.0, "within about 2 hours", BASIS_HOUR_OF_WEEK, 5,
            id="recent-handle-time-in-both-formulas",
        ),
        pytest.param(
            # Saturday 16:50, bucket Saturday 16:00 (Sat 28 Nov, 16:40-16:44). One of them
            # waited over closing: 16:44 to Sunday 10:31 = 16 + 31. 5th of 5 = 47 -> 60:
            # 10 minutes today, 50 from Sunday's 10:00 opening.
            "2026-12-05T16:50:00+00:00",
            queue(
                answered("2026-11-28T16:40:00+00:00", [10, 15, 12, 5]),
                handled("2026-11-28T16:44:00+00:00", "2026-11-29T10:31:00+00:00"),
            ),
            "2026-12-06T10:50+00:00", 60.0, "by 10:50 tomorrow, Sunday", BASIS_HOUR_OF_WEEK, 5,
            id="weekend-closing",
        ),
        pytest.param(
            # Christmas Day (closed), Boxing Day too: counted from Sunday 10:00, bucket
            # Sunday 10 (= 6 * 24 + 10). One case came in at 07:00 while closed and
            # counts from 10:00: 20 minutes. 5th of 5 = 45: 45.
            "2026-12-25T11:00:00+00:00",
            queue(
                answered("2026-12-20T10:00:00+00:00", [10, 30, 40, 45]),
                handled("2026-12-20T07:00:00+00:00", "2026-12-20T10:20:00+00:00"),
            ),
            "2026-12-27T10:45+00:00", 45.0, "by 10:45 on Sunday — we are closed for Christmas Day",
            BASIS_HOUR_OF_WEEK, 5,
            id="holiday-counts-from-next-opening",
        ),
        pytest.param(
            # Autumn: Saturday 24 October 16:50 BST, bucket Saturday 16 (17 October, BST).
            # 5th of 5 = 25 -> 30: 10 minutes to 17:00 BST, 20 from Sunday 10:00 GMT.
            "2026-10-24T16:50:00+01:00", queue(answered("2026-10-17T16:30:00+01:00", [10, 12, 14, 16, 25])),
            "2026-10-25T10:20+00:00", 30.0, "by 10:20 tomorrow, Sunday", BASIS_HOUR_OF_WEEK, 5,
            id="across-autumn-clock-change",
        ),
        pytest.param(
            # Spring: Saturday 27 March 16:55 GMT, bucket Saturday 16 (20 March, GMT).
            # 5th of 5 = 55 -> 60: 5 minutes to 17:00 GMT, 55 from Sunday 10:00 BST.
            "2027-03-27T16:55:00+00:00", queue(answered("2027-03-20T16:00:00+00:00", [20, 30, 40, 50, 55])),
            "2027-03-28T10:55+01:00", 60.0, "by 10:55 tomorrow, Sunday", BASIS_HOUR_OF_WEEK, 5,
            id="across-spring-clock-change",
        ),
        pytest.param(
            # Sunday 28 March 2027, 02:30 BST (the night the clocks changed): closed, bucket
            # Sunday 10. All hours would say 90; Sunday 10:00 says 20 (5th of 5).
            "2027-03-28T01:30:00+00:00",
            queue(
                answered("2027-03-17T10:00:00+00:00", [90] * 6),
                answered("2027-03-21T10:00:00+00:00", [5, 10, 15, 18, 20]),
            ),
            "2027-03-28T10:20+01:00", 20.0, "by 10:20 today — we open at 10:00", BASIS_HOUR_OF_WEEK, 5,
            id="night-of-the-spring-change",
        ),
    ],
)
def test_calibrated_promise(
    now: str, queue: QueueSnapshot, deadline: str, minutes: float, wording: str, basis: str, samples: int
) -> None:
    calendar = northwind()

    promise = estimate_promise(at(now), calendar, queue, TARGETS)

    assert_promise(promise, calendar, deadline, minutes, wording)
    assert (promise.basis, promise.history_samples) == (basis, samples)


def test_the_quantile_is_configurable() -> None:
    queue = QueueSnapshot(0, 0, None, history=history(OTHER_HOURS))
    median_targets = ServiceTargets(15, 12, 2, promise_quantile=0.5)
    strict_targets = ServiceTargets(15, 12, 2, promise_quantile=1)

    # 0.5: 5th of 10 = 10 -> floor 15. 1: the longest, 90 -> 90.
    median = predict_wait(at("2026-12-01T10:00:00+00:00"), northwind(), queue, median_targets)
    strict = predict_wait(at("2026-12-01T10:00:00+00:00"), northwind(), queue, strict_targets)

    assert (median.minutes, median.extra_minutes) == (10.0, 5.5)
    assert (strict.minutes, strict.extra_minutes) == (90.0, 85.5)
    assert strict.hour_of_week == 34


def test_a_long_wait_so_far_lengthens_the_new_estimate() -> None:
    # The bucket (Tuesday 10) is quick, other hours are slow: a new case gets the bucket's
    # 30; a customer who has already waited 20 minutes gets the 0.9 quantile of how much
    # longer the 7 cases that waited over 20 minutes still waited: 5, 10, 40, 100, 160,
    # 220, 280 -> 7th of 7 = 280 -> 300.
    queue = QueueSnapshot(
        0,
        0,
        None,
        history=history(
            answered(TUESDAY_TEN, [10, 15, 20, 25, 30]),
            answered("2026-11-24T14:00:00+00:00", [60, 120, 180, 240, 300]),
        ),
    )
    now = at("2026-12-01T10:00:00+00:00")

    fresh = estimate_promise(now, northwind(), queue, TARGETS)
    update = estimate_promise(now, northwind(), queue, TARGETS, waited_minutes=20)
    quick_so_far = estimate_promise(now, northwind(), queue, TARGETS, waited_minutes=290)

    assert (fresh.business_minutes, fresh.wording) == (30.0, "within about 30 minutes")
    assert (update.business_minutes, update.wording, update.history_samples) == (
        300.0,
        "within about 5 hours",
        7,
    )
    # Only one case waited over 290 minutes: too few to say more than the fresh estimate.
    assert quick_so_far.business_minutes == 30.0


# --- history ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("created", "replied", "claimed", "sample"),
    [
        pytest.param(
            "2026-12-01T10:00:00+00:00", "2026-12-01T10:12:00+00:00", "2026-12-01T10:05:00+00:00",
            WaitSample(hour_of_week=34, cases_ahead=2, reply_minutes=12.0, claim_minutes=5.0),
            id="open-weekday",
        ),
        pytest.param(
            # Friday 19:50 to Saturday 09:20: 10 + 20; the claim came at Saturday 09:00.
            "2026-12-04T19:50:00+00:00", "2026-12-05T09:20:00+00:00", "2026-12-05T09:00:00+00:00",
            WaitSample(hour_of_week=4 * 24 + 19, cases_ahead=2, reply_minutes=30.0, claim_minutes=10.0),
            id="over-the-night",
        ),
        pytest.param(
            # Written on Christmas Eve night: counts from Sunday 27th 10:00 (Boxing Day closed).
            "2026-12-24T22:00:00+00:00", "2026-12-27T10:30:00+00:00", None,
            WaitSample(hour_of_week=6 * 24 + 10, cases_ahead=2, reply_minutes=30.0, claim_minutes=None),
            id="over-the-holidays",
        ),
        pytest.param(
            # Saturday 16:50 BST to Sunday 10:05 GMT: 10 + 5.
            "2026-10-24T16:50:00+01:00", "2026-10-25T10:05:00+00:00", None,
            WaitSample(hour_of_week=5 * 24 + 16, cases_ahead=2, reply_minutes=15.0, claim_minutes=None),
            id="autumn-clock-change",
        ),
        pytest.param(
            # Saturday 16:55 GMT to Sunday 10:10 BST: 5 + 10.
            "2027-03-27T16:55:00+00:00", "2027-03-28T10:10:00+01:00", None,
            WaitSample(hour_of_week=5 * 24 + 16, cases_ahead=2, reply_minutes=15.0, claim_minutes=None),
            id="spring-clock-change",
        ),
    ],
)
def test_history_counts_business_minutes(
    created: str, replied: str, claimed: str | None, sample: WaitSample
) -> None:
    case = HandledCase(
        created_at=at(created),
        first_reply_at=at(replied),
        claimed_at=at(claimed) if claimed else None,
        cases_ahead=2,
    )

    assert History.from_cases(northwind(), [case]).samples == (sample,)


def test_a_reply_before_the_case_is_left_out() -> None:
    case = HandledCase(
        created_at=at("2026-12-01T10:00:00+00:00"), first_reply_at=at("2026-12-01T09:59:00+00:00")
    )

    assert len(History.from_cases(northwind(), [case])) == 0


@pytest.mark.parametrize(
    ("moment", "hour"),
    [
        ("2026-11-30T08:00:00+00:00", 8),  # Monday 08:00
        ("2026-11-30T06:00:00+00:00", 8),  # closed: next opening
        ("2026-12-06T15:59:00+00:00", 6 * 24 + 15),  # Sunday
        ("2026-12-06T16:00:00+00:00", 8),  # Sunday closing: Monday 08:00
        ("2027-03-28T09:30:00+00:00", 6 * 24 + 10),  # 10:30 BST
    ],
)
def test_hour_of_week(moment: str, hour: int) -> None:
    assert hour_of_week(northwind(), at(moment)) == hour


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([3, 1, 2], 1, 3),
        ([3, 1, 2], 0.5, 2),
        (list(range(1, 11)), 0.9, 9),  # 0.9 * 10 is 9.000000000000002 in floats
        (list(range(1, 11)), 0.91, 10),
        ([7.5], 0.9, 7.5),
    ],
)
def test_nearest_rank_quantile(values: list[float], q: float, expected: float) -> None:
    assert quantile(values, q) == expected


@pytest.mark.parametrize(
    ("build", "error", "message"),
    [
        (lambda: quantile([], 0.9), HistoryError, "quantile of no values"),
        (lambda: quantile([1], 0), HistoryError, "q must be a number above 0 and at most 1 (got 0)"),
        (
            lambda: HandledCase(datetime(2026, 12, 1), at("2026-12-01T10:00:00+00:00")),
            HistoryError,
            "created_at must be timezone-aware (got naive 2026-12-01T00:00:00)",
        ),
        (
            lambda: HandledCase(
                at("2026-12-01T10:00:00+00:00"), at("2026-12-01T10:00:00+00:00"), cases_ahead=-1
            ),
            HistoryError,
            "cases_ahead must be at least 0 (got -1)",
        ),
        (
            lambda: QueueSnapshot(0, 0, None, history=()),  # type: ignore[arg-type]
            EstimateError,
            "history must be a History (got 'tuple')",
        ),
        (
            lambda: ServiceTargets(15, 12, 2, promise_quantile=0.4),
            EstimateError,
            "promise_quantile must be a number from 0.5 to 1 (got 0.4)",
        ),
        (
            lambda: predict_wait(
                at("2026-12-01T10:00:00+00:00"), northwind(), QueueSnapshot(0, 0, None), TARGETS,
                waited_minutes=-1,
            ),
            EstimateError,
            "waited_minutes must be a finite number of at least 0 (got -1)",
        ),
    ],
)
def test_bad_inputs_are_refused(build: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error) as caught:
        build()

    assert str(caught.value) == message


# --- support.yml ----------------------------------------------------------------------------


def _support_with(tmp_path: Path, old: str, new: str) -> Path:
    text = (REPO_ROOT / "support.yml").read_text(encoding="utf-8")
    assert old in text
    path = tmp_path / "support.yml"
    path.write_text(text.replace(old, new), encoding="utf-8")
    return path


def test_shipped_promise_quantile_and_its_default(tmp_path: Path) -> None:
    assert load_support_config(REPO_ROOT / "support.yml").targets.promise_quantile == 0.9

    path = _support_with(tmp_path, "  promise_quantile: 0.9\n", "")

    assert load_support_config(path).targets.promise_quantile == 0.9


@pytest.mark.parametrize("value", ["0.3", "1.5", "ninety", "yes"])
def test_a_bad_promise_quantile_names_file_and_line(tmp_path: Path, value: str) -> None:
    path = _support_with(tmp_path, "  promise_quantile: 0.9", f"  promise_quantile: {value}")
    line = path.read_text(encoding="utf-8").splitlines().index(f"  promise_quantile: {value}") + 1
    shown = {"0.3": "0.3", "1.5": "1.5", "ninety": "'ninety'", "yes": "True"}[value]

    with pytest.raises(OpsConfigError) as caught:
        load_support_config(path)

    assert str(caught.value) == (
        f"{path}:{line}: targets.promise_quantile must be a number from 0.5 to 1 "
        f"(the share of promises to keep, e.g. 0.9) (got {shown})"
    )


# --- the store and promise_for ---------------------------------------------------------------


def _case(key: str, priority: str, created: datetime) -> NewCase:
    return NewCase(
        channel="rest",
        sender_id=key,
        customer_name=None,
        case_type="order_status",
        intent_confidence=0.9,
        answers={},
        summary="Where is my order?",
        transcript=(),
        language="en",
        priority=priority,
        complaint_score=0.0,
        promised_by=created + timedelta(minutes=15),
        promise_wording="within about 15 minutes",
        handoff_key=key,
    )


def _minute(minute: int) -> datetime:
    """Monday 23 November 2026, 09:00 UTC plus ``minute`` minutes."""
    return datetime(2026, 11, 23, 9, tzinfo=UTC) + timedelta(minutes=minute)


def test_handled_timings_rebuild_the_queue_each_case_saw(case_db_url: str) -> None:
    store = CaseStore.from_url(case_db_url)
    # key, priority, opened, claimed, first reply, resolved (minutes after 09:00)
    plan: list[tuple[str, str, int, int | None, int | None, int | None]] = [
        ("F", "normal", -60, None, None, 7),  # waited, then gave up (resolved unclaimed)
        ("A", "normal", 0, 10, 12, 20),  # F waiting: 1 ahead
        ("B", "normal", 5, 20, 25, 30),  # F, A: 2
        ("C", "high", 6, 12, 13, None),  # nothing high or urgent waiting: 0
        ("D", "low", 8, 40, 41, None),  # F gone at 7; A, B, C: 3
        ("E", "normal", 10, None, None, None),  # A claimed at 10 is gone; B, C: never answered
        ("OLD", "normal", -8 * 24 * 60, -8 * 24 * 60, -8 * 24 * 60 + 1, None),  # out of window
    ]
    ids = {}
    for key, priority, opened, claimed, replied, resolved in plan:
        ids[key] = store.lifecycle.open_case(_case(key, priority, _minute(opened)), _minute(opened)).id
    for key, _priority, _opened, claimed, replied, resolved in plan:
        if claimed is not None:
            assert store.lifecycle.claim(ids[key], "ann", _minute(claimed))
        if replied is not None:
            store.lifecycle.record_human_reply(ids[key], _minute(replied))
        if resolved is not None:
            assert store.lifecycle.resolve(ids[key], _minute(resolved))

    timings = store.figures.handled_timings(_minute(60), window_days=7)

    assert [
        (t.case_id, t.cases_ahead, t.created_at, t.claimed_at, t.first_human_reply_at)
        for t in timings
    ] == [
        (ids["A"], 1, _minute(0), _minute(10), _minute(12)),
        (ids["B"], 2, _minute(5), _minute(20), _minute(25)),
        (ids["C"], 0, _minute(6), _minute(12), _minute(13)),
        (ids["D"], 3, _minute(8), _minute(40), _minute(41)),
    ]
    # Replies after "now" are not history yet.
    assert [t.case_id for t in store.figures.handled_timings(_minute(30), window_days=7)] == [
        ids["A"],
        ids["B"],
        ids["C"],
    ]
    store.dispose()


def test_promise_for_learns_from_the_store(case_db_url: str) -> None:
    store = CaseStore.from_url(case_db_url)
    services = Services(store=store, support=load_support_config(REPO_ROOT / "support.yml"))
    # Monday 23 November 2026, 10:00: open, nobody waiting.
    now = datetime(2026, 11, 23, 10, tzinfo=UTC)
    assert promise_for(services, "normal", now).wording == "within about 15 minutes"

    # A week earlier, Monday 10:0x: five cases claimed at once, answered after 10 to 50
    # minutes, resolved 12 minutes later.
    last_monday = datetime(2026, 11, 16, 10, tzinfo=UTC)
    for index, wait in enumerate((10, 20, 30, 40, 50)):
        opened = last_monday + timedelta(minutes=index)
        case = store.lifecycle.open_case(_case(f"k{index}", "normal", opened), opened)
        store.lifecycle.claim(case.id, "ann", opened)
        store.lifecycle.record_human_reply(case.id, opened + timedelta(minutes=wait))
        store.lifecycle.resolve(case.id, opened + timedelta(minutes=wait + 12))

    promise = promise_for(services, "normal", now)

    # Claimed at once, so none waited behind another: every case and the new one have
    # the same queue part (handle (22 + ... + 62) / 5 = 42: 0.5 * 42 / 2 * 1.5 = 15.75),
    # which cancels out: 15.75 + (5th of 5 = 50 - 15.75) = 50 -> 60.
    assert (promise.wording, promise.basis, promise.history_samples) == (
        "within about an hour",
        BASIS_HOUR_OF_WEEK,
        5,
    )
    assert promise.deadline_iso() == "2026-11-23T11:00+00:00"
    store.dispose()
