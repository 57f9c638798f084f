"""The sender of the Slack DM connector: Rasa's responses and the agents' replies, in customers' DMs.

A ``bot.channels.base.RecordedOutput``: splitting, the buttons prompt, the holding line and
the reply records come from there. This module adds what is Slack's own: escaping (a
customer's text never becomes a mention or a link), Block Kit buttons, the thread reply
under a mention, and posting exactly once: every post carries an idempotency key in its
message metadata, so after an answer lost on the way back (time-out, dropped connection,
5xx) the DM's history is searched for it before it is posted again (``post_once``).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.channels.base import optional_lookup
from bot.channels.common import BoundedDict, split_text
from bot.channels.inbox import SENDING, SENT, Inbox, reply_digest
from bot.channels.replies import BUTTONS_PROMPT, RecordedOutput, call_looking_first
from bot.channels.slack_client import (
    CHANNEL_NAME,
    DELIVERY_EVENT,
    delivery_metadata,
    may_have_posted,
    refused_for_good,
    server_error_retries,
    slack_error,
)

log = logging.getLogger(__name__)

# Slack takes 40,000 characters in a message but only 3,000 in a section block: one limit for both.
TEXT_LIMIT = 3000
BUTTON_TITLE_LIMIT = 75
BUTTON_VALUE_LIMIT = 2000
BUTTONS_PER_ACTIONS_BLOCK = 25
BUTTON_ACTION_PREFIX = "fr_button_"
# How far before the first try a post is looked for: covers our clock running ahead of Slack's.
LOOKBACK_SECONDS = 120.0
CHOSEN = "You chose: *{title}*"


# --- text ---------------------------------------------------------------------------------


def escape(text: str) -> str:
    """Escape ``&``, ``<`` and ``>`` so text can never become a mention, a link or ``<!channel>``."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def message_parts(text: str, limit: int = TEXT_LIMIT) -> list[str]:
    """Split ``text`` for Slack and escape each part; no part is longer than ``limit`` escaped."""
    parts: list[str] = []
    pending = split_text(text, limit)
    while pending:
        raw = pending.pop(0)
        escaped = escape(raw)
        if len(escaped) <= limit:
            parts.append(escaped)
        else:  # entities made it longer: cut the raw part smaller, in proportion
            pending[0:0] = split_text(raw, max(1, len(raw) * limit // len(escaped)))
    return parts


def _button_elements(buttons: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    elements = []
    for number, button in enumerate(buttons):
        title = str(button.get("title") or button.get("payload") or "?")
        element: dict[str, Any] = {
            "type": "button",
            "text": {"type": "plain_text", "text": title[:BUTTON_TITLE_LIMIT], "emoji": True},
            "action_id": f"{BUTTON_ACTION_PREFIX}{number}",
        }
        if button.get("url"):
            element["url"] = str(button["url"])
        else:
            value = str(button.get("payload") or title)
            if len(value) > BUTTON_VALUE_LIMIT:
                log.warning("slack button %r: payload longer than Slack allows, its title is sent instead", title)
                value = title[:BUTTON_VALUE_LIMIT]
            element["value"] = value
        elements.append(element)
    return elements


def button_blocks(text: str, buttons: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Return Block Kit blocks: the (already escaped) ``text`` and Rasa's buttons under it."""
    elements = _button_elements(buttons)
    blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]
    for start in range(0, len(elements), BUTTONS_PER_ACTIONS_BLOCK):
        blocks.append({"type": "actions", "elements": elements[start : start + BUTTONS_PER_ACTIONS_BLOCK]})
    return blocks


def chosen_blocks(blocks: Sequence[Mapping[str, Any]], title: str) -> list[dict[str, Any]]:
    """Return ``blocks`` with their buttons replaced by a line saying which one was chosen."""
    kept = [dict(block) for block in blocks if block.get("type") != "actions"]
    kept.append({"type": "context", "elements": [{"type": "mrkdwn", "text": CHOSEN.format(title=escape(title))}]})
    return kept


# --- sending ------------------------------------------------------------------------------


class SlackDMOutput(RecordedOutput):
    """Sends to customers' DMs with the app: Rasa's responses and the agents' replies.

    ``recipient_id`` is the customer's Slack user id (a DM or channel id also works). All
    text is escaped and split at 3,000 characters. Retries that are safe live in the client
    (``build_client``); a post whose answer was lost is looked up before it is posted
    again (``post_once``), as often and as far apart as the client retries 5xx answers.
    The copy made for one event (``for_message``) records each reply in the inbox under
    ``(message id, position)``, its idempotency key too, so handling the event again
    posts no reply twice (``bot.channels.base.RecordedOutput``).
    """

    text_limit = TEXT_LIMIT
    # A post left in doubt is looked up in the DM's history before it is posted again.
    can_look_up_sent = True

    def __init__(self, client: AsyncWebClient, inbox: Inbox | None = None) -> None:
        """Send through ``client``; record the replies to an event in ``inbox``."""
        super().__init__(inbox)
        self.client = client
        self.since = 0.0
        self._dm_channels: BoundedDict[str, str] = BoundedDict()
        retries, self._backoff = server_error_retries(client)
        self.max_attempts = 1 + retries

    @classmethod
    def name(cls) -> str:
        """Rasa's name for this output channel."""
        return CHANNEL_NAME

    def for_message(self, message_id: str, since: float) -> SlackDMOutput:
        """Return a sender for the replies to the event ``message_id`` (recorded, posted once).

        ``since`` (epoch seconds) is how far back the DM's history is searched for a reply a
        crash or a lost answer left in doubt: just before the event happened.
        """
        bound = self.bound_to(message_id)  # the DM channel cache stays shared
        bound.since = since
        return bound

    def escape(self, text: str) -> str:
        """Return ``text`` escaped (see ``escape``)."""
        return escape(text)

    def parts(self, text: str) -> list[str]:
        """Return ``text`` split and escaped (see ``message_parts``)."""
        return message_parts(text)

    def refused_for_good(self, error: BaseException) -> bool:
        """Return whether Slack refused a post in a way trying again later will not mend."""
        return isinstance(error, SlackApiError) and refused_for_good(error)

    def describe(self, error: BaseException) -> str:
        """Return Slack's error code, for the log."""
        return slack_error(error)

    def remember_dm(self, user_id: str, channel_id: str) -> None:
        """Note the DM channel of ``user_id`` (seen on an incoming message: no lookup needed)."""
        self._dm_channels[user_id] = channel_id

    async def dm_channel(self, recipient_id: str) -> str:
        """Return the DM channel for a user id, opening it once (``conversations.open``)."""
        if not recipient_id.startswith(("U", "W")):
            return recipient_id  # already a channel id
        known = self._dm_channels.get(recipient_id)
        if known is None:
            opened = await self.client.conversations_open(users=recipient_id)
            known = str(opened["channel"]["id"])
            self._dm_channels[recipient_id] = known
        return known

    async def find_posted(self, channel: str, key: str, since: float) -> str | None:
        """Return the ts of the message marked with ``key`` in ``channel`` since ``since`` (epoch seconds), if any.

        A history in an unexpected shape counts as "not there" (logged and counted): the
        reply is posted again, as a customer who gets a line twice is better served than one
        who gets nothing.
        """
        cursor = None
        while True:
            page = await optional_lookup(
                CHANNEL_NAME, "conversations.history", channel,
                lambda: self.client.conversations_history(
                    channel=channel, oldest=f"{since:.6f}", include_all_metadata=True, limit=200, cursor=cursor
                ),
                lambda answer: _marked(answer, key), upstream_errors=(),
            )  # fmt: skip
            if page is None:
                return None
            found, cursor = page
            if found is not None or not cursor:
                return found

    async def post_once(
        self, channel: str, text: str, key: str, *, since: float, check_first: bool = False, **extra: Any
    ) -> str:
        """Post ``text`` to ``channel`` once for ``key``, and return the message's ts.

        After an answer lost on the way back (``may_have_posted``) the channel's history
        since ``since`` is searched for ``key`` before posting again; ``check_first``
        searches before the first try too (an earlier attempt may have posted it).
        """
        backoff = self._backoff

        def retry(error: BaseException, attempt: int) -> tuple[float, bool] | None:
            if not may_have_posted(error):
                return None
            return (backoff.calculate_sleep_duration(attempt - 1) if backoff is not None else 0.0), True

        async def post() -> str:
            answer = await self.client.chat_postMessage(channel=channel, text=text, metadata=delivery_metadata(key),
                                                        **extra)  # fmt: skip
            return str(answer["ts"])

        return await call_looking_first(
            f"slack post {key} in {channel}", post, attempts=self.max_attempts, retry=retry,
            look_up=lambda: self.find_posted(channel, key, since), in_doubt=check_first,
            describe=lambda error: f"no answer ({type(error).__name__}: {error})",
        )  # fmt: skip

    async def deliver_text(self, recipient_id: str, text: str, key: str, *, since: float, check_first: bool) -> None:
        """Send ``text`` like ``send_text_message``, each part once for ``key`` (see ``post_once``).

        For senders that retry on their own schedule (the desk's outbox): the same ``key``
        on every attempt, ``since`` when the first one started, ``check_first`` from the
        second on.
        """
        channel = await self.dm_channel(recipient_id)
        for number, part in enumerate(message_parts(text)):
            await self.post_once(channel, part, f"{key}:{number}", since=since, check_first=check_first)

    async def _send_part(self, recipient_id: str, text: str, *, seq: int | None = None, **extra: Any) -> str | None:
        """Post one escaped ``text`` to the customer's DM (recorded when bound); return its ts."""
        channel = await self.dm_channel(recipient_id)
        if not self.bound:
            key = uuid.uuid4().hex
            return await self.post_once(channel, text, key, since=time.time() - LOOKBACK_SECONDS, **extra)
        return await self._post_recorded(channel, text, self.next_seq() if seq is None else seq, **extra)

    async def _post_recorded(self, channel: str, text: str, seq: int, **extra: Any) -> str | None:
        """Post reply ``seq`` to the bound event once (see class doc); return its ts.

        Returns ``None`` when it went out before or Slack refused it for good
        (``refused_for_good``): neither is worth handling the event again.
        """
        key = f"{self.origin}:{seq}"
        return await self.recorded(
            f"post to {channel}", seq, ("chat.postMessage", channel, text, repr(extra.get("blocks"))),
            lambda state: self.post_once(channel, text, key, since=self.since, check_first=state == SENDING, **extra),
        )  # fmt: skip

    async def _button_options(self, text: str, buttons: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        return {"blocks": button_blocks(text, buttons)}

    async def send_image_url(self, recipient_id: str, image: str, **kwargs: Any) -> None:
        """Send the image at ``image`` (a URL Slack can fetch)."""
        block = {"type": "image", "image_url": image, "alt_text": "image"}
        await self._send_part(recipient_id, escape(image), blocks=[block])

    async def send_custom_json(self, recipient_id: str, json_message: dict[str, Any], **kwargs: Any) -> None:
        """Send a custom payload: ``text`` (with optional ``buttons``), ``blocks``, ``image``.

        ``blocks`` come from the domain (trusted) and are sent as they are, with ``text``
        (escaped) as the notification text.
        """
        handled = {"text", "buttons", "blocks", "image"}
        text = str(json_message.get("text") or "")
        if json_message.get("blocks"):
            await self._send_part(recipient_id, escape(text[:TEXT_LIMIT]) or " ", blocks=json_message["blocks"])
        elif text and json_message.get("buttons"):
            await self.send_text_with_buttons(recipient_id, text, json_message["buttons"])
        elif text:
            await self.send_text_message(recipient_id, text)
        if json_message.get("image"):
            await self.send_image_url(recipient_id, str(json_message["image"]))
        ignored = sorted(set(json_message) - handled)
        if ignored:
            log.warning("slack custom payload: keys %s are not supported and were not sent", ignored)

    async def reply_in_thread(self, channel_id: str, thread_ts: str, text: str) -> None:
        """Answer a message in a channel, in its thread.

        At most once: the app may not read the channel's history (no ``channels:history``),
        so a lost answer is not retried (a missing "see your DMs" beats a doubled one), and
        for a bound event one recorded as sent or cut off mid-send is not posted again.
        """
        if not self.bound:
            await self.client.chat_postMessage(channel=channel_id, thread_ts=thread_ts, text=escape(text))
            return
        assert self.inbox is not None and self.origin is not None
        seq = self.next_seq()
        fingerprint = reply_digest("thread", channel_id, thread_ts, text)
        # Recorded on this thread, as ``recorded`` does: no queue between the call and its records.
        state = self.inbox.begin_reply(self.origin, seq, fingerprint)
        if state is not None:
            log.info("slack thread reply %d to %s was %s before; not posted again", seq, self.origin,
                     "posted" if state == SENT else "cut off mid-send")  # fmt: skip
        else:
            await self.client.chat_postMessage(channel=channel_id, thread_ts=thread_ts, text=escape(text))
        self.inbox.finish_reply(self.origin, seq)

    async def show_choice(self, channel_id: str, message: Mapping[str, Any], title: str) -> None:
        """Replace a message's buttons with the choice made, so it cannot be made twice."""
        await self.client.chat_update(
            channel=channel_id,
            ts=str(message["ts"]),
            text=str(message.get("text") or BUTTONS_PROMPT),
            blocks=chosen_blocks(message.get("blocks") or [], title),
        )


def _marked(answer: Mapping[str, Any], key: str) -> tuple[str | None, str | None]:
    """Read one page of ``conversations.history``: the ts of the post marked ``key``, the next cursor."""
    for message in answer.get("messages") or []:
        metadata = message.get("metadata") or {}
        if metadata.get("event_type") == DELIVERY_EVENT and (metadata.get("event_payload") or {}).get("key") == key:
            return str(message["ts"]), None
    return None, (answer.get("response_metadata") or {}).get("next_cursor")
