"""Reading Messenger's and Instagram's webhook events: what is stored, what is ignored, what Rasa reads.

Pure functions over the JSON Meta sends (no network, no database), used by
``bot.channels.messenger``:

- ``inbound_events``: every entry and every event of a batched POST, as the inbox's
  ``InboundEvent``s (a DM keyed on its ``mid``, a comment on its id); echoes of the
  account's own messages, deliveries, reads, reactions, standby and the account's own
  comments are left out; pieces in a shape Meta never sends are counted as skipped.
- ``dm_content``: a stored DM as what Rasa reads (text, quick-reply or postback payload,
  or a placeholder for an attachment, with the metadata that notes it in the case).
- ``Comment``: a public comment (Facebook ``feed``, Instagram ``comments``) and how it
  reads (``comment_tone``: praise gets a public thanks only; hostility raises priority).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from bot.channels.base import InboundEvent
from bot.channels.common import typed_text
from bot.nlu.signals import read_signals

if TYPE_CHECKING:
    from bot.channels.meta_output import Platform

log = logging.getLogger(__name__)

DM = "dm"
COMMENT = "comment"
# The inbox keeps ids up to 128 characters and reply keys up to 160; Instagram's mids are
# longer than Messenger's, so long ids are stored as their digest (the same every time).
_ID_LIMIT = 100
# Hostility (bot.nlu.signals) from which a public comment is treated as hostile.
HOSTILE_AT = 0.5
# A comment with this much complaint evidence is never read as praise.
_COMPLAINT_AT = 0.3
_PRAISE = re.compile(
    r"\b(love|loved|loving|great|amazing|awesome|excellent|fantastic|brilliant|perfect|best|thanks?|thank you|"
    r"wonderful|superb|gorgeous)\b|[❤😍🥰👏🙌💯✨]",
    re.IGNORECASE,
)

# Meta attachment type -> (what the customer is told they sent, the metadata key noting it).
ATTACHMENT_KINDS: dict[str, tuple[str, str]] = {
    "image": ("photo", "photo"),
    "sticker": ("sticker", "sticker"),
    "video": ("video", "attachment"),
    "audio": ("voice message", "voice"),
    "file": ("file", "document"),
    "location": ("location", "location"),
    "story_mention": ("story mention", "attachment"),
    "share": ("shared post", "attachment"),
    "ig_reel": ("reel", "attachment"),
    "reel": ("reel", "attachment"),
    "animated_image_share": ("GIF", "attachment"),
    "fallback": ("link", "attachment"),
}
UNKNOWN_ATTACHMENT = ("message", "attachment")


class Malformed(ValueError):
    """A webhook piece in a shape Meta never sends."""


def stored_id(platform_id: str) -> str:
    """Return the inbox id of a platform id: itself, or a digest when it is too long to store."""
    if len(platform_id) <= _ID_LIMIT:
        return platform_id
    return "sha256:" + hashlib.sha256(platform_id.encode("utf-8", "surrogatepass")).hexdigest()


# --- the webhook body ---------------------------------------------------------------------


def inbound_events(data: Mapping[str, Any], platform: Platform, account_id: str, source: str) -> tuple[
    list[InboundEvent], int
]:  # fmt: skip
    """Return the events of a webhook body worth storing, and how many pieces were malformed."""
    events: list[InboundEvent] = []
    skipped = 0
    for entry in data["entry"]:
        if not isinstance(entry, dict):
            skipped += 1
            continue
        if str(entry.get("id")) != account_id:
            log.warning("%s webhook: an entry for account %r, not %s, ignored", platform.channel,
                        str(entry.get("id"))[:40], account_id)  # fmt: skip
            continue
        pieces: list[tuple[str, Any]] = []
        for kind, key in ((DM, "messaging"), (COMMENT, "changes")):
            items = entry.get(key) or []
            if isinstance(items, list):
                pieces += [(kind, item) for item in items]
            else:
                log.warning("%s webhook: entry.%s is not a list, skipped", platform.channel, key)
                skipped += 1
        # entry.standby: messages another app of the Page (handover protocol) is handling.
        for kind, item in pieces:
            try:
                found = _dm_event(item, account_id) if kind == DM else _comment_event(item, platform, account_id)
            except Malformed as error:
                log.warning("%s webhook: %s piece skipped: %s", platform.channel, kind, error)
                skipped += 1
                continue
            if found is not None:
                platform_id, customer = found
                body = json.dumps({"kind": kind, "event": item})  # ASCII: survives any database
                events.append(InboundEvent(source, stored_id(platform_id), customer, body))
    return events, skipped


def _text_id(value: Any, what: str) -> str:
    if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value).strip():
        return str(value)
    raise Malformed(f"{what} missing or not an id")


def _dm_event(event: Any, account_id: str) -> tuple[str, str] | None:
    """Return (mid, customer) of a DM event worth storing, ``None`` for one to ignore."""
    if not isinstance(event, dict) or not isinstance(event.get("sender"), dict):
        raise Malformed("event without a sender")
    customer = _text_id(event["sender"].get("id"), "sender.id")
    message, postback = event.get("message"), event.get("postback")
    if message is not None:
        if not isinstance(message, dict):
            raise Malformed("message is not an object")
        if message.get("is_echo") or customer == account_id:
            return None  # the account's own message, sent by us or by a person in the inbox
        if message.get("is_deleted"):
            return None  # Instagram: the customer unsent a message; the case keeps the original
        if "text" in message and not isinstance(message["text"], str):
            raise Malformed("message.text is not text")
        if "attachments" in message and not isinstance(message["attachments"], list):
            raise Malformed("message.attachments is not a list")
        return _text_id(message.get("mid"), "message.mid"), customer
    if postback is not None:
        if not isinstance(postback, dict) or not isinstance(postback.get("payload", ""), str):
            raise Malformed("postback without a text payload")
        mid = postback.get("mid") or f"postback:{customer}:{event.get('timestamp')}"
        return _text_id(mid, "postback.mid"), customer
    return None  # delivery, read, reaction, referral, optin: nothing to answer


def _comment_event(change: Any, platform: Platform, account_id: str) -> tuple[str, str] | None:
    """Return (comment key, commenter) of a new public comment, ``None`` for anything else."""
    if not isinstance(change, dict) or not isinstance(change.get("value"), dict):
        raise Malformed("change without a value")
    if change.get("field") != platform.comment_field:
        return None
    comment = Comment.read(change["value"], platform)
    if comment is None or comment.author_id == account_id:
        return None  # not a new comment, or the account's own (its public replies come back here)
    return f"comment:{comment.id}", comment.author_id


# --- what Rasa reads ----------------------------------------------------------------------


@dataclass(frozen=True)
class DMContent:
    """A stored DM as Rasa reads it."""

    text: str
    metadata: dict[str, Any]
    # What the customer is told they sent, when the assistant cannot read it (None: it can).
    noun: str | None = None
    # The item came with text (a caption, a story reply): no need to ask what it is about.
    with_text: bool = False


def dm_content(event: Mapping[str, Any]) -> DMContent:
    """Return what Rasa reads of a stored DM event: text, a button's payload, or an attachment's placeholder."""
    postback = event.get("postback")
    if isinstance(postback, dict):
        return DMContent(str(postback.get("payload") or postback.get("title") or ""), {"button": True})
    message = event.get("message") or {}
    quick = message.get("quick_reply")
    if isinstance(quick, dict) and isinstance(quick.get("payload"), str):
        return DMContent(quick["payload"], {"button": True})
    text = typed_text(message.get("text") or "")
    metadata: dict[str, Any] = {}
    story = (message.get("reply_to") or {}).get("story") if isinstance(message.get("reply_to"), dict) else None
    if isinstance(story, dict):
        metadata["story_reply"] = {"id": str(story.get("id") or ""), "url": str(story.get("url") or "")}
        metadata["attachment"] = {"type": "story_reply", "url": str(story.get("url") or "")}
    attachments = [a for a in message.get("attachments") or [] if isinstance(a, dict)]
    if message.get("is_unsupported") or not (text or attachments or metadata):
        attachments.append({"type": "unsupported"})
    if not attachments:
        return DMContent(text, metadata)
    noun = ""
    for number, attachment in enumerate(attachments):
        kind_noun, key, value = _attachment(attachment)
        noun = noun or kind_noun
        if number == 0 or key not in metadata:
            metadata[key] = value
    if len(attachments) > 1:
        metadata["attachments"] = [_attachment(a)[2] for a in attachments]
    return DMContent(text or f"[{noun}]", metadata, noun, with_text=bool(text))


def _attachment(attachment: Mapping[str, Any]) -> tuple[str, str, Any]:
    """Return (noun, metadata key, metadata value) of one Meta attachment."""
    kind = str(attachment.get("type") or "")
    payload = attachment.get("payload") if isinstance(attachment.get("payload"), dict) else {}
    if kind == "image" and payload.get("sticker_id"):
        kind = "sticker"
    noun, key = ATTACHMENT_KINDS.get(kind, UNKNOWN_ATTACHMENT)
    url = str(payload.get("url") or "")
    if key == "location":
        where = payload.get("coordinates") if isinstance(payload.get("coordinates"), dict) else {}
        return noun, key, {"latitude": where.get("lat"), "longitude": where.get("long")}
    if key == "sticker":
        return noun, key, str(payload.get("sticker_id") or url or "sticker")
    if key in ("photo", "voice", "document"):
        return noun, key, url or kind
    return noun, key, {"type": kind or "unknown", "url": url}


# --- public comments ----------------------------------------------------------------------


@dataclass(frozen=True)
class Comment:
    """A new public comment under one of the account's posts."""

    id: str
    text: str
    author_id: str
    author: str
    created: datetime | None
    url: str
    media_id: str = ""

    @classmethod
    def read(cls, value: Mapping[str, Any], platform: Platform) -> Comment | None:
        """Return the comment a ``feed`` / ``comments`` change announces, ``None`` if it is not a new one.

        Raises:
            Malformed: a new comment without an id or an author.
        """
        author = value.get("from") if isinstance(value.get("from"), dict) else {}
        text = value.get("message") if platform.public_platform == "facebook" else value.get("text")
        if platform.public_platform == "facebook":
            if value.get("item") != "comment" or value.get("verb") != "add":
                return None  # a post, a reaction, an edit or a removal
            comment_id = _text_id(value.get("comment_id"), "comment_id")
            post = value.get("post") if isinstance(value.get("post"), dict) else {}
            url = str(post.get("permalink_url") or f"https://www.facebook.com/{comment_id}")
            name = str(author.get("name") or "")
            media = str(value.get("post_id") or "")
        else:
            comment_id = _text_id(value.get("id"), "id")
            name = str(author.get("username") or "")
            media = str((value.get("media") or {}).get("id") or "") if isinstance(value.get("media"), dict) else ""
            url = ""  # looked up from the media's permalink (bot.channels.messenger)
        if text is not None and not isinstance(text, str):
            raise Malformed("comment text is not text")
        created = value.get("created_time")
        when = (
            datetime.fromtimestamp(created, tz=timezone.utc)
            if isinstance(created, (int, float)) and not isinstance(created, bool) and 0 < created < 1e11
            else None
        )
        return cls(comment_id, text or "", _text_id(author.get("id"), "from.id"), name, when, url, media)


@dataclass(frozen=True)
class Tone:
    """How a public comment reads."""

    praise: bool  # a public thanks, nothing else
    hostile: bool  # raises the case's priority


def comment_tone(text: str) -> Tone:
    """Return whether a comment is praise (no complaint, no question, a praise word) and whether it is hostile."""
    signals = read_signals(text)
    hostile = signals.hostility >= HOSTILE_AT
    praise = (
        not hostile and signals.complaint_score < _COMPLAINT_AT and "?" not in text and bool(_PRAISE.search(text))
    )
    return Tone(praise, hostile)
