"""The actions in the customer's language: the language slot, the summary, the promise, the case and its route."""

from __future__ import annotations

from typing import Any, Dict, List

from rasa_sdk.events import ConversationPaused, SlotSet
from rasa_sdk.executor import CollectingDispatcher

from actions.handoff import ActionHandoff, ActionSummarizeCase, ActionTellResponseTime
from actions.language import ActionSetLanguage
from bot.desk.cards import card
from bot.services import Services
from tests.conftest import CLOSED_NOW
from tests.test_actions import T0, bot, sent, tracker, user


def _detected(message: Dict[str, Any], code: str | None, understood: bool = True, detected: str | None = None,
              reason: str = "detected") -> Dict[str, Any]:
    message["parse_data"]["language_detection"] = {
        "code": code, "understood": understood, "detected": detected or code, "reason": reason,
    }
    return message


def test_the_language_slot_follows_what_the_message_was_read_as(domain: Dict) -> None:
    action = ActionSetLanguage()
    french = _detected(user("bonjour, ma commande n'est pas arrivée", "order_status"), "fr")
    assert action.run(CollectingDispatcher(), tracker([french]), domain) == [SlotSet("language", "fr")]
    # Already French: nothing to change.
    assert action.run(CollectingDispatcher(), tracker([french], {"language": "fr"}), domain) == []
    # Too short to tell: the conversation keeps its language.
    short = _detected(user("ok", "affirm"), None, reason="too short to tell")
    assert action.run(CollectingDispatcher(), tracker([short], {"language": "fr"}), domain) == []
    # Not switched on: the closest language, and the case is tagged with why.
    dutch = _detected(user("mijn bestelling is niet aangekomen", "nlu_fallback", 0.0), "de", False, "nl",
                      "not switched on")
    assert action.run(CollectingDispatcher(), tracker([dutch], {"language": "fr"}), domain) == [
        SlotSet("language", "de"),
        SlotSet("language_note", "not switched on: nl"),
    ]
    # Understood again: the tag goes.
    german = _detected(user("meine Bestellung ist nicht angekommen", "order_status"), "de")
    assert action.run(
        CollectingDispatcher(), tracker([german], {"language": "de", "language_note": "not switched on: nl"}), domain
    ) == [SlotSet("language_note", None)]


def _spanish_order() -> List[Dict[str, Any]]:
    return [
        _detected(user("hola, mi pedido no llega, ya van 2 semanas", "order_status", 0.9, metadata={"first_name": "Lucía"}),
                  "es"),
        bot("¡Hola, Lucía!"),
        user("AC-2291734", "nlu_fallback", 0.3, at=T0 + 10),
        user("Llega tarde", "nlu_fallback", 0.4, at=T0 + 20),
    ]


SPANISH_SLOTS = {"case_type": "order_status", "order_number": "AC-2291734", "delivery_problem": "Llega tarde",
                 "language": "es"}


def test_the_summary_is_in_the_customers_language(services: Any, domain: Dict) -> None:
    dispatcher = CollectingDispatcher()
    ActionSummarizeCase(services).run(dispatcher, tracker(_spanish_order(), SPANISH_SLOTS), domain)

    assert dispatcher.messages[0]["summary"] == (
        "Dónde está mi pedido. Número de pedido: AC-2291734; problema con la entrega: Llega tarde. "
        "En tus palabras: “hola, mi pedido no llega, ya van 2 semanas”."
    )


def test_the_handoff_promises_in_the_customers_language_and_routes_to_agents_who_speak_it(
    services: Any, domain: Dict
) -> None:
    german = [_detected(user("Hallo, meine Bestellung ist nicht angekommen", "order_status", 0.9), "de"),
              user("AC-2291734", "nlu_fallback", 0.3, at=T0 + 10), user("Sie ist zu spät", "nlu_fallback", 0.4, at=T0 + 20)]
    slots = {"case_type": "order_status", "order_number": "AC-2291734", "delivery_problem": "Sie ist zu spät",
             "language": "de"}
    dispatcher = CollectingDispatcher()
    result = ActionHandoff(services).run(dispatcher, tracker(german, slots), domain)

    [case] = services.store.lookup.list_cases()
    assert result == [SlotSet("case_id", str(case.id)), ConversationPaused()]
    assert case.language == "de"
    assert case.summary.startswith("Wo meine Bestellung ist. Bestellnummer: AC-2291734; Lieferproblem: Sie ist zu spät.")
    assert case.promise_wording == "in etwa 15 Minuten"
    assert dispatcher.messages[0]["promise"] == "in etwa 15 Minuten"
    # support.yml routes German to #support-de.
    assert case.metadata["route"] == "#support-de" and "language_note" not in case.metadata
    _, blocks = card(case, [], services.now())
    assert "German (de)" in str(blocks)


def test_a_case_not_understood_as_written_is_tagged_and_the_card_says_so(services: Any, domain: Dict) -> None:
    dutch = _detected(user("hallo, mijn bestelling is nog steeds niet aangekomen", "nlu_fallback", 0.0), "de", False,
                      "nl", "not switched on")
    slots = {"case_type": "general", "language": "de", "language_note": "not switched on: nl"}
    ActionHandoff(services).run(CollectingDispatcher(), tracker([dutch], slots), domain)

    [case] = services.store.lookup.list_cases()
    assert case.metadata["language_note"] == "not switched on: nl"
    _, blocks = card(case, [], services.now())
    assert "German (de) · not understood as written: not switched on: nl" in str(blocks)


def test_the_response_time_is_quoted_in_the_customers_language_with_babels_clock(services: Any, domain: Dict) -> None:
    closed = Services(store=services.store, support=services.support, now=lambda: CLOSED_NOW)
    message = _detected(user("cuanto tardais en responder?", "ask_response_time"), "es")
    dispatcher = CollectingDispatcher()
    ActionTellResponseTime(closed).run(dispatcher, tracker([message], {"language": "es"}), domain)

    assert sent(dispatcher) == ["utter_response_time"]
    # Sunday 22:30: closed until Monday 08:00.
    assert dispatcher.messages[0]["promise"] == "antes de las 8:15 de mañana, lunes; ahora estamos cerrados"


def test_a_button_press_leaves_the_language_and_its_tag_alone(domain: Dict) -> None:
    pressed = user("/request_human", "request_human")  # payloads skip the NLU pipeline: no detection
    slots = {"language": "de", "language_note": "not switched on: nl"}

    assert ActionSetLanguage().run(CollectingDispatcher(), tracker([pressed], slots), domain) == []
