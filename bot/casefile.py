"""Everything about a case that can be read from the conversation itself.

Pure: takes the tracker's events and slots, returns what the case file says. The
handoff action adds what needs the store (previous cases, queue, promise).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from bot import conversation
from bot.constants import (
    ANSWER_SLOTS,
    CASE_TYPE_GENERAL,
    SLOT_CASE_ADDITIONS,
    SLOT_CASE_TYPE,
    SLOT_LANGUAGE,
    SLOT_LANGUAGE_NOTE,
)
from bot.i18n import CONFIDENT, DEFAULT_LANGUAGE, detect_language, language_code
from bot.nlu.signals import read_signals
from bot.summary import SummaryWords, compose_summary


@dataclass(frozen=True)
class CaseFile:
    """What the conversation says about the case."""

    case_type: str
    answers: dict[str, str]
    summary: str
    transcript: list[conversation.Line]
    customer_name: str | None
    language: str
    complaint_score: float
    hostility: float
    intent_confidence: float | None
    # The customer's handle on the platform ("@maria_k"), when the channel gave one.
    customer_handle: str | None = None
    # The public post the conversation began with (``bot.conversation.public_post``), if any.
    public_post: Mapping[str, Any] | None = None
    # Why the latest message was not understood as written, when it was not ("unclear or
    # mixed", "not switched on: nl"); the desk card shows it beside the language.
    language_note: str | None = None


def _message_signals(event: Mapping[str, Any]) -> tuple[float, float]:
    complaint = (event.get("parse_data") or {}).get("complaint")
    if isinstance(complaint, Mapping) and "score" in complaint:
        return float(complaint["score"]), float(complaint.get("hostility", 0.0))
    signals = read_signals(event.get("text"))
    return signals.complaint_score, signals.hostility


def _case_confidence(user_events: Sequence[Mapping[str, Any]], case_type: str) -> float | None:
    """Return the classifier's confidence in the case type, from the message that raised it."""
    for event in reversed(user_events):
        intent = (event.get("parse_data") or {}).get("intent") or {}
        if intent.get("name") == case_type:
            return round(float(intent.get("confidence") or 0.0), 4)
    return None


def _first_case_message(user_events: Sequence[Mapping[str, Any]], case_type: str) -> str | None:
    """Return the customer's own words about the case: the message that raised it, else all they wrote."""
    for event in user_events:
        intent = (event.get("parse_data") or {}).get("intent") or {}
        if intent.get("name") == case_type and event.get("text") and not str(event["text"]).startswith("/"):
            return str(event["text"])
    # No message raised this case type (a general case): everything the customer wrote.
    texts = [str(event["text"]) for event in user_events if event.get("text") and not str(event["text"]).startswith("/")]
    return " / ".join(texts) if texts else None


def other_problems(
    user_events: Sequence[Mapping[str, Any]], case_type: str, case_labels: Mapping[str, str]
) -> list[str]:
    """Return the other problems the customer named beside this case's, as the summary lists them.

    The NLU marks a message whose clauses name two case types ("the lamp came smashed
    and I was charged twice") with ``problems``; the one this case is not about is
    carried in the same case, so nobody has to ask for it again.
    """
    found: dict[str, str] = {}
    for event in user_events:
        for problem in (event.get("parse_data") or {}).get("problems") or []:
            intent = problem.get("intent") if isinstance(problem, Mapping) else None
            if intent and intent != case_type and intent not in found:
                label = case_labels.get(intent, intent.replace("_", " "))
                found[intent] = f"{label} (“{str(problem.get('text') or '').strip()}”)"
    return list(found.values())


def _case_language(slots: Mapping[str, Any], session: Sequence[Mapping[str, Any]], texts: str) -> str:
    """Return the conversation's language.

    The ``language`` slot (what the assistant answered in), else what the customer's
    messages are confidently in, else what the channel reports, else English.
    """
    if slots.get(SLOT_LANGUAGE):
        return str(slots[SLOT_LANGUAGE])
    detection = detect_language(texts)
    if detection.language and detection.confidence >= CONFIDENT:
        return detection.language
    return language_code(conversation.reported_language(session)) or DEFAULT_LANGUAGE


def read_case_file(
    events: Sequence[Mapping[str, Any]],
    slots: Mapping[str, Any],
    case_labels: Mapping[str, str],
    case_questions: Mapping[str, Sequence[str]],
    words: SummaryWords = SummaryWords(),
) -> CaseFile:
    """Read the case from the current conversation session.

    Args:
        events: All tracker events (only the current session is used).
        slots: The tracker's slots.
        case_labels: Case type -> how it reads for the customer ("Where my order is").
        case_questions: Case type -> the answer slots its form asks, in order.
        words: The summary's words in the customer's language (English unless given).
    """
    session = conversation.current_session(events)
    users = conversation.user_events(session)
    case_type = slots.get(SLOT_CASE_TYPE) or CASE_TYPE_GENERAL
    asked = case_questions.get(case_type, ANSWER_SLOTS)
    answers = {slot: str(slots[slot]) for slot in asked if slots.get(slot) not in (None, "")}
    first_message = _first_case_message(users, case_type)
    summary = compose_summary(
        case_labels.get(case_type, case_type.replace("_", " ")),
        answers,
        first_message,
        list(slots.get(SLOT_CASE_ADDITIONS) or []),
        words,
    )
    also = other_problems(users, case_type, case_labels)
    if also:
        summary += " " + words.also.format(problems="; ".join(also))
    scores = [_message_signals(event) for event in users]
    texts = " ".join(str(event.get("text") or "") for event in users if not str(event.get("text") or "").startswith("/"))
    return CaseFile(
        case_type=case_type,
        answers=answers,
        summary=summary,
        transcript=conversation.transcript(session),
        customer_name=conversation.customer_name(session) or conversation.customer_name(events),
        language=_case_language(slots, session, texts),
        language_note=slots.get(SLOT_LANGUAGE_NOTE) or None,
        complaint_score=max((score for score, _ in scores), default=0.0),
        hostility=max((hostility for _, hostility in scores), default=0.0),
        intent_confidence=_case_confidence(users, case_type),
        customer_handle=conversation.customer_handle(session) or conversation.customer_handle(events),
        public_post=conversation.public_post(session),
    )
