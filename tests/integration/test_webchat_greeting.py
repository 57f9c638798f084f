"""The web chat greets a new visitor at once, through real ``rasa run`` and ``rasa run actions`` processes.

The page's protocol (``bot.channels.webchat``): the first message sent with ``"partial": true``
is answered with the greeting alone as soon as it is stored, and the same message sent again
gets the whole answer; the greeting is in the transcript (the page's history and Rasa's
conversation) once.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from tests.integration.conftest import Assistant
from tests.processes import http

pytestmark = pytest.mark.integration

FIRST = "Where is my parcel? I ordered it two weeks ago"
GREETING = "Hi Lena! I'm Northwind's assistant."


def _post(assistant: Assistant, path: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    status, raw = http("POST", f"{assistant.rasa_url}/webhooks/webchat/{path}", json.dumps(body or {}).encode())
    return status, json.loads(raw)


def test_a_new_visitor_sees_the_greeting_at_once_then_the_answer_and_it_is_recorded_once(assistant: Assistant) -> None:
    _, session = _post(assistant, "session")
    message = {**session, "client_id": uuid.uuid4().hex, "message": FIRST, "name": "Lena Vogel", "partial": True}

    status, early = _post(assistant, "message", message)
    assert status == 200, early
    assert early["more"] is True and [r["text"] for r in early["replies"]] == [GREETING]
    assert early["customer"]["text"] == FIRST

    status, whole = _post(assistant, "message", message)  # the page sends it again for the rest
    assert status == 200, whole
    texts = [r["text"] for r in whole["replies"]]
    assert texts[0] == GREETING and texts.count(GREETING) == 1, texts
    assert texts[1] == "Thanks for letting us know about your order — let's find out where it is."
    assert texts[2].startswith("What's your order number?")
    assert whole["replies"][0]["id"] == early["replies"][0]["id"]

    status, raw = http("GET", f"{assistant.rasa_url}/webhooks/webchat/history?sender={session['sender']}"
                              f"&token={session['token']}")  # fmt: skip
    assert status == 200
    shown = [m["text"] for m in json.loads(raw)["messages"]]
    assert shown[:2] == [FIRST, GREETING] and shown.count(GREETING) == 1, shown
    events = assistant.tracker(session["sender"])["events"]
    greetings = [e for e in events if e["event"] == "bot" and e["text"] == GREETING]
    assert len(greetings) == 1 and greetings[0]["metadata"]["greeted_at_edge"] is True, greetings


def test_without_partial_the_greeting_comes_first_in_the_whole_answer_and_the_next_message_is_not_greeted(
    assistant: Assistant,
) -> None:
    _, session = _post(assistant, "session")
    first = {**session, "client_id": uuid.uuid4().hex, "message": FIRST}
    status, answer = _post(assistant, "message", first)
    assert status == 200 and "more" not in answer, answer
    texts = [r["text"] for r in answer["replies"]]
    assert texts[0] == "Hi there! I'm Northwind's assistant." and texts[2].startswith("What's your order number?")

    status, second = _post(assistant, "message", {**session, "client_id": uuid.uuid4().hex, "message": "AC-2291734",
                                                  "partial": True})  # fmt: skip
    assert status == 200 and "more" not in second, second
    assert not any(r["text"].startswith("Hi ") for r in second["replies"])
