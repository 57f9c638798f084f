"""Reading a Rasa tracker's events: the current session, the transcript, the customer.

Works on the plain event dictionaries that Rasa sends to the action server (and that
its HTTP API returns), so the desk can use it on a fetched tracker too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping, Sequence

from bot.constants import (
    DEFAULT_CHANNEL,
    GREETED_AT_EDGE,
    GREETING_RESPONSES,
    LANGUAGE_METADATA_KEYS,
    NAME_METADATA_KEYS,
    PUBLIC_POST_KEY,
)

Event = Mapping[str, Any]

_PLACEHOLDER = re.compile(r"(\[[^\[\]]*\])?")
_NON_TEXT_KEYS = ("attachment", "attachments", "photo", "sticker", "voice", "document", "location", "contact")


@dataclass(frozen=True)
class Line:
    """One message of the conversation, as an agent reads it."""

    who: str
    text: str
    at: datetime


def current_session(events: Sequence[Event]) -> list[Event]:
    """Return the events since the last ``session_started`` (all events if none)."""
    for index in range(len(events) - 1, -1, -1):
        if events[index].get("event") == "session_started":
            return list(events[index + 1 :])
    return list(events)


def _at(event: Event) -> datetime:
    return datetime.fromtimestamp(float(event.get("timestamp") or 0.0), tz=timezone.utc)


def _non_text_note(metadata: Mapping[str, Any] | None) -> str | None:
    if not metadata:
        return None
    kinds = [key for key in _NON_TEXT_KEYS if metadata.get(key)]
    return f"[{', '.join(kinds)} sent]" if kinds else None


def transcript(events: Iterable[Event]) -> list[Line]:
    """Return the customer's and the assistant's messages, in order.

    A message with no text (a photo, a sticker) is kept as a note of what was sent,
    so the agent knows it exists.
    """
    lines: list[Line] = []
    for event in events:
        kind = event.get("event")
        if kind == "user":
            text = event.get("text") or ""
            if text.startswith("/"):
                # A button press arrives as its payload ("/affirm"): show it as a press.
                text = f"[pressed: {text[1:].split('{')[0]}]"
            if _public_post_of(event) is not None:
                # Said in public (a mention, a comment): the agent must know everyone saw it.
                text = f"[public post] {text}"
            note = _non_text_note(event.get("metadata"))
            if note:
                # A channel stands a placeholder such as "[photo]" in for a message with no
                # text; the note says the same, so it replaces the placeholder.
                text = note if _PLACEHOLDER.fullmatch(text.strip()) else f"{text} {note}".strip()
            lines.append(Line("customer", text, _at(event)))
        elif kind == "bot" and event.get("text"):
            lines.append(Line("bot", str(event["text"]), _at(event)))
    return lines


def _public_post_of(event: Event) -> Mapping[str, Any] | None:
    found = (event.get("metadata") or {}).get(PUBLIC_POST_KEY)
    return found if isinstance(found, Mapping) else None


def public_post(events: Iterable[Event]) -> dict[str, Any] | None:
    """Return the public post the conversation began with (the first customer message marked one), if any.

    Its ``platform``, ``id``, ``text``, ``url``, ``author`` and ``hostile``, as the
    connector gave them.
    """
    for event in user_events(events):
        found = _public_post_of(event)
        if found is not None:
            return dict(found)
    return None


def user_events(events: Iterable[Event]) -> list[Event]:
    """Return the customer's messages (``user`` events)."""
    return [event for event in events if event.get("event") == "user"]


def has_bot_spoken(events: Iterable[Event]) -> bool:
    """Return whether the assistant has said anything in these events."""
    return any(event.get("event") == "bot" for event in events)


def _first_metadata_value(events: Sequence[Event], keys: Sequence[str]) -> str | None:
    for event in reversed(events):
        metadata = event.get("metadata") or {}
        for key in keys:
            value = metadata.get(key)
            if isinstance(value, str) and value.strip():
                return value.strip()
    return None


def customer_name(events: Sequence[Event]) -> str | None:
    """Return the name the channel gave for the customer, if any (latest wins).

    A handle such as ``@maria_k`` loses its ``@``; the name is capped at 64 characters.
    """
    name = _first_metadata_value(
        [event for event in events if event.get("event") in ("user", "session_started")], NAME_METADATA_KEYS
    )
    if not name:
        return None
    name = name.lstrip("@").strip()
    return name[:64] or None


def customer_handle(events: Sequence[Event]) -> str | None:
    """Return the customer's handle on the platform (``@maria_k``), if the channel gave one (latest wins)."""
    handle = _first_metadata_value([event for event in events if event.get("event") == "user"], ("username",))
    handle = handle.lstrip("@").strip()[:64] if handle else None
    return f"@{handle}" if handle else None


def reported_language(events: Sequence[Event]) -> str | None:
    """Return the language the channel reported for the customer, if any."""
    return _first_metadata_value([event for event in events if event.get("event") == "user"], LANGUAGE_METADATA_KEYS)


def customer_texts(events: Iterable[Event]) -> list[str]:
    """Return the text of every customer message, in order (empty ones skipped)."""
    return [event["text"] for event in user_events(events) if event.get("text")]


def last_bot_action_before_latest_message(events: Sequence[Event]) -> str | None:
    """Return the name of the last action run before the customer's latest message."""
    seen_latest_user = False
    for event in reversed(events):
        kind = event.get("event")
        if kind == "user":
            if seen_latest_user:
                return None
            seen_latest_user = True
        elif kind == "action" and seen_latest_user and event.get("name") != "action_listen":
            return str(event.get("name"))
    return None


def first_name(name: str | None) -> str | None:
    """Return the part of a full name to address the customer by ("Maria Keller" -> "Maria")."""
    if not name or not name.split():
        return None
    return name.split()[0]


def greeted_at_edge(
    tracker_events: Sequence[Event], latest_message: Mapping[str, Any], channel: str | None
) -> dict[str, str] | None:
    """Return the greeting the channel sent ahead of the dialogue for the latest message, if it is to be recorded.

    ``{"response", "text"}`` from the message's metadata (``bot.channels.edge``), unless the
    dialogue recorded it already in this turn, or the message came through the REST channel
    (whose callers write their own metadata, and whose replies are all in its answer).
    """
    edge = (latest_message.get("metadata") or {}).get(GREETED_AT_EDGE)
    if channel in (None, DEFAULT_CHANNEL) or not isinstance(edge, Mapping):
        return None
    text, response = edge.get("text"), edge.get("response")
    if not isinstance(text, str) or not text.strip() or response not in GREETING_RESPONSES:
        return None
    since_message = []
    for event in reversed(tracker_events):
        if event.get("event") == "user":
            break
        since_message.append(event)
    recorded = (e for e in since_message if e.get("event") == "bot" and (e.get("metadata") or {}).get(GREETED_AT_EDGE))
    if any(recorded):
        return None
    return {"response": str(response), "text": text}
