"""How a customer's text is tidied before the classifiers read it.

Social posts carry things that say nothing about what the customer wants: @mentions
of the brand or of other people, links, HTML entities from the platform's API. They
are taken out (for the classifiers only; the case keeps the text as written).
"""

from __future__ import annotations

import html
import re

_MENTION = re.compile(r"(?<![\w@])@\w{1,30}")
_URL = re.compile(r"\b(?:https?://|www\.)\S+", re.IGNORECASE)
_SPACES = re.compile(r"\s+")
# What a channel puts in place of a photo, a sticker or a file ("[photo]", "[voice message]"):
# no words of the customer's, so nothing to classify.
_PLACEHOLDER = re.compile(r"^\s*\[[a-z][a-z ]{1,30}\]\s*$")


def for_classifier(text: str | None) -> str:
    """Return ``text`` without @mentions, links and HTML entities, spaces collapsed.

    A message that was nothing but mentions and links, or a channel's placeholder for a
    photo or a file ("[photo]"), becomes the empty string.
    """
    if not text or _PLACEHOLDER.match(text):
        return ""
    cleaned = _URL.sub(" ", html.unescape(text))
    cleaned = _MENTION.sub(" ", cleaned)
    return _SPACES.sub(" ", cleaned).strip()


# Sentence ends, commas, "but / also / plus / and", and emoji (often a clause of their own).
_CLAUSE_BREAKS = re.compile(
    r"([.!?;,]+\s*(?:but|and|also)?\b|\s+(?:but|also|plus|and|as well as)\s+|\s*[\U0001F300-\U0001FAFF\u2600-\u27BF]+\s*)",
    re.IGNORECASE,
)
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")


def clauses(text: str | None, min_words: int = 2) -> list[str]:
    """Split a message into its clauses ("..., but ...", "... and ...", sentences).

    Clauses shorter than ``min_words`` words are joined back to the one before, with
    what separated them, so that "love it." stays a clause but "salt and pepper" stays whole.
    """
    pieces = _CLAUSE_BREAKS.split(for_classifier(text))
    out: list[str] = []
    separator = ""
    for index, piece in enumerate(pieces):
        if index % 2:
            separator = piece
            continue
        part = piece.strip(" ,")
        if not part:
            continue
        if out and (len(part.split()) < min_words or len(out[-1].split()) < min_words):
            out[-1] = f"{out[-1]}{separator}{part}" if separator.strip(" ,.!?;") else f"{out[-1]} {part}"
        else:
            out.append(part)
    return out


def words(text: str | None) -> list[str]:
    """Return the lower-case words of ``text`` as the classifier reads it (letters only)."""
    return _WORD.findall(for_classifier(text).lower())
