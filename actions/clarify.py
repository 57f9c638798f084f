"""When the assistant is unsure: ask "did you mean", never guess; take added detail."""

from __future__ import annotations

from typing import Any, Dict, List

from rasa_sdk import Action, Tracker
from rasa_sdk.events import EventType, SlotSet, UserUtteranceReverted
from rasa_sdk.executor import CollectingDispatcher

from actions.acknowledge import greet_if_new, pause_if_case_open
from actions.base import DomainDict, ServiceAction, case_labels, case_types, customer_language, response_text
from bot import conversation
from bot.i18n import understood_as_written
from bot.constants import (
    ACTION_ADD_DETAIL,
    ACTION_DID_YOU_MEAN,
    ACTION_FALLBACK,
    CASE_TYPE_GENERAL,
    INTENT_SOMETHING_ELSE,
    RESPONSE_ASK_DESCRIBE,
    RESPONSE_LANGUAGE_UNCLEAR,
    SLOT_CASE_ADDITIONS,
    SLOT_CASE_TYPE,
    SLOT_UNCLEAR_TWICE,
)

CHOICES = 2


def _already_said(session: List[Dict[str, Any]], response: str) -> bool:
    return any(
        event.get("event") == "bot" and (event.get("metadata") or {}).get("utter_action") == response
        for event in session
    )


def _top_case_types(tracker: Tracker, known: List[str]) -> List[str]:
    """Return the likeliest case types for the latest message, best first."""
    ranking = tracker.latest_message.get("intent_ranking") or []
    ranked = [entry.get("name") for entry in sorted(ranking, key=lambda e: -float(e.get("confidence") or 0.0))]
    picks = [name for name in ranked if name in known][:CHOICES]
    for case_type in known:  # a ranking that names fewer case types still offers two
        if len(picks) >= CHOICES:
            break
        if case_type not in picks:
            picks.append(case_type)
    return picks


def offer_choices(dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> List[EventType]:
    """Ask "did you mean" with the two likeliest case types and "something else" as buttons."""
    language = customer_language(tracker)
    labels = case_labels(domain, language)
    buttons: List[Dict[str, Any]] = [
        {"title": labels[case_type], "payload": f"/{case_type}"}
        for case_type in _top_case_types(tracker, case_types(domain))
    ]
    buttons.append(
        {
            "title": response_text(domain, "utter_something_else_button", language) or "Something else",
            "payload": f"/{INTENT_SOMETHING_ELSE}",
        }
    )
    dispatcher.utter_message(response="utter_did_you_mean", buttons=buttons)
    return [SlotSet(SLOT_UNCLEAR_TWICE, False)]


class ActionDidYouMean(Action):
    """Offers the two likeliest case types as buttons, plus "something else".

    When the customer has already been asked once (they chose "something else" and
    described it, or the question did not help), the assistant stops asking and
    passes the message on to a person as written.
    """

    def name(self) -> str:
        """Return the action's name."""
        return ACTION_DID_YOU_MEAN

    def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> List[EventType]:
        """Ask, or give up asking and pass it on."""
        session = conversation.current_session(tracker.events)
        before = conversation.last_bot_action_before_latest_message(session)
        if not understood_as_written(tracker.latest_message):
            # The choices would be a guess at a message the assistant could not read as
            # written; the offer to pass it to a person as written is what helps.
            if not _already_said(session, RESPONSE_LANGUAGE_UNCLEAR):
                dispatcher.utter_message(response=RESPONSE_LANGUAGE_UNCLEAR)
            return [SlotSet(SLOT_UNCLEAR_TWICE, False)]
        if before in (ACTION_DID_YOU_MEAN, RESPONSE_ASK_DESCRIBE):
            dispatcher.utter_message(response="utter_unclear_pass_on")
            return [SlotSet(SLOT_CASE_TYPE, CASE_TYPE_GENERAL), SlotSet(SLOT_UNCLEAR_TWICE, True)]

        return offer_choices(dispatcher, tracker, domain)


class ActionFallback(ServiceAction):
    """What the assistant does when no rule fits the message (Rasa's core fallback).

    The customer is greeted if this is their first message and offered the "did you
    mean" choices; the message itself stays in the conversation (and so in the case
    transcript) but is taken back from the dialogue state, so the next message starts
    afresh, as with Rasa's own default fallback.
    """

    def name(self) -> str:
        """Return the action's name."""
        return ACTION_FALLBACK

    def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> List[EventType]:
        """Greet if new, offer the choices, and revert the message's effect on the dialogue."""
        # Begins like ActionAcknowledge.run: the Rasa SDK Action interface and the one call
        # every customer-facing action makes first (pause_if_case_open); the rest differs.
        held = pause_if_case_open(self.services, dispatcher, tracker)
        if held:
            return held
        greet_if_new(dispatcher, tracker, self.services.support.brand.assistant_name)
        return [*offer_choices(dispatcher, tracker, domain), UserUtteranceReverted()]


class ActionAddDetail(Action):
    """Adds what the customer wrote at the summary step to the case, as their words."""

    def name(self) -> str:
        """Return the action's name."""
        return ACTION_ADD_DETAIL

    def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> List[EventType]:
        """Append the latest message to the case additions."""
        text = (tracker.latest_message.get("text") or "").strip()
        if not text:
            return []
        additions = list(tracker.get_slot(SLOT_CASE_ADDITIONS) or [])
        additions.append(text)
        dispatcher.utter_message(response="utter_detail_added")
        return [SlotSet(SLOT_CASE_ADDITIONS, additions)]
