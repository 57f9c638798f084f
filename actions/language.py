"""Keep the conversation in the customer's language: the ``language`` slot, set on every message."""

from __future__ import annotations

from typing import List

from rasa_sdk import Action, Tracker
from rasa_sdk.events import EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher

from actions.base import DomainDict
from bot.constants import ACTION_SET_LANGUAGE, SLOT_LANGUAGE, SLOT_LANGUAGE_NOTE
from bot.i18n import REASON_UNCLEAR
from bot.i18n import DETECTION_KEY


class ActionSetLanguage(Action):
    """Sets ``language`` and ``language_note`` from what the NLU pipeline read.

    Runs inside Rasa's slot extraction (a custom slot mapping), before any other action
    of the turn, so every response of the turn is chosen in the language just read. A
    message too short to tell ("ok", an order number) leaves the language as it was.
    """

    def name(self) -> str:
        """Return the action's name."""
        return ACTION_SET_LANGUAGE

    def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> List[EventType]:
        """Return the slot changes the latest message calls for."""
        detection = tracker.latest_message.get(DETECTION_KEY)
        if not isinstance(detection, dict):
            # A button's payload ("/request_human") is not read by the NLU pipeline: it says
            # nothing about the language, and a pending "not understood" tag stays.
            return []
        events: List[EventType] = []
        code = detection.get("code")
        if code and code != tracker.get_slot(SLOT_LANGUAGE):
            events.append(SlotSet(SLOT_LANGUAGE, code))
        note = None if detection.get("understood", True) else _note(detection)
        if note != tracker.get_slot(SLOT_LANGUAGE_NOTE):
            events.append(SlotSet(SLOT_LANGUAGE_NOTE, note))
        return events


def _note(detection: dict) -> str:
    """Return how a case is tagged for a message not understood: "unclear or mixed", "not switched on: nl"."""
    reason = str(detection.get("reason") or REASON_UNCLEAR)
    detected = detection.get("detected")
    return f"{reason}: {detected}" if detected and reason != REASON_UNCLEAR else reason
