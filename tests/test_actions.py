"""The custom actions, run with real rasa_sdk Trackers and dispatchers and the real domain."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from typing import Any, Dict, List, Optional, Sequence

import pytest
from rasa_sdk import Tracker
from rasa_sdk.events import ConversationPaused, SlotSet
from rasa_sdk.executor import CollectingDispatcher

from actions.acknowledge import ActionAcknowledge
from actions.clarify import ActionAddDetail, ActionDidYouMean, ActionFallback
from actions.forms import FORM_VALIDATIONS, UNVERIFIED
from actions.handoff import ActionHandoff, ActionSummarizeCase, ActionTellResponseTime
from bot.constants import CASE_TYPES, STATUS_WAITING
from tests.conftest import CLOSED_NOW, OPEN_NOW

T0 = datetime(2026, 11, 23, 9, 58, tzinfo=timezone.utc).timestamp()


def user(
    text: str,
    intent: str,
    confidence: float = 0.95,
    at: float = T0,
    metadata: Optional[Dict[str, Any]] = None,
    entities: Sequence[Dict[str, Any]] = (),
    complaint: Optional[Dict[str, Any]] = None,
    ranking: Optional[List[Dict[str, Any]]] = None,
) -> Dict[str, Any]:
    """Return a ``user`` event shaped as Rasa sends it to the action server."""
    parse: Dict[str, Any] = {
        "text": text,
        "intent": {"name": intent, "confidence": confidence},
        "entities": list(entities),
        "intent_ranking": ranking or [{"name": intent, "confidence": confidence}],
    }
    if complaint is not None:
        parse["complaint"] = complaint
    return {
        "event": "user",
        "text": text,
        "timestamp": at,
        "parse_data": parse,
        "metadata": metadata or {},
        "input_channel": "rest",
    }


def bot(text: str, at: float = T0 + 1, utter_action: Optional[str] = None) -> Dict[str, Any]:
    """Return a ``bot`` event."""
    metadata = {"utter_action": utter_action} if utter_action else {}
    return {"event": "bot", "text": text, "timestamp": at, "metadata": metadata}


def action(name: str, at: float = T0 + 1) -> Dict[str, Any]:
    """Return an ``action`` event."""
    return {"event": "action", "name": name, "timestamp": at}


def tracker(events: List[Dict[str, Any]], slots: Optional[Dict[str, Any]] = None, sender: str = "cust-1") -> Tracker:
    """Return a Tracker whose latest message is the last ``user`` event."""
    latest = next(event for event in reversed(events) if event["event"] == "user")
    latest_message = {**latest["parse_data"], "metadata": latest["metadata"]}
    return Tracker(sender, slots or {}, latest_message, events, False, None, {}, "action_listen")


def sent(dispatcher: CollectingDispatcher) -> List[Optional[str]]:
    """Return the response names the action sent, in order."""
    return [message.get("response") for message in dispatcher.messages]


# --- greeting and acknowledgement ----------------------------------------------------


def test_first_message_greets_by_first_name_and_acknowledges_the_request(services: Any, domain: Dict) -> None:
    dispatcher = CollectingDispatcher()
    events = [
        {"event": "session_started", "timestamp": T0 - 1},
        action("action_listen"),
        user("where is my parcel", "order_status", metadata={"customer_name": "Maria Keller"}),
    ]
    result = ActionAcknowledge(services).run(dispatcher, tracker(events), domain)

    assert sent(dispatcher) == ["utter_greeting_named", "utter_ack_order_status"]
    greeting = dispatcher.messages[0]
    assert (greeting["customer_name"], greeting["assistant_name"]) == ("Maria", "Northwind's assistant")
    assert result == [SlotSet("customer_name", "Maria Keller"), SlotSet("case_type", "order_status")]


def test_a_plain_hi_without_a_name_gets_a_greeting_and_an_offer_to_help(services: Any, domain: Dict) -> None:
    dispatcher = CollectingDispatcher()
    result = ActionAcknowledge(services).run(dispatcher, tracker([user("hi", "greet")]), domain)

    assert sent(dispatcher) == ["utter_greeting", "utter_ack_greet"]
    assert result == []


def test_later_messages_are_not_greeted_again(services: Any, domain: Dict) -> None:
    dispatcher = CollectingDispatcher()
    events = [user("hi", "greet"), bot("Hi there!"), user("i need an invoice for may", "billing", at=T0 + 5)]
    ActionAcknowledge(services).run(dispatcher, tracker(events), domain)

    assert sent(dispatcher) == ["utter_ack_billing"]


def test_a_new_session_is_greeted_again(services: Any, domain: Dict) -> None:
    dispatcher = CollectingDispatcher()
    events = [
        user("hi", "greet"),
        bot("Hi there!"),
        {"event": "session_started", "timestamp": T0 + 4000},
        user("hello again", "greet", at=T0 + 4001),
    ]
    ActionAcknowledge(services).run(dispatcher, tracker(events), domain)

    assert sent(dispatcher) == ["utter_greeting", "utter_ack_greet"]


def test_a_message_not_understood_as_written_is_told_a_person_will_read_it(services: Any, domain: Dict) -> None:
    message = user("hallo, mijn bestelling is nog steeds niet aangekomen", "nlu_fallback", 0.0)
    message["parse_data"]["language_detection"] = {
        "code": "de", "understood": False, "detected": "nl", "reason": "not switched on"
    }
    dispatcher = CollectingDispatcher()
    ActionAcknowledge(services).run(dispatcher, tracker([message], {"language": "de"}), domain)

    assert sent(dispatcher) == ["utter_greeting", "utter_language_unclear"]


def test_a_message_in_a_switched_on_language_is_acknowledged(services: Any, domain: Dict) -> None:
    message = user("hola, mi pedido no ha llegado todavía", "order_status", 0.8)
    message["parse_data"]["language_detection"] = {"code": "es", "understood": True, "detected": "es", "reason": "detected"}
    dispatcher = CollectingDispatcher()
    events = ActionAcknowledge(services).run(dispatcher, tracker([message], {"language": "es"}), domain)

    # "no ha llegado todavía" reads as let down: sorry, after the acknowledgement.
    assert sent(dispatcher) == ["utter_greeting", "utter_ack_order_status", "utter_ack_upset"]
    assert SlotSet("case_type", "order_status") in events


def test_an_upset_customer_hears_sorry_once(services: Any, domain: Dict) -> None:
    upset = {"is_complaint": True, "score": 0.8, "hostility": 0.0}
    first = CollectingDispatcher()
    events = [user("STILL no parcel after 3 weeks, unacceptable", "order_status", complaint=upset)]
    ActionAcknowledge(services).run(first, tracker(events), domain)
    assert sent(first) == ["utter_greeting", "utter_ack_order_status", "utter_ack_upset"]

    again = CollectingDispatcher()
    events += [
        bot("I'm sorry this happened", utter_action="utter_ack_upset"),
        user("and i was charged twice, ridiculous", "billing", complaint=upset, at=T0 + 9),
    ]
    ActionAcknowledge(services).run(again, tracker(events), domain)
    assert sent(again) == ["utter_ack_billing"]


def test_an_unclear_message_after_the_first_is_not_thanked_again(services: Any, domain: Dict) -> None:
    dispatcher = CollectingDispatcher()
    events = [user("hi", "greet"), bot("Hi there!"), user("qwerty", "nlu_fallback", 0.2, at=T0 + 5)]
    ActionAcknowledge(services).run(dispatcher, tracker(events), domain)

    assert sent(dispatcher) == []


def test_a_new_case_after_a_handed_off_one_starts_with_fresh_answers(services: Any, domain: Dict) -> None:
    dispatcher = CollectingDispatcher()
    slots = {"case_id": "7", "order_number": "AC-1111111", "delivery_problem": "late", "case_type": "order_status"}
    entity = {"entity": "order_number", "value": "48213907"}
    events = [user("hi", "greet"), bot("Hi"), user("change order 48213907", "change_order", entities=[entity])]
    result = ActionAcknowledge(services).run(dispatcher, tracker(events, {**slots, "order_number": "48213907"}), domain)

    assert result == [
        SlotSet("case_type", "change_order"),
        SlotSet("case_id", None),
        SlotSet("case_additions", None),
        SlotSet("delivery_problem", None),
    ]


# --- validation of the answers -------------------------------------------------------


def _validator(form: str) -> Any:
    return next(cls for cls in FORM_VALIDATIONS if cls().name() == f"validate_{form}")()


def test_there_is_one_validation_action_per_form(domain: Dict) -> None:
    names = sorted(cls().name() for cls in FORM_VALIDATIONS)
    assert names == sorted(f"validate_{form}" for form in domain["forms"])
    assert len(CASE_TYPES) + 1 == len(names)


@pytest.mark.parametrize(
    ("answer", "attempts", "expected", "hint"),
    [
        ("it's #ac-2291734", 0, {"order_number": "AC-2291734", "invalid_attempts": 0}, []),
        ("48213907", 1, {"order_number": "48213907", "invalid_attempts": 0}, []),
        ("banana", 0, {"order_number": None, "invalid_attempts": 1}, ["utter_invalid_order_number"]),
        ("I don't have it", 0, {"order_number": "not given", "invalid_attempts": 0}, []),
        ("the one from tuesday", 1, {"order_number": UNVERIFIED + "the one from tuesday", "invalid_attempts": 0}, []),
    ],
)
def test_order_number_answers(
    answer: str, attempts: int, expected: Dict[str, Any], hint: List[str], domain: Dict
) -> None:
    dispatcher = CollectingDispatcher()
    validator = _validator("cancel_order_form")
    slots = {"invalid_attempts": attempts, "requested_slot": "order_number"}
    result = validator.validate_order_number(answer, dispatcher, tracker([user(answer, "nlu_fallback")], slots), domain)

    assert result == expected
    assert sent(dispatcher) == hint


@pytest.mark.parametrize(
    ("answer", "expected", "hint"),
    [
        ("it's Maria.K@Example.com", "maria.k@example.com", []),
        ("skip", "not given", []),
        ("maria at example", None, ["utter_invalid_email"]),
    ],
)
def test_email_answers(answer: str, expected: Optional[str], hint: List[str], domain: Dict) -> None:
    dispatcher = CollectingDispatcher()
    result = _validator("account_access_form").validate_account_email(
        answer, dispatcher, tracker([user(answer, "nlu_fallback")]), domain
    )

    assert result["account_email"] == expected
    assert sent(dispatcher) == hint


@pytest.mark.parametrize(
    ("answer", "expected", "hint"),
    [
        ("  it   broke after a day ", "it broke after a day", []),
        ("?", None, ["utter_answer_too_short"]),
        ("x" * 1500, "x" * 999 + "…", []),
    ],
)
def test_free_text_answers(answer: str, expected: Optional[str], hint: List[str], domain: Dict) -> None:
    dispatcher = CollectingDispatcher()
    validator = _validator("product_issue_form")
    result = validator.validate_issue_description(answer, dispatcher, tracker([user(answer, "nlu_fallback")]), domain)

    assert result == {"issue_description": expected}
    assert sent(dispatcher) == hint


def test_the_validation_action_runs_through_rasa_sdk(domain: Dict) -> None:
    """The whole run(): rasa_sdk finds validate_<slot> for the slot the customer just filled."""
    dispatcher = CollectingDispatcher()
    events = [
        user("cancel my order", "cancel_order"),
        action("cancel_order_form"),
        {"event": "slot", "name": "requested_slot", "value": "order_number", "timestamp": T0},
        action("action_listen"),
        user("banana", "nlu_fallback", at=T0 + 3),
        {"event": "slot", "name": "order_number", "value": "banana", "timestamp": T0 + 3},
    ]
    slots = {"order_number": "banana", "requested_slot": "order_number", "invalid_attempts": 0}
    validation_tracker = Tracker(
        "cust-1", slots, events[-2]["parse_data"], events, False, None, {"name": "cancel_order_form"}, "action_listen"
    )
    result = asyncio.run(_validator("cancel_order_form").run(dispatcher, validation_tracker, domain))

    assert SlotSet("order_number", None) in result
    assert SlotSet("invalid_attempts", 1) in result
    assert sent(dispatcher) == ["utter_invalid_order_number"]


# --- answers the customer already gave -------------------------------------------------


def _found(kind: str, text: str, value: str) -> Dict[str, Any]:
    """Return an entity as RegexEntityExtractor reports it."""
    start = text.index(value)
    end = start + len(value)
    return {"entity": kind, "value": value, "start": start, "end": end, "extractor": "RegexEntityExtractor"}


def _form_tracker(events: List[Dict[str, Any]], slots: Dict[str, Any], form: str) -> Tracker:
    """Return the tracker Rasa sends to a form's validation action."""
    latest = next(event for event in reversed(events) if event["event"] == "user")
    return Tracker("cust-1", slots, latest["parse_data"], events, False, None, {"name": form}, "action_listen")


def _slot(name: str, value: Any) -> Dict[str, Any]:
    return {"event": "slot", "name": name, "value": value, "timestamp": T0}


def test_the_first_message_answers_every_question_it_already_answers(domain: Dict) -> None:
    """At activation nothing is asked yet: what the message says fills the form, validated."""
    text = "i want to return the jacket i bought, it's the wrong size. order AC-2291734"
    entities = [_found("order_number", text, "AC-2291734"), _found("product", text, "jacket")]
    events = [
        user(text, "refund_return", entities=entities),
        action("action_acknowledge"),
        {"event": "active_loop", "name": "refund_return_form", "timestamp": T0},
        _slot("requested_slot", None),
        action("refund_return_form"),
    ]
    dispatcher = CollectingDispatcher()
    validation_tracker = _form_tracker(events, {}, "refund_return_form")
    result = asyncio.run(_validator("refund_return_form").run(dispatcher, validation_tracker, domain))

    assert result == [
        SlotSet("order_number", "AC-2291734"),
        SlotSet("return_request", "Return it for a refund"),
        SlotSet("return_reason", "jacket — wrong size"),
        SlotSet("invalid_attempts", 0),
    ]
    assert sent(dispatcher) == []


def test_a_later_answer_also_fills_the_questions_not_asked_yet(domain: Dict) -> None:
    text = "AC-2291734, the jeans are too small so i'd like to swap them for a bigger size"
    entities = [_found("order_number", text, "AC-2291734"), _found("product", text, "jeans")]
    events = [
        user("I need help with a return", "refund_return"),
        action("refund_return_form"),
        _slot("requested_slot", "order_number"),
        action("action_listen"),
        user(text, "nlu_fallback", at=T0 + 3, entities=entities),
        _slot("order_number", text),
        action("refund_return_form"),
        _slot("order_number", text),
    ]
    slots = {"order_number": text, "requested_slot": "order_number", "invalid_attempts": 0}
    validation_tracker = _form_tracker(events, slots, "refund_return_form")
    result = asyncio.run(_validator("refund_return_form").run(CollectingDispatcher(), validation_tracker, domain))

    assert result == [
        SlotSet("order_number", "AC-2291734"),
        SlotSet("return_request", "Exchange it"),
        SlotSet("return_reason", "the jeans are too small"),
        SlotSet("invalid_attempts", 0),
    ]


def test_asking_for_a_person_is_never_read_as_an_answer(domain: Dict) -> None:
    """The form must give way to the hand-off rule, so nothing may be filled from it."""
    events = [
        user("there's a problem with a payment", "billing"),
        action("billing_form"),
        _slot("requested_slot", "billing_problem"),
        action("action_listen"),
        user("i was charged twice, just get me a human", "request_human", at=T0 + 3),
        action("billing_form"),
    ]
    slots = {"requested_slot": "billing_problem"}
    result = asyncio.run(
        _validator("billing_form").run(CollectingDispatcher(), _form_tracker(events, slots, "billing_form"), domain)
    )

    assert result == []


# The next tests each replay a short conversation; their event lists look alike because every
# form conversation has the same steps, only the messages and slots differ.
def test_an_answer_the_classifier_reads_as_a_request_for_a_person_still_answers(domain: Dict) -> None:
    """The order number was asked and given: the form goes on, so the rest of the reply counts too."""
    text = "AC-2291734 and it's too small"
    events = [
        user("i want to return my coat", "refund_return"),
        action("refund_return_form"),
        _slot("requested_slot", "order_number"),
        action("action_listen"),
        user(text, "request_human", at=T0 + 3, entities=[_found("order_number", text, "AC-2291734")]),
        _slot("order_number", "AC-2291734"),
        action("refund_return_form"),
        _slot("order_number", "AC-2291734"),
    ]
    slots = {
        "order_number": "AC-2291734", "return_request": "Return it for a refund", "requested_slot": "order_number",
    }  # fmt: skip
    validation_tracker = _form_tracker(events, slots, "refund_return_form")
    result = asyncio.run(_validator("refund_return_form").run(CollectingDispatcher(), validation_tracker, domain))

    assert result == [
        SlotSet("order_number", "AC-2291734"),
        SlotSet("return_reason", "too small"),
        SlotSet("invalid_attempts", 0),
    ]


def test_a_reply_is_not_copied_into_a_second_question(domain: Dict) -> None:
    text = "the blue sofa, is it available in green?"
    events = [
        user("got a question", "product_question"),
        action("product_question_form"),
        _slot("requested_slot", "product_name"),
        action("action_listen"),
        user(text, "product_question", at=T0 + 3, entities=[_found("product", text, "sofa")]),
        _slot("product_name", text),
        action("product_question_form"),
        _slot("product_name", text),
    ]
    slots = {"product_name": text, "requested_slot": "product_name"}
    validation_tracker = _form_tracker(events, slots, "product_question_form")
    result = asyncio.run(_validator("product_question_form").run(CollectingDispatcher(), validation_tracker, domain))

    assert result == [SlotSet("product_name", text)]


def test_a_case_picked_from_did_you_mean_reads_the_unclear_message(domain: Dict) -> None:
    unclear = "the blender stopped working"
    events = [
        user(unclear, "nlu_fallback", 0.3, entities=[_found("product", unclear, "blender")]),
        action("action_acknowledge"),
        action("action_did_you_mean"),
        action("action_listen"),
        user("/product_issue", "product_issue", 1.0, at=T0 + 3),
        action("action_acknowledge"),
        {"event": "active_loop", "name": "product_issue_form", "timestamp": T0 + 3},
        _slot("requested_slot", None),
        action("product_issue_form"),
    ]
    validation_tracker = _form_tracker(events, {}, "product_issue_form")
    result = asyncio.run(_validator("product_issue_form").run(CollectingDispatcher(), validation_tracker, domain))

    assert result == [SlotSet("product_name", "blender"), SlotSet("issue_description", "stopped working")]


# --- did you mean ----------------------------------------------------------------------


def test_did_you_mean_offers_the_two_likeliest_case_types_and_something_else(domain: Dict) -> None:
    dispatcher = CollectingDispatcher()
    ranking = [
        {"name": "nlu_fallback", "confidence": 0.3},
        {"name": "greet", "confidence": 0.28},
        {"name": "billing", "confidence": 0.25},
        {"name": "refund_return", "confidence": 0.2},
        {"name": "order_status", "confidence": 0.1},
    ]
    result = ActionDidYouMean().run(dispatcher, tracker([user("my money", "nlu_fallback", 0.3, ranking=ranking)]), domain)

    assert sent(dispatcher) == ["utter_did_you_mean"]
    assert dispatcher.messages[0]["buttons"] == [
        {"title": "A payment, charge or invoice", "payload": "/billing"},
        {"title": "A return, exchange or refund", "payload": "/refund_return"},
        {"title": "Something else", "payload": "/something_else"},
    ]
    assert result == [SlotSet("unclear_twice", False)]


def test_still_unclear_after_describing_it_is_passed_on_as_written(domain: Dict) -> None:
    dispatcher = CollectingDispatcher()
    events = [
        user("blorp", "nlu_fallback", 0.2),
        action("action_did_you_mean"),
        action("action_listen"),
        user("/something_else", "something_else", 1.0, at=T0 + 2),
        action("utter_ask_describe"),
        action("action_listen"),
        user("zzz qqq", "nlu_fallback", 0.2, at=T0 + 4),
        action("action_acknowledge", at=T0 + 4),
    ]
    result = ActionDidYouMean().run(dispatcher, tracker(events), domain)

    assert sent(dispatcher) == ["utter_unclear_pass_on"]
    assert result == [SlotSet("case_type", "general"), SlotSet("unclear_twice", True)]


# --- summary, correction and added detail ------------------------------------------------


def _order_conversation() -> List[Dict[str, Any]]:
    return [
        user("where is my parcel?? 2 weeks and still nothing", "order_status", 0.97, metadata={"first_name": "Maria"}),
        bot("Hi Maria!"),
        user("AC-2291734", "nlu_fallback", 0.3, at=T0 + 10),
        user("It's late", "goodbye", 0.4, at=T0 + 20),
    ]


ORDER_SLOTS = {"case_type": "order_status", "order_number": "AC-2291734", "delivery_problem": "It's late"}


def test_the_summary_sums_the_case_up_in_one_message(services: Any, domain: Dict) -> None:
    dispatcher = CollectingDispatcher()
    result = ActionSummarizeCase(services).run(dispatcher, tracker(_order_conversation(), ORDER_SLOTS), domain)

    assert sent(dispatcher) == ["utter_summary"]
    assert dispatcher.messages[0]["summary"] == (
        "Where my order is. Order number: AC-2291734; delivery problem: It's late. "
        "In your words: “where is my parcel?? 2 weeks and still nothing”."
    )
    assert result == []


def test_a_correction_is_added_to_the_summary(services: Any, domain: Dict) -> None:
    dispatcher = CollectingDispatcher()
    slots = {**ORDER_SLOTS, "case_correction": "it's two parcels", "case_additions": ["the box was open"]}
    result = ActionSummarizeCase(services).run(dispatcher, tracker(_order_conversation(), slots), domain)

    assert dispatcher.messages[0]["summary"].endswith(
        "You added: “the box was open”. You added: “it's two parcels”."
    )
    assert result == [
        SlotSet("case_additions", ["the box was open", "it's two parcels"]),
        SlotSet("case_correction", None),
    ]


def test_detail_written_at_the_summary_is_added(domain: Dict) -> None:
    dispatcher = CollectingDispatcher()
    events = [user("human please", "request_human"), user("it's about my invoice from may", "nlu_fallback", 0.2)]
    result = ActionAddDetail().run(dispatcher, tracker(events, {"case_additions": ["first"]}), domain)

    assert result == [SlotSet("case_additions", ["first", "it's about my invoice from may"])]
    assert sent(dispatcher) == ["utter_detail_added"]


# --- hand-off -----------------------------------------------------------------------------


def test_handoff_opens_the_case_with_everything_the_agent_needs(services: Any, domain: Dict) -> None:
    dispatcher = CollectingDispatcher()
    events = _order_conversation() + [bot("Here is what I will pass on: ..."), user("yes", "affirm", at=T0 + 30)]
    result = ActionHandoff(services).run(dispatcher, tracker(events, ORDER_SLOTS), domain)

    cases = services.store.lookup.list_cases()
    assert len(cases) == 1
    case = cases[0]
    assert result == [SlotSet("case_id", str(case.id)), ConversationPaused()]
    assert (case.channel, case.sender_id, case.customer_name) == ("rest", "cust-1", "Maria")
    assert (case.case_type, case.intent_confidence, case.status) == ("order_status", 0.97, STATUS_WAITING)
    assert case.answers == {"order_number": "AC-2291734", "delivery_problem": "It's late"}
    assert case.summary.startswith("Where my order is. Order number: AC-2291734")
    assert [(line.who, line.text) for line in case.transcript] == [
        ("customer", "where is my parcel?? 2 weeks and still nothing"),
        ("bot", "Hi Maria!"),
        ("customer", "AC-2291734"),
        ("customer", "It's late"),
        ("bot", "Here is what I will pass on: ..."),
        ("customer", "yes"),
    ]
    assert case.language == "en"
    assert case.priority == "normal"
    # Open, empty queue, two agents by default: the minimum promise of 15 minutes.
    assert case.promised_by == datetime(2026, 11, 23, 10, 15, tzinfo=timezone.utc)
    assert case.promise_wording == "within about 15 minutes"
    assert case.created_at == datetime(2026, 11, 23, 10, 0, tzinfo=timezone.utc)
    # The queue it opened into, for the estimate to judge its wait by later: no agent
    # reported on shift (0), and the expected wait of an empty queue, 0.5 x 12 / 2 = 3.
    assert case.metadata == {
        "route": "#support-queue",
        "opening_queue": {"agents_on_shift": 0, "agents_busy": 0, "expected_minutes": 3.0},
    }
    assert sent(dispatcher) == ["utter_handoff_named"]
    assert (dispatcher.messages[0]["case_id"], dispatcher.messages[0]["promise"]) == (case.id, "within about 15 minutes")


def test_a_case_that_began_as_a_hostile_public_post_records_it_and_rises_in_priority(services: Any, domain: Dict) -> None:
    post = {"platform": "x", "id": "4001", "text": "@NorthwindHelp where is my parcel you idiots",
            "url": "https://x.com/maria_k/status/4001", "author": "maria_k", "hostile": True}  # fmt: skip
    events = [
        user("where is my parcel you idiots", "order_status", 0.97,
             metadata={"customer_name": "Maria", "username": "maria_k", "public_post": post}),
        *_order_conversation()[1:],
        user("yes", "affirm", at=T0 + 30),
    ]
    ActionHandoff(services).run(CollectingDispatcher(), tracker(events, ORDER_SLOTS), domain)
    plain = ActionHandoff(services).run(
        CollectingDispatcher(), tracker(_order_conversation() + [user("yes", "affirm", at=T0 + 30)], ORDER_SLOTS,
                                        sender="cust-2"), domain,
    )  # fmt: skip

    public, private = services.store.lookup.list_cases()
    assert {key: value for key, value in public.metadata.items() if key != "opening_queue"} == {
        "route": "#support-leads", "customer_handle": "@maria_k", "origin": "public post", "public_post": post,
    }  # fmt: skip
    assert "opening_queue" in public.metadata  # the staffing when it opened, as every case records
    assert public.transcript[0].text == "[public post] where is my parcel you idiots"
    # The same case said privately and calmly is normal; said in public with hostility, urgent (routed to the leads).
    assert (private.priority, public.priority) == ("normal", "urgent")
    assert plain[-1] == ConversationPaused()


def test_handoff_of_the_same_message_twice_opens_one_case(services: Any, domain: Dict) -> None:
    events = _order_conversation() + [user("yes", "affirm", at=T0 + 30)]
    first = ActionHandoff(services).run(CollectingDispatcher(), tracker(events, ORDER_SLOTS), domain)
    second = ActionHandoff(services).run(CollectingDispatcher(), tracker(events, ORDER_SLOTS), domain)

    assert first == second
    assert len(services.store.lookup.list_cases()) == 1


def test_a_message_handled_again_after_a_crash_opens_no_second_case(services: Any, domain: Dict) -> None:
    # Rasa handles the message again when the first attempt was cut off before the conversation
    # was saved: the same channel message id, a new timestamp.
    confirm = {**user("yes", "affirm", at=T0 + 30), "message_id": "telegram-77"}
    again = {**user("yes", "affirm", at=T0 + 95), "message_id": "telegram-77"}
    ActionHandoff(services).run(CollectingDispatcher(), tracker(_order_conversation() + [confirm], ORDER_SLOTS), domain)
    ActionHandoff(services).run(CollectingDispatcher(), tracker(_order_conversation() + [again], ORDER_SLOTS), domain)

    assert len(services.store.lookup.list_cases()) == 1


def test_an_angry_repeat_customer_is_urgent_and_sees_their_history(services: Any, domain: Dict) -> None:
    events = _order_conversation() + [user("yes", "affirm", at=T0 + 30)]
    ActionHandoff(services).run(CollectingDispatcher(), tracker(events, ORDER_SLOTS), domain)

    hostile = {"is_complaint": True, "score": 0.95, "hostility": 0.6}
    angry = [
        user("WHERE IS MY STUFF you useless clowns", "complaint", 0.9, at=T0 + 500, complaint=hostile),
        user("nobody answers", "nlu_fallback", at=T0 + 510),
        user("yes", "affirm", at=T0 + 520),
    ]
    ActionHandoff(services).run(
        CollectingDispatcher(), tracker(angry, {"case_type": "complaint", "complaint_detail": "nobody answers"}), domain
    )

    first, second = services.store.lookup.list_cases()
    assert second.priority == "urgent"
    assert second.complaint_score == 0.95
    assert second.previous_cases == (first.id,)
    assert second.metadata["route"] == "#support-leads"


def test_out_of_hours_the_promise_says_when_we_open(services: Any, domain: Dict) -> None:
    services.now = lambda: CLOSED_NOW
    dispatcher = CollectingDispatcher()
    events = _order_conversation() + [user("yes", "affirm", at=T0 + 30)]
    ActionHandoff(services).run(dispatcher, tracker(events, ORDER_SLOTS), domain)

    case = services.store.lookup.list_cases()[0]
    assert case.promise_wording == "by 8:15 tomorrow, Monday — we are closed now"
    assert case.promised_by == datetime(2026, 11, 23, 8, 15, tzinfo=timezone.utc)
    assert dispatcher.messages[0]["promise"] == "by 8:15 tomorrow, Monday — we are closed now"


def test_the_promise_grows_with_the_queue(services: Any, domain: Dict) -> None:
    for index in range(6):
        events = [user(f"where is order {index}", "order_status", at=T0 + index), user("yes", "affirm", at=T0 + index)]
        ActionHandoff(services).run(CollectingDispatcher(), tracker(events, {"case_type": "order_status"}, f"c{index}"), domain)

    wordings = [case.promise_wording for case in services.store.lookup.list_cases()]
    # Prior handle time 12 min, 2 agents, safety factor 1.5: (ahead + 0.5) * 6 * 1.5 minutes,
    # at least 15, rounded up to 5 minutes: 4.5, 13.5, 22.5, 31.5, 40.5, 49.5.
    assert wordings == [
        "within about 15 minutes",
        "within about 15 minutes",
        "within about 25 minutes",
        "within about 35 minutes",
        "within about 45 minutes",
        "within about 50 minutes",
    ]


def test_asking_when_someone_will_answer_gets_the_live_estimate(services: Any, domain: Dict) -> None:
    dispatcher = CollectingDispatcher()
    ActionTellResponseTime(services).run(dispatcher, tracker([user("when will someone answer", "ask_response_time")]), domain)

    assert sent(dispatcher) == ["utter_response_time"]
    assert dispatcher.messages[0]["promise"] == "within about 15 minutes"


@pytest.mark.parametrize(
    ("text", "intent", "complaint", "ranking", "expected"),
    [
        ("thanks for nothing", "thank", {"is_complaint": True, "score": 0.6, "hostility": 0.0}, None,
         ["utter_greeting", "utter_ack_mixed_feelings"]),
        ("love how nobody ever answers", "compliment", {"is_complaint": False, "score": 0.0, "hostility": 0.0},
         [{"name": "compliment", "confidence": 0.55}, {"name": "complaint", "confidence": 0.25}],
         ["utter_greeting", "utter_ack_mixed_feelings"]),
        ("you guys are amazing", "compliment", {"is_complaint": False, "score": 0.0, "hostility": 0.0},
         [{"name": "compliment", "confidence": 0.96}, {"name": "complaint", "confidence": 0.01}],
         ["utter_greeting", "utter_ack_compliment"]),
    ],
)
def test_praise_that_reads_as_a_complaint_is_not_thanked(
    services: Any, domain: Dict, text: str, intent: str, complaint: Dict, ranking: Any, expected: List[str]
) -> None:
    dispatcher = CollectingDispatcher()
    ActionAcknowledge(services).run(dispatcher, tracker([user(text, intent, complaint=complaint, ranking=ranking)]), domain)

    assert sent(dispatcher) == expected


def test_a_customer_whose_case_is_open_is_not_greeted_again_in_a_new_session(services: Any, domain: Dict) -> None:
    events = _order_conversation() + [user("yes", "affirm", at=T0 + 30)]
    ActionHandoff(services).run(CollectingDispatcher(), tracker(events, ORDER_SLOTS), domain)
    case = services.store.lookup.list_cases()[0]

    later = events + [
        bot("Thanks, Maria! ...", at=T0 + 31),
        {"event": "session_started", "timestamp": T0 + 7200},
        user("any news??", "nlu_fallback", 0.3, at=T0 + 7201),
    ]
    for action in (ActionAcknowledge(services), ActionFallback(services)):
        dispatcher = CollectingDispatcher()
        result = action.run(dispatcher, tracker(later), domain)

        assert result == [SlotSet("case_id", str(case.id)), ConversationPaused()]
        assert sent(dispatcher) == ["utter_added_to_case"]
        assert dispatcher.messages[0]["case_id"] == case.id


def test_a_resolved_case_lets_the_bot_greet_the_customer_again(services: Any, domain: Dict) -> None:
    events = _order_conversation() + [user("yes", "affirm", at=T0 + 30)]
    ActionHandoff(services).run(CollectingDispatcher(), tracker(events, ORDER_SLOTS), domain)
    services.store.lifecycle.resolve(services.store.lookup.list_cases()[0].id, OPEN_NOW)

    dispatcher = CollectingDispatcher()
    later = events + [{"event": "session_started", "timestamp": T0 + 7200}, user("hi again", "greet", at=T0 + 7201)]
    ActionAcknowledge(services).run(dispatcher, tracker(later), domain)

    assert sent(dispatcher) == ["utter_greeting_named", "utter_ack_greet"]


def test_a_message_not_understood_is_offered_a_person_not_guessed_choices(domain: Dict) -> None:
    message = user("mi order no llega, ya van 2 weeks", "nlu_fallback", 0.0)
    message["parse_data"]["language_detection"] = {
        "code": "es", "understood": False, "detected": "nl", "reason": "unclear or mixed"
    }
    events = [message, bot("Hi there!"), bot("I couldn't read your message...", utter_action="utter_language_unclear")]
    dispatcher = CollectingDispatcher()
    result = ActionDidYouMean().run(dispatcher, tracker([message] + events[1:]), domain)

    assert sent(dispatcher) == []
    assert result == [SlotSet("unclear_twice", False)]

    fresh = CollectingDispatcher()
    ActionDidYouMean().run(fresh, tracker([message]), domain)
    assert sent(fresh) == ["utter_language_unclear"]


def test_the_action_server_does_not_load_the_nlu_or_tensorflow() -> None:
    # Every action module, in a fresh interpreter as rasa_sdk loads them: the NLU's components
    # (and with them Rasa's engine and TensorFlow, 460 MB and seconds of start-up) stay in Rasa.
    import subprocess
    import sys
    from pathlib import Path

    script = (
        "import sys, pkgutil, importlib, actions\n"
        "for module in pkgutil.iter_modules(actions.__path__): importlib.import_module('actions.' + module.name)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'tensorflow' or m.startswith(('rasa.engine', "
        "'bot.nlu.language_guard', 'bot.nlu.featurizer', 'lingua'))))\n"
    )
    loaded = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).resolve().parent.parent).stdout.strip().splitlines()[-1]  # fmt: skip
    assert loaded == "[]"
