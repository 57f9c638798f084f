"""What every FirstReply action shares: its services and reading the domain."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Dict, Mapping, Optional, Sequence

from rasa_sdk import Action, Tracker

from bot.constants import ANSWER_SLOTS, CASE_TYPE_GENERAL, SLOT_CORRECTION, SLOT_LANGUAGE, form_name
from bot.i18n import variation_text
from bot.services import Services, default_services
from bot.summary import SummaryWords

DomainDict = Dict[str, Any]


class ServiceAction(Action, ABC):
    """An action that uses the case store, the ops config or the clock.

    Rasa's action server builds actions with no arguments, so they use the process's
    default services; tests hand in their own.
    """

    def __init__(self, services: Optional[Services] = None) -> None:
        """Keep ``services``, or use the process's defaults when ``None``."""
        super().__init__()
        self._services = services

    @property
    def services(self) -> Services:
        """Return the services this action uses."""
        return self._services or default_services()

    @abstractmethod
    def name(self) -> str:
        """Return the action's name as the domain lists it."""


def response_text(domain: DomainDict, response: str, language: Optional[str] = None) -> Optional[str]:
    """Return the text of ``response`` in ``language`` (else the main language's), if the domain has one."""
    return variation_text(domain.get("responses") or {}, response, language)


def customer_language(tracker: Tracker) -> Optional[str]:
    """Return the language the conversation is held in (the ``language`` slot), if set."""
    language = tracker.get_slot(SLOT_LANGUAGE)
    return str(language) if language else None


def summary_words(domain: DomainDict, language: Optional[str]) -> SummaryWords:
    """Return the words summaries are put together with, in ``language`` (domain/languages.yml)."""
    english = SummaryWords()

    def text(response: str, default: str) -> str:
        return response_text(domain, response, language) or default

    return SummaryWords(
        in_your_words=text("utter_summary_in_your_words", english.in_your_words),
        you_added=text("utter_summary_you_added", english.you_added),
        also=text("utter_summary_also", english.also),
        labels={
            slot: label
            for slot in (*ANSWER_SLOTS, SLOT_CORRECTION)
            if (label := response_text(domain, f"utter_answer_label_{slot}", language))
        },
    )


def has_response(domain: DomainDict, response: str) -> bool:
    """Return whether the domain defines ``response``."""
    return bool((domain.get("responses") or {}).get(response))


def case_types(domain: DomainDict) -> list[str]:
    """Return the case types: intents that have a form named ``<intent>_form``.

    So a case type that ops add in YAML (intent, form, responses, rules) works with no
    code change.
    """
    intents = [next(iter(intent)) if isinstance(intent, Mapping) else intent for intent in domain.get("intents") or []]
    forms = domain.get("forms") or {}
    return [case_type for case_type in intents if form_name(case_type) in forms]


def case_labels(domain: DomainDict, language: Optional[str] = None) -> Dict[str, str]:
    """Return case type -> label, from the ``utter_label_<case type>`` responses, in ``language``."""
    labels = {}
    for case_type in (*case_types(domain), CASE_TYPE_GENERAL):
        labels[case_type] = response_text(domain, f"utter_label_{case_type}", language) or case_type.replace("_", " ")
    return labels


def case_questions(domain: DomainDict) -> Dict[str, Sequence[str]]:
    """Return case type -> the answer slots its form asks, in order."""
    forms = domain.get("forms") or {}
    questions: Dict[str, Sequence[str]] = {}
    for case_type in case_types(domain):
        form = forms.get(form_name(case_type)) or {}
        questions[case_type] = tuple(form.get("required_slots") or ())
    questions[CASE_TYPE_GENERAL] = ()
    return questions


def latest_intent(tracker: Tracker) -> Optional[str]:
    """Return the intent of the customer's latest message."""
    return (tracker.latest_message.get("intent") or {}).get("name")
