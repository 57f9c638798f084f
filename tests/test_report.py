"""``python -m bot report``: a known set of cases in a real case store, exact figures out.

All cases are opened on Monday 23 November 2026 (UTC) and the report is made at 13:10
that day (``FIRSTREPLY_NOW``). The table below is what the expectations are worked from.

====  =========  ============  ===========  ======  =====  =====  =======  ========  =========
case  channel    type          first msg    opened  claim  reply  resolve  promised  customer
====  =========  ============  ===========  ======  =====  =====  =======  ========  =========
c1    telegram   order_status  09:58        10:00   10:05  10:10  10:30    10:15     t-ana
c2    telegram   billing       10:00:30     10:01   10:20  10:25  11:00    10:16     t-bo
c3    rest       order_status  10:40        10:45   11:00  11:14  -        11:15     r-cy
c4    rest       complaint     11:50        12:00   -      -      -        12:15     r-di
c5    rest       order_status  (none)       13:00   -      -      -        13:30     r-ed
c6    telegram   general       10:59        11:00   11:02  11:03  11:10    11:15     t-ana
====  =========  ============  ===========  ======  =====  =====  =======  ========  =========

Outside the period: c0 (Sunday 22nd, r-cy) and c8 (Tuesday 24th 09:00, t-bo, who thus
came back within 7 days of c2's resolution, as t-ana did with c6 after c1).
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from bot.cases import Case, CaseStore, NewCase, TranscriptLine
from bot.clock import NOW_ENV
from bot.report import NOTE_CSAT_NONE, NOTE_TIMES, add_report_parser

UTC = timezone.utc
NOW = "2026-11-23T13:10:00+00:00"


def _at(clock: str, day: int = 23) -> datetime:
    hour, minute, *second = (int(part) for part in clock.split(":"))
    return datetime(2026, 11, day, hour, minute, second[0] if second else 0, tzinfo=UTC)


# key, channel, sender, case type, first customer message, opened, claimed, replied,
# resolved, promised, day
PLAN: list[tuple[str, str, str, str, str | None, str, str | None, str | None, str | None, str, int]] = [
    ("c0", "rest", "r-cy", "order_status", "09:00", "09:01", "09:02", "09:03", "09:04", "09:16", 22),
    ("c1", "telegram", "t-ana", "order_status", "09:58", "10:00", "10:05", "10:10", "10:30", "10:15", 23),
    ("c2", "telegram", "t-bo", "billing", "10:00:30", "10:01", "10:20", "10:25", "11:00", "10:16", 23),
    ("c3", "rest", "r-cy", "order_status", "10:40", "10:45", "11:00", "11:14", None, "11:15", 23),
    ("c4", "rest", "r-di", "complaint", "11:50", "12:00", None, None, None, "12:15", 23),
    ("c5", "rest", "r-ed", "order_status", None, "13:00", None, None, None, "13:30", 23),
    ("c6", "telegram", "t-ana", "general", "10:59", "11:00", "11:02", "11:03", "11:10", "11:15", 23),
    ("c8", "telegram", "t-bo", "billing", "08:59", "09:00", None, None, None, "09:15", 24),
]


def _new_case(key: str, channel: str, sender: str, case_type: str, first: str | None,
              opened: datetime, promised: datetime, day: int) -> NewCase:  # fmt: skip
    transcript = [TranscriptLine("customer", "hello?", _at(first, day))] if first else []
    transcript.append(TranscriptLine("bot", "Hi! A person will answer soon.", opened))
    return NewCase(
        channel=channel,
        sender_id=sender,
        customer_name=None,
        case_type=case_type,
        intent_confidence=0.9,
        answers={},
        summary="…",
        transcript=transcript,
        language="en",
        priority="normal",
        complaint_score=0.0,
        promised_by=promised,
        promise_wording="within about 15 minutes",
        handoff_key=key,
    )


@pytest.fixture
def store(case_db_url: str) -> Iterator[CaseStore]:
    case_store = CaseStore.from_url(case_db_url)
    for key, channel, sender, case_type, first, opened, claimed, replied, resolved, promised, day in PLAN:
        opened_at = _at(opened, day)
        case = case_store.lifecycle.open_case(
            _new_case(key, channel, sender, case_type, first, opened_at, _at(promised, day), day),
            opened_at,
        )
        if claimed:
            assert case_store.lifecycle.claim(case.id, "ann", _at(claimed, day))
        if replied:
            case_store.lifecycle.record_human_reply(case.id, _at(replied, day))
        if resolved:
            assert case_store.lifecycle.resolve(case.id, _at(resolved, day))
    yield case_store
    case_store.dispose()


def _run(case_db_url: str, *arguments: str) -> int:
    parser = argparse.ArgumentParser()
    add_report_parser(parser.add_subparsers(dest="area", required=True))
    args = parser.parse_args(["report", "--db", case_db_url, *arguments])
    return int(args.handler(args))


@pytest.fixture(autouse=True)
def _frozen_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(NOW_ENV, NOW)


def _json_report(store: CaseStore, case_db_url: str, capsys: pytest.CaptureFixture[str], *extra: str) -> Any:
    assert _run(case_db_url, "--json", *extra) == 0
    return json.loads(capsys.readouterr().out)


def test_report_figures(store: CaseStore, case_db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    report = _json_report(store, case_db_url, capsys, "--since", "2026-11-23", "--until", "2026-11-23")

    assert (report["since"], report["until"], report["generated_at"]) == (
        "2026-11-23T00:00:00+00:00",
        "2026-11-24T00:00:00+00:00",
        NOW,
    )
    assert report["overall"] == {
        "cases": 6,
        "answered": 4,
        # 2, 0.5, 5, 10, 1 (c5 has no customer line)
        "time_to_case_minutes": {"n": 5, "p50": 2.0, "p90": 10.0},
        "time_to_claim_minutes": {"n": 4, "p50": 5.0, "p90": 19.0},  # 5, 19, 15, 2
        "time_to_human_minutes": {"n": 4, "p50": 10.0, "p90": 29.0},  # 10, 24, 29, 3
        "human_within_15_min": {"count": 2, "rate": 0.3333},  # c1, c6 of 6
        "human_within_promise": {"count": 3, "rate": 0.5},  # c1, c3 (on 11:14 of 11:15), c6
        # Due: the 4 answered and c4 (12:15 passed); c5 (13:30) is pending.
        "promises": {"due": 5, "kept": 3, "broken": 2, "pending": 1, "kept_rate": 0.6},
        # Resolved c1, c2, c6: t-ana came back (c6), t-bo too (c8, the next day).
        "repeat_contact_7d": {"resolved": 3, "came_back": 2, "rate": 0.6667},
        "reopened": 0,
        "reopen_rate": 0.0,
        "ratings": 0,
        "csat": "n/a",
    }
    telegram, rest = report["by_channel"]["telegram"], report["by_channel"]["rest"]
    assert list(report["by_channel"]) == ["rest", "telegram"]
    assert telegram["time_to_case_minutes"] == {"n": 3, "p50": 1.0, "p90": 2.0}
    assert telegram["time_to_human_minutes"] == {"n": 3, "p50": 10.0, "p90": 24.0}
    assert telegram["promises"] == {"due": 3, "kept": 2, "broken": 1, "pending": 0, "kept_rate": 0.6667}
    assert rest["human_within_15_min"] == {"count": 0, "rate": 0.0}
    assert rest["promises"] == {"due": 2, "kept": 1, "broken": 1, "pending": 1, "kept_rate": 0.5}
    assert rest["repeat_contact_7d"] == {"resolved": 0, "came_back": 0, "rate": None}
    assert list(report["by_case_type"]) == ["billing", "complaint", "general", "order_status"]
    order_status = report["by_case_type"]["order_status"]
    assert (order_status["cases"], order_status["time_to_human_minutes"]) == (
        3,
        {"n": 2, "p50": 10.0, "p90": 29.0},
    )
    assert report["by_case_type"]["complaint"]["time_to_human_minutes"] == {"n": 0, "p50": None, "p90": None}
    assert report["notes"][0] == NOTE_TIMES
    assert report["notes"][2] == NOTE_CSAT_NONE


def test_without_until_the_next_day_counts_and_without_since_everything(
    store: CaseStore, case_db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    report = _json_report(store, case_db_url, capsys)

    # c0 (Sunday) and c8 (Tuesday) are in; c8's promise (Tuesday 09:15) is pending at 13:10 Monday.
    assert (report["since"], report["until"]) == (None, None)
    assert report["overall"]["cases"] == 8
    assert report["overall"]["promises"]["pending"] == 2


def test_report_moment_arguments(store: CaseStore, case_db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    report = _json_report(
        store, case_db_url, capsys, "--since", "2026-11-23T10:30:00+00:00", "--until", "2026-11-23T12:00:00+00:00"
    )

    # c3 (10:45) and c6 (11:00); c4 opened at 12:00 is the end, not in.
    assert report["overall"]["cases"] == 2
    assert report["until"] == "2026-11-23T12:00:00+00:00"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--since", "23/11/2026"], "'23/11/2026' is not a date (YYYY-MM-DD) or an ISO 8601 time with offset"),
        (["--until", "2026-11-23T10:00"], "'2026-11-23T10:00' needs a UTC offset, e.g. 2026-11-23T10:00+00:00"),
        (["--json", "--html", "x.html"], "not allowed with argument"),
    ],
)
def test_bad_arguments_are_refused(
    case_db_url: str, capsys: pytest.CaptureFixture[str], arguments: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as caught:
        _run(case_db_url, *arguments)

    assert caught.value.code == 2
    assert message in capsys.readouterr().err


def test_until_before_since_is_refused(case_db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(case_db_url, "--since", "2026-11-24", "--until", "2026-11-22") == 2
    assert capsys.readouterr().err == "--until must be after --since\n"


def test_text_table(store: CaseStore, case_db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(case_db_url, "--since", "2026-11-23", "--until", "2026-11-23") == 0

    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (
        "FirstReply report: cases opened from 2026-11-23T00:00:00+00:00 to "
        "2026-11-24T00:00:00+00:00 (UTC; minutes)"
    )
    assert lines[2].split() == [
        "cases", "to", "case", "p50", "to", "claim", "p50", "to", "human", "p50/p90", "≤15", "min",
        "in", "promise", "kept/due", "back", "≤7d", "reopen", "CSAT",
    ]  # fmt: skip
    assert lines[3].split() == [
        "overall", "6", "2.0", "5.0", "10", "/", "29", "33%", "50%", "3/5", "67%", "0%", "n/a",
    ]  # fmt: skip
    assert [line.split()[:2] for line in lines[4:10]] == [
        ["channel", "rest"], ["channel", "telegram"], ["type", "billing"], ["type", "complaint"],
        ["type", "general"], ["type", "order_status"],
    ]  # fmt: skip


def test_empty_period(store: CaseStore, case_db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(case_db_url, "--since", "2027-01-01") == 0

    assert capsys.readouterr().out == (
        "No cases: cases opened from 2027-01-01T00:00:00+00:00 to "
        "2026-11-23T13:10:00+00:00 (UTC; minutes).\n"
    )


def test_html_is_self_contained(
    store: CaseStore, case_db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    page = tmp_path / "report.html"

    assert _run(case_db_url, "--since", "2026-11-23", "--until", "2026-11-23", "--html", str(page)) == 0

    assert capsys.readouterr().out == f"wrote {page}\n"
    text = page.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    assert "<style>" in text
    assert text.count('src="data:image/png;base64,') == 2
    # No external URL anywhere: no scheme, no protocol-relative link, no @import or url().
    assert not re.search(r"(?i)https?:|ftp:|@import|url\(", text)
    assert not re.search(r"""(?i)(src|href)\s*=\s*(?!["']?data:)""", text)
    assert "<td>overall</td><td>6</td>" in text


def test_reopens_and_ratings_when_the_store_has_them(
    store: CaseStore, case_db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    if not hasattr(store, "record_followup") or "rating" not in Case.__dataclass_fields__:
        pytest.skip("this case store has no follow-up ratings or reopening (agent desk, schema 2)")
    cases = {case.handoff_key: case for case in store.lookup.list_cases()}
    at = datetime(2026, 11, 23, 12, 30, tzinfo=UTC)
    assert store.lifecycle.record_followup(cases["c1"].id, at, rating=5)
    assert store.lifecycle.record_followup(cases["c2"].id, at, rating=2)
    assert store.lifecycle.record_followup(cases["c6"].id, at, rating=4)
    assert store.lifecycle.reopen(cases["c2"].id, at + timedelta(minutes=1))

    report = _json_report(store, case_db_url, capsys, "--since", "2026-11-23", "--until", "2026-11-23")

    overall = report["overall"]
    # Ratings 5, 2 (still stored after the reopen), 4: two satisfied of three.
    assert (overall["ratings"], overall["csat"]) == (3, 0.6667)
    # c2 reopened, of c1, c2 and c6 resolved at least once.
    assert (overall["reopened"], overall["reopen_rate"]) == (1, 0.3333)
