"""Checks of the customer's answers to the clarifying questions.

Pure functions: each returns the cleaned value, or ``None`` when the answer cannot be
used, so the form asks again with a hint.
"""

from __future__ import annotations

import re

MAX_ANSWER_CHARS = 1000

_ORDER_NUMBER = re.compile(r"(?<![\w-])#?([A-Za-z]{2,3}-?\d{5,10}|\d{5,10})(?![\w-])")
_EMAIL = re.compile(r"[A-Za-z0-9._%+'-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_NOT_KNOWN = re.compile(
    r"^\s*(no|nope|nah|skip|n/?a|none|idk|dunno|pass)\s*[.!]*\s*$"
    r"|\b(don'?t|do not|dont|can'?t|cannot|couldn'?t|didn'?t) (have|know|remember|find|get|see)\b"
    r"|\bno idea\b|\bnot sure\b|\blost (it|the)\b|\bdeleted\b|\bno (email|order number|number)\b"
    # What the questions in the other languages suggest saying, and the usual ways of saying it.
    r"|^\s*(saltar|passer|[üu]berspringen|salta|pular|nein|non|nada|aucun|keine?|nessuno)\s*[.!]*\s*$"
    r"|\bno (lo|la) tengo\b|\bno (lo )?s[eé]\b|\bje (ne l'ai|l'ai) pas\b|\bje (ne )?sais pas\b"
    r"|\bhab (ich|sie|es) nicht\b|\bwei[sß] (ich )?nicht\b|\bn[aã]o (o )?(tenho|sei)\b|\bnon ce l'ho\b|\bnon (lo )?so\b",
    re.IGNORECASE,
)
_WORD_CHARS = re.compile(r"\w", re.UNICODE)

NOT_GIVEN = "not given"


def order_number(text: str | None) -> str | None:
    """Return the order number found in ``text`` (upper-cased, no '#'), or ``None``."""
    if not text:
        return None
    match = _ORDER_NUMBER.search(text)
    return match.group(1).upper() if match else None


def email(text: str | None) -> str | None:
    """Return the email address found in ``text`` (lower-cased), or ``None``."""
    if not text:
        return None
    match = _EMAIL.search(text)
    return match.group(0).lower() if match else None


def says_not_known(text: str | None) -> bool:
    """Return whether the customer says they don't have or won't give the answer."""
    return bool(text) and bool(_NOT_KNOWN.search(text or ""))


def free_text(text: str | None) -> str | None:
    """Return a usable free-text answer, trimmed and capped, or ``None`` if too short.

    The full message is always kept in the transcript; the answer is capped only so
    the summary stays readable.
    """
    if text is None:
        return None
    cleaned = " ".join(text.split())
    if len(_WORD_CHARS.findall(cleaned)) < 2:
        return None
    if len(cleaned) > MAX_ANSWER_CHARS:
        cleaned = cleaned[: MAX_ANSWER_CHARS - 1].rstrip() + "…"
    return cleaned
