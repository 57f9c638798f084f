"""The one-paragraph case summary the customer confirms and the agent reads first."""

from __future__ import annotations

from typing import Mapping, Sequence

MAX_QUOTE_CHARS = 240


def _quote(text: str) -> str:
    text = " ".join(text.split())
    if len(text) > MAX_QUOTE_CHARS:
        text = text[: MAX_QUOTE_CHARS - 1].rstrip() + "…"
    return f"“{text}”"


def answer_label(slot: str) -> str:
    """Return how an answer slot reads in a summary (``order_number`` -> ``order number``)."""
    return slot.replace("_", " ")


def compose_summary(
    case_label: str,
    answers: Mapping[str, str],
    first_message: str | None,
    corrections: Sequence[str] = (),
) -> str:
    """Return the summary paragraph.

    Args:
        case_label: What the case is about, as the customer would say it.
        answers: The answers to the clarifying questions, in the order asked.
        first_message: What the customer wrote first, quoted so nothing they said is lost.
        corrections: What the customer corrected or added after seeing the summary.
    """
    text = f"{case_label[:1].upper() + case_label[1:]}".rstrip(".") + "."
    if answers:
        details = "; ".join(f"{answer_label(slot)}: {value.rstrip('.')}" for slot, value in answers.items())
        text += f" {details[:1].upper() + details[1:]}".rstrip(".") + "."
    if first_message:
        text += f" In your words: {_quote(first_message)}."
    for correction in corrections:
        text += f" You added: {_quote(correction)}."
    return text
