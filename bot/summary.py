"""The one-paragraph case summary the customer confirms and the agent reads first."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

MAX_QUOTE_CHARS = 240


@dataclass(frozen=True)
class SummaryWords:
    """The words a summary is put together with, in the customer's language.

    The defaults are the English of the responses in domain/languages.yml
    (``utter_summary_*``, ``utter_answer_label_<slot>``); ``actions.base.summary_words``
    reads them in the customer's language.

    Attributes:
        in_your_words: Introduces the customer's first message; ``{quote}`` is replaced.
        you_added: Introduces each correction; ``{quote}`` is replaced.
        also: Lists the other problems named; ``{problems}`` is replaced.
        labels: Answer slot -> how it reads; a slot not here reads as its name.
    """

    in_your_words: str = "In your words: {quote}."
    you_added: str = "You added: {quote}."
    also: str = "Also: {problems}."
    labels: Mapping[str, str] = field(default_factory=dict)


def _quote(text: str) -> str:
    text = " ".join(text.split())
    if len(text) > MAX_QUOTE_CHARS:
        text = text[: MAX_QUOTE_CHARS - 1].rstrip() + "…"
    return f"“{text}”"


def answer_label(slot: str, labels: Mapping[str, str] | None = None) -> str:
    """Return how an answer slot reads in a summary (``order_number`` -> ``order number``)."""
    return (labels or {}).get(slot) or slot.replace("_", " ")


def compose_summary(
    case_label: str,
    answers: Mapping[str, str],
    first_message: str | None,
    corrections: Sequence[str] = (),
    words: SummaryWords = SummaryWords(),
) -> str:
    """Return the summary paragraph.

    Args:
        case_label: What the case is about, as the customer would say it.
        answers: The answers to the clarifying questions, in the order asked.
        first_message: What the customer wrote first, quoted so nothing they said is lost.
        corrections: What the customer corrected or added after seeing the summary.
        words: The words it is put together with (English unless given).
    """
    text = f"{case_label[:1].upper() + case_label[1:]}".rstrip(".") + "."
    if answers:
        details = "; ".join(
            f"{answer_label(slot, words.labels)}: {value.rstrip('.')}" for slot, value in answers.items()
        )
        text += f" {details[:1].upper() + details[1:]}".rstrip(".") + "."
    if first_message:
        text += " " + words.in_your_words.format(quote=_quote(first_message))
    for correction in corrections:
        text += " " + words.you_added.format(quote=_quote(correction))
    return text
