"""Understanding real customers, in whole conversations on real Rasa and action servers.

Every message quoted in the understanding issue, as customers wrote it: sarcasm gets an
apology and the complaint path, an off-topic question a plain answer and no case form,
shoppers' fragments and app faults the right case type, two problems in one message
both. (Messages whose answers the first message already gives: test_rest_conversations.)
"""

from __future__ import annotations

import json
from typing import Any, Dict, List

import pytest

from tests.integration.conftest import Assistant, texts
from tests.processes import http

pytestmark = pytest.mark.integration


def _slots(assistant: Assistant, sender: str) -> Dict[str, Any]:
    return dict(assistant.tracker(sender)["slots"])


def _parse(assistant: Assistant, text: str) -> Dict[str, Any]:
    status, raw = http("POST", f"{assistant.rasa_url}/model/parse", json.dumps({"text": text}).encode())
    assert status == 200
    return dict(json.loads(raw))


def _joined(messages: List[Dict[str, Any]]) -> str:
    return "\n".join(texts(messages)).lower()


@pytest.mark.parametrize(
    "message",
    [
        "great, another week without my package. love it. thanks a lot",
        "amazing work guys 👏 third delay this week, thanks a lot",
    ],
)
def test_sarcastic_praise_gets_an_apology_and_the_complaint_path(assistant: Assistant, message: str) -> None:
    sender = f"sarcasm-{abs(hash(message))}"

    said = _joined(assistant.say(sender, message))

    assert "sorry" in said
    # Neither the answer to a compliment nor the one to thanks (domain/responses.yml).
    assert "kind of you" not in said and "make their day" not in said and "very welcome" not in said
    assert _slots(assistant, sender)["case_type"] == "complaint"


def test_the_parse_result_marks_sarcasm_as_a_complaint(assistant: Assistant) -> None:
    parsed = _parse(assistant, "great, another week without my package. love it. thanks a lot")

    assert parsed["intent"]["name"] == "complaint"
    assert parsed["complaint"]["is_complaint"] is True
    assert parsed["complaint"]["sarcasm"] is True


def test_sincere_thanks_stay_thanks(assistant: Assistant) -> None:
    parsed = _parse(assistant, "thank you so much, that sorted it")

    assert parsed["intent"]["name"] == "thank"
    assert parsed["complaint"]["is_complaint"] is False


@pytest.mark.parametrize(
    "message",
    ["how do i get rid of an itchy rash", "what's the weather like in paris tomorrow", "tell me a joke about cats"],
)
def test_off_topic_gets_a_plain_answer_and_no_case_form(assistant: Assistant, message: str) -> None:
    sender = f"offtopic-{abs(hash(message))}"

    replies = assistant.say(sender, message)

    said = _joined(replies)
    assert "not something i can help with" in said
    assert any(button.get("payload") == "/request_human" for reply in replies for button in reply.get("buttons") or [])
    tracker = assistant.tracker(sender)
    assert (tracker.get("active_loop") or {}).get("name") is None
    assert tracker["slots"]["case_type"] is None
    assert not [case for case in assistant.cases() if case["sender_id"] == sender]


def test_off_topic_then_a_person_is_one_tap_away(assistant: Assistant) -> None:
    sender = "offtopic-then-person"
    assistant.say(sender, "how do i get rid of an itchy rash")

    said = _joined(assistant.say(sender, "/request_human"))

    assert "person" in said


@pytest.mark.parametrize(
    ("message", "case_type"),
    [
        ("wats the cost for mattress", "product_question"),
        ("Queen size", "product_question"),
        ("how can I check it's an original product", "product_question"),
        ("expiry of product", "product_question"),
        ("contactless not working", "product_issue"),
        ("should I reinstall the payment app?", "product_issue"),
    ],
)
def test_shoppers_questions_and_faults_as_typed(assistant: Assistant, message: str, case_type: str) -> None:
    sender = f"typed-{abs(hash(message))}"

    assistant.say(sender, message)

    assert _slots(assistant, sender)["case_type"] == case_type


def test_two_problems_in_one_message_are_both_recognised(assistant: Assistant) -> None:
    parsed = _parse(assistant, "the lamp arrived smashed and on top of that i was charged twice for it")

    assert {problem["intent"] for problem in parsed.get("problems") or []} >= {"product_issue", "billing"}


def test_two_problems_both_reach_the_case(assistant: Assistant) -> None:
    sender = "two-problems"
    assistant.say(sender, "the lamp arrived smashed and on top of that i was charged twice for it")
    said = _joined(assistant.say(sender, "/request_human"))
    if "is that right" in said:
        assistant.say(sender, "/affirm")

    [case] = [case for case in assistant.cases() if case["sender_id"] == sender]
    # One case, whichever problem it is filed under, with the other one in its summary.
    other = {"product_issue": "charged twice", "billing": "arrived smashed"}
    assert case["case_type"] in other
    assert "Also:" in case["summary"] and other[case["case_type"]] in case["summary"].split("Also:")[1]
