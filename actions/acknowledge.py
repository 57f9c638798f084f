"""The instant first response: greet the customer and acknowledge what they wrote."""

from __future__ import annotations

from typing import Any, Dict, List

from rasa_sdk import Tracker
from rasa_sdk.events import ConversationPaused, EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher

from actions.base import DomainDict, ServiceAction, case_types, has_response, latest_intent
from bot.services import Services
from bot import conversation
from bot.constants import (
    ACTION_ACKNOWLEDGE,
    ANSWER_SLOTS,
    DEFAULT_CHANNEL,
    GREETED_AT_EDGE,
    INTENT_COMPLAINT,
    INTENT_COMPLIMENT,
    INTENT_NLU_FALLBACK,
    INTENT_THANK,
    OPEN_STATUSES,
    RESPONSE_GREETING,
    RESPONSE_GREETING_NAMED,
    RESPONSE_LANGUAGE_UNCLEAR,
    SLOT_CASE_ADDITIONS,
    SLOT_CASE_ID,
    SLOT_CASE_TYPE,
    SLOT_CUSTOMER_NAME,
    SMALL_TALK_INTENTS,
)
from bot.i18n import understood_as_written
from bot.nlu.signals import read_signals

UPSET_SCORE = 0.5
# Praise with this much complaint evidence, or with complaint this close in the
# classifier's ranking, is answered as the complaint it probably is.
SARCASM_SCORE = 0.4
SARCASM_COMPLAINT_CONFIDENCE = 0.2
PRAISE_INTENTS = frozenset({INTENT_COMPLIMENT, INTENT_THANK})


def _complaint_score(tracker: Tracker) -> float:
    """Return the complaint score of the latest message (from NLU, else computed here)."""
    score = (tracker.latest_message.get("complaint") or {}).get("score")
    if score is None:
        score = read_signals(tracker.latest_message.get("text")).complaint_score
    return float(score)


def greet_if_new(dispatcher: CollectingDispatcher, tracker: Tracker, assistant_name: str) -> tuple[bool, bool]:
    """Greet the customer if the assistant has not spoken in this session yet (or record the channel's greeting).

    The greeting uses the customer's first name when the channel gives one, and is in
    the customer's language (the ``language`` slot); a message that was not understood as
    written (unclear, mixed, or in a language that is not switched on) is told that a
    person will read it as written.

    Returns:
        Whether this is the first message of the conversation (and a greeting was sent),
        and whether it was not understood as written.
    """
    if not record_edge_greeting(dispatcher, tracker):
        session = conversation.current_session(tracker.events)
        if conversation.has_bot_spoken(session):
            return False, False
        name = conversation.customer_name(session) or conversation.customer_name(tracker.events)
        first = conversation.first_name(name or tracker.get_slot(SLOT_CUSTOMER_NAME))
        if first:
            dispatcher.utter_message(
                response=RESPONSE_GREETING_NAMED, customer_name=first, assistant_name=assistant_name
            )
        else:
            dispatcher.utter_message(response=RESPONSE_GREETING, assistant_name=assistant_name)
    foreign = not understood_as_written(tracker.latest_message)
    if foreign:
        dispatcher.utter_message(response=RESPONSE_LANGUAGE_UNCLEAR)
    return True, foreign


def record_edge_greeting(dispatcher: CollectingDispatcher, tracker: Tracker) -> bool:
    """Record the greeting the channel sent ahead of the dialogue (``bot.channels.edge``); return whether there was one.

    It goes into the conversation as the assistant's message (so the transcript shows what
    the customer read) with ``greeted_at_edge`` in its metadata: the channel does not send it again.
    """
    edge = conversation.greeted_at_edge(tracker.events, tracker.latest_message, tracker.get_latest_input_channel())
    if edge is None:
        return False
    dispatcher.utter_message(text=edge["text"], utter_action=edge["response"], **{GREETED_AT_EDGE: True})
    return True


def pause_if_case_open(services: Services, dispatcher: CollectingDispatcher, tracker: Tracker) -> List[EventType]:
    """Keep the bot quiet for a customer whose case a person still holds.

    A conversation is paused at hand-off; but a customer silent for longer than the
    session expiry starts a new, unpaused session when they write again. On the first
    message of such a session, if their case is still open, the assistant only says
    the message was added to the case, and pauses again: the agent's thread shows it.

    Returns:
        The events to return (a pause), or an empty list when the bot should go on.
    """
    session = conversation.current_session(tracker.events)
    if conversation.has_bot_spoken(session):
        return []
    channel = tracker.get_latest_input_channel() or DEFAULT_CHANNEL
    open_cases = [case for case in services.store.lookup.cases_for_customer(channel, tracker.sender_id)
                  if case.status in OPEN_STATUSES]
    if not open_cases:
        return []
    case = open_cases[-1]
    record_edge_greeting(dispatcher, tracker)
    dispatcher.utter_message(response="utter_added_to_case", case_id=case.id)
    return [SlotSet(SLOT_CASE_ID, str(case.id)), ConversationPaused()]


class ActionAcknowledge(ServiceAction):
    """Greets a new conversation by name, then acknowledges the customer's message.

    Runs first for every message the rules handle: on the first message of a session
    it greets ("Hi Maria! I'm Northwind's assistant."), and in every case it answers
    the intent with ``utter_ack_<intent>`` when the domain has one, so the customer
    hears at once that their message was read, whatever it was.
    """

    def name(self) -> str:
        """Return the action's name."""
        return ACTION_ACKNOWLEDGE

    def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> List[EventType]:
        """Greet if this is the start of the conversation, then acknowledge."""
        held = pause_if_case_open(self.services, dispatcher, tracker)
        if held:
            return held
        session = conversation.current_session(tracker.events)
        intent = latest_intent(tracker) or INTENT_NLU_FALLBACK
        events: List[EventType] = []

        name = conversation.customer_name(session) or tracker.get_slot(SLOT_CUSTOMER_NAME)
        if name and name != tracker.get_slot(SLOT_CUSTOMER_NAME):
            events.append(SlotSet(SLOT_CUSTOMER_NAME, name))

        first_message, foreign = greet_if_new(dispatcher, tracker, self.services.support.brand.assistant_name)

        # An unclear message is acknowledged once, on the first message; after that the
        # "did you mean" question is the acknowledgement. What the classifier makes of a
        # message it could not read as written is a guess, so it is not acknowledged as if understood.
        acknowledge = (intent != INTENT_NLU_FALLBACK or first_message) and not foreign
        if acknowledge and intent in PRAISE_INTENTS and self._reads_as_complaint(tracker):
            # "thanks for nothing", "great job losing my parcel": never thank a complaint.
            dispatcher.utter_message(response="utter_ack_mixed_feelings")
        elif acknowledge and has_response(domain, f"utter_ack_{intent}"):
            dispatcher.utter_message(response=f"utter_ack_{intent}")
        if intent not in SMALL_TALK_INTENTS and intent != INTENT_COMPLAINT and self._sounds_upset(tracker, session):
            dispatcher.utter_message(response="utter_ack_upset")

        if intent in case_types(domain):
            events.extend(self._start_case(tracker, intent))
        return events

    @staticmethod
    def _reads_as_complaint(tracker: Tracker) -> bool:
        """Return whether praise or thanks reads as sarcasm: complaint cues, or complaint a close second."""
        ranking = tracker.latest_message.get("intent_ranking") or []
        close_complaint = any(
            entry.get("name") == INTENT_COMPLAINT and float(entry.get("confidence") or 0.0) >= SARCASM_COMPLAINT_CONFIDENCE
            for entry in ranking
        )
        return _complaint_score(tracker) >= SARCASM_SCORE or close_complaint

    @staticmethod
    def _sounds_upset(tracker: Tracker, session: List[Dict[str, Any]]) -> bool:
        """Return whether the latest message reads as upset and we have not said sorry yet."""
        score = _complaint_score(tracker)
        already = any(
            event.get("event") == "bot" and (event.get("metadata") or {}).get("utter_action") == "utter_ack_upset"
            for event in session
        )
        return float(score) >= UPSET_SCORE and not already

    @staticmethod
    def _start_case(tracker: Tracker, case_type: str) -> List[EventType]:
        """Set the case type; a new case after a handed-off one starts with fresh answers."""
        events: List[EventType] = [SlotSet(SLOT_CASE_TYPE, case_type)]
        if tracker.get_slot(SLOT_CASE_ID):
            # Answers the new message itself carries (an order number) are kept.
            given = {entity.get("value") for entity in tracker.latest_message.get("entities") or []}
            events.append(SlotSet(SLOT_CASE_ID, None))
            events.append(SlotSet(SLOT_CASE_ADDITIONS, None))
            events.extend(
                SlotSet(slot, None)
                for slot in ANSWER_SLOTS
                if tracker.get_slot(slot) is not None and tracker.get_slot(slot) not in given
            )
        return events
