"""Tests for bot.conversation: reading the tracker events Rasa sends to the action server.

The events are built with Rasa's own event classes and turned into the dictionaries
Rasa puts on the wire (``Event.as_dict``), so they have exactly the shape the actions get.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest
from rasa.shared.core.events import ActionExecuted, BotUttered, SessionStarted, SlotSet, UserUttered

from bot.conversation import (
    Line,
    current_session,
    customer_name,
    customer_texts,
    first_name,
    has_bot_spoken,
    last_bot_action_before_latest_message,
    reported_language,
    transcript,
    user_events,
)

Event = dict[str, Any]

# Monday 23 November 2026, 10:00:00 UTC.
T0 = 1795428000.0


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(T0 + seconds, tz=timezone.utc)


def user(
    text: str | None,
    seconds: float = 0.0,
    intent: str = "order_status",
    metadata: dict[str, Any] | None = None,
) -> Event:
    return UserUttered(
        text,
        {"name": intent, "confidence": 0.93},
        [],
        timestamp=T0 + seconds,
        input_channel="telegram",
        message_id=f"m{seconds:g}",
        metadata=metadata or {},
    ).as_dict()


def bot(text: str | None, seconds: float = 0.0, data: dict[str, Any] | None = None) -> Event:
    return BotUttered(text, data=data, timestamp=T0 + seconds).as_dict()


def action(name: str, seconds: float = 0.0) -> Event:
    return ActionExecuted(name, timestamp=T0 + seconds).as_dict()


def bot_turn(name: str, text: str, seconds: float = 0.0) -> list[Event]:
    """The bot's action ``name`` and the message it sent, both at ``seconds``."""
    return [action(name, seconds), bot(text, seconds)]


def session_start(seconds: float = 0.0, metadata: dict[str, Any] | None = None) -> list[Event]:
    """Return the events Rasa logs when a session starts."""
    return [
        action("action_session_start", seconds),
        SessionStarted(timestamp=T0 + seconds, metadata=metadata).as_dict(),
        action("action_listen", seconds),
    ]


def test_events_have_the_shape_rasa_sends() -> None:
    # Guards the helpers above: the module reads these keys.
    assert user("hi", 1, "greet", {"photo": "f1"}) == {
        "event": "user",
        "timestamp": T0 + 1,
        "metadata": {"photo": "f1"},
        "text": "hi",
        "parse_data": {
            "intent": {"name": "greet", "confidence": 0.93},
            "entities": [],
            "text": "hi",
            "message_id": "m1",
            "metadata": {"photo": "f1"},
        },
        "input_channel": "telegram",
        "message_id": "m1",
    }


# --- sessions -------------------------------------------------------------------


def test_current_session_is_everything_after_the_last_session_started() -> None:
    old = [*session_start(0), user("where is my order", 1), bot("Thanks", 2)]
    new = [user("hello again", 5000), bot("Hi there!", 5001)]
    events = [*old, *session_start(4999), *new]

    assert current_session(events) == [action("action_listen", 4999), *new]


def test_current_session_without_session_started_is_every_event() -> None:
    events = [user("hi", 1), bot("Hi there!", 2)]

    assert current_session(events) == events


def test_current_session_just_started_is_empty() -> None:
    assert current_session([user("hi", 1), SessionStarted(timestamp=T0 + 2).as_dict()]) == []


# --- transcript -----------------------------------------------------------------


def test_transcript_keeps_customer_and_bot_messages_in_order() -> None:
    events = [
        *session_start(0),
        user("My parcel hasn't arrived", 10),
        action("action_acknowledge", 11),
        bot("Thanks for letting us know about your order", 11),
        SlotSet("requested_slot", "order_number", timestamp=T0 + 11).as_dict(),
        bot("What's your order number?", 12),
        action("action_listen", 12),
        user("AC-2291734", 40),
    ]

    assert transcript(events) == [
        Line("customer", "My parcel hasn't arrived", at(10)),
        Line("bot", "Thanks for letting us know about your order", at(11)),
        Line("bot", "What's your order number?", at(12)),
        Line("customer", "AC-2291734", at(40)),
    ]


@pytest.mark.parametrize(
    ("text", "metadata", "expected"),
    [
        (None, {"photo": "AgACAgQAAxkBAAIB"}, "[photo sent]"),
        ("", {"voice": "AwACAgQAAxkBAAIC"}, "[voice sent]"),
        ("This is how it arrived", {"photo": "AgACAgQAAxkBAAIB"}, "This is how it arrived [photo sent]"),
        # A channel's placeholder text for a message without text is replaced by the note.
        ("[photo]", {"photo": "AgACAgQAAxkBAAIB"}, "[photo sent]"),
        (None, {"sticker": "CAACAgIAAxkBAAID", "photo": "AgACAgQAAxkBAAIB"}, "[photo, sticker sent]"),
        (None, {"attachments": [{"type": "image"}]}, "[attachments sent]"),
        # Metadata that is not a non-text message adds nothing.
        ("hi", {"customer_name": "Maria", "language_code": "de"}, "hi"),
        ("hi", {"photo": ""}, "hi"),
        (None, {}, ""),
    ],
)
def test_transcript_notes_what_was_sent_without_text(
    text: str | None, metadata: dict[str, Any], expected: str
) -> None:
    assert transcript([user(text, 3, metadata=metadata)]) == [Line("customer", expected, at(3))]


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ("/affirm", "[pressed: affirm]"),
        ('/order_status{"order_number": "48213"}', "[pressed: order_status]"),
    ],
)
def test_transcript_shows_a_button_press_as_a_press(payload: str, expected: str) -> None:
    assert transcript([user(payload, 5, intent=payload[1:].split("{")[0])]) == [Line("customer", expected, at(5))]


def test_transcript_leaves_out_bot_events_without_text() -> None:
    events = [bot(None, 1, data={"custom": {"typing": True}}), bot("", 2), bot("Hello", 3)]

    assert transcript(events) == [Line("bot", "Hello", at(3))]


def test_transcript_of_an_event_without_timestamp_is_at_the_epoch() -> None:
    assert transcript([{"event": "user", "text": "hi"}]) == [
        Line("customer", "hi", datetime(1970, 1, 1, tzinfo=timezone.utc))
    ]


def test_user_events_texts_and_whether_the_bot_spoke() -> None:
    first, photo, second = user("hello", 1), user(None, 2, metadata={"photo": "f"}), user("/affirm", 3)
    events = [*session_start(0), first, action("action_acknowledge", 1), photo, second]

    assert user_events(events) == [first, photo, second]
    assert customer_texts(events) == ["hello", "/affirm"]
    assert has_bot_spoken(events) is False
    assert has_bot_spoken([*events, bot("Hi there!", 4)]) is True


# --- who the customer is ----------------------------------------------------------


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ({"customer_name": "Maria Keller"}, "Maria Keller"),
        ({"first_name": "Maria"}, "Maria"),
        ({"name": "  Maria Keller  "}, "Maria Keller"),
        ({"display_name": "Maria K."}, "Maria K."),
        ({"username": "@maria_k"}, "maria_k"),
        ({"username": "maria_k"}, "maria_k"),
        # The keys are read in order of preference.
        ({"username": "@maria_k", "first_name": "Maria", "customer_name": "Maria Keller"}, "Maria Keller"),
        ({"username": "@maria_k", "first_name": "Maria"}, "Maria"),
        # Empty or non-text values are skipped.
        ({"customer_name": "   ", "username": "@maria_k"}, "maria_k"),
        ({"customer_name": {"first": "Maria"}, "name": "Maria"}, "Maria"),
        ({"username": "@"}, None),
        ({"language_code": "de"}, None),
        ({}, None),
    ],
)
def test_customer_name_from_the_channel_metadata(metadata: dict[str, Any], expected: str | None) -> None:
    assert customer_name([user("hi", 1, metadata=metadata)]) == expected


def test_customer_name_is_capped_at_64_characters() -> None:
    assert customer_name([user("hi", 1, metadata={"name": "M" * 100})]) == "M" * 64


def test_customer_name_latest_message_wins() -> None:
    events = [
        user("hi", 1, metadata={"customer_name": "Maria"}),
        user("it's late", 2, metadata={}),
        user("AC-2291734", 3, metadata={"customer_name": "Maria Keller"}),
    ]

    assert customer_name(events) == "Maria Keller"


def test_customer_name_from_the_session_start_metadata() -> None:
    events = [*session_start(0, metadata={"customer_name": "Maria Keller"}), user("hi", 1)]

    assert customer_name(events) == "Maria Keller"


def test_customer_name_is_not_read_from_bot_events() -> None:
    events = [user("hi", 1), BotUttered("Hi Maria!", metadata={"name": "Maria"}, timestamp=T0 + 2).as_dict()]

    assert customer_name(events) is None


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Maria Keller", "Maria"),
        ("  Maria   Keller ", "Maria"),
        ("maria_k", "maria_k"),
        ("   ", None),
        ("", None),
        (None, None),
    ],
)
def test_first_name(name: str | None, expected: str | None) -> None:
    assert first_name(name) == expected


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ({"language_code": "es"}, "es"),
        ({"locale": "de-DE"}, "de-DE"),
        ({"language": "fr", "language_code": "es"}, "fr"),
        ({"customer_name": "Maria"}, None),
    ],
)
def test_reported_language(metadata: dict[str, Any], expected: str | None) -> None:
    assert reported_language([user("hi", 1, metadata=metadata)]) == expected


def test_reported_language_latest_wins_and_ignores_the_session_start() -> None:
    events = [
        *session_start(0, metadata={"language": "it"}),
        user("hola", 1, metadata={"language_code": "es"}),
        user("ok", 2),
        user("merci", 3, metadata={"language_code": "fr"}),
    ]

    assert reported_language(events) == "fr"
    assert reported_language(events[:4]) == "es"
    assert reported_language(events[:3]) is None


# --- what the assistant did last ---------------------------------------------------


def test_last_bot_action_before_latest_message_skips_action_listen() -> None:
    events = [
        *session_start(0),
        user("hmm", 1, intent="nlu_fallback"),
        *bot_turn("action_acknowledge", "Thanks for your message.", 2),
        *bot_turn("action_did_you_mean", "I want to get this right — is your message about one of these?", 2),
        action("action_listen", 2),
        user("/something_else", 3, intent="something_else"),
        # What runs after the latest message does not count.
        action("action_acknowledge", 4),
    ]

    assert last_bot_action_before_latest_message(events) == "action_did_you_mean"


def test_last_bot_action_can_be_a_response() -> None:
    events = [
        user("/something_else", 1, intent="something_else"),
        *bot_turn("utter_ask_describe", "No problem — tell me in a sentence or two what it's about", 2),
        action("action_listen", 2),
        user("it's about a voucher", 3),
    ]

    assert last_bot_action_before_latest_message(events) == "utter_ask_describe"


@pytest.mark.parametrize(
    "events",
    [
        # Nothing but action_listen since the previous message.
        [user("hi", 1), action("action_listen", 2), user("hello?", 3)],
        # The first message of the session, read from the session as the actions do.
        current_session([*session_start(0), user("hi", 1)]),
        # No customer message yet.
        [action("action_acknowledge", 1)],
        [],
    ],
)
def test_no_bot_action_before_latest_message(events: list[Event]) -> None:
    assert last_bot_action_before_latest_message(events) is None
