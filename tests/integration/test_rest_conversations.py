"""Whole conversations over the REST channel against real Rasa and action servers."""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, Dict, List, Optional

import pytest
import yaml

from tests.integration.conftest import ROOT, Assistant, texts
from tests.integration.conversations import CONVERSATIONS
from tests.processes import http

pytestmark = pytest.mark.integration


def _converse(assistant: Assistant, sender: str, script: Dict[str, Any]) -> List[List[Dict[str, Any]]]:
    return [assistant.say(sender, text, script["metadata"]) for text in script["messages"]]


@pytest.fixture(scope="module")
def finished(assistant: Assistant) -> Dict[str, List[List[Dict[str, Any]]]]:
    """Hold every scripted conversation at once, from first message to hand-off."""
    with ThreadPoolExecutor(max_workers=len(CONVERSATIONS)) as pool:
        futures = {sender: pool.submit(_converse, assistant, sender, script) for sender, script in CONVERSATIONS.items()}
        return {sender: future.result(timeout=300) for sender, future in futures.items()}


def _case_of(assistant: Assistant, sender: str) -> Dict[str, Any]:
    matching = [case for case in assistant.cases() if case["sender_id"] == sender]
    assert len(matching) == 1, f"expected one case for {sender}, found {len(matching)}"
    return matching[0]


@pytest.mark.parametrize("sender", sorted(CONVERSATIONS))
def test_every_conversation_starts_with_a_greeting(finished: Dict, sender: str) -> None:
    first_reply = texts(finished[sender][0])
    name = (CONVERSATIONS[sender]["metadata"] or {}).get("customer_name") or (
        CONVERSATIONS[sender]["metadata"] or {}
    ).get("first_name")
    expected = f"Hi {name.split()[0]}! I'm Northwind's assistant." if name else "Hi there! I'm Northwind's assistant."
    assert first_reply[0] == expected
    assert len(first_reply) >= 2, "the greeting must go straight on with the request"


@pytest.mark.parametrize("sender", sorted(CONVERSATIONS))
def test_every_conversation_ends_in_one_prepared_case(assistant: Assistant, finished: Dict, sender: str) -> None:
    script = CONVERSATIONS[sender]
    case = _case_of(assistant, sender)
    last = texts(finished[sender][-1])[-1]

    assert re.search(rf"as case #{case['id']}\. A person will reply {re.escape(case['promise_wording'])}\.", last)
    assert case["case_type"] == script["case_type"]
    assert case["answers"] == script["answers"]
    assert case["status"] == "waiting"
    assert case["channel"] == "rest"
    assert case["language"] == "en"
    assert case["summary"].startswith("Here is") is False
    assert datetime.fromisoformat(case["promised_by"]) > datetime.fromisoformat(case["created_at"])
    customer_lines = [line["text"] for line in case["transcript"] if line["who"] == "customer"]
    expected_lines = [
        f"[pressed: {text[1:]}]" if text.startswith("/") else text for text in script["messages"]
    ]
    assert customer_lines == expected_lines
    bot_lines = [line["text"] for line in case["transcript"] if line["who"] == "bot"]
    assert bot_lines[0].startswith("Hi ")
    assert any(line.startswith("Here is what I will pass on: ") for line in bot_lines)


def _questions() -> Dict[str, str]:
    """Return question text -> the answer slot it asks for (domain/responses.yml)."""
    responses = yaml.safe_load((ROOT / "domain" / "responses.yml").read_text())["responses"]
    return {
        variation["text"]: name[len("utter_ask_") :]
        for name, variations in responses.items()
        if name.startswith("utter_ask_")
        for variation in variations
    }


@pytest.mark.parametrize("sender", sorted(CONVERSATIONS))
def test_only_what_the_customer_has_not_said_is_asked(finished: Dict, sender: str) -> None:
    questions = _questions()
    asked = [questions[text] for turn in finished[sender] for text in texts(turn) if text in questions]
    assert asked == CONVERSATIONS[sender]["asks"]


@pytest.mark.parametrize("sender", ["return-said", "login-said", "mattress-said", "delivered-said", "question-1"])
def test_a_message_that_answers_everything_goes_straight_to_the_summary(
    assistant: Assistant, finished: Dict, sender: str
) -> None:
    first_reply = texts(finished[sender][0])
    case = _case_of(assistant, sender)
    events = assistant.tracker(sender)["events"]
    first_user = next(index for index, event in enumerate(events) if event["event"] == "user")
    actions = [
        event["name"] for event in events[first_user:]
        if event["event"] == "action" and event["name"] != "action_extract_slots"
    ]  # fmt: skip

    assert first_reply[-1] == f"Here is what I will pass on: {case['summary']} Is that right?"
    assert not set(first_reply) & set(_questions()), "nothing may be asked before the summary"
    assert actions[: actions.index("action_listen")] == [
        "action_acknowledge", f"{case['case_type']}_form", "action_summarize_case"
    ]  # fmt: skip


def test_the_summary_shows_what_the_first_message_said_like_an_answer(assistant: Assistant, finished: Dict) -> None:
    summary = _case_of(assistant, "return-said")["summary"]
    assert summary.startswith(
        "A return, exchange or refund. Order number: AC-2291734; return request: Return it for a refund;"
        " return reason: jacket — wrong size. In your words: "
    )


def test_the_summary_the_customer_confirmed_is_the_one_stored(assistant: Assistant, finished: Dict) -> None:
    case = _case_of(assistant, "order-1")
    shown = [text for turn in finished["order-1"] for text in texts(turn) if text.startswith("Here is what")]
    assert shown == [f"Here is what I will pass on: {case['summary']} Is that right?"]


def test_a_complaint_is_prioritised_above_a_question(assistant: Assistant, finished: Dict) -> None:
    complaint, question = _case_of(assistant, "complaint-1"), _case_of(assistant, "question-1")
    assert complaint["priority"] in ("high", "urgent")
    assert question["priority"] == "low"
    assert complaint["complaint_score"] > 0.5 > question["complaint_score"]


def test_the_bot_stays_silent_after_handoff_and_keeps_the_message(assistant: Assistant, finished: Dict) -> None:
    replies = assistant.say("order-1", "also the box had no label")
    tracker = assistant.tracker("order-1")

    assert replies == []
    assert tracker["paused"] is True
    assert [event["text"] for event in tracker["events"] if event["event"] == "user"][-1] == "also the box had no label"


def test_the_parse_result_carries_the_complaint_signal(assistant: Assistant) -> None:
    def parse(text: str) -> Dict[str, Any]:
        status, raw = http("POST", f"{assistant.rasa_url}/model/parse", json.dumps({"text": text}).encode())
        assert status == 200
        return dict(json.loads(raw))

    angry = parse("this is the WORST service ever, 3 weeks and nobody answers!!!")["complaint"]
    calm = parse("do you have the blue one in medium?")["complaint"]
    assert angry["is_complaint"] is True and angry["score"] >= 0.8
    assert calm["is_complaint"] is False and calm["score"] < 0.3
    assert calm["hostility"] == 0.0 and calm["sarcasm"] is False


LONG = " ".join(["my order AC-2291734 never arrived and I am still waiting."] * 180)[:10_000]


@pytest.mark.parametrize(
    ("sender", "text"),
    [
        ("bad-empty", ""),
        ("bad-long", LONG),
        ("bad-emoji", "😡😡😡📦❓"),
        # Russian is not switched on: the main language's greeting, and a person offered.
        ("bad-russian", "здравствуйте, мой заказ до сих пор не пришёл, помогите"),
        ("bad-html", "<script>alert('x')</script> **bold** [link](http://example.com) <!channel>"),
        ("bad-whitespace", "   \n\t  "),
    ],
)
def test_bad_input_gets_a_sensible_reply_and_is_kept(assistant: Assistant, sender: str, text: str) -> None:
    replies = texts(assistant.say(sender, text))
    user_texts = [event["text"] for event in assistant.tracker(sender)["events"] if event["event"] == "user"]

    assert replies[0] == "Hi there! I'm Northwind's assistant."
    assert len(replies) >= 2 and all(replies)
    # Rasa trims surrounding white space; every character of content is kept.
    assert user_texts == [text.strip()]


def test_a_message_in_a_language_not_switched_on_can_be_passed_to_a_person(assistant: Assistant) -> None:
    sender = "lang-1"
    text = "здравствуйте, мой заказ до сих пор не пришёл, и я очень расстроен"
    first = assistant.say(sender, text)
    assert first[1]["buttons"] == [{"title": "Pass it to a person", "payload": "/request_human"}]
    assistant.say(sender, "/request_human")
    assistant.say(sender, "/affirm")

    case = _case_of(assistant, sender)
    assert case["case_type"] == "general"
    # Answered in the closest switched-on language (the main one: nothing is close to Russian),
    # and the case says why.
    assert case["language"] == "en"
    assert case["metadata"]["language_note"] == "not switched on: ru"
    assert text in case["summary"]


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        (b'{"sender": "x", "message": ', 400, "the body must be JSON"),
        (b"[1, 2]", 400, "the body must be a JSON object"),
        (b'{"message": "hi"}', 400, "'sender' must be a non-empty string"),
        (b'{"sender": "x", "message": 42}', 400, "'message' must be a string"),
        (b'{"sender": "x", "message": "hi", "metadata": "Maria"}', 400, "'metadata' must be a JSON object"),
        (b'{"sender": "x", "message": "hi", "input_channel": "telegram"}', 400, "'input_channel' may only be 'rest'"),
        (json.dumps({"sender": "x", "message": "a" * 20_001}).encode(), 413, "'message' must be at most 20000"),
    ],
)
def test_malformed_requests_get_a_clear_client_error(assistant: Assistant, body: bytes, status: int, error: str) -> None:
    answered, raw = http("POST", assistant.webhook, body, token=assistant.token)
    assert answered == status
    assert json.loads(raw)["error"].startswith(error)


@pytest.mark.parametrize("token", [None, "wrong-token"])
def test_a_request_without_the_right_token_is_refused_and_not_stored(assistant: Assistant, token: Any) -> None:
    body = json.dumps({"sender": "intruder", "message": "hi"}).encode()
    answered, raw = http("POST", assistant.webhook, body, token=token)

    assert (answered, json.loads(raw)) == (401, {"error": "missing or wrong bearer token"})
    assert [event for event in assistant.tracker("intruder")["events"] if event["event"] == "user"] == []
