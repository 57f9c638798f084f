"""A whole conversation in each language, on real Rasa and action servers: greeting to hand-off.

Per language: the greeting and the acknowledgement, the clarifying question (the order number
the first message gave is not asked again), the summary, the promise and the hand-off, all in
the customer's language; the case carries the language and is routed by it. Expected texts are
read from domain/, as ops wrote them.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List

import pytest

from bot.i18n import variation_text
from bot.ops.responses import load_responses
from tests.integration.conftest import ROOT, Assistant, texts

pytestmark = pytest.mark.integration

ORDER = "AC-2291734"
SCRIPTS: Dict[str, Dict[str, Any]] = {
    "es": {"first": f"hola, mi pedido {ORDER} no ha llegado todavia", "metadata": {"first_name": "Lucía"}},
    "fr": {"first": f"bonjour, ma commande {ORDER} n'est toujours pas arrivée", "metadata": {"first_name": "Chloé"}},
    "de": {"first": f"Hallo, meine Bestellung {ORDER} ist noch nicht angekommen", "metadata": {"first_name": "Jonas"}},
    # The channel's locale (Telegram's language_code) comes along as a hint.
    "pt": {"first": f"olá, a minha encomenda {ORDER} ainda não chegou", "metadata": {"language_code": "pt-BR"}},
    "it": {"first": f"ciao, il mio ordine {ORDER} non è ancora arrivato", "metadata": {"first_name": "Giulia"}},
}
ROUTES = {"de": "#support-de", "fr": "#support-fr"}


def _responses() -> Dict[str, Any]:
    return load_responses(ROOT / "domain")


def _say(language: str, name: str, **values: Any) -> str:
    text = variation_text(_responses(), name, language)
    assert text is not None, name
    return text.format(**values)


def _first_button(language: str) -> Dict[str, str]:
    for variation in _responses()["utter_ask_delivery_problem"]:
        if any(c.get("value") == language for c in variation.get("condition") or []):
            return dict(variation["buttons"][0])
    raise AssertionError(f"no {language} delivery question")


def _converse(assistant: Assistant, language: str) -> List[List[Dict[str, Any]]]:
    script = SCRIPTS[language]
    sender = f"lang-{language}"
    replies = [assistant.say(sender, script["first"], script["metadata"])]
    replies.append(assistant.say(sender, _first_button(language)["payload"], script["metadata"]))
    replies.append(assistant.say(sender, "/affirm", script["metadata"]))
    return replies


@pytest.fixture(scope="module")
def conversations(assistant: Assistant) -> Dict[str, List[List[Dict[str, Any]]]]:
    """Hold the five conversations at once."""
    with ThreadPoolExecutor(max_workers=len(SCRIPTS)) as pool:
        futures = {language: pool.submit(_converse, assistant, language) for language in SCRIPTS}
        return {language: future.result(timeout=300) for language, future in futures.items()}


@pytest.mark.parametrize("language", sorted(SCRIPTS))
def test_a_whole_conversation_in_the_customers_language(
    assistant: Assistant, conversations: Dict[str, List[List[Dict[str, Any]]]], language: str
) -> None:
    first, after_answer, after_yes = (texts(replies) for replies in conversations[language])
    name = SCRIPTS[language]["metadata"].get("first_name")
    assistant_name = "Northwind's assistant"

    # Greeting, acknowledgement, and the one question the first message did not answer.
    greeting = (_say(language, "utter_greeting_named", customer_name=name, assistant_name=assistant_name) if name
                else _say(language, "utter_greeting", assistant_name=assistant_name))
    assert first[:2] == [greeting, _say(language, "utter_ack_order_status")]
    # "not arrived yet" may read as let down: then an apology, in the same language, before the question.
    assert first[2:-1] in ([], [_say(language, "utter_ack_upset")])
    assert first[-1] == _say(language, "utter_ask_delivery_problem")
    buttons = [button["title"] for button in conversations[language][0][-1].get("buttons") or []]
    assert buttons[0] == _first_button(language)["title"]

    # The summary, in the customer's language, with the pre-filled order number.
    [summary] = after_answer
    label = _say(language, "utter_label_order_status")
    problem = _first_button(language)["payload"]
    intro = _say(language, "utter_summary", summary="").split(" ")[0]
    assert summary.startswith(intro), summary
    assert f"{label}. " in summary and ORDER in summary and problem in summary
    assert _say(language, "utter_summary_in_your_words", quote="").split(":")[0] in summary

    # The hand-off: the case, in this language, routed by it, and the promise in its words.
    [case] = [case for case in assistant.cases() if case["sender_id"] == f"lang-{language}"]
    assert case["language"] == language
    assert case["case_type"] == "order_status"
    assert case["answers"] == {"order_number": ORDER, "delivery_problem": problem}
    assert case["metadata"]["route"] == ROUTES.get(language, "#support-queue")
    handoff = (_say(language, "utter_handoff_named", customer_name=name, case_id=case["id"],
                    promise=case["promise_wording"]) if name
               else _say(language, "utter_handoff", case_id=case["id"], promise=case["promise_wording"]))
    assert after_yes == [handoff]
    english_words = re.compile(r"\b(within|about|tomorrow|today|closed|we open)\b")
    assert not english_words.search(case["promise_wording"]), case["promise_wording"]


def test_a_language_not_switched_on_gets_the_honest_line_in_the_closest_one(assistant: Assistant) -> None:
    replies = assistant.say("lang-nl", "Hallo, mijn bestelling is nog steeds niet aangekomen, wat is er aan de hand?")

    assert texts(replies) == [
        _say("de", "utter_greeting", assistant_name="Northwind's assistant"),
        _say("de", "utter_language_unclear"),
    ]
    tracker = assistant.tracker("lang-nl")
    assert tracker["slots"]["language"] == "de"
    assert tracker["slots"]["language_note"] == "not switched on: nl"
