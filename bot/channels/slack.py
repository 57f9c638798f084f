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
mid-way (``bot.channels.base``, as for Telegram): each event or button press is stored in
the inbox before Slack gets its answer (Slack sends it again after a non-2xx), handled in
the background, and marked done only once Rasa has it; a failure is tried again with
back-off (the customer gets one "holding" line), and an event left by a process that died is
taken over by the inbox sweeper of any Rasa process.

This module reads what Slack sends (events, button presses) and turns it into Rasa
messages. Sending is in ``bot.channels.slack_output`` (exactly once per message: every post
carries an idempotency key looked up in the DM's history after a lost answer), the settings
and the Web API client that retries safely in ``bot.channels.slack_client``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

import aiohttp
from rasa.core.channels.channel import UserMessage
from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse
from slack_bolt import BoltResponse
from slack_bolt.adapter.sanic.async_handler import to_async_bolt_request, to_sanic_response
from slack_bolt.async_app import AsyncApp
from slack_bolt.request import payload_utils
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from bot.channels.base import InboundEvent, Intake, WebhookConnector, non_text_notice, optional_lookup, pass_on
from bot.channels.common import BoundedDict, OnNewMessage, typed_text
from bot.channels.dedupe import SEEN_TTL_SECONDS, ChannelStore
from bot.channels.inbox import Inbox, InboxEntry
from bot.channels.slack_client import CHANNEL_NAME, SlackSettings, build_client, slack_error
from bot.channels.slack_output import BUTTON_ACTION_PREFIX, LOOKBACK_SECONDS, SlackDMOutput
from bot.constants import INTENT_GREET

if TYPE_CHECKING:
    from slack_bolt.context.ack.async_ack import AsyncAck
    from slack_bolt.context.async_context import AsyncBoltContext
    from slack_bolt.request.async_request import AsyncBoltRequest

log = logging.getLogger(__name__)

EVENTS_PATH = "/webhooks/slack_dm/events"
RETRY_NUM_HEADER = "x-slack-retry-num"
RETRY_REASON_HEADER = "x-slack-retry-reason"
BUTTON_ACTION = re.compile(rf"^{BUTTON_ACTION_PREFIX}\d+$")
# Longest inbox keys (``bot.channels.inbox`` columns); Slack's ids are far shorter.
SOURCE_LIMIT = 64
KEY_LIMIT = 128
CONVERSATION_LIMIT = 255
# Message subtypes that are a customer writing; everything else (edits, deletions, joins,
# bot posts) is acknowledged and left alone.
CUSTOMER_SUBTYPES = frozenset({None, "file_share", "thread_broadcast"})
# What the lookups of a customer's profile may raise besides an answer in an odd shape.
LOOKUP_ERRORS = (SlackApiError, aiohttp.ClientError, asyncio.TimeoutError)

# What the customer reads. Built from escaped text only (the sender escapes).
MENTION_REPLY = "Thanks for reaching out! I've sent you a direct message so we can look into this privately."
MENTION_REPLY_NO_DM = "Thanks for reaching out! Please send us a direct message so we can look into this privately."
FILE_PLACEHOLDER = "[file]"

# What bolt reads out of every body before any middleware or listener of ours runs; a
# signed body where one of these fails is malformed (400), not a server error (500).
_BOLT_PAYLOAD_VIEWS = (
    payload_utils.to_options, payload_utils.to_shortcut, payload_utils.to_action, payload_utils.to_view,
    payload_utils.to_command, payload_utils.to_event, payload_utils.to_message, payload_utils.to_step,
)  # fmt: skip
# Slack's markup in what a customer typed: <@U123>, <#C123|name>, <!here>, <https://x|label>.
_MARKUP = re.compile(r"<([^<>|]*)(?:\|([^<>]*))?>")


# --- reading what customers typed ---------------------------------------------------------


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
    and a leading ``/`` is dropped (``typed_text``): customers must not inject intents.
    """
    plain = _MARKUP.sub(_unmarkup, text)
    return typed_text(plain.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&"))


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




class SlackDMInput(WebhookConnector):
    """Customers' DMs with the brand's Slack app, and mentions of it in channels (moved to a DM).

    Each event or button press is kept in the inbox before Slack gets its answer and handled
    until Rasa has it, by this process or, if it dies or the handling fails, by the inbox
    sweeper of any Rasa process (``bot.channels.base``).
    """

    output: SlackDMOutput

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
        inbox = self.open_inbox(store, inbox)
        self.client = client if client is not None else build_client(settings)
        self.start_connector(SlackDMOutput(self.client, inbox=inbox))
        self._verifier = SignatureVerifier(settings.signing_secret)
        self._profiles: BoundedDict[str, dict[str, str]] = BoundedDict()
        self._turns: dict[str, asyncio.Lock] = {}

    async def sources(self) -> list[str]:
        """Return the inbox sources with work left: one per Slack app, known only from what arrives."""
        return await asyncio.to_thread(self.inbox.sources, f"{CHANNEL_NAME}:")

    def blueprint(self, on_new_message: OnNewMessage) -> Blueprint:
        """Return the Sanic routes: ``GET /`` (health) and ``POST /events`` (the bolt app)."""
        app = self.build_app(on_new_message)
        slack_webhook = self.connector_blueprint("firstreply_slack_dm")

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
        # The bot's own user id goes with the body: a mention is read without it, also when
        # handled after a restart.
        stored = json.dumps({"body": body, "bot_user_id": context.bot_user_id})
        event = InboundEvent(_source(body), _fit(key, KEY_LIMIT), _fit(customer, CONVERSATION_LIMIT), stored)
        intake = await self.accept(event)
        if intake is Intake.UNAVAILABLE:
            return BoltResponse(status=503, body="")  # Slack sends it again
        if intake is Intake.COPY:
            return BoltResponse(status=200, body="")
        return await next_()

    def output_for(self, entry: InboxEntry) -> SlackDMOutput:
        """Return the sender bound to a stored event or press."""
        body = json.loads(entry.body)["body"]
        return self.output.for_message(_message_id(body), _since(body))

    async def handle(self, entry: InboxEntry, on_new_message: OnNewMessage) -> None:
        """Handle one stored event or press (first time or again); raise to have it tried again."""
        stored = json.loads(entry.body)
        body, bot_user_id = stored["body"], stored.get("bot_user_id")
        work = partial(self._dispatch, body, bot_user_id, on_new_message, self.output_for(entry))
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
        Only there to learn a name: a failed lookup, or one answered in an unexpected shape,
        is logged, counted and not remembered, and the message goes on without a name.
        """
        known = self._profiles.get(user_id)
        if known is not None:
            return known
        found = await optional_lookup(
            CHANNEL_NAME, "users.info", user_id, lambda: self.client.users_info(user=user_id, include_locale=True),
            _profile_of, LOOKUP_ERRORS, describe=slack_error,
        )  # fmt: skip
        if found is None:
            return {}
        self._profiles[user_id] = found
        return found

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
        notice = non_text_notice("files" if len(files) > 1 else "file", with_text=bool(text))
        await pass_on(output.send_text_message(channel, notice), on_new_message, message)

    async def _mention(
        self, event: dict[str, Any], body: dict[str, Any], bot_user_id: str | None, on_new_message: OnNewMessage,
        output: SlackDMOutput,
    ) -> None:  # fmt: skip
        """Answer in public briefly, then carry on in a DM: a case is never discussed in a channel."""
        user, channel = str(event["user"]), str(event["channel"])
        thread = str(event.get("thread_ts") or event["ts"])
        dm = await optional_lookup(
            CHANNEL_NAME, "conversations.open", user, lambda: output.dm_channel(user), str, (SlackApiError,),
            describe=slack_error,
        )  # fmt: skip
        if dm is None:  # no DM to carry on in: the customer is asked to open one
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
        if not body.get("message"):
            await on_new_message(message)
            return
        await pass_on(output.show_choice(channel, body["message"], title), on_new_message, message)

    @staticmethod
    def _user_message(
        text: str, user_id: str, message_id: str, metadata: dict[str, Any], output: SlackDMOutput
    ) -> UserMessage:
        return UserMessage(text, output, user_id, input_channel=CHANNEL_NAME, message_id=message_id, metadata=metadata)


def _profile_of(answer: Mapping[str, Any]) -> dict[str, str]:
    """Read a ``users.info`` answer: the customer's name and locale, where Slack gives them.

    Raises:
        TypeError: the answer has no ``user`` object.
        AttributeError: its ``profile`` is not an object.
    """
    found = answer["user"]
    if not isinstance(found, Mapping):
        raise TypeError(f"'user' is {type(found).__name__}, not an object")
    profile = found.get("profile") or {}
    names = (profile.get("real_name"), profile.get("display_name"), found.get("real_name"), found.get("name"))
    name = next((str(value).strip() for value in names if value and str(value).strip()), None)
    return {key: str(value) for key, value in (("customer_name", name), ("locale", found.get("locale"))) if value}
