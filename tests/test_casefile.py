"""Tests for bot.casefile: what a case file says, read from the tracker's events and slots.

Events are built with Rasa's own event classes (``Event.as_dict``), as the action
server receives them.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest
from rasa.shared.core.events import ActionExecuted, BotUttered, SessionStarted, UserUttered

from bot.casefile import CaseFile, read_case_file
from bot.constants import ANSWER_SLOTS
from bot.conversation import Line
from bot.nlu.signals import read_signals

Event = dict[str, Any]

T0 = 1795428000.0  # Monday 23 November 2026, 10:00:00 UTC

# As actions.base builds them from the domain (labels from utter_label_<case type>).
CASE_LABELS = {
    "order_status": "Where my order is",
    "billing": "A payment, charge or invoice",
    "complaint": "A complaint about our service",
    "general": "A message for a person on our team",
}
CASE_QUESTIONS: dict[str, tuple[str, ...]] = {
    "order_status": ("order_number", "delivery_problem"),
    "billing": ("billing_problem", "charge_details", "account_email"),
    "complaint": ("complaint_detail", "desired_outcome"),
    "general": (),
}


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(T0 + seconds, tz=timezone.utc)


def user(
    text: str | None,
    seconds: float,
    intent: str,
    confidence: float = 0.9,
    metadata: dict[str, Any] | None = None,
    complaint: dict[str, Any] | None = None,
) -> Event:
    parse_data: dict[str, Any] = {"complaint": complaint} if complaint is not None else {}
    return UserUttered(
        text,
        {"name": intent, "confidence": confidence},
        [],
        parse_data=parse_data,  # type: ignore[arg-type]
        timestamp=T0 + seconds,
        input_channel="telegram",
        metadata=metadata or {},
    ).as_dict()


def bot(text: str, seconds: float) -> Event:
    return BotUttered(text, timestamp=T0 + seconds).as_dict()


def action(name: str, seconds: float) -> Event:
    return ActionExecuted(name, timestamp=T0 + seconds).as_dict()


def session_start(seconds: float, metadata: dict[str, Any] | None = None) -> list[Event]:
    return [
        action("action_session_start", seconds),
        SessionStarted(timestamp=T0 + seconds, metadata=metadata).as_dict(),
        action("action_listen", seconds),
    ]


def order_status_conversation() -> list[Event]:
    """An earlier session about a bill, then today's about a late parcel."""
    return [
        *session_start(0, metadata={"customer_name": "Maria Keller"}),
        user("I was charged twice!!!", 1, "billing", 0.97, complaint={"score": 0.9, "hostility": 0.3}),
        bot("Sorry about the trouble with your payment", 2),
        *session_start(90000),
        user("hi", 90001, "greet", 0.99, metadata={"language_code": "en"}),
        action("action_acknowledge", 90001),
        bot("Hi there! I'm Robin.", 90001),
        action("action_listen", 90001),
        user(
            "My parcel still hasn't arrived after 3 weeks",
            90010,
            "order_status",
            0.91234,
            complaint={"is_complaint": True, "score": 0.5, "hostility": 0.0},
        ),
        action("action_acknowledge", 90011),
        bot("Thanks for letting us know about your order", 90011),
        action("order_status_form", 90011),
        bot("What's your order number?", 90011),
        action("action_listen", 90011),
        user("AC-2291734", 90030, "order_status", 0.55, complaint={"is_complaint": False, "score": 0.0}),
        action("order_status_form", 90031),
        bot("What's happening with the delivery?", 90031),
        action("action_listen", 90031),
        user("It's late", 90040, "order_status", 0.61, complaint={"is_complaint": False, "score": 0.35}),
    ]


def test_order_status_case_file() -> None:
    slots = {
        "case_type": "order_status",
        # Slots are not in the form's order, and other answers are set too.
        "delivery_problem": "It's late",
        "order_number": "AC-2291734",
        "account_email": "maria@example.com",
        "case_additions": ["It was due on Monday"],
        "requested_slot": None,
    }

    case_file = read_case_file(order_status_conversation(), slots, CASE_LABELS, CASE_QUESTIONS)

    assert case_file == CaseFile(
        case_type="order_status",
        answers={"order_number": "AC-2291734", "delivery_problem": "It's late"},
        summary=(
            "Where my order is. Order number: AC-2291734; delivery problem: It's late."
            " In your words: “My parcel still hasn't arrived after 3 weeks”. You added: “It was due on Monday”."
        ),
        transcript=[
            Line("customer", "hi", at(90001)),
            Line("bot", "Hi there! I'm Robin.", at(90001)),
            Line("customer", "My parcel still hasn't arrived after 3 weeks", at(90010)),
            Line("bot", "Thanks for letting us know about your order", at(90011)),
            Line("bot", "What's your order number?", at(90011)),
            Line("customer", "AC-2291734", at(90030)),
            Line("bot", "What's happening with the delivery?", at(90031)),
            Line("customer", "It's late", at(90040)),
        ],
        # Not given in this session: the name from the earlier one.
        customer_name="Maria Keller",
        language="en",
        # The earlier session's 0.9 does not count.
        complaint_score=0.5,
        hostility=0.0,
        # From the latest message the classifier read as the case type, to 4 places.
        intent_confidence=0.61,
    )
    assert list(case_file.answers) == ["order_number", "delivery_problem"]


def test_answers_leave_out_unanswered_questions_and_are_text() -> None:
    events = [user("I was charged twice", 1, "billing")]
    slots = {"case_type": "billing", "billing_problem": "charged twice", "charge_details": "", "account_email": None}

    case_file = read_case_file(events, slots, CASE_LABELS, CASE_QUESTIONS)

    assert case_file.answers == {"billing_problem": "charged twice"}
    assert case_file.summary == (
        "A payment, charge or invoice. Billing problem: charged twice. In your words: “I was charged twice”."
    )


def test_answers_of_a_case_type_without_questions_follow_the_answer_slot_order() -> None:
    events = [user("my voucher code does not work", 1, "voucher")]
    slots = {"case_type": "voucher", "desired_outcome": "a new code", "order_number": "48213", "product_name": 3}

    case_file = read_case_file(events, slots, CASE_LABELS, CASE_QUESTIONS)

    assert list(case_file.answers) == [slot for slot in ANSWER_SLOTS if slot in slots]
    assert case_file.answers == {"order_number": "48213", "product_name": "3", "desired_outcome": "a new code"}
    # No label either: the case type read as words.
    assert case_file.summary.startswith("Voucher. Order number: 48213; product name: 3; desired outcome: a new code.")


@pytest.mark.parametrize("case_type", [None, ""])
def test_case_type_defaults_to_general(case_type: str | None) -> None:
    events = [user("agent please", 1, "request_human", 0.98)]

    case_file = read_case_file(
        events, {"case_type": case_type, "order_number": "48213"}, CASE_LABELS, CASE_QUESTIONS
    )

    assert (case_file.case_type, case_file.answers, case_file.intent_confidence) == ("general", {}, None)
    assert case_file.summary == "A message for a person on our team. In your words: “agent please”."


def test_first_message_is_the_one_that_raised_the_case_type() -> None:
    events = [
        user("hello", 1, "greet"),
        user("I want to complain about your driver", 2, "complaint", 0.8),
        user("he threw the parcel over the fence", 3, "complaint", 0.876549),
    ]

    case_file = read_case_file(events, {"case_type": "complaint"}, CASE_LABELS, CASE_QUESTIONS)

    assert case_file.summary == (
        "A complaint about our service. In your words: “I want to complain about your driver”."
    )
    # The latest message read as the case type, rounded to 4 places.
    assert case_file.intent_confidence == 0.8765


def test_a_button_payload_is_not_the_customers_words() -> None:
    # "Did you mean" buttons send "/order_status": the case type's intent, but no words.
    events = [
        user("where's my stuff", 1, "nlu_fallback", 0.2),
        user("/order_status", 2, "order_status", 1.0),
    ]

    case_file = read_case_file(events, {"case_type": "order_status"}, CASE_LABELS, CASE_QUESTIONS)

    assert case_file.summary == "Where my order is. In your words: “where's my stuff”."
    assert case_file.intent_confidence == 1.0


def test_no_words_at_all_leaves_the_quote_out() -> None:
    events = [
        user(None, 1, "nlu_fallback", 0.1, metadata={"photo": "AgAC"}),
        user("/request_human", 2, "request_human"),
    ]

    case_file = read_case_file(events, {}, CASE_LABELS, CASE_QUESTIONS)

    assert case_file.summary == "A message for a person on our team."
    assert case_file.transcript == [
        Line("customer", "[photo sent]", at(1)),
        Line("customer", "[pressed: request_human]", at(2)),
    ]


def test_a_case_no_message_raised_quotes_everything_the_customer_wrote() -> None:
    events = [
        user("hi", 1, "greet"),
        user("hmm not sure how to put it", 2, "nlu_fallback", 0.2),
        user("/something_else", 3, "something_else", 1.0),
        user("it's about a voucher I never got", 4, "nlu_fallback", 0.3),
    ]

    case_file = read_case_file(events, {"case_type": "general"}, CASE_LABELS, CASE_QUESTIONS)

    assert case_file.summary == (
        "A message for a person on our team. In your words: "
        "“hi / hmm not sure how to put it / it's about a voucher I never got”."
    )


def test_complaint_scores_come_from_the_nlu_when_present() -> None:
    # The NLU's score (it also weighs the intent) wins over the text's own cues.
    events = [
        user("you people are the pits", 1, "complaint", 0.8, complaint={"score": 0.72, "hostility": 0.1}),
        user("sort it out", 2, "complaint", 0.6, complaint={"score": 0.54}),
    ]

    case_file = read_case_file(events, {"case_type": "complaint"}, CASE_LABELS, CASE_QUESTIONS)

    assert (case_file.complaint_score, case_file.hostility) == (0.72, 0.1)


def test_complaint_scores_are_computed_when_the_nlu_gave_none() -> None:
    # E.g. a tracker from a model trained without the complaint component.
    angry = "WORST SERVICE EVER nobody answers!!!"
    events = [
        user("my order is late", 1, "order_status"),
        user(angry, 2, "complaint"),
        user("I will be contacting my lawyer", 3, "complaint", complaint={"no": "score"}),
    ]

    case_file = read_case_file(events, {"case_type": "complaint"}, CASE_LABELS, CASE_QUESTIONS)

    expected = read_signals(angry)
    assert (case_file.complaint_score, case_file.hostility) == (expected.complaint_score, 0.6)
    assert (expected.complaint_score, expected.hostility) == (0.84, 0.58)


def test_no_customer_messages_scores_zero() -> None:
    case_file = read_case_file(session_start(0), {}, CASE_LABELS, CASE_QUESTIONS)

    assert (case_file.complaint_score, case_file.hostility, case_file.intent_confidence) == (0.0, 0.0, None)
    assert (case_file.summary, case_file.transcript, case_file.customer_name) == (
        "A message for a person on our team.",
        [],
        None,
    )


def test_language_is_guessed_from_the_customers_words() -> None:
    events = [
        user("Hola", 1, "greet", metadata={"language_code": "en"}),
        user("/order_status", 2, "order_status"),
        user("mi pedido no ha llegado", 3, "order_status"),
    ]

    case_file = read_case_file(events, {"case_type": "order_status"}, CASE_LABELS, CASE_QUESTIONS)

    assert case_file.language == "es"


def test_language_falls_back_to_what_the_channel_reports() -> None:
    events = [user("AC-2291734", 1, "order_status", metadata={"language_code": "pt-BR"})]

    case_file = read_case_file(events, {"case_type": "order_status"}, CASE_LABELS, CASE_QUESTIONS)

    assert case_file.language == "pt"


def test_customer_name_of_this_session_wins_over_an_earlier_one() -> None:
    events = [
        *session_start(0, metadata={"customer_name": "Maria Keller"}),
        user("hi", 1, "greet"),
        *session_start(90000),
        user("hi", 90001, "greet", metadata={"username": "@mkeller"}),
    ]

    case_file = read_case_file(events, {}, CASE_LABELS, CASE_QUESTIONS)

    assert case_file.customer_name == "mkeller"


def test_a_second_problem_in_the_message_is_carried_in_the_summary() -> None:
    from bot.casefile import other_problems

    events = [
        {"event": "user", "text": "the lamp came smashed and i was charged twice",
         "parse_data": {"intent": {"name": "product_issue", "confidence": 0.8},
                        "problems": [{"intent": "product_issue", "text": "the lamp came smashed", "confidence": 0.8},
                                     {"intent": "billing", "text": "i was charged twice", "confidence": 0.7}]}},
        {"event": "user", "text": "no problems key here", "parse_data": {"intent": {"name": "affirm"}}},
    ]

    assert other_problems(events, "product_issue", {"billing": "a payment"}) == ["a payment (“i was charged twice”)"]
    assert other_problems(events, "billing", {}) == ["product issue (“the lamp came smashed”)"]
    assert other_problems(events[1:], "billing", {}) == []


def test_a_conversation_that_began_as_a_public_post_carries_it() -> None:
    post = {"platform": "x", "id": "4001", "text": "@NorthwindHelp my parcel is late", "url": "https://x.com/m/status/4001",
            "author": "maria_k", "hostile": False}  # fmt: skip
    events = [
        *session_start(0),
        user("my parcel is late", 1, "order_status", metadata={"customer_name": "Maria", "public_post": post}),
        bot("Sorry about that! What's your order number?", 2),
        user("AC-2291734", 3, "inform", metadata={"customer_name": "Maria"}),
    ]

    case_file = read_case_file(events, {"case_type": "order_status"}, CASE_LABELS, CASE_QUESTIONS)

    assert case_file.public_post == post
    assert [line.text for line in case_file.transcript if line.who == "customer"] == [
        "[public post] my parcel is late", "AC-2291734",
    ]  # fmt: skip
    said_privately = [*session_start(0), user("my parcel is late", 1, "order_status"), *events[-2:]]
    private = read_case_file(said_privately, {"case_type": "order_status"}, CASE_LABELS, CASE_QUESTIONS)
    assert private.public_post is None
    assert private.transcript[0].text == "my parcel is late"
