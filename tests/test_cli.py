"""``python -m bot cases ...`` run as real processes against a case database the store filled."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from bot.cases import CaseStore, NewCase, TranscriptLine

REPO_ROOT = Path(__file__).resolve().parents[1]
UTC = timezone.utc
NOW = datetime(2024, 5, 6, 9, 15, tzinfo=UTC)


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """A SQLite case database holding two cases of one customer, the first one claimed."""
    url = f"sqlite:///{tmp_path / 'cases.db'}"
    store = CaseStore.from_url(url)
    store.lifecycle.open_case(
        NewCase(
            channel="telegram", sender_id="100200", customer_name="Ana Lima", case_type="order_status",
            intent_confidence=0.91, answers={"order_number": "A-1001", "delivery_problem": "late"},
            summary="Order A-1001 is late.",
            transcript=(
                TranscriptLine("customer", "Where is my order?", NOW - timedelta(minutes=2)),
                TranscriptLine("bot", "Which order number?", NOW - timedelta(minutes=1)),
                TranscriptLine("customer", "A-1001", NOW),
            ),
            language="en", priority="normal", complaint_score=0.1,
            promised_by=datetime(2024, 5, 6, 12, 0, tzinfo=timezone(timedelta(hours=2))),
            promise_wording="A person will answer by 12:00.", handoff_key="telegram:100200:1",
            metadata={"telegram_chat_id": 100200},
        ),  # fmt: skip
        NOW,
    )
    store.lifecycle.open_case(
        NewCase(
            channel="telegram", sender_id="100200", customer_name=None, case_type="complaint", intent_confidence=None,
            answers={}, summary="Still no parcel.", transcript=(), language="pt", priority="urgent",
            complaint_score=0.875, promised_by=NOW + timedelta(hours=2), promise_wording="Within two hours.",
            handoff_key="telegram:100200:2",
        ),  # fmt: skip
        NOW + timedelta(days=1),
    )
    assert store.lifecycle.claim(1, "bea", NOW + timedelta(minutes=5)) is True
    store.lifecycle.record_human_reply(1, NOW + timedelta(minutes=7))
    store.dispose()
    return url


def run_bot(*args: str, db_url: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("FIRSTREPLY_")}
    env["FIRSTREPLY_CASE_DB"] = db_url
    return subprocess.run(
        [sys.executable, "-W", "error", "-m", "bot", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


# What `python -m bot cases list --json` prints for the two cases of ``db_url``.
CLI_LIST = REPO_ROOT / "tests" / "fixtures" / "cases" / "cli_list.json"
FIRST_CASE, SECOND_CASE = json.loads(CLI_LIST.read_text(encoding="utf-8"))


def test_list_json_prints_every_case(db_url: str) -> None:
    result = run_bot("cases", "list", "--json", db_url=db_url)

    assert (result.returncode, result.stderr) == (0, "")
    assert json.loads(result.stdout) == [FIRST_CASE, SECOND_CASE]


def test_list_json_filters_by_status(db_url: str) -> None:
    result = run_bot("cases", "list", "--status", "waiting", "--json", db_url=db_url)

    assert (result.returncode, result.stderr) == (0, "")
    assert json.loads(result.stdout) == [SECOND_CASE]


def test_db_option_overrides_the_environment(db_url: str, tmp_path: Path) -> None:
    empty = f"sqlite:///{tmp_path / 'empty.db'}"

    from_option = run_bot("cases", "list", "--json", "--db", db_url, db_url=empty)
    from_env = run_bot("cases", "list", "--json", db_url=empty)

    assert [case["id"] for case in json.loads(from_option.stdout)] == [1, 2]
    assert json.loads(from_env.stdout) == []


def test_list_prints_a_table(db_url: str) -> None:
    result = run_bot("cases", "list", db_url=db_url)

    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.splitlines() == [
        "ID  CREATED (UTC)         STATUS   PRIORITY  CHANNEL   CUSTOMER  CASE TYPE     PROMISED BY",
        "1   2024-05-06 09:15 UTC  claimed  normal    telegram  Ana Lima  order_status  2024-05-06 10:00 UTC",
        "2   2024-05-07 09:15 UTC  waiting  urgent    telegram  100200    complaint     2024-05-06 11:15 UTC",
    ]


def test_list_says_when_there_are_no_cases(db_url: str) -> None:
    result = run_bot("cases", "list", "--status", "resolved", db_url=db_url)

    assert (result.returncode, result.stdout, result.stderr) == (0, "No resolved cases.\n", "")


def test_show_prints_the_whole_case(db_url: str) -> None:
    result = run_bot("cases", "show", "1", db_url=db_url)

    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.splitlines() == [
        "Case 1",
        "Status: claimed",
        "Priority: normal",
        "Case type: order_status",
        "Intent confidence: 0.91",
        "Channel: telegram",
        "Sender id: 100200",
        "Customer: Ana Lima",
        "Language: en",
        "Complaint score: 0.1",
        "Previous cases: -",
        "Promised by: 2024-05-06 10:00 UTC",
        "Promise wording: A person will answer by 12:00.",
        "Created: 2024-05-06 09:15 UTC",
        "Updated: 2024-05-06 09:22 UTC",
        "Claimed by: bea",
        "Claimed at: 2024-05-06 09:20 UTC",
        "First human reply: 2024-05-06 09:22 UTC",
        "Resolved at: -",
        "Handoff key: telegram:100200:1",
        "Summary: Order A-1001 is late.",
        "Answers:",
        "  order_number: A-1001",
        "  delivery_problem: late",
        "Transcript (UTC):",
        "  [09:13] customer: Where is my order?",
        "  [09:14] bot: Which order number?",
        "  [09:15] customer: A-1001",
        "Metadata:",
        "  telegram_chat_id: 100200",
    ]


def test_show_case_without_answers_or_transcript(db_url: str) -> None:
    result = run_bot("cases", "show", "2", db_url=db_url)

    assert (result.returncode, result.stderr) == (0, "")
    lines = result.stdout.splitlines()
    assert "Previous cases: 1" in lines
    assert lines[-4:] == ["Summary: Still no parcel.", "Answers: -", "Transcript (UTC): -", "Metadata: -"]


def test_show_unknown_case_exits_1(db_url: str) -> None:
    result = run_bot("cases", "show", "99", db_url=db_url)

    assert (result.returncode, result.stdout, result.stderr) == (1, "", "No case with id 99.\n")


def test_bad_database_url_is_a_clear_error(db_url: str) -> None:
    result = run_bot("cases", "list", "--db", "mysql://user:secret@localhost/cases", db_url=db_url)

    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        "Bad case database URL: case store supports sqlite and postgresql databases, "
        "not 'mysql': mysql://user:***@localhost/cases\n"
    )


def test_command_line_does_not_load_rasa() -> None:
    probe = "import sys, bot.__main__; print(sorted({'rasa', 'tensorflow'} & set(sys.modules)))"

    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", probe],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert (result.returncode, result.stdout, result.stderr) == (0, "[]\n", "")
