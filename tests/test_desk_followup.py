"""The follow-up actions, run with real rasa_sdk Trackers and dispatchers and a real case store."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Dict, List, Optional

import pytest
from rasa_sdk import Tracker
from rasa_sdk.events import ConversationPaused, FollowupAction, SlotSet
from rasa_sdk.executor import CollectingDispatcher

from actions.followup import (
    ActionFollowup,
    ActionFollowupRating,
    ActionFollowupSolved,
    ActionFollowupUnsolved,
    rating_from,
)
from bot.cases import Case, NewCase, TranscriptLine
from bot.constants import ACTION_FALLBACK
from bot.desk import messages
from tests.conftest import OPEN_NOW

SENDER = "4242"


def tracker(text: str, intent: str, slots: Optional[Dict[str, Any]] = None, entities: Optional[List[Dict[str, Any]]] = None,
            channel: str = "telegram", sender: str = SENDER) -> Tracker:  # fmt: skip
    parse = {"text": text, "intent": {"name": intent, "confidence": 1.0}, "entities": entities or []}
    events = [{"event": "user", "text": text, "timestamp": OPEN_NOW.timestamp(), "parse_data": parse,
               "metadata": {}, "input_channel": channel}]  # fmt: skip
    return Tracker(sender, slots or {}, {**parse, "metadata": {}}, events, False, None, {}, "action_listen")


def resolved_case(services: Any, sender: str = SENDER, key: str = "k1", asked: bool = False) -> Case:
    store = services.store
    case = store.lifecycle.open_case(
        NewCase(
            channel="telegram", sender_id=sender, customer_name="Maria", case_type="order_status", intent_confidence=0.9,
            answers={}, summary="Parcel late.", transcript=(TranscriptLine("customer", "late", OPEN_NOW),), language="en",
            priority="normal", complaint_score=0.0, promised_by=OPEN_NOW + timedelta(minutes=20),
            promise_wording="within about 20 minutes", handoff_key=key, metadata={"route": "#support-queue"},
        ),  # fmt: skip
        OPEN_NOW,
    )
    store.lifecycle.claim(case.id, "U0AGENT0", OPEN_NOW)
    store.lifecycle.resolve(case.id, OPEN_NOW, by="U0AGENT0")
    if asked:
        store.lifecycle.mark_followup_asked(case.id, OPEN_NOW)
    found = store.lookup.get(case.id)
    assert found is not None
    return found


def run(action: Any, services: Any, domain: Dict[str, Any], tracked: Tracker) -> tuple[list[Any], CollectingDispatcher]:
    dispatcher = CollectingDispatcher()
    return action(services).run(dispatcher, tracked, domain), dispatcher


def test_the_trigger_asks_once_per_resolution(services: Any, domain: Dict[str, Any]) -> None:
    case = resolved_case(services)
    trigger = tracker(f"EXTERNAL: {messages.INTENT_CASE_RESOLVED}", messages.INTENT_CASE_RESOLVED, {"case_id": str(case.id)})

    first, dispatcher = run(ActionFollowup, services, domain, trigger)
    again, _ = run(ActionFollowup, services, domain, trigger)

    assert first == [SlotSet("case_id", str(case.id)), SlotSet("followup_pending", True)]
    assert dispatcher.messages == []  # the question is the rule's next step (utter_followup_ask)
    assert again == [SlotSet("followup_pending", False)]
    stored = services.store.lookup.get(case.id)
    assert stored.followup_asked_at == OPEN_NOW


def test_the_trigger_finds_the_case_when_a_new_session_cleared_the_slot(services: Any, domain: Dict[str, Any]) -> None:
    older = resolved_case(services, key="k0", asked=True)
    case = resolved_case(services, key="k1")
    trigger = tracker(f"EXTERNAL: {messages.INTENT_CASE_RESOLVED}", messages.INTENT_CASE_RESOLVED, {"case_id": None})

    events, _ = run(ActionFollowup, services, domain, trigger)

    assert events == [SlotSet("case_id", str(case.id)), SlotSet("followup_pending", True)]
    assert older.id != case.id


@pytest.mark.parametrize(
    ("slots", "sender", "channel"),
    [
        ({"case_id": "1"}, "someone-else", "telegram"),  # another customer's case id in the slot
        ({"case_id": "1"}, SENDER, "rest"),  # the same id on another channel
    ],
)
def test_a_case_of_another_conversation_is_never_touched(
    services: Any, domain: Dict[str, Any], slots: Dict[str, Any], sender: str, channel: str
) -> None:
    case = resolved_case(services)
    trigger = tracker(f"EXTERNAL: {messages.INTENT_CASE_RESOLVED}", messages.INTENT_CASE_RESOLVED, slots, channel=channel, sender=sender)

    assert run(ActionFollowup, services, domain, trigger)[0] == [SlotSet("followup_pending", False)]
    assert services.store.lookup.get(case.id).followup_asked_at is None


def test_a_customer_message_taken_for_the_trigger_goes_to_the_fallback(services: Any, domain: Dict[str, Any]) -> None:
    resolved_case(services, asked=True)

    events, _ = run(ActionFollowup, services, domain, tracker("case resolved?", messages.INTENT_CASE_RESOLVED))

    assert events == [SlotSet("followup_pending", False), FollowupAction(ACTION_FALLBACK)]


def test_solved_and_rated_are_stored_with_notes_for_the_thread(services: Any, domain: Dict[str, Any]) -> None:
    case = resolved_case(services, asked=True)

    solved, _ = run(ActionFollowupSolved, services, domain, tracker("/affirm", "affirm", {"case_id": str(case.id)}))
    rated, _ = run(
        ActionFollowupRating, services, domain,
        tracker('/rate{"rating": "4"}', "rate", {"case_id": str(case.id)}, [{"entity": "rating", "value": "4"}]),
    )  # fmt: skip
    again, _ = run(ActionFollowupRating, services, domain, tracker("5 stars", "rate", {"case_id": str(case.id)}))

    assert (solved, rated, again) == ([SlotSet("followup_pending", False)], [], [FollowupAction(ACTION_FALLBACK)])
    stored = services.store.lookup.get(case.id)
    assert (stored.solved, stored.rating, stored.status) == (True, 4, "resolved")
    notes = [(item.key, item.kind, dict(item.payload)) for item in services.store.outbox.items()]
    assert notes == [
        (f"followup:{case.id}:0:solved", messages.KIND_THREAD, {"notice": "solved"}),
        (f"followup:{case.id}:0:rated", messages.KIND_THREAD, {"notice": "rated", "rating": 4}),
    ]


def test_not_solved_reopens_the_case_and_pauses_the_bot(services: Any, domain: Dict[str, Any]) -> None:
    case = resolved_case(services, asked=True)

    events, dispatcher = run(ActionFollowupUnsolved, services, domain, tracker("/deny", "deny", {"case_id": str(case.id)}))

    assert events == [SlotSet("followup_pending", False), ConversationPaused()]
    assert dispatcher.messages == []
    stored = services.store.lookup.get(case.id)
    assert (stored.status, stored.solved, stored.reopened_count, stored.claimed_by) == ("waiting", False, 1, None)
    [note] = services.store.outbox.items()
    assert (note.key, dict(note.payload)) == (f"followup:{case.id}:0:reopened", {"notice": "reopened", "broadcast": True})


def test_not_solved_without_a_resolved_case_does_not_pause(services: Any, domain: Dict[str, Any]) -> None:
    events, _ = run(ActionFollowupUnsolved, services, domain, tracker("/deny", "deny", {}))

    assert events == [SlotSet("followup_pending", False)]


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ({"text": "/rate", "entities": [{"entity": "rating", "value": "5"}]}, 5),
        ({"text": "I'd give it a 3", "entities": []}, 3),
        ({"text": "4/5", "entities": []}, 4),
        ({"text": "10 out of 10", "entities": []}, None),
        ({"text": "2.5 stars", "entities": []}, None),
        ({"text": "great", "entities": [{"entity": "rating", "value": "12"}]}, None),
    ],
)
def test_the_rating_is_read_from_the_entity_or_the_text(message: Dict[str, Any], expected: Optional[int]) -> None:
    assert rating_from(message) == expected


def test_the_follow_up_responses_exist(domain: Dict[str, Any]) -> None:
    responses = domain["responses"]
    ask = responses["utter_followup_ask"][0]
    assert "{case_id}" in ask["text"] and [b["payload"] for b in ask["buttons"]] == ["/affirm", "/deny"]
    rate = responses["utter_followup_rate"][0]
    assert [b["payload"] for b in rate["buttons"]] == [f'/rate{{{{"rating": "{n}"}}}}' for n in range(1, 6)]
    assert "{case_id}" in responses["utter_followup_reopened"][0]["text"]
