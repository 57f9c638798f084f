"""Slack DMs: customers who write to the brand's Slack app, and the sender that answers them.

A slack-bolt ``AsyncApp`` mounted in Rasa's Sanic server with bolt's Sanic adapter; bolt
verifies the signature and timestamp of every request and acknowledges at once, the work
runs after in tracked background tasks. Registered in ``credentials.yml``::

    bot.channels.slack.SlackDMInput:
      token: ${SLACK_BOT_TOKEN}
      signing_secret: ${SLACK_SIGNING_SECRET}

Optional key, read from the environment when left out: ``base_url``
(``SLACK_API_BASE_URL``: another Web API server, e.g. the tests' fake).

Rasa serves it at ``/webhooks/slack_dm/events`` (events and interactivity alike). The app
to create in Slack is described by ``slack/customer-app-manifest.yml``.

Nothing a customer sends is lost and no reply is posted twice, even when Rasa is killed
mid-way (``bot.channels.inbox``, as for Telegram): each event or button press is stored in
the inbox before Slack gets its answer (Slack sends it again after a non-2xx), handled in
the background, and marked done only once Rasa has it; a failure is tried again with
back-off (the customer gets one "holding" line), and an event left by a process that died is
taken over by the inbox sweeper of any Rasa process.

Sending is exactly once per message: the Web API client retries what is safe to repeat
(429s after their Retry-After, connections refused, and 5xx or lost connections of calls
that change nothing); every post carries an idempotency key in its message metadata, so
after an answer lost on the way back (time-out, dropped connection, 5xx) the DM's history
is searched for it before it is posted again (``SlackDMOutput.post_once``). A reply to an
event has the key ``(Rasa message id, position)`` and is recorded in the inbox, so handling
the event again skips the replies sent and finds in the history a post a crash cut off.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import logging
import os
import random
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import aiohttp
from rasa.core.channels.channel import InputChannel, OutputChannel, UserMessage
from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse
from slack_bolt import BoltResponse
from slack_bolt.adapter.sanic.async_handler import to_async_bolt_request, to_sanic_response
from slack_bolt.async_app import AsyncApp
from slack_bolt.request import payload_utils
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.http_retry.interval_calculator import RetryIntervalCalculator
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy.exc import SQLAlchemyError

from bot.channels.common import (
    BackgroundTasks,
    ChannelCredentialsError,
    OnNewMessage,
    credential,
    split_text,
    unless_saved,
)
from bot.channels.dedupe import SEEN_TTL_SECONDS, ChannelStore
from bot.channels.inbox import (
    SENDING,
    SENT,
    Inbox,
    InboxEntry,
    InboxWorker,
    lease_seconds_from_env,
    reply_digest,
    sweep_seconds_from_env,
)
from bot.constants import INTENT_GREET

if TYPE_CHECKING:
    from slack_bolt.context.ack.async_ack import AsyncAck
    from slack_bolt.context.async_context import AsyncBoltContext
    from slack_bolt.request.async_request import AsyncBoltRequest
    from slack_sdk.http_retry.request import HttpRequest
    from slack_sdk.http_retry.response import HttpResponse
    from slack_sdk.http_retry.state import RetryState

log = logging.getLogger(__name__)
K = TypeVar("K")
V = TypeVar("V")

CHANNEL_NAME = "slack_dm"
EVENTS_PATH = "/webhooks/slack_dm/events"
DEFAULT_BASE_URL = "https://slack.com/api/"
ENV_TOKEN = "SLACK_BOT_TOKEN"
ENV_SIGNING_SECRET = "SLACK_SIGNING_SECRET"
ENV_BASE_URL = "SLACK_API_BASE_URL"
ENV_OAUTH_CLIENT_ID = "SLACK_CLIENT_ID"
ENV_OAUTH_CLIENT_SECRET = "SLACK_CLIENT_SECRET"
RETRY_NUM_HEADER = "x-slack-retry-num"
RETRY_REASON_HEADER = "x-slack-retry-reason"
# Slack takes 40,000 characters in a message but only 3,000 in a section block: one limit for both.
TEXT_LIMIT = 3000
BUTTON_TITLE_LIMIT = 75
BUTTON_VALUE_LIMIT = 2000
BUTTONS_PER_ACTIONS_BLOCK = 25
BUTTON_ACTION_PREFIX = "fr_button_"
BUTTON_ACTION = re.compile(rf"^{BUTTON_ACTION_PREFIX}\d+$")
# Message metadata that marks a post with its idempotency key (``post_once``).
DELIVERY_EVENT = "firstreply_message"
# How far before the first try a post is looked for: covers our clock running ahead of Slack's.
LOOKBACK_SECONDS = 120.0
# Web API methods that post something new: sending them again after a lost answer may post twice.
NOT_IDEMPOTENT = frozenset({"chat.postMessage", "chat.postEphemeral", "chat.meMessage", "chat.scheduleMessage"})
# Slack refusals (``ok: false``) that may mend if tried later: the token or scopes being fixed,
# Slack itself. Any other refusal of a reply (the DM gone, a message Slack will never take)
# drops that reply, logged: handling the event again would not change the answer.
RETRYABLE_ERRORS = frozenset({
    "ratelimited", "invalid_auth", "not_authed", "token_revoked", "token_expired",
    "missing_scope", "no_permission", "fatal_error", "internal_error", "service_unavailable", "request_timeout",
})  # fmt: skip
# Where the holding line sits among an event's recorded replies: after any real one.
HOLDING_SEQ = 1_000_000
# Longest inbox keys (``bot.channels.inbox`` columns); Slack's ids are far shorter.
SOURCE_LIMIT = 64
KEY_LIMIT = 128
CONVERSATION_LIMIT = 255
# Per-process memory of users (names, DM channels): bounded, oldest forgotten first.
CACHE_SIZE = 10_000
# Message subtypes that are a customer writing; everything else (edits, deletions, joins,
# bot posts) is acknowledged and left alone.
CUSTOMER_SUBTYPES = frozenset({None, "file_share", "thread_broadcast"})

# What the customer reads. Built from escaped text only (see ``escape``).
FILE_REPLY = "I can only read text, but I've attached your {noun} to your case for the person who picks it up."
FILE_ASK = " Could you also tell me in a few words what it's about?"
MENTION_REPLY = "Thanks for reaching out! I've sent you a direct message so we can look into this privately."
MENTION_REPLY_NO_DM = "Thanks for reaching out! Please send us a direct message so we can look into this privately."
CHOSEN = "You chose: *{title}*"
HOLDING_REPLY = (
    "Sorry, I'm having a technical problem and can't answer right away. Your message is safe with us: "
    "I'll reply here as soon as I can."
)
BUTTONS_PROMPT = "Please choose:"
FILE_PLACEHOLDER = "[file]"

# What bolt reads out of every body before any middleware or listener of ours runs; a
# signed body where one of these fails is malformed (400), not a server error (500).
_BOLT_PAYLOAD_VIEWS = (
    payload_utils.to_options, payload_utils.to_shortcut, payload_utils.to_action, payload_utils.to_view,
    payload_utils.to_command, payload_utils.to_event, payload_utils.to_message, payload_utils.to_step,
)  # fmt: skip
# Slack's markup in what a customer typed: <@U123>, <#C123|name>, <!here>, <https://x|label>.
_MARKUP = re.compile(r"<([^<>|]*)(?:\|([^<>]*))?>")
_BOT_TOKEN_FORMAT = re.compile(r"xoxb-[A-Za-z0-9-]+")


# --- settings and the Web API client ----------------------------------------------------


@dataclass(frozen=True)
class SlackSettings:
    """Validated connector settings. Token and signing secret never appear in ``repr``."""

    token: str = field(repr=False)
    signing_secret: str = field(repr=False)
    base_url: str = DEFAULT_BASE_URL

    @classmethod
    def from_credentials(
        cls, credentials: Mapping[str, Any] | None, environ: Mapping[str, str] | None = None
    ) -> SlackSettings:
        """Read ``credentials.yml`` values, falling back to the environment variables.

        Raises:
            ChannelCredentialsError: a value is missing or malformed; names the variable.
        """
        env = os.environ if environ is None else environ
        creds = credentials or {}
        token = credential(creds, "token", ENV_TOKEN, CHANNEL_NAME, env)
        if not _BOT_TOKEN_FORMAT.fullmatch(token):
            raise ChannelCredentialsError(
                f"{ENV_TOKEN} must be the app's bot token (xoxb-...), from OAuth & Permissions in the app settings."
            )
        secret = credential(creds, "signing_secret", ENV_SIGNING_SECRET, CHANNEL_NAME, env)
        if env.get(ENV_OAUTH_CLIENT_ID) and env.get(ENV_OAUTH_CLIENT_SECRET):
            # slack-bolt reads these itself and would ignore the bot token for OAuth installs.
            raise ChannelCredentialsError(
                f"{ENV_OAUTH_CLIENT_ID} and {ENV_OAUTH_CLIENT_SECRET} are set: slack-bolt would switch the "
                f"{CHANNEL_NAME} channel to OAuth installs and ignore {ENV_TOKEN}. Unset them for Rasa."
            )
        base_url = str(creds.get("base_url") or env.get(ENV_BASE_URL) or DEFAULT_BASE_URL).strip()
        return cls(token, secret, base_url.rstrip("/") + "/")


class _Backoff(RetryIntervalCalculator):
    """Exponential backoff with up to a quarter more at random, so replicas do not retry in step."""

    def __init__(self, first_seconds: float) -> None:
        self.first_seconds = first_seconds

    def calculate_sleep_duration(self, current_attempt: int) -> float:
        return self.first_seconds * 2**current_attempt * (1 + random.random() / 4)


def _method(request: HttpRequest) -> str:
    return request.url.rsplit("/", 1)[-1]


def _retry_after(response: HttpResponse) -> float:
    values = {key.lower(): value for key, value in response.headers.items()}.get("retry-after") or ["1"]
    try:
        return max(0.0, float(values[0]))
    except ValueError:
        return 1.0


class _RateLimitRetry(AsyncRateLimitErrorRetryHandler):
    """Waits out a 429 for as long as its Retry-After says, unless that is beyond the cap."""

    def __init__(self, max_retry_count: int, max_wait_seconds: float) -> None:
        super().__init__(max_retry_count)
        self.max_wait_seconds = max_wait_seconds

    async def _can_retry_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if response is None or response.status_code != 429:
            return False
        wait = _retry_after(response)
        if wait > self.max_wait_seconds:
            log.warning("slack %s: rate limited for %.0fs, more than we wait; giving up", _method(request), wait)
            return False
        log.warning("slack %s: rate limited, retry %d in %.0fs", _method(request), state.current_attempt + 1, wait)
        return True

    async def prepare_for_next_attempt_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> None:
        # The SDK's own version reads Retry-After with int() and adds up to a second.
        assert response is not None  # _can_retry_async said yes to a 429 answer
        state.next_attempt_requested = True
        await asyncio.sleep(_retry_after(response) * (1 + random.random() / 10))
        state.increment_current_attempt()


class _ServerErrorRetry(AsyncServerErrorRetryHandler):
    """Retries any 5xx answer (the SDK's own handler knows only 500 and 503) of a call safe to repeat.

    A post answered 5xx may have been posted: ``SlackDMOutput.post_once`` checks before it
    posts again, which a retry handler cannot (it can only say "try again", not "done").
    """

    async def _can_retry_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if response is None or response.status_code < 500 or _method(request) in NOT_IDEMPOTENT:
            return False
        log.warning(
            "slack %s: server error %d, retry %d", _method(request), response.status_code, state.current_attempt + 1
        )
        return True


class _ConnectionRetry(AsyncConnectionErrorRetryHandler):
    """Retries lost connections; for a post, only a connection that was never made (nothing sent)."""

    async def _can_retry_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if _method(request) in NOT_IDEMPOTENT and not isinstance(error, aiohttp.ClientConnectorError):
            return False
        return await super()._can_retry_async(state=state, request=request, response=response, error=error)


def may_have_posted(error: BaseException) -> bool:
    """Return whether a post that failed with ``error`` may still have reached Slack.

    True for the answers lost after sending: a time-out, a connection dropped or reset, a
    5xx. False for a connection never made and for Slack's own refusals (4xx, ``ok: false``).
    """
    if isinstance(error, SlackApiError):
        return error.response is not None and error.response.status_code >= 500
    if isinstance(error, aiohttp.ClientConnectorError):
        return False
    return isinstance(
        error, (asyncio.TimeoutError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError, aiohttp.ClientPayloadError)
    )


def refused_for_good(error: SlackApiError) -> bool:
    """Return whether Slack refused a call in a way that trying again later will not mend."""
    status = error.response.status_code if error.response is not None else 0
    return 200 <= status < 500 and status != 429 and error.response.get("error") not in RETRYABLE_ERRORS


def delivery_metadata(key: str) -> dict[str, Any]:
    """Return the message metadata that marks a post with its idempotency ``key``."""
    return {"event_type": DELIVERY_EVENT, "event_payload": {"key": key}}


def build_client(
    settings: SlackSettings,
    *,
    max_attempts: int = 4,
    backoff_seconds: float = 0.5,
    max_retry_after: float = 60.0,
    timeout: int = 15,
) -> AsyncWebClient:
    """Return a Web API client (no network call) that retries 429s, 5xx and lost connections.

    Every call is tried at most ``max_attempts`` times; a Retry-After beyond
    ``max_retry_after`` seconds is not waited for; an answer is waited for ``timeout``
    seconds. Posts are retried here only where nothing was sent (429, no connection);
    ``SlackDMOutput`` retries the rest after checking. The client opens a connection per
    call, so there is nothing to close.
    """
    retries = max_attempts - 1
    backoff = _Backoff(backoff_seconds)
    handlers = [
        _RateLimitRetry(retries, max_retry_after),
        _ServerErrorRetry(retries, backoff),
        _ConnectionRetry(retries, backoff),
    ]
    return AsyncWebClient(token=settings.token, base_url=settings.base_url, timeout=timeout, retry_handlers=handlers)


class _Bounded(dict[K, V]):
    """A dict that forgets its oldest entries beyond ``size``."""

    def __init__(self, size: int = CACHE_SIZE) -> None:
        super().__init__()
        self.size = size

    def __setitem__(self, key: K, value: V) -> None:
        super().__setitem__(key, value)
        while len(self) > self.size:
            del self[next(iter(self))]


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


def _unmarkup(match: re.Match[str]) -> str:
    target, label = match.group(1), match.group(2)
    if target.startswith(("@", "#")):
        return f"{target[0]}{label}" if label else target
    if target.startswith("!"):
        return "@" + (label or target[1:].split("^", 1)[0]).lstrip("@")
    return label or target


def customer_text(text: str) -> str:
    """Turn the text of a Slack message into what the customer saw when typing it.

    Slack's markup becomes plain (``<https://x|x>`` -> ``x``), entities are unescaped,
    and a leading ``/`` is dropped: Rasa would read ``/affirm`` as an intent, and
    customers must not be able to inject intents.
    """
    plain = _MARKUP.sub(_unmarkup, text)
    plain = plain.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&").strip()
    # Slashes and spaces go together until neither is left: "/ /affirm" must not become "/affirm".
    while plain.startswith("/"):
        plain = plain.lstrip("/").lstrip()
    return plain


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


class SlackDMOutput(OutputChannel):
    """Sends to customers' DMs with the app: Rasa's responses and the agents' replies.

    ``recipient_id`` is the customer's Slack user id (a DM or channel id also works). All
    text is escaped and split at 3,000 characters. Retries that are safe live in the client
    (``build_client``); a post whose answer was lost is looked up before it is posted
    again (``post_once``), as often and as far apart as the client retries 5xx answers.
    The copy made for one event (``for_message``) records each reply in the inbox under
    ``(message id, position)``, its idempotency key too, so handling the event again
    posts no reply twice (``bot.channels.inbox``).
    """

    def __init__(self, client: AsyncWebClient, inbox: Inbox | None = None) -> None:
        """Send through ``client``; record the replies to an event in ``inbox``."""
        self.client = client
        self.inbox = inbox
        self.origin: str | None = None
        self.since = 0.0
        self._seq = 0
        self._dm_channels: _Bounded[str, str] = _Bounded()
        handler = next((h for h in client.retry_handlers or [] if isinstance(h, _ServerErrorRetry)), None)
        self.max_attempts = 1 + (handler.max_retry_count if handler is not None else 0)
        self._backoff = handler.interval_calculator if handler is not None else None

    @classmethod
    def name(cls) -> str:
        """Rasa's name for this output channel."""
        return CHANNEL_NAME

    def for_message(self, message_id: str, since: float) -> SlackDMOutput:
        """Return a sender for the replies to the event ``message_id`` (recorded, posted once).

        ``since`` (epoch seconds) is how far back the DM's history is searched for a reply a
        crash or a lost answer left in doubt: just before the event happened.
        """
        bound = copy.copy(self)  # the DM channel cache stays shared
        bound.origin, bound.since, bound._seq = message_id, since, 0
        return bound

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
        """Return the ts of the message marked with ``key`` in ``channel`` since ``since`` (epoch seconds), if any."""
        cursor = None
        while True:
            answer = await self.client.conversations_history(
                channel=channel, oldest=f"{since:.6f}", include_all_metadata=True, limit=200, cursor=cursor
            )
            for message in answer.get("messages") or []:
                metadata = message.get("metadata") or {}
                if metadata.get("event_type") == DELIVERY_EVENT and (metadata.get("event_payload") or {}).get("key") == key:
                    return str(message["ts"])
            cursor = (answer.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                return None

    async def post_once(
        self, channel: str, text: str, key: str, *, since: float, check_first: bool = False, **extra: Any
    ) -> str:
        """Post ``text`` to ``channel`` once for ``key``, and return the message's ts.

        After an answer lost on the way back (``may_have_posted``) the channel's history
        since ``since`` is searched for ``key`` before posting again; ``check_first``
        searches before the first try too (an earlier attempt may have posted it).
        """
        in_doubt = check_first
        for attempt in range(1, self.max_attempts + 1):
            try:
                if in_doubt:
                    found = await self.find_posted(channel, key, since)
                    if found is not None:
                        log.info("slack post %s in %s: already there (%s), not posted again", key, channel, found)
                        return found
                answer = await self.client.chat_postMessage(
                    channel=channel, text=text, metadata=delivery_metadata(key), **extra
                )
                return str(answer["ts"])
            except Exception as error:
                if not may_have_posted(error) or attempt == self.max_attempts:
                    raise
                in_doubt = True
                wait = self._backoff.calculate_sleep_duration(attempt - 1) if self._backoff is not None else 0.0
                log.warning(
                    "slack post %s in %s: no answer (%s: %s); checking whether it arrived, try %d in %.1fs",
                    key, channel, type(error).__name__, error, attempt + 1, wait,
                )  # fmt: skip
                await asyncio.sleep(wait)
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def deliver_text(self, recipient_id: str, text: str, key: str, *, since: float, check_first: bool) -> None:
        """Send ``text`` like ``send_text_message``, each part once for ``key`` (see ``post_once``).

        For senders that retry on their own schedule (the desk's outbox): the same ``key``
        on every attempt, ``since`` when the first one started, ``check_first`` from the
        second on.
        """
        channel = await self.dm_channel(recipient_id)
        for number, part in enumerate(message_parts(text)):
            await self.post_once(channel, part, f"{key}:{number}", since=since, check_first=check_first)

    async def _post(self, recipient_id: str, text: str, **extra: Any) -> str | None:
        channel = await self.dm_channel(recipient_id)
        if self.inbox is None or self.origin is None:
            key = uuid.uuid4().hex
            return await self.post_once(channel, text, key, since=time.time() - LOOKBACK_SECONDS, **extra)
        seq, self._seq = self._seq, self._seq + 1
        return await self._post_recorded(channel, text, seq, **extra)

    async def _post_recorded(self, channel: str, text: str, seq: int, **extra: Any) -> str | None:
        """Post reply ``seq`` to the bound event once (see class doc); return its ts.

        Returns ``None`` when it went out before or Slack refused it for good
        (``refused_for_good``): neither is worth handling the event again.
        """
        assert self.inbox is not None and self.origin is not None
        fingerprint = reply_digest("chat.postMessage", channel, text, repr(extra.get("blocks")))
        state = await asyncio.to_thread(self.inbox.begin_reply, self.origin, seq, fingerprint)
        if state == SENT:
            log.info("slack reply %d to %s went out before, not posted again", seq, self.origin)
            return None
        if state == SENDING:
            log.info("slack reply %d to %s was cut off mid-send; looking for it in %s first", seq, self.origin, channel)
        key = f"{self.origin}:{seq}"
        try:
            ts: str | None = await self.post_once(
                channel, text, key, since=self.since, check_first=state == SENDING, **extra
            )
        except SlackApiError as error:
            if not refused_for_good(error):
                raise
            log.error("slack reply %d to %s refused for good (%s); dropped", seq, self.origin, error.response.get("error"))
            ts = None
        await asyncio.to_thread(self.inbox.finish_reply, self.origin, seq)
        return ts

    async def send_holding(self, recipient_id: str) -> None:
        """Tell the customer their message is kept and will be answered (once per event)."""
        channel = await self.dm_channel(recipient_id)
        if self.inbox is None or self.origin is None:
            await self._post(channel, escape(HOLDING_REPLY))
            return
        await self._post_recorded(channel, escape(HOLDING_REPLY), HOLDING_SEQ)

    async def send_text_message(self, recipient_id: str, text: str, **kwargs: Any) -> None:
        """Send ``text``, escaped, in as many messages as the length limit needs."""
        for part in message_parts(text):
            await self._post(recipient_id, part)

    async def send_text_with_buttons(
        self, recipient_id: str, text: str, buttons: list[dict[str, Any]], **kwargs: Any
    ) -> None:
        """Send ``text`` with Rasa ``buttons`` as Block Kit buttons under the last part."""
        parts = message_parts(text or "") or [BUTTONS_PROMPT]
        for part in parts[:-1]:
            await self._post(recipient_id, part)
        await self._post(recipient_id, parts[-1], blocks=button_blocks(parts[-1], buttons))

    async def send_image_url(self, recipient_id: str, image: str, **kwargs: Any) -> None:
        """Send the image at ``image`` (a URL Slack can fetch)."""
        block = {"type": "image", "image_url": image, "alt_text": "image"}
        await self._post(recipient_id, escape(image), blocks=[block])

    async def send_custom_json(self, recipient_id: str, json_message: dict[str, Any], **kwargs: Any) -> None:
        """Send a custom payload: ``text`` (with optional ``buttons``), ``blocks``, ``image``.

        ``blocks`` come from the domain (trusted) and are sent as they are, with ``text``
        (escaped) as the notification text.
        """
        handled = {"text", "buttons", "blocks", "image"}
        text = str(json_message.get("text") or "")
        if json_message.get("blocks"):
            await self._post(recipient_id, escape(text[:TEXT_LIMIT]) or " ", blocks=json_message["blocks"])
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
        if self.inbox is None or self.origin is None:
            await self.client.chat_postMessage(channel=channel_id, thread_ts=thread_ts, text=escape(text))
            return
        seq, self._seq = self._seq, self._seq + 1
        fingerprint = reply_digest("thread", channel_id, thread_ts, text)
        state = await asyncio.to_thread(self.inbox.begin_reply, self.origin, seq, fingerprint)
        if state is not None:
            log.info("slack thread reply %d to %s was %s before; not posted again", seq, self.origin,
                     "posted" if state == SENT else "cut off mid-send")  # fmt: skip
        else:
            await self.client.chat_postMessage(channel=channel_id, thread_ts=thread_ts, text=escape(text))
        await asyncio.to_thread(self.inbox.finish_reply, self.origin, seq)

    async def show_choice(self, channel_id: str, message: Mapping[str, Any], title: str) -> None:
        """Replace a message's buttons with the choice made, so it cannot be made twice."""
        await self.client.chat_update(
            channel=channel_id,
            ts=str(message["ts"]),
            text=str(message.get("text") or BUTTONS_PROMPT),
            blocks=chosen_blocks(message.get("blocks") or [], title),
        )


# --- receiving ----------------------------------------------------------------------------

Next = Callable[[], Awaitable[BoltResponse]]


def _shape_problem(body: Mapping[str, Any]) -> str | None:
    """Return what is wrong with the shape of an event or a button press, or ``None``.

    Only the fields the listeners read are checked: Slack always sends them so, and a body
    that does not would make a listener fail after the acknowledgement.
    """
    if body.get("type") == "event_callback":
        event = body.get("event")
        if not isinstance(body.get("event_id"), str) or not isinstance(event, dict):
            return "an event needs an event_id and an event object"
        if event.get("type") in ("message", "app_mention"):
            if not isinstance(event.get("channel"), str):
                return "a message event needs a channel id"
            if "user" in event and not isinstance(event["user"], str):
                return "a message event's user must be a user id"
            files = event.get("files")
            if files is not None and not (isinstance(files, list) and all(isinstance(f, dict) for f in files)):
                return "a message event's files must be a list of objects"
    elif body.get("type") == "block_actions":
        user, actions = body.get("user"), body.get("actions")
        if not isinstance(user, dict) or not isinstance(user.get("id"), str):
            return "a button press needs a user object with an id"
        if not isinstance(actions, list) or not all(isinstance(action, dict) for action in actions):
            return "a button press needs a list of actions"
        if any("text" in action and not isinstance(action["text"], dict) for action in actions):
            return "a button's text must be an object"
    return None


def _fit(value: str, limit: int) -> str:
    """Return ``value`` as an inbox key: as it is if short and printable ASCII, else shortened.

    Slack's ids always are; a signed body with odd ones must still be stored, not refused.
    """
    if len(value) <= limit and value.isascii() and value.isprintable():
        return value
    digest = hashlib.sha256(value.encode("utf-8", "surrogateescape")).hexdigest()[:32]
    head = value.encode("ascii", "ignore").decode()[: limit - len(digest) - 1]
    return f"{''.join(c for c in head if c.isprintable())}~{digest}"


def _update_key(body: Mapping[str, Any]) -> str | None:
    """Return what identifies an event or a button press among Slack's copies of it, or ``None``."""
    container = body.get("container")
    if body.get("type") == "event_callback" and body.get("event_id"):
        return str(body["event_id"])
    if body.get("type") == "block_actions" and isinstance(container, dict) and container.get("message_ts"):
        # One answer per button message: a second press before the buttons are gone is a copy.
        return f"buttons:{container.get('channel_id')}:{container['message_ts']}"
    return None


def _source(body: Mapping[str, Any]) -> str:
    """Return the inbox source of a body: ids count per Slack app."""
    return _fit(f"{CHANNEL_NAME}:{body.get('api_app_id') or body.get('team_id') or '-'}", SOURCE_LIMIT)


def _customer(body: Mapping[str, Any]) -> str | None:
    """Return the user id of the customer a body is work for, or ``None`` if it is not ours to handle.

    What the listeners of ``SlackDMInput.build_app`` take: a customer writing in a DM with
    the app, a person mentioning the app in a channel, a press of one of our buttons.
    """
    if body.get("type") == "block_actions":
        actions = body.get("actions") or []
        action = actions[0] if actions else {}
        action_id = action.get("action_id")
        if isinstance(action_id, str) and BUTTON_ACTION.match(action_id) and action.get("value") is not None:
            return str(body["user"]["id"])
        return None  # a URL button only opens its link
    event = body.get("event")
    if body.get("type") != "event_callback" or not isinstance(event, dict):
        return None
    if event.get("type") == "message" and SlackDMInput.from_customer(event):
        return str(event["user"])
    if event.get("type") == "app_mention" and not event.get("bot_id") and event.get("user"):
        return None if str(event.get("channel", "")).startswith("D") else str(event["user"])
    return None


def _message_id(body: Mapping[str, Any]) -> str:
    """Return the Rasa message id of a stored body (also the key of its recorded replies)."""
    if body.get("type") == "block_actions":
        action = body["actions"][0]
        return f"{CHANNEL_NAME}-{action.get('action_ts') or body.get('trigger_id')}"
    return f"{CHANNEL_NAME}-{body['event_id']}"


def _since(body: Mapping[str, Any]) -> float:
    """Return how far back a reply to ``body`` may be found in a DM's history (epoch seconds).

    Just before the event happened by Slack's clock (Slack's ts are by that clock too);
    if the body does not say, as far back as reply records are kept.
    """
    happened: Any = body.get("event_time")
    if body.get("type") == "block_actions":
        happened = (body.get("actions") or [{}])[0].get("action_ts")
    try:
        at = float(happened)
    except (TypeError, ValueError):
        at = 0.0
    return at - LOOKBACK_SECONDS if at > 0 else time.time() - SEEN_TTL_SECONDS


class SlackDMInput(InputChannel):
    """Customers' DMs with the brand's Slack app, and mentions of it in channels (moved to a DM).

    Each event or button press is kept in the inbox before Slack gets its answer and handled
    until Rasa has it, by this process or, if it dies or the handling fails, by the inbox
    sweeper of any Rasa process (``bot.channels.inbox``).
    """

    @classmethod
    def name(cls) -> str:
        """Rasa's name for the channel; also the URL prefix (``/webhooks/slack_dm``)."""
        return CHANNEL_NAME

    @classmethod
    def from_credentials(cls, credentials: dict[str, Any] | None) -> SlackDMInput:
        """Validate the credentials (or environment) and build the channel."""
        return cls(SlackSettings.from_credentials(credentials))

    def __init__(
        self,
        settings: SlackSettings,
        store: ChannelStore | None = None,
        client: AsyncWebClient | None = None,
        inbox: Inbox | None = None,
    ) -> None:
        """Build the client (no network call) and open the channel store and the inbox."""
        self.settings = settings
        self.store = store if store is not None else ChannelStore.from_url()
        self.inbox = inbox if inbox is not None else Inbox(self.store.engine, lease_seconds=lease_seconds_from_env())
        self.client = client if client is not None else build_client(settings)
        self.output = SlackDMOutput(self.client, inbox=self.inbox)
        self.tasks = BackgroundTasks(CHANNEL_NAME)
        self.sweep_seconds = sweep_seconds_from_env()
        # One worker per Slack app (the inbox source), made when first needed.
        self.workers: dict[str, InboxWorker] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._verifier = SignatureVerifier(settings.signing_secret)
        self._profiles: _Bounded[str, dict[str, str]] = _Bounded()
        self._turns: dict[str, asyncio.Lock] = {}
        self._on_new_message: OnNewMessage | None = None
        self._app: Any = None

    def get_output_channel(self) -> SlackDMOutput:
        """Return the sender, for messages Rasa starts itself (reminders, triggered intents)."""
        return self.output

    async def close(self, grace_seconds: float = 10.0) -> None:
        """Stop sweeping and give running work ``grace_seconds`` to finish."""
        await self.stop_sweeping()
        try:
            await asyncio.wait_for(self.tasks.wait(), grace_seconds)
        except asyncio.TimeoutError:
            log.warning("slack: %d event(s) still being handled at shutdown were cancelled", len(self.tasks))

    def blueprint(self, on_new_message: OnNewMessage) -> Blueprint:
        """Return the Sanic routes: ``GET /`` (health) and ``POST /events`` (the bolt app)."""
        app = self.build_app(on_new_message)
        slack_webhook = Blueprint("firstreply_slack_dm", __name__)

        @slack_webhook.route("/", methods=["GET"])
        async def health(_: Request) -> HTTPResponse:
            return response.json({"status": "ok"})

        @slack_webhook.route("/events", methods=["POST"])
        async def events(request: Request) -> HTTPResponse:
            # Bolt checks the signature too, but only after it has parsed the body and read
            # fields of it: a stranger's body must not get that far.
            if not self._signed(request):
                log.warning("slack webhook: missing, wrong or stale signature, request dropped")
                return response.json({"ok": False, "error": "invalid request"}, status=401)
            try:
                bolt_request = to_async_bolt_request(request)
                for view in _BOLT_PAYLOAD_VIEWS:
                    view(bolt_request.body)
            except (ValueError, TypeError, AttributeError, KeyError, IndexError, RecursionError):
                # Not JSON, not an object, or fields of the wrong type where bolt looks.
                log.warning("slack webhook: body is not what Slack sends, request dropped")
                return response.json({"ok": False, "error": "malformed request"}, status=400)
            answer = to_sanic_response(await app.async_dispatch(bolt_request))
            # Bolt runs listeners in futures it does not keep; one turn of the loop lets the
            # listener just started hand its work to self.tasks before Slack has its answer,
            # so a shutdown right after waits for that work too.
            await asyncio.sleep(0)
            return answer

        @slack_webhook.listener("after_server_start")
        async def start_sweeping(app: Any, *_: Any) -> None:
            self._app = app
            self.start_sweeping()

        @slack_webhook.listener("after_server_stop")
        async def close(*_: Any) -> None:
            await self.close()

        return slack_webhook

    def _signed(self, request: Request) -> bool:
        """Return whether the request carries Slack's fresh ``v0`` signature of its body."""
        timestamp = request.headers.get("X-Slack-Request-Timestamp", "")
        signature = request.headers.get("X-Slack-Signature", "")
        # The verifier calls int() on the timestamp and compares strings, so only ASCII gets there.
        if not (timestamp.isascii() and timestamp.isdigit() and signature.isascii()):
            return False
        try:
            body = request.body.decode("utf-8")
        except UnicodeDecodeError:
            return False
        return self._verifier.is_valid(body, timestamp, signature)

    def build_app(self, on_new_message: OnNewMessage) -> AsyncApp:
        """Return the bolt app: signature checks, copies dropped, listeners that ack first."""
        # The token comes with the client; giving it twice makes bolt warn.
        app = AsyncApp(client=self.client, signing_secret=self.settings.signing_secret, process_before_response=False)
        app.middleware(self._take)
        self._on_new_message = on_new_message

        # The work itself was stored and started by ``_take``, before these acknowledge:
        # they are what makes bolt answer Slack 200 for what we handle.
        @app.event("message")
        async def on_message(ack: AsyncAck) -> None:
            await ack()

        @app.event("app_mention")
        async def on_mention(ack: AsyncAck) -> None:
            await ack()

        @app.action(BUTTON_ACTION)
        async def on_button(ack: AsyncAck) -> None:
            await ack()

        return app

    async def _take(
        self, request: AsyncBoltRequest, body: dict[str, Any], context: AsyncBoltContext, next_: Next
    ) -> BoltResponse | None:
        """Store an event or a button press for us in the inbox and start it, before the answer.

        A copy (also a retry, ``X-Slack-Retry-Num``, also after a restart) of one already
        stored is acknowledged and dropped; if the first delivery never reached us (Rasa was
        down), the retry is the customer's only copy and is the one stored. If it cannot be
        stored, Slack gets a 503 and sends it again (up to three times).
        """
        problem = _shape_problem(body)
        if problem:
            # Signed, so from Slack or from someone with the secret; either way nothing our
            # listeners can read safely. Refused before them, with nothing stored.
            log.warning("slack request refused: %s", problem)
            return BoltResponse(status=400, body=problem)
        key = _update_key(body)
        customer = _customer(body) if key is not None else None
        if key is None or customer is None:
            return await next_()  # nothing for the assistant: acknowledged, left alone
        retry = request.headers.get(RETRY_NUM_HEADER)
        if retry:
            reason = (request.headers.get(RETRY_REASON_HEADER) or ["?"])[0]
            log.info("slack retry %s (%s) of %s", retry[0], reason, key)
        source = _source(body)
        # ASCII JSON: lone surrogates and NULs survive any database as escapes. The bot's own
        # user id goes with it: a mention is read without it, also when handled after a restart.
        stored = json.dumps({"body": body, "bot_user_id": context.bot_user_id})
        try:
            entry = await asyncio.to_thread(
                self.inbox.accept, source, _fit(key, KEY_LIMIT), _fit(customer, CONVERSATION_LIMIT), stored
            )
        except SQLAlchemyError as error:
            log.error("slack %s not stored (%s); Slack will send it again", key, error)
            return BoltResponse(status=503, body="")
        if entry is None:
            log.info("slack %s already taken, copy dropped", key)
            return BoltResponse(status=200, body="")
        self.worker(source).start(entry)
        return await next_()

    def worker(self, source: str) -> InboxWorker:
        """Return the inbox worker of one Slack app (inbox source), made on first use."""
        found = self.workers.get(source)
        if found is None:
            found = InboxWorker(
                self.inbox, source, self._handle_entry, self.tasks, sweep_seconds=self.sweep_seconds,
                on_failure=self._hold,
            )  # fmt: skip
            self.workers[source] = found
        return found

    async def sweep(self) -> int:
        """Take over the due entries of every Slack app once; return how many were started."""
        started = 0
        for source in await asyncio.to_thread(self.inbox.sources, f"{CHANNEL_NAME}:"):
            started += await self.worker(source).sweep()
        return started

    def start_sweeping(self) -> None:
        """Start the loop that takes over due entries (call from the server's event loop)."""
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever(), name=f"{CHANNEL_NAME}:sweeper")

    async def stop_sweeping(self) -> None:
        """Stop that loop."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
            self._sweeper = None

    async def _sweep_forever(self) -> None:
        # One loop for every app: InboxWorker's own sweeper knows one source, and the apps
        # are known only from what arrives (or what a process that died left behind).
        while True:
            try:
                await self.sweep()
            except SQLAlchemyError as error:
                log.warning("slack inbox sweep failed: %s", error)
            await asyncio.sleep(self.sweep_seconds)

    async def _handle_entry(self, entry: InboxEntry) -> None:
        """Handle one stored event or press (first time or again); raise to have it tried again."""
        stored = json.loads(entry.body)
        body, bot_user_id = stored["body"], stored.get("bot_user_id")
        on_new_message = self._on_new_message
        if on_new_message is None:
            raise RuntimeError("the Slack channel is not registered with Rasa yet")
        if entry.replay:
            on_new_message = unless_saved(on_new_message, self._app, CHANNEL_NAME)
        output = self.output.for_message(_message_id(body), _since(body))
        work = partial(self._dispatch, body, bot_user_id, on_new_message, output)
        await self._in_turn(entry.conversation, work)

    async def _dispatch(
        self, body: dict[str, Any], bot_user_id: str | None, on_new_message: OnNewMessage, output: SlackDMOutput
    ) -> None:
        if body.get("type") == "block_actions":
            await self._button(body, body["actions"][0], on_new_message, output)
        elif body["event"].get("type") == "app_mention":
            await self._mention(body["event"], body, bot_user_id, on_new_message, output)
        else:
            await self._direct_message(body["event"], body, on_new_message, output)

    async def _hold(self, entry: InboxEntry, _error: BaseException) -> None:
        """After a first failure, tell the customer their message is kept (once)."""
        body = json.loads(entry.body)["body"]
        await self.output.for_message(_message_id(body), _since(body)).send_holding(entry.conversation)

    @staticmethod
    def from_customer(event: Mapping[str, Any]) -> bool:
        """Return whether a ``message`` event is a customer writing in a DM with the app."""
        if event.get("channel_type") != "im" or event.get("hidden"):
            return False
        if event.get("bot_id") or event.get("subtype") == "bot_message" or not event.get("user"):
            return False  # other bots (the app's own messages bolt drops before)
        return event.get("subtype") in CUSTOMER_SUBTYPES

    async def _profile(self, user_id: str) -> dict[str, str]:
        """Return what Slack says of the customer (name, locale): one ``users.info`` per user.

        Called in the customer's turn (``_in_turn``), so two first messages make one call.
        A failed lookup is not remembered; the message goes on without a name.
        """
        known = self._profiles.get(user_id)
        if known is not None:
            return known
        try:
            found = (await self.client.users_info(user=user_id, include_locale=True))["user"]
        except SlackApiError as error:
            log.warning("slack users.info for %s failed (%s): no name this time", user_id, error.response.get("error"))
            return {}
        except (aiohttp.ClientError, asyncio.TimeoutError) as error:
            log.warning("slack users.info for %s failed (%r): no name this time", user_id, error)
            return {}
        profile = found.get("profile") or {}
        names = (profile.get("real_name"), profile.get("display_name"), found.get("real_name"), found.get("name"))
        name = next((str(value).strip() for value in names if value and str(value).strip()), None)
        known = {key: str(value) for key, value in (("customer_name", name), ("locale", found.get("locale"))) if value}
        self._profiles[user_id] = known
        return known

    async def _metadata(self, user_id: str, channel_id: str, team_id: str | None) -> dict[str, Any]:
        found: dict[str, Any] = dict(await self._profile(user_id))
        found.update(slack_user_id=user_id, slack_channel_id=channel_id)
        if team_id:
            found["team_id"] = team_id
        return found

    async def _in_turn(self, user_id: str, work: Callable[[], Awaitable[None]]) -> None:
        """Run ``work`` after the customer's earlier events: Rasa gets them in order."""
        lock = self._turns.setdefault(user_id, asyncio.Lock())
        try:
            async with lock:
                await work()
        finally:
            if not lock.locked() and self._turns.get(user_id) is lock:
                del self._turns[user_id]

    async def _direct_message(
        self, event: dict[str, Any], body: dict[str, Any], on_new_message: OnNewMessage, output: SlackDMOutput
    ) -> None:
        user, channel = str(event["user"]), str(event["channel"])
        output.remember_dm(user, channel)
        text = customer_text(str(event.get("text") or ""))
        files = [item for item in event.get("files") or [] if item.get("id")]
        if not text and not files:
            log.debug("slack event %s: nothing to read", body.get("event_id"))
            return
        metadata = await self._metadata(user, channel, body.get("team_id") or event.get("team"))
        message = self._user_message(text or FILE_PLACEHOLDER, user, _message_id(body), metadata, output)
        if not files:
            await on_new_message(message)
            return
        metadata["attachments"] = [
            {key: item.get(source) for key, source in (("file_id", "id"), ("name", "name"), ("mimetype", "mimetype"))}
            for item in files
        ]
        metadata["slack_file_ids"] = [str(item["id"]) for item in files]
        notice = FILE_REPLY.format(noun="files" if len(files) > 1 else "file") + ("" if text else FILE_ASK)
        try:
            await output.send_text_message(channel, notice)
        finally:
            # Even if the notice could not be sent, Rasa (and the case) gets the message.
            await on_new_message(message)

    async def _mention(
        self, event: dict[str, Any], body: dict[str, Any], bot_user_id: str | None, on_new_message: OnNewMessage,
        output: SlackDMOutput,
    ) -> None:  # fmt: skip
        """Answer in public briefly, then carry on in a DM: a case is never discussed in a channel."""
        user, channel = str(event["user"]), str(event["channel"])
        thread = str(event.get("thread_ts") or event["ts"])
        try:
            dm = await output.dm_channel(user)
        except SlackApiError as error:
            log.warning("slack: could not open a DM with %s (%s)", user, error.response.get("error"))
            await output.reply_in_thread(channel, thread, MENTION_REPLY_NO_DM)
            return
        await output.reply_in_thread(channel, thread, MENTION_REPLY)
        # What the customer asked in public, without the mention of the app.
        text = str(event.get("text") or "")
        if bot_user_id:
            text = re.sub(rf"<@{re.escape(bot_user_id)}(?:\|[^<>]*)?>", " ", text)
        metadata = await self._metadata(user, dm, body.get("team_id") or event.get("team"))
        metadata["slack_mention_channel_id"] = channel
        text = customer_text(text) or f"/{INTENT_GREET}"
        await on_new_message(self._user_message(text, user, _message_id(body), metadata, output))

    async def _button(
        self, body: dict[str, Any], action: dict[str, Any], on_new_message: OnNewMessage, output: SlackDMOutput
    ) -> None:
        channel = str((body.get("channel") or {}).get("id") or body.get("container", {}).get("channel_id") or "")
        user = str(body["user"]["id"])
        if not channel.startswith("D"):
            log.info("slack button pressed outside a DM (%s), ignored", channel)
            return
        output.remember_dm(user, channel)
        title = str((action.get("text") or {}).get("text") or action["value"])
        metadata = await self._metadata(user, channel, (body.get("team") or {}).get("id"))
        metadata["button"] = True
        message = self._user_message(str(action["value"]), user, _message_id(body), metadata, output)
        try:
            if body.get("message"):
                await output.show_choice(channel, body["message"], title)
        finally:
            await on_new_message(message)

    @staticmethod
    def _user_message(
        text: str, user_id: str, message_id: str, metadata: dict[str, Any], output: SlackDMOutput
    ) -> UserMessage:
        return UserMessage(text, output, user_id, input_channel=CHANNEL_NAME, message_id=message_id, metadata=metadata)
