"""Text for and from Slack: escaping customer text, reading agent text, times in words."""

from __future__ import annotations

import re
from datetime import timedelta

# Slack's markup in what an agent typed: <@U123>, <#C123|name>, <!here>, <https://x|label>.
_MARKUP = re.compile(r"<([^<>|]*)(?:\|([^<>]*))?>")
NOTE_PREFIX = "note:"
# An agent's ``template:`` in a WhatsApp case's thread sends the reopening template of support.yml.
TEMPLATE_PREFIX = "template:"


def escape(text: str) -> str:
    """Escape ``&``, ``<`` and ``>``: customer text can never become a mention, a link or ``<!channel>``."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def clip(text: str, limit: int) -> str:
    """Return ``text`` cut to at most ``limit`` characters, with an ellipsis when cut."""
    return text if len(text) <= limit else text[: max(0, limit - 1)].rstrip() + "…"


def quote(text: str) -> str:
    """Return already escaped ``text`` as a Slack block quote (every line)."""
    return "\n".join(f">{line}" for line in (text.splitlines() or [""]))


def _unmarkup(match: re.Match[str]) -> str:
    target, label = match.group(1), match.group(2)
    if target.startswith(("@", "#")):
        return f"{target[0]}{label}" if label else target
    if target.startswith("!"):
        return f"@{label or target[1:].split('^', 1)[0]}"
    return label or target


def plain_from_slack(text: str) -> str:
    """Turn the text of an agent's Slack message into what the customer should read.

    Slack's markup becomes plain text (``<https://x|the form>`` -> ``the form``,
    ``<mailto:a@b.c|a@b.c>`` -> ``a@b.c``) and entities are unescaped.
    """
    plain = _MARKUP.sub(_unmarkup, text)
    return plain.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&").strip()


def is_note(text: str) -> bool:
    """Return whether a thread message is an internal note (starts with ``note:``)."""
    return text.lstrip().lower().startswith(NOTE_PREFIX)


def is_template_request(text: str) -> bool:
    """Return whether a thread message asks to send the reopening template (starts with ``template:``)."""
    return text.lstrip().lower().startswith(TEMPLATE_PREFIX)


def duration_words(span: timedelta) -> str:
    """Return a positive duration in words: ``under a minute``, ``7 min``, ``2 h 5 min``, ``3 days``."""
    minutes = int(abs(span).total_seconds() // 60)
    if minutes < 1:
        return "under a minute"
    if minutes < 60:
        return f"{minutes} min"
    hours, rest = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h" if rest == 0 or hours >= 6 else f"{hours} h {rest} min"
    days = hours // 24
    return "1 day" if days == 1 else f"{days} days"


def countdown_words(until: timedelta) -> str:
    """Return how a promise stands: ``due in 12 min``, ``due now``, ``overdue by 5 min``."""
    if timedelta(seconds=-30) < until < timedelta(seconds=30):
        return "due now"
    if until > timedelta(0):
        return f"due in {duration_words(until)}"
    return f"overdue by {duration_words(until)}"
