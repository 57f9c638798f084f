"""The case store against real databases: SQLite files, and PostgreSQL when one is given.

Set ``FIRSTREPLY_TEST_POSTGRES_URL`` (a database these tests may drop tables in) to run
every store test against PostgreSQL too; without it only the SQLite tests are collected.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import create_engine, select, update

from bot.cases import Case, CaseStore, NewCase, TranscriptLine
from bot.cases import schema
from bot.cases.base import default_url

REPO_ROOT = Path(__file__).resolve().parents[1]
CASE_FIXTURES = REPO_ROOT / "tests" / "fixtures" / "cases"
UTC = timezone.utc
PARIS = timezone(timedelta(hours=2))
NOW = datetime(2024, 5, 6, 9, 15, 30, 123456, tzinfo=UTC)

T = TypeVar("T")


def new_case(**overrides: Any) -> NewCase:
    fields: dict[str, Any] = {
        "channel": "telegram",
        "sender_id": "100200",
        "customer_name": "Ana Lima",
        "case_type": "billing",
        "intent_confidence": 0.8731,
        "answers": {"billing_problem": "charged twice", "charge_details": "2 x 19.99 EUR"},
        "summary": "Charged twice for order A-1001.",
        "transcript": (
            TranscriptLine("customer", "I was charged twice!", datetime(2024, 5, 6, 11, 14, tzinfo=PARIS)),
            TranscriptLine("bot", "Sorry about that. Which charge?", datetime(2024, 5, 6, 9, 14, 5, tzinfo=UTC)),
        ),
        "language": "pt",
        "priority": "high",
        "complaint_score": 0.62,
        "promised_by": datetime(2024, 5, 6, 12, 30, tzinfo=PARIS),
        "promise_wording": "A person will answer by 12:30.",
        "handoff_key": "telegram:100200:1",
        "metadata": {"telegram_chat_id": 100200, "tags": ["vip", "repeat"], "profile": {"plan": "pro"}},
    }
    fields.update(overrides)
    return NewCase(**fields)


def run_together(count: int, work: Callable[[int], T]) -> list[T]:
    """Run ``work(i)`` for i in range(count) in threads released at the same moment."""
    start = threading.Barrier(count)
    results: list[Any] = [None] * count
    errors: list[BaseException] = []

    def run(index: int) -> None:
        start.wait()
        try:
            results[index] = work(index)
        except BaseException as error:  # re-raised below, in the test's thread
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    if errors:
        raise errors[0]
    return results


# --- opening and reading -----------------------------------------------------------------


def test_open_case_round_trips_every_field(store: CaseStore) -> None:
    new = new_case()

    opened = store.lifecycle.open_case(new, NOW)

    expected = Case(
        id=1,
        channel="telegram",
        sender_id="100200",
        customer_name="Ana Lima",
        case_type="billing",
        intent_confidence=0.8731,
        answers={"billing_problem": "charged twice", "charge_details": "2 x 19.99 EUR"},
        summary="Charged twice for order A-1001.",
        transcript=tuple(new.transcript),
        language="pt",
        priority="high",
        complaint_score=0.62,
        promised_by=datetime(2024, 5, 6, 10, 30, tzinfo=UTC),
        promise_wording="A person will answer by 12:30.",
        handoff_key="telegram:100200:1",
        metadata={"telegram_chat_id": 100200, "tags": ["vip", "repeat"], "profile": {"plan": "pro"}},
        status="waiting",
        created_at=NOW,
        updated_at=NOW,
        previous_cases=(),
        claimed_by=None,
        claimed_at=None,
        first_human_reply_at=None,
        resolved_at=None,
    )
    assert opened == expected
    assert store.lookup.get(1) == expected
    assert opened.created_at.tzinfo == UTC
    assert opened.promised_by.tzinfo == UTC
    # What the case prints as JSON (``to_dict``), kept with the other expected outputs in tests/fixtures/cases/.
    assert opened.to_dict() == json.loads((CASE_FIXTURES / "billing_case.json").read_text(encoding="utf-8"))


def test_optional_fields_round_trip_as_none_and_empty(store: CaseStore) -> None:
    opened = store.lifecycle.open_case(
        new_case(customer_name=None, intent_confidence=None, answers={}, transcript=(), metadata={}),
        NOW,
    )

    assert store.lookup.get(opened.id) == opened
    assert (opened.customer_name, opened.intent_confidence) == (None, None)
    assert (opened.answers, opened.transcript, opened.metadata) == ({}, (), {})


def test_get_unknown_case_is_none(store: CaseStore) -> None:
    assert store.lookup.get(42) is None


def test_same_handoff_key_returns_the_existing_case(store: CaseStore) -> None:
    first = store.lifecycle.open_case(new_case(), NOW)

    again = store.lifecycle.open_case(new_case(summary="a retried handoff"), NOW + timedelta(minutes=1))

    assert again == first
    assert again.summary == "Charged twice for order A-1001."
    assert [case.id for case in store.lookup.list_cases()] == [1]


def test_same_handoff_key_from_racing_processes_makes_one_case(db_url: str) -> None:
    stores = [CaseStore.from_url(db_url) for _ in range(8)]
    try:
        opened = run_together(8, lambda i: stores[i].lifecycle.open_case(new_case(), NOW))
        assert [case.id for case in opened] == [1] * 8
        assert [case.handoff_key for case in stores[0].lookup.list_cases()] == ["telegram:100200:1"]
    finally:
        for case_store in stores:
            case_store.dispose()


def test_concurrent_opens_with_distinct_keys_all_land(db_url: str) -> None:
    stores = [CaseStore.from_url(db_url) for _ in range(6)]

    def open_five(worker: int) -> list[int]:
        return [
            stores[worker].lifecycle.open_case(new_case(handoff_key=f"w{worker}-{n}", sender_id=f"s{worker}"), NOW).id
            for n in range(5)
        ]

    try:
        ids = run_together(6, open_five)
        stored = stores[0].lookup.list_cases()
        assert sorted(i for worker_ids in ids for i in worker_ids) == list(range(1, 31))
        assert sorted(case.handoff_key for case in stored) == sorted(
            f"w{w}-{n}" for w in range(6) for n in range(5)
        )
        # Each worker is one customer, so its cases chain to each other, in order.
        for worker_ids in ids:
            assert [stores[0].lookup.get(i).previous_cases for i in worker_ids] == [  # type: ignore[union-attr]
                tuple(worker_ids[:n]) for n in range(5)
            ]
    finally:
        for case_store in stores:
            case_store.dispose()


def test_previous_cases_are_the_customers_earlier_cases(store: CaseStore) -> None:
    first = store.lifecycle.open_case(new_case(handoff_key="a1"), NOW)
    other_customer = store.lifecycle.open_case(new_case(handoff_key="b1", sender_id="999"), NOW)
    other_channel = store.lifecycle.open_case(new_case(handoff_key="a-slack", channel="slack"), NOW)
    second = store.lifecycle.open_case(new_case(handoff_key="a2"), NOW + timedelta(hours=1))
    third = store.lifecycle.open_case(new_case(handoff_key="a3"), NOW + timedelta(hours=2))

    assert (first.previous_cases, second.previous_cases, third.previous_cases) == ((), (1,), (1, 4))
    assert other_customer.previous_cases == ()
    assert other_channel.previous_cases == ()
    assert [(c.id, c.previous_cases) for c in store.lookup.cases_for_customer("telegram", "100200")] == [
        (1, ()),
        (4, (1,)),
        (5, (1, 4)),
    ]
    assert [c.id for c in store.lookup.cases_for_customer("slack", "100200")] == [3]
    assert store.lookup.cases_for_customer("telegram", "nobody") == []


def test_list_cases_oldest_first_and_by_status(store: CaseStore) -> None:
    store.lifecycle.open_case(new_case(handoff_key="late"), NOW + timedelta(hours=3))
    store.lifecycle.open_case(new_case(handoff_key="early"), NOW)
    store.lifecycle.open_case(new_case(handoff_key="middle"), NOW + timedelta(hours=1))
    assert store.lifecycle.claim(3, "bea", NOW + timedelta(hours=4)) is True

    assert [c.handoff_key for c in store.lookup.list_cases()] == ["early", "middle", "late"]
    assert [c.handoff_key for c in store.lookup.list_cases(status="waiting")] == ["early", "late"]
    assert [c.handoff_key for c in store.lookup.list_cases(status="claimed")] == ["middle"]
    assert store.lookup.list_cases(status="resolved") == []


def test_naive_datetimes_are_refused(store: CaseStore) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        store.lifecycle.open_case(new_case(), datetime(2024, 5, 6, 9, 0))
    with pytest.raises(ValueError, match="timezone-aware"):
        new_case(promised_by=datetime(2024, 5, 6, 12, 0))
    with pytest.raises(ValueError, match="timezone-aware"):
        TranscriptLine("customer", "hi", datetime(2024, 5, 6, 9, 0))
    assert store.lookup.list_cases() == []


def test_unknown_priority_and_speaker_are_refused() -> None:
    with pytest.raises(ValueError, match="priority must be one of"):
        new_case(priority="critical")
    with pytest.raises(ValueError, match="transcript speaker"):
        TranscriptLine("robot", "hi", NOW)


# --- queue figures -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("priority", "ahead"),
    [("low", 5), ("normal", 4), ("high", 2), ("urgent", 1)],
)
def test_count_waiting_ahead_counts_same_or_more_urgent_waiting_cases(
    store: CaseStore, priority: str, ahead: int
) -> None:
    for n, level in enumerate(["low", "normal", "normal", "high", "urgent"]):
        store.lifecycle.open_case(new_case(handoff_key=f"waiting-{n}", priority=level), NOW - timedelta(minutes=n))
    claimed = store.lifecycle.open_case(new_case(handoff_key="claimed", priority="urgent"), NOW)
    resolved = store.lifecycle.open_case(new_case(handoff_key="resolved", priority="high"), NOW)
    store.lifecycle.open_case(new_case(handoff_key="opened-later", priority="urgent"), NOW + timedelta(minutes=5))
    assert store.lifecycle.claim(claimed.id, "bea", NOW) is True
    assert store.lifecycle.resolve(resolved.id, NOW) is True

    assert store.figures.count_waiting_ahead(priority, NOW) == ahead


def test_count_waiting_ahead_of_empty_queue_is_zero(store: CaseStore) -> None:
    assert store.figures.count_waiting_ahead("low", NOW) == 0


def test_recent_handle_minutes_is_the_mean_claim_to_resolve_in_the_window(store: CaseStore) -> None:
    def handled(key: str, claimed_at: datetime | None, minutes: float | None) -> None:
        case = store.lifecycle.open_case(new_case(handoff_key=key), NOW - timedelta(days=30))
        if claimed_at is not None:
            assert store.lifecycle.claim(case.id, "bea", claimed_at) is True
        if minutes is not None:
            assert store.lifecycle.resolve(case.id, (claimed_at or NOW) + timedelta(minutes=minutes)) is True

    handled("ten", NOW - timedelta(days=2), 10)
    handled("twenty", NOW - timedelta(days=6, hours=23), 20)
    handled("forty-six-and-a-half", NOW - timedelta(hours=2), 46.5)
    handled("too-old", NOW - timedelta(days=8), 600)
    handled("still-claimed", NOW - timedelta(hours=1), None)
    handled("resolved-unclaimed", None, -30)  # closed from the queue: no handling time

    assert store.figures.recent_handle_minutes(NOW, window_days=7) == (25.5, 3)
    assert store.figures.recent_handle_minutes(NOW, window_days=1) == (46.5, 1)


def test_recent_handle_minutes_without_sample(store: CaseStore) -> None:
    store.lifecycle.open_case(new_case(), NOW)

    assert store.figures.recent_handle_minutes(NOW, window_days=7) == (None, 0)


# --- moving a case through the queue --------------------------------------------------------


def test_exactly_one_of_ten_racing_agents_claims_a_case(db_url: str) -> None:
    stores = [CaseStore.from_url(db_url) for _ in range(10)]
    try:
        case = stores[0].lifecycle.open_case(new_case(), NOW)
        claimed_at = NOW + timedelta(minutes=3)

        won = run_together(10, lambda i: stores[i].lifecycle.claim(case.id, f"agent-{i}", claimed_at))

        assert sorted(won) == [False] * 9 + [True]
        winner = f"agent-{won.index(True)}"
        stored = stores[0].lookup.get(case.id)
        assert stored is not None
        assert (stored.status, stored.claimed_by, stored.claimed_at, stored.updated_at) == (
            "claimed",
            winner,
            claimed_at,
            claimed_at,
        )
    finally:
        for case_store in stores:
            case_store.dispose()


def test_claim_only_takes_waiting_cases(store: CaseStore) -> None:
    case = store.lifecycle.open_case(new_case(), NOW)

    assert store.lifecycle.claim(case.id, "bea", NOW) is True
    assert store.lifecycle.claim(case.id, "carl", NOW) is False
    assert store.lifecycle.claim(999, "carl", NOW) is False
    stored = store.lookup.get(case.id)
    assert stored is not None
    assert stored.claimed_by == "bea"


def test_record_human_reply_keeps_the_first(store: CaseStore) -> None:
    case = store.lifecycle.open_case(new_case(), NOW)
    first = NOW + timedelta(minutes=4)

    store.lifecycle.record_human_reply(case.id, first)
    store.lifecycle.record_human_reply(case.id, first + timedelta(minutes=9))

    stored = store.lookup.get(case.id)
    assert stored is not None
    assert (stored.first_human_reply_at, stored.updated_at) == (first, first)


def test_resolve_closes_an_open_case_once(store: CaseStore) -> None:
    case = store.lifecycle.open_case(new_case(), NOW)
    assert store.lifecycle.claim(case.id, "bea", NOW + timedelta(minutes=1)) is True
    done_at = NOW + timedelta(minutes=30)

    assert store.lifecycle.resolve(case.id, done_at) is True
    assert store.lifecycle.resolve(case.id, done_at + timedelta(minutes=1)) is False
    assert store.lifecycle.resolve(999, done_at) is False
    stored = store.lookup.get(case.id)
    assert stored is not None
    assert (stored.status, stored.resolved_at, stored.updated_at) == ("resolved", done_at, done_at)
    assert store.lifecycle.claim(case.id, "carl", done_at) is False


# --- agent shifts ------------------------------------------------------------------------------


def test_agents_on_shift_follows_the_latest_toggle(store: CaseStore) -> None:
    assert store.desk.agents_on_shift() == 0

    store.desk.set_agent_shift("bea", True, NOW)
    store.desk.set_agent_shift("carl", True, NOW)
    store.desk.set_agent_shift("dina", False, NOW)
    assert store.desk.agents_on_shift() == 2

    store.desk.set_agent_shift("bea", False, NOW + timedelta(hours=8))
    store.desk.set_agent_shift("carl", True, NOW + timedelta(hours=8))
    assert store.desk.agents_on_shift() == 1


# --- schema and migrations ----------------------------------------------------------------------


def test_migrations_run_once_and_reopening_is_a_no_op(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    applied: list[str] = []
    names = [step.__name__ for step in schema.MIGRATIONS]

    def recording(step: Callable[[Any], None]) -> Callable[[Any], None]:
        def run(conn: Any) -> None:
            applied.append(step.__name__)
            step(conn)

        return run

    monkeypatch.setattr(schema, "MIGRATIONS", tuple(recording(step) for step in schema.MIGRATIONS))

    first = CaseStore.from_url(db_url)
    first.lifecycle.open_case(new_case(), NOW)
    first.dispose()
    second = CaseStore.from_url(db_url)

    assert names[:2] == ["_v1_initial_tables", "_v2_agent_desk"]
    assert applied == names
    assert [case.handoff_key for case in second.lookup.list_cases()] == ["telegram:100200:1"]
    second.dispose()
    engine = create_engine(db_url, future=True)
    with engine.connect() as conn:
        assert conn.execute(select(schema.schema_version.c.version)).scalars().all() == [len(names)]
    engine.dispose()


def test_schema_newer_than_the_code_is_refused(db_url: str) -> None:
    CaseStore.from_url(db_url).dispose()
    engine = create_engine(db_url, future=True)
    with engine.begin() as conn:
        conn.execute(update(schema.schema_version).values(version=7))
    engine.dispose()

    with pytest.raises(schema.SchemaTooNewError, match="schema version 7"):
        CaseStore.from_url(db_url)


def test_processes_starting_at_once_all_open_a_fresh_database(db_url: str) -> None:
    opener = (
        "import sys; from bot.cases import CaseStore; "
        "s = CaseStore.from_url(sys.argv[1]); print(s.desk.agents_on_shift()); s.dispose()"
    )
    processes = [
        subprocess.Popen(
            [sys.executable, "-W", "error", "-c", opener, db_url],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(6)
    ]
    outcomes = [(p.wait(timeout=60), p.stdout.read(), p.stderr.read()) for p in processes]  # type: ignore[union-attr]
    for process in processes:
        process.stdout.close()  # type: ignore[union-attr]
        process.stderr.close()  # type: ignore[union-attr]

    assert outcomes == [(0, "0\n", "")] * 6


def test_from_url_without_url_uses_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db_file = tmp_path / "not" / "yet" / "cases.db"
    monkeypatch.setenv("FIRSTREPLY_CASE_DB", f"sqlite:///{db_file}")

    case_store = CaseStore.from_url()
    case_store.lifecycle.open_case(new_case(), NOW)
    case_store.dispose()

    reopened = CaseStore.from_url(f"sqlite:///{db_file}")
    assert [case.id for case in reopened.lookup.list_cases()] == [1]
    reopened.dispose()


def test_default_database_is_var_cases_db_under_the_repo_root() -> None:
    assert default_url() == f"sqlite:///{REPO_ROOT / 'var' / 'cases.db'}"


def test_unsupported_database_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="not 'mysql'"):
        CaseStore.from_url("mysql://user:secret@localhost/cases")

