"""The sender to X customers: DMs (Rasa's replies, the agents' replies) and the one public reply to a post.

A ``bot.channels.replies.RecordedOutput``: splitting, the holding line and the reply records
come from there; this module adds the v2 calls through tweepy (each in a thread: its
client is synchronous), their retries, X's limits, and buttons as numbered choices (v2
DMs carry no quick replies). Nothing of a call belongs to an event loop (the client and its
``requests`` session are synchronous, the waits are ``asyncio.sleep``), so a reply to a
stored event, its records and its call, goes out on the sending thread
(``bot.channels.sending``) like Telegram's, and closing the session needs no loop.

Failures: a rate limit (429) is waited out when its reset is near (``max_retry_after``),
else raised so the inbox tries the event again later; X's server errors and network
failures are tried again a bounded number of times. A DM whose call may have reached X without
its answer coming back (a network failure, a 5xx, or a crash between the call and its "sent"
record) is looked up first in the conversation (``find_sent``: the brand's DMs to the customer
since their message, by text) and sent again only if it is not there. A 403 on a DM means the customer
does not accept DMs from the brand (or blocked it): no retry can mend that, so the reply
is dropped, logged, and the copy bound to the event notes it (``dm_refused``) so that the
public reply to a post says how else to reach the brand.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from datetime import datetime
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import requests
from tweepy import Client
from tweepy.errors import BadRequest, Forbidden, HTTPException, NotFound, TooManyRequests, TwitterServerError

from bot.channels.choices import OfferedChoices, numbered
from bot.channels.inbox import SENDING, Inbox
from bot.channels.replies import RecordedOutput, call_looking_first
from bot.channels.x_client import CHANNEL_NAME

log = logging.getLogger(__name__)
T = TypeVar("T")

# X's limit for one DM's text.
DM_TEXT_LIMIT = 10_000
# Where the public reply sits among an event's recorded replies: after every DM, before the holding line.
PUBLIC_REPLY_SEQ = 999_999
_NETWORK_ERRORS = (requests.RequestException, TwitterServerError)
# A DM in doubt is looked for among the brand's DMs created since the customer's message, less
# this margin (both times are X's own), in at most this many pages of 100 DM events.
LOOKUP_MARGIN_SECONDS = 2.0
LOOKUP_PAGES = 3
# X shows links in a DM's text as t.co links: they are compared as "a link".
_LINK = re.compile(r"https?://\S+")


class DMRefused(Exception):
    """X refused a DM to the customer (403): they do not accept DMs from the brand."""


def describe(error: BaseException) -> str:
    """Return an API error as the log shows it: status and X's own words, never a credential."""
    if isinstance(error, HTTPException):
        words = "; ".join(error.api_messages) or error.response.reason or ""
        return f"HTTP {error.response.status_code} {words}".strip()
    return repr(error)


class XOutput(RecordedOutput):
    """Sends to X customers: DMs split at 10,000 characters, buttons as numbered choices, public replies."""

    text_limit = DM_TEXT_LIMIT
    sends_on_own_thread = True  # tweepy's client is synchronous: each call runs in a thread from any loop
    # A DM in doubt is looked for in the conversation (``find_sent``) before it is sent again.
    can_look_up_sent = True

    def __init__(
        self,
        client: Client,
        source: str,
        choices: OfferedChoices | None = None,
        *,
        max_attempts: int = 4,
        backoff_seconds: float = 0.5,
        max_retry_after: float = 60.0,
        inbox: Inbox | None = None,
    ) -> None:
        """Send through ``client`` as the account of ``source``; keep offered choices in ``choices``."""
        super().__init__(inbox)
        self.client = client
        self.source = source
        self.choices = choices
        self.max_attempts = max_attempts
        self.backoff_seconds = backoff_seconds
        self.max_retry_after = max_retry_after
        self.dm_refused = False
        self.brand_id = source.partition(":")[2]
        # When the customer's message was created (epoch seconds, X's clock): a DM in doubt is
        # looked for among the brand's DMs since then. ``None``: not looked for, sent again.
        self.since: float | None = None

    def for_message(self, message_id: str, since: float | None = None) -> XOutput:
        """Return a sender for the replies to the event ``message_id`` (recorded, sent once).

        ``since``: when the customer's message was created (epoch seconds), from where a DM
        left in doubt is looked for before it is sent again.
        """
        bound = self.bound_to(message_id)
        bound.dm_refused = False
        bound.since = since
        return bound

    @classmethod
    def name(cls) -> str:
        """Rasa's name for this output channel."""
        return CHANNEL_NAME

    def refused_for_good(self, error: BaseException) -> bool:
        """Return whether X refused for good: DMs not accepted, the user gone, a request X will never take."""
        return isinstance(error, (DMRefused, Forbidden, NotFound, BadRequest))

    def describe(self, error: BaseException) -> str:
        """Return ``error`` as the log shows it."""
        return describe(error.__cause__ or error) if isinstance(error, DMRefused) else describe(error)

    async def _call(
        self, what: str, request: Callable[[], Awaitable[T]], *,
        look_up: Callable[[], Awaitable[T | None]] | None = None, in_doubt: bool = False,
    ) -> T:  # fmt: skip
        """Run one API call, waiting out a near rate-limit reset and retrying X's own failures.

        With ``look_up``, a call that may have gone through (``in_doubt`` at first, and after
        any network failure or 5xx) is looked up before it is made again: what it finds is
        returned instead (``call_looking_first``).
        """
        return await call_looking_first(f"x {what}", request, attempts=self.max_attempts, retry=self._retry,
                                        look_up=look_up, in_doubt=in_doubt, describe=describe)  # fmt: skip

    def _retry(self, error: BaseException, attempt: int) -> tuple[float, bool] | None:
        """Judge a failed call: a near rate-limit reset is waited out; X's own failures are tried again."""
        if isinstance(error, TooManyRequests):
            reset = error.reset_time if isinstance(error.reset_time, int) else None
            wait = max(1.0, reset - time.time()) if reset is not None else self.backoff_seconds * 2**attempt
            return None if wait > self.max_retry_after else (wait, False)
        if isinstance(error, _NETWORK_ERRORS):
            return self.backoff_seconds * 2 ** (attempt - 1), True  # X may have taken it before the failure
        return None

    async def _send_part(self, recipient_id: str, text: str, *, seq: int | None = None, **options: Any) -> Any:
        buttons = options.get("buttons")
        if buttons:
            text = numbered(text, buttons)
        what, recipient = f"DM to {recipient_id}", str(recipient_id)

        def dm() -> Awaitable[Any]:
            return self._dm(recipient, text, buttons)

        if not self.bound:
            return await self._call(what, dm)
        since = self.since

        def send(state: str | None) -> Awaitable[Any]:
            if since is None:  # nowhere to look from: sent again, as the platform may have it
                return self._call(what, dm)
            return self._call(what, dm, look_up=lambda: self.find_sent(recipient, text, since),
                              in_doubt=state == SENDING)  # fmt: skip

        place = self.next_seq() if seq is None else seq
        return await self.recorded(what, place, ("dm", recipient, text), send)

    async def find_sent(self, recipient_id: str, text: str, since: float) -> dict[str, Any] | None:
        """Return the brand's DM to ``recipient_id`` with ``text`` created since ``since`` (epoch seconds), if any.

        Read from the newest of the conversation's DM events back (``LOOKUP_PAGES`` pages at
        most). Texts are compared with their links as "a link" (X shows t.co links). The
        customer's later messages are handled after this one, so a DM of this text since their
        message is this reply.
        """
        wanted, token = _comparable(text), None
        for _ in range(LOOKUP_PAGES):
            try:
                page = await asyncio.to_thread(
                    self.client.get_direct_message_events, participant_id=recipient_id, event_types="MessageCreate",
                    dm_event_fields=["created_at", "sender_id", "text"], max_results=100, pagination_token=token,
                    user_auth=True,
                )  # fmt: skip
            except (Forbidden, NotFound, BadRequest) as error:
                # Not the DM's refusal: a lookup the app may not make (its access level). Sent again.
                log.warning("x lookup of a DM to %s refused (%s); sending it again", recipient_id, describe(error))
                return None
            for event in (page.get("data") if isinstance(page, Mapping) else None) or []:
                created = _created(event)
                if created is None:
                    continue
                if created < since - LOOKUP_MARGIN_SECONDS:
                    return None  # newest first: the rest is older than the customer's message
                if str(event.get("sender_id")) == self.brand_id and _comparable(event.get("text")) == wanted:
                    return dict(event)
            token = (page.get("meta") or {}).get("next_token") if isinstance(page, Mapping) else None
            if not token:
                return None
        log.warning("x lookup of a DM to %s: not found in %d pages; sending it again", recipient_id, LOOKUP_PAGES)
        return None

    async def _dm(self, recipient_id: str, text: str, buttons: Sequence[Mapping[str, Any]] | None) -> Any:
        if buttons and self.choices is not None:
            # Offered before the DM goes: the customer's answer may come back at once.
            await asyncio.to_thread(self.choices.offer, self.source, recipient_id, buttons)
        try:
            return await asyncio.to_thread(
                self.client.create_direct_message, participant_id=recipient_id, text=text, user_auth=True
            )
        except Forbidden as error:
            self.dm_refused = True
            raise DMRefused(describe(error)) from error

    async def _button_options(self, text: str, buttons: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        return {"buttons": list(buttons)}

    async def send_image_url(self, recipient_id: str, image: str, **kwargs: Any) -> None:
        """Send the image's link (v2 DMs take media only as uploads; a link is what X previews)."""
        await self.send_text_message(recipient_id, image)

    async def send_custom_json(self, recipient_id: str, json_message: dict[str, Any], **kwargs: Any) -> None:
        """Send a custom payload's ``text`` (with optional ``buttons``); other keys are logged and not sent."""
        if json_message.get("text"):
            reply = {"text": json_message["text"], "buttons": json_message.get("buttons")}
            await self.send_response(recipient_id, reply)
        ignored = sorted(set(json_message) - {"text", "buttons"})
        if ignored:
            log.warning("x custom payload: keys %s are not supported and were not sent", ignored)

    async def public_reply(self, post_id: str, text: str) -> str | None:
        """Answer the public post ``post_id`` in public, once per bound event; return the reply's id.

        ``None`` when it went out before (a replay) or X refused it for good.
        """
        answer = await self._once(
            f"public reply to post {post_id}", ("post", post_id, text),
            lambda: asyncio.to_thread(
                self.client.create_tweet, text=text, in_reply_to_tweet_id=post_id, user_auth=True
            ),
            seq=PUBLIC_REPLY_SEQ,
        )  # fmt: skip
        data = answer.get("data") if isinstance(answer, Mapping) else None
        return str(data["id"]) if isinstance(data, Mapping) and data.get("id") else None


def _comparable(text: Any) -> str:
    """Return a DM's text as it is compared: links as one placeholder, outer spaces trimmed."""
    return _LINK.sub("<link>", str(text or "")).strip()


def _created(event: Mapping[str, Any]) -> float | None:
    """Return a DM event's ``created_at`` (``2026-12-07T10:30:00.000Z``) in epoch seconds, or None."""
    try:
        return datetime.fromisoformat(str(event.get("created_at") or "").replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
