"""Validation of the answers to each case type's clarifying questions.

One validator per answer slot, shared by every form that asks it. An answer that
cannot be used is asked again with a hint; after ``MAX_INVALID_ATTEMPTS`` tries the
answer is taken as given and marked unverified, so no customer is ever stuck in a loop.

Questions the customer has already answered are not asked: when the form starts, and
with every later message, what the message plainly says fills the questions not yet
asked (``bot.prefill``), and those answers are validated like typed ones.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, Callable, Dict, List, Mapping, Optional, Text

from rasa_sdk import Tracker
from rasa_sdk.events import EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.forms import FormValidationAction

from actions.base import DomainDict, latest_intent
from bot import conversation, prefill, validation
from bot.constants import (
    CASE_TYPES,
    INTENT_NLU_FALLBACK,
    INTENT_REQUEST_HUMAN,
    SLOT_INVALID_ATTEMPTS,
    SLOT_REQUESTED,
    form_name,
)

MAX_INVALID_ATTEMPTS = 2
UNVERIFIED = "(unverified) "

SlotValue = Dict[Text, Any]
INTENT_PAYLOAD_PREFIX = "/"


def _is_payload(text: Optional[str]) -> bool:
    return bool(text) and str(text).startswith(INTENT_PAYLOAD_PREFIX)


def message_to_read(tracker: Tracker) -> Optional[Mapping[str, Any]]:
    """Return the parsed message whose answers may fill the open questions, if any.

    Normally the latest message. A case chosen with a "did you mean" button
    ("/order_status") starts from the message that was unclear, which still says what
    the customer wrote about.
    """
    latest = tracker.latest_message or {}
    if not _is_payload(latest.get("text")):
        return latest
    if tracker.get_slot(SLOT_REQUESTED):
        return None
    users = conversation.user_events(conversation.current_session(tracker.events))
    if len(users) < 2:
        return None
    before = users[-2].get("parse_data") or {}
    unclear = (before.get("intent") or {}).get("name") == INTENT_NLU_FALLBACK
    return before if unclear and not _is_payload(before.get("text")) else None


class CaseFormValidation(FormValidationAction):
    """Validates the answer slots of one case type's form."""

    @property
    @abstractmethod
    def form(self) -> str:
        """Return the name of the form validated (set by each subclass)."""

    def name(self) -> Text:
        """Return ``validate_<form>``."""
        return f"validate_{self.form}"

    def _checked(
        self,
        slot: str,
        value: Any,
        tracker: Tracker,
        dispatcher: CollectingDispatcher,
        parse: Callable[[str], Optional[str]],
        hint: str,
    ) -> SlotValue:
        text = value if isinstance(value, str) else tracker.latest_message.get("text") or ""
        attempts = int(tracker.get_slot(SLOT_INVALID_ATTEMPTS) or 0)
        cleaned = parse(text)
        if cleaned is not None:
            return {slot: cleaned, SLOT_INVALID_ATTEMPTS: 0}
        if validation.says_not_known(text):
            return {slot: validation.NOT_GIVEN, SLOT_INVALID_ATTEMPTS: 0}
        kept = validation.free_text(text)
        if attempts + 1 >= MAX_INVALID_ATTEMPTS and kept:
            return {slot: UNVERIFIED + kept, SLOT_INVALID_ATTEMPTS: 0}
        dispatcher.utter_message(response=hint)
        return {slot: None, SLOT_INVALID_ATTEMPTS: attempts + 1}

    def validate_order_number(
        self, slot_value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> SlotValue:
        """Accept something that looks like an order number, or "I don't have it"."""
        return self._checked(
            "order_number", slot_value, tracker, dispatcher, validation.order_number, "utter_invalid_order_number"
        )

    def validate_account_email(
        self, slot_value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> SlotValue:
        """Accept an email address, or "skip"."""
        return self._checked("account_email", slot_value, tracker, dispatcher, validation.email, "utter_invalid_email")

    async def get_extraction_events(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> List[EventType]:
        """Fill the questions not asked yet from what the customer's message already says.

        The question just asked is left to its own answer (the slot mapping takes the
        whole reply); every other open question of this form is filled when the message
        answers it plainly. rasa_sdk then validates these answers like typed ones.

        A request for a person that does not answer the question is not read at all:
        anything filled would keep the form going, and it must give way to the hand-off.
        """
        events = await super().get_extraction_events(dispatcher, tracker, domain)
        requested = tracker.get_slot(SLOT_REQUESTED)
        if latest_intent(tracker) == INTENT_REQUEST_HUMAN and requested not in tracker.slots_to_validate():
            return events
        message = message_to_read(tracker)
        if message is None:
            return events
        open_slots = [
            slot for slot in self.domain_slots(domain) if slot != requested and tracker.get_slot(slot) is None
        ]
        found = prefill.prefill(message.get("text"), message.get("entities") or [], open_slots)
        if requested:
            # The whole reply already answers the question asked; the same words as the
            # answer to another question would only say it twice in the summary.
            reply = " ".join(str(message.get("text") or "").split())
            found = {slot: value for slot, value in found.items() if value != reply}
        return events + [SlotSet(slot, value) for slot, value in found.items()]

    def _free_text(self, slot: str, slot_value: Any, dispatcher: CollectingDispatcher) -> SlotValue:
        cleaned = validation.free_text(slot_value if isinstance(slot_value, str) else None)
        if cleaned is None:
            dispatcher.utter_message(response="utter_answer_too_short")
        return {slot: cleaned}

    def __getattr__(self, attribute: str) -> Any:
        """Validate every other answer slot as free text (``validate_<slot>``)."""
        if not attribute.startswith("validate_"):
            raise AttributeError(attribute)
        slot = attribute[len("validate_") :]

        def validate(
            slot_value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
        ) -> SlotValue:
            return self._free_text(slot, slot_value, dispatcher)

        return validate


def _form_validation_class(form: str) -> type:
    return type(f"Validate_{form}", (CaseFormValidation,), {"form": form, "__module__": __name__})


# One validation action per form; rasa_sdk registers every Action subclass it finds.
FORM_VALIDATIONS: List[type] = [_form_validation_class(form_name(case_type)) for case_type in CASE_TYPES]
FORM_VALIDATIONS.append(_form_validation_class("correction_form"))
