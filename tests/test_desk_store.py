"""The case store's agent-desk parts: the version-2 migration, the outbox, cards, follow-ups, cursors."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, insert, select

from bot.cases import CaseStore, NewCase, TranscriptLine
from bot.cases import schema
from bot.cases.records import CardPlacement, OutboxMessage

UTC = timezone.utc
NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def new_case(sender: str = "4242", key: str = "telegram:4242:1", **overrides: Any) -> NewCase:
    fields: dict[str, Any] = dict(
        channel="telegram", sender_id=sender, customer_name="Maria", case_type="order_status",
        intent_confidence=0.9, answers={"order_number": "AC-2291734"}, summary="Parcel late.",
        transcript=(TranscriptLine("customer", "where is my parcel", NOW),), language="en", priority="normal",
        complaint_score=0.1, promised_by=NOW + timedelta(minutes=20), promise_wording="within about 20 minutes",
        handoff_key=key, metadata={"route": "#support-queue"},
    )  # fmt: skip
    fields.update(overrides)
    return NewCase(**fields)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[CaseStore]:
    opened = CaseStore.from_url(f"sqlite:///{tmp_path / 'cases.db'}")
    yield opened
    opened.dispose()


def message(key: str, target: str = "lane-a", case_id: int | None = None, **payload: Any) -> OutboxMessage:
    return OutboxMessage(key=key, kind="thread.post", target=target, payload=payload, case_id=case_id)


# --- migration ---------------------------------------------------------------------------


def test_a_version_1_database_is_upgraded_and_keeps_its_cases(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = schema.create_case_engine(url)
    with engine.begin() as conn:
        schema.schema_version.create(conn)
        conn.execute(insert(schema.schema_version).values(version=1))
        schema.MIGRATIONS[0](conn)
        v1_cases = schema._frozen_v1_tables()[0]
        conn.execute(
            insert(v1_cases).values(
                handoff_key="old:1", channel="rest", sender_id="ana", customer_name="Ana", case_type="billing",
                intent_confidence=0.5, answers={}, summary="Old case.", transcript=[], language="en",
                priority="high", complaint_score=0.0, promised_by=NOW, promise_wording="soon", status="waiting",
                created_at=NOW, updated_at=NOW, case_metadata={},
            )  # fmt: skip
        )
    engine.dispose()

    store = CaseStore.from_url(url)
    [old] = store.lookup.list_cases()

    assert (old.handoff_key, old.summary, old.status) == ("old:1", "Old case.", "waiting")
    assert (old.card_channel, old.card_ts, old.rating, old.solved, old.reopened_count) == (None, None, None, None, 0)
    assert store.outbox.items() == []
    assert store.desk.cursor("anything") is None
    with store._engine.connect() as conn:
        assert conn.execute(select(schema.schema_version.c.version)).scalar_one() == len(schema.MIGRATIONS) >= 2
    store.dispose()


# --- outbox ------------------------------------------------------------------------------


def test_an_idempotency_key_is_queued_once(store: CaseStore) -> None:
    assert store.outbox.enqueue([message("k1", text="hello"), message("k2")], NOW) == 2
    assert store.outbox.enqueue([message("k1", text="again"), message("k3")], NOW) == 1

    items = store.outbox.items()
    assert [(item.key, dict(item.payload)) for item in items] == [("k1", {"text": "hello"}), ("k2", {}), ("k3", {})]
    assert [(item.attempts, item.next_attempt_at, item.delivered_at) for item in items] == [(0, NOW, None)] * 3


def test_one_message_per_target_at_a_time_in_order(store: CaseStore) -> None:
    store.outbox.enqueue([message("a1", "A"), message("b1", "B"), message("a2", "A")], NOW)

    assert [item.key for item in store.outbox.ready(NOW)] == ["a1", "b1"]
    started = store.outbox.start_delivery(store.outbox.ready(NOW)[0].id, NOW)
    assert started is not None and started.attempts == 1
    # Under way: its target is busy, the other target goes on.
    assert [item.key for item in store.outbox.ready(NOW)] == ["b1"]
    assert store.outbox.start_delivery(started.id, NOW) is None

    store.outbox.finish_delivery(started.id, NOW, {"ts": "1.1"})
    assert [item.key for item in store.outbox.ready(NOW)] == ["b1", "a2"]


def test_a_failed_message_waits_for_its_retry_time_and_holds_its_target(store: CaseStore) -> None:
    store.outbox.enqueue([message("a1", "A"), message("a2", "A")], NOW)
    first = store.outbox.start_delivery(store.outbox.ready(NOW)[0].id, NOW)
    assert first is not None

    store.outbox.fail_delivery(first.id, "slack: ratelimited", NOW + timedelta(seconds=30))

    assert store.outbox.ready(NOW + timedelta(seconds=29)) == []
    [due] = store.outbox.ready(NOW + timedelta(seconds=30))
    assert (due.key, due.attempts, due.last_error) == ("a1", 1, "slack: ratelimited")


def test_a_message_given_up_on_no_longer_holds_its_target(store: CaseStore) -> None:
    store.outbox.enqueue([message("a1", "A"), message("a2", "A")], NOW)
    first = store.outbox.start_delivery(store.outbox.ready(NOW)[0].id, NOW)
    assert first is not None

    store.outbox.fail_delivery(first.id, "slack: invalid_blocks", None)

    assert [item.key for item in store.outbox.ready(NOW)] == ["a2"]
    [given_up] = [item for item in store.outbox.items() if item.key == "a1"]
    assert (given_up.delivered_at, given_up.next_attempt_at, given_up.last_error) == (None, None, "slack: invalid_blocks")


def test_a_postponed_attempt_is_not_counted(store: CaseStore) -> None:
    store.outbox.enqueue([message("a1")], NOW)
    item = store.outbox.start_delivery(store.outbox.ready(NOW)[0].id, NOW)
    assert item is not None

    store.outbox.postpone_delivery(item.id, NOW + timedelta(seconds=1), "waiting for the card")

    [again] = store.outbox.ready(NOW + timedelta(seconds=1))
    assert (again.attempts, again.last_error) == (0, "waiting for the card")


def test_an_attempt_cut_off_by_a_crash_comes_back_in_doubt(store: CaseStore) -> None:
    store.outbox.enqueue([message("a1"), message("b1", "B")], NOW)
    cut_off = store.outbox.start_delivery(store.outbox.ready(NOW)[0].id, NOW)
    assert cut_off is not None and not cut_off.in_doubt

    assert store.outbox.recover_interrupted() == 1

    ready = {item.key: item for item in store.outbox.ready(NOW)}
    assert ready["a1"].in_doubt and not ready["b1"].in_doubt
    assert ready["a1"].last_error == "interrupted: the desk stopped during delivery"
    assert store.outbox.recover_interrupted() == 0


def test_delivery_stores_the_card_and_queues_what_follows_in_one_go(store: CaseStore) -> None:
    case = store.lifecycle.open_case(new_case(), NOW)
    store.outbox.enqueue([OutboxMessage(f"card-post:{case.id}", "card.post", "slack:case:1", {}, case.id)], NOW)
    item = store.outbox.start_delivery(store.outbox.ready(NOW)[0].id, NOW)
    assert item is not None

    store.outbox.finish_delivery(
        item.id, NOW, {"ts": "171.0001"}, card=CardPlacement("C0QUEUE", "171.0001", "abc"),
        then=[message("next", case_id=case.id)], human_reply=True,
    )  # fmt: skip

    stored = store.lookup.get(case.id)
    assert stored is not None
    assert (stored.card_channel, stored.card_ts, stored.card_digest, stored.first_human_reply_at) == (
        "C0QUEUE", "171.0001", "abc", NOW,
    )  # fmt: skip
    assert store.lookup.case_by_card("C0QUEUE", "171.0001") == stored
    assert store.lookup.case_by_card("C0QUEUE", "171.0002") is None
    delivered, following = store.outbox.items()
    assert (delivered.delivered_at, dict(delivered.result or {})) == (NOW, {"ts": "171.0001"})
    assert (following.key, following.delivered_at) == ("next", None)
    assert store.lookup.cases_without_card() == []


# --- the case's life at the desk ------------------------------------------------------


def test_resolve_reopen_and_follow_up(store: CaseStore) -> None:
    case = store.lifecycle.open_case(new_case(), NOW)
    assert store.lifecycle.claim(case.id, "UAGENT1", NOW, outbox=[message("claimed", case_id=case.id)])
    assert not store.lifecycle.resolve(case.id, NOW, by="UOTHER", only_if_claimed_by="UOTHER")
    assert store.lifecycle.resolve(case.id, NOW, by="UAGENT1", only_if_claimed_by="UAGENT1", outbox=[message("resolved")])
    assert [item.key for item in store.outbox.items()] == ["claimed", "resolved"]

    assert store.lifecycle.mark_followup_asked(case.id, NOW)
    assert not store.lifecycle.mark_followup_asked(case.id, NOW)
    assert store.lifecycle.record_followup(case.id, NOW, solved=True)
    assert store.lifecycle.record_followup(case.id, NOW, rating=4)
    resolved = store.lookup.get(case.id)
    assert resolved is not None
    assert (resolved.status, resolved.resolved_by, resolved.solved, resolved.rating) == ("resolved", "UAGENT1", True, 4)
    with pytest.raises(ValueError, match="rating must be 1 to 5"):
        store.lifecycle.record_followup(case.id, NOW, rating=6)

    assert store.lifecycle.reopen(case.id, NOW + timedelta(hours=1), outbox=[message("reopened")])
    assert not store.lifecycle.reopen(case.id, NOW)
    reopened = store.lookup.get(case.id)
    assert reopened is not None
    assert (reopened.status, reopened.claimed_by, reopened.solved, reopened.reopened_count, reopened.followup_asked_at) == (
        "waiting", None, False, 1, None,
    )  # fmt: skip
    assert not store.lifecycle.record_followup(case.id, NOW, rating=3)
    assert store.lookup.open_case_for_customer("telegram", "4242") == reopened


def test_reassign_needs_the_current_owner(store: CaseStore) -> None:
    case = store.lifecycle.open_case(new_case(), NOW)
    store.lifecycle.claim(case.id, "UAGENT1", NOW)

    assert not store.lifecycle.reassign(case.id, "UAGENT2", "UAGENT3", NOW)
    assert store.lifecycle.reassign(case.id, "UAGENT1", "UAGENT2", NOW, outbox=[message("moved")])
    moved = store.lookup.get(case.id)
    assert moved is not None and moved.claimed_by == "UAGENT2"
    assert [item.key for item in store.outbox.items()] == ["moved"]


def test_open_cases_come_earliest_promise_first(store: CaseStore) -> None:
    later = store.lifecycle.open_case(new_case("1", "k1", promised_by=NOW + timedelta(hours=2)), NOW)
    sooner = store.lifecycle.open_case(new_case("2", "k2", promised_by=NOW + timedelta(minutes=5)), NOW)
    done = store.lifecycle.open_case(new_case("3", "k3", promised_by=NOW), NOW)
    store.lifecycle.resolve(done.id, NOW)

    assert [case.id for case in store.lookup.open_cases()] == [sooner.id, later.id]


def test_claims_race_with_outbox_messages_only_for_the_winner(store: CaseStore) -> None:
    case = store.lifecycle.open_case(new_case(), NOW)
    results: list[bool] = []
    lock = threading.Lock()

    def claim(agent: str) -> None:
        won = store.lifecycle.claim(case.id, agent, NOW, outbox=[message(f"claimed-by-{agent}", case_id=case.id)])
        with lock:
            results.append(won)

    threads = [threading.Thread(target=claim, args=(f"U{number}",)) for number in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(results) == [False] * 9 + [True]
    [queued] = store.outbox.items()
    stored = store.lookup.get(case.id)
    assert stored is not None and queued.key == f"claimed-by-{stored.claimed_by}"


def test_the_cursor_moves_with_what_it_read(store: CaseStore) -> None:
    assert store.desk.cursor("rasa_events") is None

    store.desk.advance_cursor("rasa_events", 7, NOW, outbox=[message("relay-in:7")])
    store.desk.advance_cursor("rasa_events", 9, NOW)

    assert store.desk.cursor("rasa_events") == 9
    assert [item.key for item in store.outbox.items()] == ["relay-in:7"]


def test_cards_follow_open_and_recently_changed_cases(store: CaseStore) -> None:
    waiting = store.lifecycle.open_case(new_case("1", "k1"), NOW)
    resolved = store.lifecycle.open_case(new_case("2", "k2"), NOW)
    no_card = store.lifecycle.open_case(new_case("3", "k3"), NOW)
    for number, case in enumerate((waiting, resolved), start=1):
        store.outbox.enqueue([OutboxMessage(f"card-post:{case.id}", "card.post", f"s{case.id}", {}, case.id)], NOW)
        item = store.outbox.start_delivery(store.outbox.items()[-1].id, NOW)
        assert item is not None
        store.outbox.finish_delivery(item.id, NOW, card=CardPlacement("C1", f"1.{number}", "d"))
    store.lifecycle.resolve(resolved.id, NOW)

    assert [case.id for case in store.lookup.cases_with_cards(NOW)] == [waiting.id, resolved.id]
    assert [case.id for case in store.lookup.cases_with_cards(NOW + timedelta(seconds=1))] == [waiting.id]
    assert [case.id for case in store.lookup.cases_without_card()] == [no_card.id]


def test_a_card_goes_before_the_thread_messages_queued_ahead_of_it(store: CaseStore) -> None:
    store.outbox.enqueue([message("reply-1", "slack:case:1"), message("reply-2", "slack:case:1")], NOW)
    store.outbox.enqueue([OutboxMessage("card-post:1", "card.post", "slack:case:1", {}, 1)], NOW)

    assert [item.key for item in store.outbox.ready(NOW)] == ["reply-1"]
    assert [item.key for item in store.outbox.ready(NOW, first_kinds=("card.post",))] == ["card-post:1"]
    card = store.outbox.start_delivery(store.outbox.ready(NOW, first_kinds=("card.post",))[0].id, NOW)
    assert card is not None
    # Under way: nothing else of its target goes meanwhile.
    assert store.outbox.ready(NOW, first_kinds=("card.post",)) == []
    store.outbox.finish_delivery(card.id, NOW)
    assert [item.key for item in store.outbox.ready(NOW, first_kinds=("card.post",))] == ["reply-1"]
