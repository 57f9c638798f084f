"""Validation of the answers to each case type's clarifying questions.

One validator per answer slot, shared by every form that asks it. An answer that
cannot be used is asked again with a hint; after ``MAX_INVALID_ATTEMPTS`` tries the
answer is taken as given and marked unverified, so no customer is ever stuck in a loop.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, Callable, Dict, List, Optional, Text

from rasa_sdk import Tracker
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.forms import FormValidationAction

from actions.base import DomainDict
from bot import validation
from bot.constants import CASE_TYPES, SLOT_INVALID_ATTEMPTS, form_name

MAX_INVALID_ATTEMPTS = 2
UNVERIFIED = "(unverified) "

SlotValue = Dict[Text, Any]


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
