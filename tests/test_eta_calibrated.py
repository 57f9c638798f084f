"""The calibrated promise: history from the case store turned into a conformal promise.

Frozen clock throughout: every moment is an ISO string with an explicit offset. History
is built from answered cases with chosen timestamps, so every expected figure can be
worked out by hand (the comments show the arithmetic). With the test targets (first
response 15, handle 12, 2 agents, safety 1.5, quantile 0.9, 5 samples needed):

    expected(n)  = (n ahead - free agents + 0.5) * 12 / agents     the point prediction
    prior        = expected * 1.5
    score        = (wait + 5) / (expected then + 5), per answered case
    factor       = the ceil((k + 1) * 0.9)-th smallest of the k scores (k >= 9)
    promise      = (expected now + 5) * factor - 5
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from bot.cases import CaseStore, NewCase
from bot.cases.records import OPENING_QUEUE_KEY, opening_queue
from bot.eta import (
    BASIS_ALL_CASES,
    BASIS_PRIOR,
    BASIS_SAME_PRIORITY,
    BusinessCalendar,
    EstimateError,
    HandledCase,
    History,
    HistoryError,
    QueueSnapshot,
    ServiceTargets,
    WaitSample,
    conformal_quantile,
    estimate_promise,
    expected_wait,
    predict_wait,
    quantile,
)
from bot.eta.estimate import staffing_profile
from bot.eta.history import hour_of_week
from bot.ops import OpsConfigError, load_support_config
from bot.services import Services, opening_record, promise_and_queue, promise_for
from tests.eta_support import TARGETS, assert_promise, at
from tests.eta_support import northwind as opening_hours

UTC = timezone.utc
REPO_ROOT = Path(__file__).resolve().parents[1]


def northwind() -> BusinessCalendar:
    """Northwind's hours, closed only on Christmas Day and Boxing Day 2026."""
    return opening_hours({date(2026, 12, 25): "Christmas Day", date(2026, 12, 26): "Boxing Day"})


def answered(created: str, waits: list[float], ahead: int = 0, **recorded: Any) -> list[HandledCase]:
    """Cases opened at ``created`` (one a minute apart) and answered ``waits`` minutes later.

    Wall minutes; the callers keep them inside opening hours, so they are business minutes.
    ``recorded``: what each case recorded when it was opened (``agents_on_shift``,
    ``agents_busy``, ``expected_minutes``) and its ``priority``.
    """
    start = at(created)
    return [
        HandledCase(
            created_at=start + timedelta(minutes=index),
            first_reply_at=start + timedelta(minutes=index + wait),
            cases_ahead=ahead,
            **recorded,
        )
        for index, wait in enumerate(waits)
    ]


def history(*groups: list[HandledCase]) -> History:
    return History.from_cases(northwind(), [case for group in groups for case in group])


def handled(created: str, replied: str) -> list[HandledCase]:
    """One case opened at ``created`` and first answered at ``replied``."""
    return [HandledCase(created_at=at(created), first_reply_at=at(replied))]


def queue(
    *groups: list[HandledCase],
    ahead: int = 0,
    agents: int = 0,
    handle: float | None = None,
    samples: int = 0,
    busy: int | None = None,
    priority: str | None = None,
) -> QueueSnapshot:
    """The queue now (``ahead`` cases, ``agents`` on shift of whom ``busy`` on a case, recent
    ``handle`` time of ``samples`` cases, the new case's ``priority``).

    Its history: the answered cases of ``groups``; none without them.
    """
    return QueueSnapshot(
        ahead,
        agents,
        handle,
        recent_samples=samples,
        history=history(*groups) if groups else History(),
        agents_busy=busy,
        priority=priority,
    )


# Tuesday 24 November 2026, 14:00 GMT: ten cases, nobody ahead.
OTHER_HOURS = answered("2026-11-24T14:00:00+00:00", [2, 4, 6, 8, 10, 12, 14, 16, 40, 90])
# Tuesday 24 November 2026, 10:00 GMT.
TUESDAY_TEN = "2026-11-24T10:00:00+00:00"
# Ten cases that each had 4 ahead and 3 agents, so 4.5 * 12 / 3 = 18 expected; the
# longest wait, 41, is (41 + 5) / (18 + 5) = 2 times the expected.
FOUR_AHEAD_OF_THREE = answered(TUESDAY_TEN, [10, 12, 14, 16, 18, 20, 22, 24, 26, 41], ahead=4, agents_on_shift=3)


# --- the estimate, table ---------------------------------------------------------------


# A table: each case is one row of the same shape (the history it is given, with the
# arithmetic that gives its figures), checked by the one test function below it.
@pytest.mark.parametrize(
    ("now", "queue", "deadline", "minutes", "wording", "basis", "samples"),
    [
        pytest.param(
            # No history: the prior, exactly as before calibration: 0.5 * 6 * 1.5 = 4.5 -> floor 15.
            "2026-12-01T10:00:00+00:00", queue(),
            "2026-12-01T10:15+00:00", 15.0, "within about 15 minutes", BASIS_PRIOR, 0,
            id="empty-history-is-the-prior",
        ),
        pytest.param(
            # Four cases are not enough (5 needed): still the prior. 3.5 * 6 * 1.5 = 31.5 -> 35.
            "2026-12-01T10:00:00+00:00", queue(answered(TUESDAY_TEN, [5, 5, 5, 5]), ahead=3),
            "2026-12-01T10:35+00:00", 35.0, "within about 35 minutes", BASIS_PRIOR, 0,
            id="thin-history-is-the-prior",
        ),
        pytest.param(
            # Eight quick cases: no rank of 8 scores carries nine in ten (it needs 9): the
            # prior, 3.5 * 6 * 1.5 = 31.5 -> 35, longer than the largest of them allows
            # ((2 + 5) / 8: 26 * 7 / 8 - 5 = 17.75).
            "2026-12-01T10:00:00+00:00", queue(answered(TUESDAY_TEN, [2] * 8), ahead=3),
            "2026-12-01T10:35+00:00", 35.0, "within about 35 minutes", BASIS_PRIOR, 0,
            id="too-few-for-the-guarantee-is-the-prior",
        ),
        pytest.param(
            # Eight slow cases: still too few for the quantile, but none is promised less
            # than the largest of them: (90 + 5) / 8; 26 * 95 / 8 - 5 = 303.75 -> 330.
            "2026-12-01T10:00:00+00:00", queue(answered(TUESDAY_TEN, [90] * 8), ahead=3),
            "2026-12-01T15:30+00:00", 330.0, "within about 5 and a half hours", BASIS_ALL_CASES, 8,
            id="too-few-for-the-guarantee-but-not-less-than-they-waited",
        ),
        pytest.param(
            # Five urgent cases (too few) waited up to 40 against 3 expected, the twenty normal
            # ones 6: an urgent case is promised no less than its own largest, (40 + 5) / 8:
            # 8 * 45 / 8 - 5 = 40, where all 25 together would say the 24th, (35 + 5) / 8: 35.
            "2026-12-01T10:00:00+00:00",
            queue(
                answered(TUESDAY_TEN, [6] * 20, priority="normal"),
                answered(TUESDAY_TEN, [10, 20, 30, 35, 40], priority="urgent"),
                priority="urgent",
            ),
            "2026-12-01T10:40+00:00", 40.0, "within about 40 minutes", BASIS_SAME_PRIORITY, 5,
            id="a-thin-priority-is-not-promised-less-than-it-waited",
        ),
        pytest.param(
            # Ten cases, 3 expected each: rank ceil(11 * 0.9) = 10, the longest: (90 + 5) / 8.
            # Now 3 expected too: 8 * 95 / 8 - 5 = 90.
            "2026-12-01T10:00:00+00:00", queue(OTHER_HOURS),
            "2026-12-01T11:30+00:00", 90.0, "within about an hour and a half", BASIS_ALL_CASES, 10,
            id="ten-cases-the-longest",
        ),
        pytest.param(
            # Nineteen cases waiting 1 to 19: rank ceil(20 * 0.9) = 18, the 18th: (18 + 5) / 8;
            # 8 * 23 / 8 - 5 = 18 -> 20.
            "2026-12-01T10:00:00+00:00", queue(answered(TUESDAY_TEN, list(range(1, 20)))),
            "2026-12-01T10:20+00:00", 20.0, "within about 20 minutes", BASIS_ALL_CASES, 19,
            id="nineteen-cases-the-eighteenth",
        ),
        pytest.param(
            # Factor 2 (above); now 8 ahead of 3 agents: 8.5 * 4 = 34; 39 * 2 - 5 = 73 -> 75.
            "2026-12-01T10:00:00+00:00", queue(FOUR_AHEAD_OF_THREE, ahead=8, agents=3),
            "2026-12-01T11:15+00:00", 75.0, "within about an hour and a quarter", BASIS_ALL_CASES, 10,
            id="queue-scales-the-promise",
        ),
        pytest.param(
            # The same waits behind 1 ahead of 1 agent then: 1.5 * 12 = 18 expected, factor
            # 2. Now 1 ahead of 3 agents: 1.5 * 4 = 6; 11 * 2 - 5 = 17 -> 20.
            "2026-12-01T10:00:00+00:00",
            queue(answered(TUESDAY_TEN, [10, 12, 14, 16, 18, 20, 22, 24, 26, 41], ahead=1, agents_on_shift=1), ahead=1, agents=3),
            "2026-12-01T10:20+00:00", 20.0, "within about 20 minutes", BASIS_ALL_CASES, 10,
            id="judged-with-the-agents-who-were-there",
        ),
        pytest.param(
            # Without the staffing recorded, today's 3 agents are assumed then: 6 expected,
            # factor 46 / 11; 11 * 46 / 11 - 5 = 41 -> 45.
            "2026-12-01T10:00:00+00:00",
            queue(answered(TUESDAY_TEN, [10, 12, 14, 16, 18, 20, 22, 24, 26, 41], ahead=1), ahead=1, agents=3),
            "2026-12-01T10:45+00:00", 45.0, "within about 45 minutes", BASIS_ALL_CASES, 10,
            id="unrecorded-staffing-is-today's",
        ),
        pytest.param(
            # The expected wait recorded with each case (18) is what its wait is compared
            # with, not the formula (3): factor 2. Now 4 ahead of 2: 27; 32 * 2 - 5 = 59 -> 60.
            "2026-12-01T10:00:00+00:00",
            queue(answered(TUESDAY_TEN, [10, 12, 14, 16, 18, 20, 22, 24, 26, 41], expected_minutes=18.0), ahead=4),
            "2026-12-01T11:00+00:00", 60.0, "within about an hour", BASIS_ALL_CASES, 10,
            id="recorded-expectation",
        ),
        pytest.param(
            # Two agents free take two of the three ahead at once: (1 + 0.5) * 6 * 1.5 = 13.5 -> 15.
            "2026-12-01T10:00:00+00:00", queue(ahead=3, agents=2, busy=0),
            "2026-12-01T10:15+00:00", 15.0, "within about 15 minutes", BASIS_PRIOR, 0,
            id="free-agents-take-cases-at-once",
        ),
        pytest.param(
            # Both busy: (3 + 0.5) * 6 * 1.5 = 31.5 -> 35.
            "2026-12-01T10:00:00+00:00", queue(ahead=3, agents=2, busy=2),
            "2026-12-01T10:35+00:00", 35.0, "within about 35 minutes", BASIS_PRIOR, 0,
            id="busy-agents",
        ),
        pytest.param(
            # Ten normal cases answered quickly, ten low ones late: a normal case learns from
            # its own: the longest normal wait, 19: 8 * 24 / 8 - 5 = 19 -> 20.
            "2026-12-01T10:00:00+00:00",
            queue(
                answered(TUESDAY_TEN, list(range(10, 20)), priority="normal"),
                answered(TUESDAY_TEN, [300] * 10, priority="low"),
                priority="normal",
            ),
            "2026-12-01T10:20+00:00", 20.0, "within about 20 minutes", BASIS_SAME_PRIORITY, 10,
            id="same-priority-first",
        ),
        pytest.param(
            # No urgent case in the window: all twenty; rank ceil(21 * 0.9) = 19: 300.
            "2026-12-01T10:00:00+00:00",
            queue(
                answered(TUESDAY_TEN, list(range(10, 20)), priority="normal"),
                answered(TUESDAY_TEN, [300] * 10, priority="low"),
                priority="urgent",
            ),
            "2026-12-01T15:00+00:00", 300.0, "within about 5 hours", BASIS_ALL_CASES, 20,
            id="else-all-cases",
        ),
        pytest.param(
            # Ten cases, 90 as above, counted from Sunday 10:00 (Christmas and Boxing Day closed).
            "2026-12-25T11:00:00+00:00", queue(OTHER_HOURS),
            "2026-12-27T11:30+00:00", 90.0, "by 11:30 on Sunday — we are closed for Christmas Day",
            BASIS_ALL_CASES, 10,
            id="holiday-counts-from-next-opening",
        ),
        pytest.param(
            # Spring: Saturday 27 March 16:55 GMT; 90: 5 minutes to 17:00 GMT, 85 from Sunday 10:00 BST.
            "2027-03-27T16:55:00+00:00", queue(OTHER_HOURS),
            "2027-03-28T11:25+01:00", 90.0, "by 11:25 tomorrow, Sunday", BASIS_ALL_CASES, 10,
            id="across-spring-clock-change",
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

    # 0.5: rank ceil(11 * 0.5) = 6: wait 12, factor 17 / 8: 8 * 17 / 8 - 5 = 12.
    # 1: the longest, 90 (no finite sample guarantees every case).
    median = predict_wait(at("2026-12-01T10:00:00+00:00"), northwind(), queue, median_targets)
    strict = predict_wait(at("2026-12-01T10:00:00+00:00"), northwind(), queue, strict_targets)

    assert (median.minutes, median.factor, median.expected_minutes) == (12.0, 17 / 8, 3.0)
    assert (strict.minutes, strict.factor) == (90.0, 95 / 8)
    assert strict.hour_of_week == 34


def test_a_long_wait_so_far_lengthens_the_new_estimate() -> None:
    # 91 cases answered after 10 minutes and 9 after 100 to 180: a new case gets the 91st of
    # 100 scores (rank ceil(101 * 0.9)): 10 -> floor 15. A customer who has already waited
    # 20 minutes gets the 0.9 conformal quantile of how much longer the 9 cases that waited
    # over 20 still waited, 80 to 160: the 9th of 9 = 160 -> 165.
    queue = QueueSnapshot(
        0,
        0,
        None,
        history=history(answered(TUESDAY_TEN, [10] * 91), answered(TUESDAY_TEN, list(range(100, 181, 10)))),
    )
    now = at("2026-12-01T10:00:00+00:00")

    fresh = estimate_promise(now, northwind(), queue, TARGETS)
    update = estimate_promise(now, northwind(), queue, TARGETS, waited_minutes=20)
    long_so_far = estimate_promise(now, northwind(), queue, TARGETS, waited_minutes=170)

    assert (fresh.business_minutes, fresh.wording) == (15.0, "within about 15 minutes")
    assert (update.business_minutes, update.wording, update.history_samples) == (
        165.0,
        "within about 2 and three quarter hours",
        9,
    )
    # Only one case waited over 170 minutes: too few to say how much longer; a wait that
    # far into the tail is taken to go on as long again: 170 -> 180.
    assert (long_so_far.business_minutes, long_so_far.wording) == (180.0, "within about 3 hours")


# --- the expected wait and the rota -----------------------------------------------------------


def test_the_expected_wait_counts_the_rota_ahead() -> None:
    # Tuesday 13:30, 20 ahead of 5 agents: 20.5 * 12 = 246 agent-minutes of work. Until 14:00,
    # 30 * 5 = 150; from 14:00 the rota has 2 agents: 96 / 2 = 48 more; 78 in all.
    now = at("2026-12-01T13:30:00+00:00")
    queue = QueueSnapshot(20, 5, None)
    tuesday_two = 1 * 24 + 14

    assert expected_wait(now, northwind(), queue, TARGETS, {tuesday_two: 2}) == 78.0
    assert expected_wait(now, northwind(), queue, TARGETS) == 246 / 5


def test_the_expected_wait_counts_the_rota_after_closing() -> None:
    # Tuesday 19:30, 10 ahead of 2: 126 agent-minutes. 60 before 20:00; Wednesday from 08:00
    # with the 3 agents of the rota: 66 / 3 = 22; 30 + 22 = 52 open minutes.
    now = at("2026-12-01T19:30:00+00:00")
    wednesday_eight = 2 * 24 + 8

    assert expected_wait(now, northwind(), QueueSnapshot(10, 2, None), TARGETS, {wednesday_eight: 3}) == 52.0


def test_while_closed_the_rota_says_who_opens() -> None:
    # Tuesday 22:00, closed; 10 ahead: 126 agent-minutes. Nobody is on shift now (0: the
    # default 2), but the rota has 3 from Wednesday 08:00: 42 open minutes, not 63.
    now = at("2026-12-01T22:00:00+00:00")
    wednesday_eight = 2 * 24 + 8

    assert expected_wait(now, northwind(), QueueSnapshot(10, 0, None), TARGETS, {wednesday_eight: 3}) == 42.0


def test_the_rota_is_learned_from_the_staffing_recorded_with_each_case() -> None:
    recorded = history(
        answered("2026-11-24T13:10:00+00:00", [5, 5, 5], agents_on_shift=5),
        answered("2026-11-17T13:20:00+00:00", [5], agents_on_shift=4),
        answered("2026-11-24T14:10:00+00:00", [5, 5], agents_on_shift=2),
        answered("2026-11-24T15:10:00+00:00", [5]),  # not recorded: says nothing
    )

    # Tuesday 13:00: the median of 5, 5, 5, 4; Tuesday 14:00: 2.
    assert staffing_profile(recorded) == {1 * 24 + 13: 5, 1 * 24 + 14: 2}


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
    ("scores", "q", "expected"),
    [
        # ceil((n + 1) * q)-th smallest: the new case counts as one of n + 1.
        (list(range(19, 0, -1)), 0.95, 19),  # ceil(20 * 0.95) = 19: the largest of 19
        (list(range(1, 40)), 0.95, 38),  # ceil(40 * 0.95) = 38
        (list(range(1, 19)), 0.95, None),  # 18 scores cannot carry 19 in 20
        (list(range(1, 10)), 0.9, 9),  # ceil(10 * 0.9) = 9, with float noise (9.000000000000002)
        ([3.0, 1.0, 2.0], 0.5, 2.0),  # ceil(4 * 0.5) = 2
        ([3.0, 1.0, 2.0], 1, 3.0),  # every case: the largest, the best a sample can say
        ([], 0.5, None),
    ],
)
def test_conformal_quantile(scores: list[float], q: float, expected: float | None) -> None:
    assert conformal_quantile(scores, q) == expected


def test_the_conformal_quantile_keeps_its_share_on_exchangeable_cases() -> None:
    # Every way one of 20 exchangeable cases can come last: the 0.95 quantile of the
    # other 19 covers it in 19 of the 20 (all but when it is the largest).
    waits = [float(wait) for wait in (3, 17, 4, 9, 30, 12, 6, 8, 21, 5, 15, 2, 11, 7, 40, 10, 14, 1, 25, 19)]
    covered = 0
    for index, new in enumerate(waits):
        bound = conformal_quantile(waits[:index] + waits[index + 1 :], 0.95)
        assert bound is not None
        covered += new <= bound

    assert covered == 19


@pytest.mark.parametrize(
    ("build", "error", "message"),
    [
        (lambda: quantile([], 0.9), HistoryError, "quantile of no values"),
        (lambda: quantile([1], 0), HistoryError, "q must be a number above 0 and at most 1 (got 0)"),
        (
            lambda: conformal_quantile([1], 1.5),
            HistoryError,
            "q must be a number above 0 and at most 1 (got 1.5)",
        ),
        (
            lambda: HandledCase(
                at("2026-12-01T10:00:00+00:00"), at("2026-12-01T10:00:00+00:00"), agents_busy=-2
            ),
            HistoryError,
            "agents_busy must be at least 0 (got -2)",
        ),
        (
            lambda: HandledCase(
                at("2026-12-01T10:00:00+00:00"), at("2026-12-01T10:00:00+00:00"), expected_minutes=0.0
            ),
            HistoryError,
            "expected_minutes must be a number above 0 (got 0.0)",
        ),
        (
            lambda: QueueSnapshot(0, 2, None, agents_busy=-1),
            EstimateError,
            "agents_busy must be None or a whole number of at least 0 (got -1)",
        ),
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
    assert load_support_config(REPO_ROOT / "support.yml").targets.promise_quantile == 0.96

    path = _support_with(tmp_path, "  promise_quantile: 0.96\n", "")

    assert load_support_config(path).targets.promise_quantile == 0.9


@pytest.mark.parametrize("value", ["0.3", "1.5", "ninety", "yes"])
def test_a_bad_promise_quantile_names_file_and_line(tmp_path: Path, value: str) -> None:
    path = _support_with(tmp_path, "  promise_quantile: 0.96", f"  promise_quantile: {value}")
    line = path.read_text(encoding="utf-8").splitlines().index(f"  promise_quantile: {value}") + 1
    shown = {"0.3": "0.3", "1.5": "1.5", "ninety": "'ninety'", "yes": "True"}[value]

    with pytest.raises(OpsConfigError) as caught:
        load_support_config(path)

    assert str(caught.value) == (
        f"{path}:{line}: targets.promise_quantile must be a number from 0.5 to 1 "
        f"(the share of promises to keep, e.g. 0.9) (got {shown})"
    )


# --- the store and promise_for ---------------------------------------------------------------


def _case(key: str, priority: str, created: datetime, metadata: dict[str, Any] | None = None) -> NewCase:
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
        metadata=metadata or {},
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

    # A week earlier, Monday 10:xx: 24 cases claimed at once, answered after 5 to 120
    # minutes, resolved 12 minutes later.
    last_monday = datetime(2026, 11, 16, 10, tzinfo=UTC)
    for index, wait in enumerate(range(5, 125, 5)):
        opened = last_monday + timedelta(minutes=index)
        case = store.lifecycle.open_case(_case(f"k{index}", "normal", opened), opened)
        store.lifecycle.claim(case.id, "ann", opened)
        store.lifecycle.record_human_reply(case.id, opened + timedelta(minutes=wait))
        store.lifecycle.resolve(case.id, opened + timedelta(minutes=wait + 12))

    promise = promise_for(services, "normal", now)

    # Handle (17 + ... + 132) / 24 = 74.5; none recorded its staffing, so all are judged
    # with today's default 2 agents: 0.5 * 74.5 / 2 = 18.625 expected, then as now. The
    # shipped 0.96 of 24 scores is the ceil(25 * 0.96) = 24th, the largest,
    # (120 + 5) / 23.625: 23.625 * 125 / 23.625 - 5 = 120.
    assert (promise.wording, promise.basis, promise.history_samples) == (
        "within about 2 hours",
        BASIS_SAME_PRIORITY,
        24,
    )
    assert promise.deadline_iso() == "2026-11-23T12:00+00:00"
    store.dispose()


def test_each_case_records_the_queue_it_opened_into(store: CaseStore) -> None:
    services = Services(store=store, support=load_support_config(REPO_ROOT / "support.yml"))
    now = datetime(2026, 11, 23, 10, tzinfo=UTC)
    store.desk.set_agent_shift("ann", True, now)
    store.desk.set_agent_shift("bob", True, now)
    first = store.lifecycle.open_case(_case("first", "normal", now), now)
    store.lifecycle.claim(first.id, "ann", now)

    later = now + timedelta(minutes=1)
    promise, queue = promise_and_queue(services, "normal", later)
    case = store.lifecycle.open_case(
        _case("second", "normal", later, metadata=opening_record(promise, queue)), later
    )
    store.lifecycle.claim(case.id, "bob", later + timedelta(minutes=3))
    store.lifecycle.record_human_reply(case.id, later + timedelta(minutes=4))

    # Two on shift, Ann on the first case: Bob is free, so 0.5 x 12 / 2 = 3 expected.
    stored = store.lookup.get(case.id)
    assert stored is not None and stored.metadata[OPENING_QUEUE_KEY] == opening_queue(2, 1, 3.0)
    [timing] = [t for t in store.figures.handled_timings(later + timedelta(minutes=5), 7) if t.case_id == case.id]
    assert (timing.priority, timing.agents_on_shift, timing.agents_busy, timing.expected_minutes) == (
        "normal",
        2,
        1,
        3.0,
    )


def test_a_mangled_opening_record_counts_as_none(store: CaseStore) -> None:
    opened = datetime(2026, 11, 23, 10, tzinfo=UTC)
    mangled = {OPENING_QUEUE_KEY: {"agents_on_shift": "three", "agents_busy": True, "expected_minutes": -4}}
    case = store.lifecycle.open_case(_case("k", "normal", opened, metadata=mangled), opened)
    store.lifecycle.record_human_reply(case.id, opened + timedelta(minutes=4))

    [timing] = store.figures.handled_timings(opened + timedelta(minutes=5), 7)

    assert (timing.agents_on_shift, timing.agents_busy, timing.expected_minutes) == (None, None, None)
