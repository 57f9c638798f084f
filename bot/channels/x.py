"""X (Twitter): the webhook Rasa listens on, for the brand's DMs and the public posts that mention it.

Events come from X's Account Activity API: one subscribed account (the brand's), one
webhook. Built on the connectors' shared base (``bot.channels.base``: stored before the
answer, deduplicated on the event id, replayed after a crash, replies recorded) and on
tweepy for the calls back (``bot.channels.x_output``, ``bot.channels.x_client``).
Registered in ``credentials.yml``::

    bot.channels.x.XInput:
      consumer_key: ${X_CONSUMER_KEY}
      consumer_secret: ${X_CONSUMER_SECRET}
      access_token: ${X_ACCESS_TOKEN}
      access_token_secret: ${X_ACCESS_TOKEN_SECRET}
      brand_user_id: ${X_BRAND_USER_ID}
      brand_handle: ${X_BRAND_HANDLE}

(``base_url``, from ``X_API_BASE_URL`` when left out: another API server, e.g. the tests'
fake.) Rasa serves it at ``/webhooks/x/webhook``: a GET answers X's challenge-response
check (``crc_token``), a POST carries events, signed (``x-twitter-webhooks-signature``).

What is done with them:

- **DMs to the brand** go to Rasa as the customer's messages (sender id: their user id;
  their name and handle in the metadata). A photo, video or GIF is answered with a clear
  notice and noted in the case. A number or a title answering numbered choices is read as
  the button's payload (``bot.channels.choices``).
- **Public posts** that mention the brand or reply to it go to Rasa as a message of the
  same customer's conversation, marked ``public_post`` (``bot.channels.public_posts``):
  Rasa answers by DM. Then the post gets one short public reply from support.yml
  (``public_replies.x``): the invitation to DM, or, when the customer does not accept DMs
  from the brand, the line saying how else to reach it. A post further down a thread the
  brand already answered gets no second public reply.
- Ignored: the brand's own DMs and posts, reposts, and every other kind of activity.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rasa.core.channels.channel import UserMessage
from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse

from bot.channels.base import InboundEvent, Intake, WebhookConnector, non_text_notice, pass_on
from bot.channels.choices import OfferedChoices
from bot.channels.common import OnNewMessage, typed_text
from bot.channels.dedupe import ChannelStore
from bot.channels.inbox import Inbox, InboxEntry
from bot.channels.public_posts import PublicThreads, public_post_metadata
from bot.channels.x_client import (
    CHANNEL_NAME,
    POST_LINK,
    SIGNATURE_HEADER,
    XSettings,
    build_client,
    challenge_response,
    close_client,
    signed_by_x,
)
from bot.channels.x_output import XOutput
from bot.nlu.signals import read_signals
from bot.ops import PublicReply, load_support_config
from bot.priority import HOSTILITY_URGENT

log = logging.getLogger(__name__)

DM = "dm"
POST = "post"
# Kinds of DM attachment: (metadata key that bot.conversation notes, the noun the customer reads).
_MEDIA_KINDS: dict[str, tuple[str, str]] = {
    "photo": ("photo", "photo"),
    "video": ("attachment", "video"),
    "animated_gif": ("attachment", "GIF"),
}
_ID = re.compile(r"[0-9]{1,20}")
# The @handles a reply starts with (X puts them there; they are not what the customer said).
_LEADING_MENTIONS = re.compile(r"^(\s*@[A-Za-z0-9_]{1,15})+\s*")


class MalformedEvent(ValueError):
    """A webhook body that is not what X sends; the message says what is wrong."""


@dataclass(frozen=True)
class PublicPost:
    """A public post as the connector reads it."""

    id: str
    author_id: str
    text: str
    handle: str
    name: str
    in_reply_to: str | None


# --- reading X's events ------------------------------------------------------------------


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise MalformedEvent(f"{where} is not a string")
    return value


def _id(value: Any, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)) or not _ID.fullmatch(str(value)):
        raise MalformedEvent(f"{where} is not an X id")
    return str(value)


def _object(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise MalformedEvent(f"{where} is not an object")
    return value


def _list(body: Mapping[str, Any], key: str) -> list[Any]:
    value = body.get(key, [])
    if not isinstance(value, list):
        raise MalformedEvent(f"{key} is not a list")
    return value


def dm_parts(event: Mapping[str, Any]) -> tuple[str, str, str, Mapping[str, Any]]:
    """Return a DM event's id, sender, recipient and ``message_data``; raise ``MalformedEvent`` if it is none."""
    create = _object(event.get("message_create"), "message_create")
    data = _object(create.get("message_data"), "message_data")
    _text(data.get("text", ""), "message_data.text")
    target = _object(create.get("target"), "message_create.target")
    return (_id(event.get("id"), "event id"), _id(create.get("sender_id"), "sender_id"),
            _id(target.get("recipient_id"), "recipient_id"), data)  # fmt: skip


def _dm_created(body: str) -> float | None:
    """Return when a stored DM was created (``created_timestamp``, epoch ms, as epoch seconds), or None."""
    try:
        stored = json.loads(body)
        return int(stored["event"]["created_timestamp"]) / 1000 if stored.get("kind") == DM else None
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


def read_post(post: Mapping[str, Any]) -> PublicPost:
    """Return a post of ``tweet_create_events`` as read; raise ``MalformedEvent`` if it is not one."""
    user = _object(post.get("user"), "user")
    extended = post.get("extended_tweet")
    full = _object(extended, "extended_tweet").get("full_text") if extended is not None else None
    text = _text(full if full is not None else post.get("text", ""), "text")
    reply_to = post.get("in_reply_to_status_id_str")
    return PublicPost(
        id=_id(post.get("id_str"), "id_str"),
        author_id=_id(user.get("id_str"), "user.id_str"),
        text=text,
        handle=_text(user.get("screen_name", ""), "user.screen_name"),
        name=_text(user.get("name", ""), "user.name"),
        in_reply_to=None if reply_to is None else _id(reply_to, "in_reply_to_status_id_str"),
    )


def addresses(post: Mapping[str, Any], brand_id: str) -> bool:
    """Return whether a post mentions the brand, replies to it or quotes it."""
    entities = post.get("entities")
    mentions = (entities.get("user_mentions") or []) if isinstance(entities, Mapping) else []
    if any(isinstance(m, Mapping) and str(m.get("id_str") or m.get("id")) == brand_id for m in mentions):
        return True
    if str(post.get("in_reply_to_user_id_str") or "") == brand_id:
        return True
    quoted = post.get("quoted_status")
    return isinstance(quoted, Mapping) and str((quoted.get("user") or {}).get("id_str") or "") == brand_id


def media_of(data: Mapping[str, Any]) -> tuple[str, str, str, str] | None:
    """Return a DM's attachment as (metadata key, noun, what to record, its link in the text), or ``None``."""
    attachment = data.get("attachment")
    if not isinstance(attachment, Mapping):
        return None
    media = attachment.get("media")
    media = media if isinstance(media, Mapping) else {}
    kind = str(media.get("type") or attachment.get("type") or "file")
    key, noun = _MEDIA_KINDS.get(kind, ("attachment", "file"))
    link = str(media.get("media_url_https") or media.get("expanded_url") or media.get("id_str") or kind)
    return key, noun, link, str(media.get("url") or "")


# --- receiving ---------------------------------------------------------------------------


class XInput(WebhookConnector):
    """X webhook: the challenge answered, every event authenticated, stored, answered at once, handled after."""

    output: XOutput

    @classmethod
    def name(cls) -> str:
        """Rasa's name for the channel; also the URL prefix (``/webhooks/x``)."""
        return CHANNEL_NAME

    @classmethod
    def from_credentials(cls, credentials: dict[str, Any] | None) -> XInput:
        """Validate the credentials (or environment) and support.yml's public replies; build the channel."""
        return cls(XSettings.from_credentials(credentials), load_support_config().public_replies.get(CHANNEL_NAME))

    def __init__(
        self,
        settings: XSettings,
        public_reply: PublicReply | None = None,
        store: ChannelStore | None = None,
        inbox: Inbox | None = None,
    ) -> None:
        """Build the client (no network call) and open the channel store and the inbox.

        ``public_reply``: support.yml's ``public_replies.x`` (``None``: posts get no public reply).
        """
        self.settings = settings
        self.public_reply = public_reply
        inbox = self.open_inbox(store, inbox)
        self.client = build_client(settings)
        self.choices = OfferedChoices(self.store.engine)
        self.threads = PublicThreads(self.store.engine)
        self.start_connector(XOutput(self.client, settings.source, self.choices, inbox=inbox))

    async def sources(self) -> list[str]:
        """Return the inbox source: the brand's account's events."""
        return [self.settings.source]

    async def close_clients(self) -> None:
        """Close the client's connections."""
        await asyncio.to_thread(close_client, self.client)

    def blueprint(self, on_new_message: OnNewMessage) -> Blueprint:
        """Return the Sanic routes: ``GET /`` (health), ``GET /webhook`` (the check) and ``POST /webhook``."""
        x_webhook = self.connector_blueprint("firstreply_x")
        self._on_new_message = on_new_message

        @x_webhook.route("/webhook", methods=["GET"])
        async def check(request: Request) -> HTTPResponse:
            return self.answer_challenge(request)

        @x_webhook.route("/webhook", methods=["POST"])
        async def webhook(request: Request) -> HTTPResponse:
            return await self.handle_webhook(request, on_new_message)

        return x_webhook

    def answer_challenge(self, request: Request) -> HTTPResponse:
        """Answer X's challenge-response check: the HMAC of ``crc_token`` with the consumer secret."""
        tokens = request.args.getlist("crc_token") or []
        if len(tokens) != 1 or not tokens[0]:
            return response.json({"error": "one crc_token is needed"}, status=400)
        return response.json({"response_token": challenge_response(tokens[0], self.settings.consumer_secret)})

    async def handle_webhook(self, request: Request, on_new_message: OnNewMessage) -> HTTPResponse:
        """Check, store and start the events of one call; answer X without waiting for Rasa."""
        if not signed_by_x(request.body, request.headers.get(SIGNATURE_HEADER, ""), self.settings.consumer_secret):
            log.warning("x webhook: wrong or missing signature, request dropped")
            return response.json({"error": "unauthorized"}, status=401)
        try:
            events = self.inbound_events(request.body)
        except MalformedEvent as error:
            log.warning("x webhook: malformed body (%s), refused", error)
            return response.json({"error": f"malformed event: {error}"}, status=400)
        self._on_new_message = on_new_message
        intake = await self.accept_all(events)
        if intake is Intake.UNAVAILABLE:
            # Not all stored: X sends the call again after a non-2xx answer.
            return response.json({"error": "temporarily unavailable"}, status=503)
        return response.json({"ok": True, **({"duplicate": True} if intake is Intake.COPY and events else {})})

    def inbound_events(self, raw: bytes) -> list[InboundEvent]:
        """Return the events of one webhook call worth handling; raise ``MalformedEvent`` if it is not X's."""
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):  # RecursionError: nested too deep
            raise MalformedEvent("the body is not JSON") from None
        body = _object(body, "the body")
        if "for_user_id" in body and _id(body["for_user_id"], "for_user_id") != self.settings.brand_id:
            log.warning("x webhook: events for account %s, not the brand's: ignored", body["for_user_id"])
            return []
        users = body.get("users") or {}
        users = users if isinstance(users, Mapping) else {}
        found: list[InboundEvent] = []
        for event in _list(body, "direct_message_events"):
            event = _object(event, "a direct message event")
            if event.get("type") != "message_create":
                continue
            event_id, sender, _, _ = dm_parts(event)
            if sender == self.settings.brand_id:
                continue  # the brand's own DM (an agent's, or ours)
            profile = users.get(sender) if isinstance(users.get(sender), Mapping) else {}
            found.append(self._event(DM, event_id, sender, {"event": event, "user": profile}))
        for post in _list(body, "tweet_create_events"):
            post = _object(post, "a post")
            read = read_post(post)
            if read.author_id == self.settings.brand_id or "retweeted_status" in post:
                continue  # the brand's own post, or a repost
            if not addresses(post, self.settings.brand_id):
                continue
            found.append(self._event(POST, read.id, read.author_id, {"post": post}))
        return found

    def _event(self, kind: str, event_id: str, customer: str, body: Mapping[str, Any]) -> InboundEvent:
        # ASCII JSON: lone surrogates and NULs survive any database.
        return InboundEvent(self.settings.source, f"{kind}-{event_id}", customer, json.dumps({"kind": kind, **body}))

    def output_for(self, entry: InboxEntry) -> XOutput:
        """Return the sender bound to a stored event (a DM's replies in doubt are looked up from its time on)."""
        return self.output.for_message(_message_id(entry.update_id), since=_dm_created(entry.body))

    async def handle(self, entry: InboxEntry, on_new_message: OnNewMessage) -> None:
        """Handle one stored event (first time or again); raise to have it tried again."""
        stored = json.loads(entry.body)
        output = self.output_for(entry)
        if stored["kind"] == DM:
            await self.on_dm(stored["event"], stored.get("user") or {}, on_new_message, output)
        else:
            await self.on_post(stored["post"], on_new_message, output)

    async def on_dm(self, event: Mapping[str, Any], user: Mapping[str, Any], on_new_message: OnNewMessage,
                    output: XOutput) -> None:  # fmt: skip
        """Pass one DM to Rasa (a notice first for an attachment)."""
        event_id, sender, _, data = dm_parts(event)
        text = str(data.get("text") or "")
        media = media_of(data)
        if media is not None and media[3]:
            text = text.replace(media[3], "")  # X appends the media's link to the text
        metadata = customer_metadata(sender, user)
        message_id = _message_id(f"{DM}-{event_id}")
        chosen = await asyncio.to_thread(self.choices.chosen, self.settings.source, sender, text) if text else None
        if chosen is not None:
            metadata["button"] = True
            text = chosen
        else:
            text = typed_text(text)
        if media is None:
            if not text:
                log.info("x DM %s: no text and nothing attached, nothing for the assistant", event_id)
                return
            await on_new_message(self._message(text, sender, message_id, metadata, output))
            return
        key, noun, link, _ = media
        metadata[key] = link if key != "attachment" else {"type": noun, "url": link}
        message = self._message(text or f"[{noun}]", sender, message_id, metadata, output)
        await pass_on(output.send_text_message(sender, non_text_notice(noun, with_text=bool(text))),
                      on_new_message, message)  # fmt: skip

    async def on_post(self, raw: Mapping[str, Any], on_new_message: OnNewMessage, output: XOutput) -> None:
        """Pass a public post to Rasa (answered by DM), then answer it once in public."""
        post = read_post(raw)
        source = self.settings.source
        thread = await asyncio.to_thread(self.threads.thread_of, source, post.in_reply_to)
        said = _LEADING_MENTIONS.sub("", post.text).strip()
        url = POST_LINK.format(handle=post.handle or "i", post_id=post.id)
        hostile = read_signals(said).hostility >= HOSTILITY_URGENT
        metadata = {
            **customer_metadata(post.author_id, {"name": post.name, "screen_name": post.handle}),
            **public_post_metadata(CHANNEL_NAME, post.id, post.text, url, post.handle, hostile),
        }
        text = typed_text(said) or "[public post]"
        await on_new_message(self._message(text, post.author_id, _message_id(f"{POST}-{post.id}"), metadata, output))
        if thread is not None:
            # Further down a thread already answered in public: that one reply stands.
            await asyncio.to_thread(self.threads.add, source, thread, post.id)
            return
        if self.public_reply is None or not self.public_reply.enabled:
            return
        wording = self.public_reply.no_dm_text if output.dm_refused else self.public_reply.text
        reply_id = await output.public_reply(post.id, wording.format(dm_link=self.settings.dm_link))
        await asyncio.to_thread(self.threads.add, source, post.id, post.id, reply_id or "")

    def _message(self, text: str, sender: str, message_id: str, metadata: dict[str, Any],
                 output: XOutput) -> UserMessage:  # fmt: skip
        return UserMessage(text, output, sender, input_channel=CHANNEL_NAME, message_id=message_id, metadata=metadata)


def customer_metadata(user_id: str, user: Mapping[str, Any]) -> dict[str, Any]:
    """Return what Rasa keeps about the customer: their display name, handle and id."""
    found = {"customer_name": user.get("name"), "username": user.get("screen_name"), "user_id": user_id}
    return {key: value for key, value in found.items() if isinstance(value, str) and value.strip()}


def _message_id(event_key: str) -> str:
    """Return the Rasa message id of a stored event (also the key of its recorded replies)."""
    return f"{CHANNEL_NAME}-{event_key}"
