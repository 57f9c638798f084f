"""Facebook Messenger: the Page's webhook Rasa listens on, DMs and public comments taken private.

Built on the connectors' shared base (``bot.channels.base``: storing before the answer,
dedupe on the ``mid`` across restarts and replicas, one customer's messages in order,
reply records, holding line, non-text notices), Meta's shared webhook parts
(``bot.channels.meta``: handshake, ``X-Hub-Signature-256``) and a small Graph client
(``bot.channels.graph_client``). Not on Rasa's ``facebook`` channel (SHA-1 signatures, the
first event of a batch only, no dedupe; see docs/channels/messenger.md). Registered in
``credentials.yml``::

    bot.channels.messenger.MessengerInput:
      page_id: ${MESSENGER_PAGE_ID}
      token: ${MESSENGER_PAGE_TOKEN}
      app_secret: ${META_APP_SECRET}
      verify_token: ${META_VERIFY_TOKEN}

Rasa serves it at ``/webhooks/messenger/webhook`` (``GET``: Meta's handshake; ``POST``:
events). ``MetaDMInput`` holds everything Messenger and Instagram Direct share;
``bot.channels.instagram`` is the other platform, a few lines.

Per stored DM, at once: ``mark_seen`` and ``typing_on``, so the customer sees the brand
is there. Per public comment (Page ``feed`` webhook): a public reply from support.yml
(``public_replies``), then Rasa reads the comment as the commenter's message (metadata
``public_post``) and its replies go as the one private reply the comment allows, which
opens the DM conversation. Praise gets the public thanks only.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any, ClassVar

from rasa.core.channels.channel import OutputChannel, UserMessage
from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse

from bot.channels.base import InboundEvent, Intake, WebhookConnector, non_text_notice, optional_lookup, pass_on
from bot.channels.common import BoundedDict, OnNewMessage
from bot.channels.dedupe import ChannelStore
from bot.channels.graph_client import GraphClient
from bot.channels.inbox import Inbox, InboxEntry
from bot.channels.meta import PRIVATE_REPLY_WINDOW, SIGNATURE_HEADER, GraphError, handshake, read_body, signed_by
from bot.channels.meta_events import COMMENT, Comment, comment_tone, dm_content, inbound_events
from bot.channels.meta_output import MetaOutput, MetaSettings, MessengerSettings, build_client
from bot.ops.config import PublicReply
from bot.ops.support import load_support_config

log = logging.getLogger(__name__)

# Where a comment's two replies sit among its recorded replies.
PUBLIC_REPLY_SEQ = 0
PRIVATE_REPLY_SEQ = 1


class PrivateReplyDraft(OutputChannel):
    """Collects Rasa's replies to a public comment: they go out as one private reply.

    A comment allows one private message, so the greeting and the first question are
    joined into it (the conversation goes on in the DM once the customer answers).
    """

    def __init__(self, channel: str) -> None:
        """Collect for ``channel`` (its Rasa name)."""
        self.channel = channel
        self.texts: list[str] = []
        self.buttons: list[dict[str, Any]] = []

    def name(self) -> str:  # type: ignore[override]  # Rasa calls it on instances too
        """Rasa's name for the channel the replies are for."""
        return self.channel

    @property
    def text(self) -> str:
        """The replies so far, as one message."""
        return "\n\n".join(text for text in self.texts if text.strip())

    async def send_text_message(self, recipient_id: str, text: str, **kwargs: Any) -> None:
        """Keep ``text``."""
        self.texts.append(text)

    async def send_text_with_buttons(
        self, recipient_id: str, text: str, buttons: list[dict[str, Any]], **kwargs: Any
    ) -> None:
        """Keep ``text``; the last buttons go under the private reply."""
        self.texts.append(text)
        self.buttons = list(buttons)

    async def send_custom_json(self, recipient_id: str, json_message: dict[str, Any], **kwargs: Any) -> None:
        """Keep a custom payload's ``text`` and ``buttons``; anything else cannot ride on the private reply."""
        if json_message.get("text"):
            self.texts.append(str(json_message["text"]))
        if isinstance(json_message.get("buttons"), list):
            self.buttons = list(json_message["buttons"])
        left_out = sorted(set(json_message) - {"text", "buttons"})
        if left_out:
            log.warning("%s private reply: custom keys %s left out (one text message)", self.channel, left_out)

    async def send_image_url(self, recipient_id: str, image: str, **kwargs: Any) -> None:
        """An image cannot ride on the one private reply: it is left out, and said so in the log."""
        log.warning("%s private reply: image %s left out (a comment allows one text message)", self.channel, image)


class MetaDMInput(WebhookConnector):
    """A Page's (or Instagram account's) webhook: authenticated, stored, answered at once, handled after."""

    output: MetaOutput
    settings_class: ClassVar[type[MetaSettings]] = MessengerSettings

    @classmethod
    def name(cls) -> str:
        """Rasa's name for the channel; also the URL prefix."""
        return cls.settings_class.platform.channel

    @classmethod
    def from_credentials(cls, credentials: dict[str, Any] | None) -> MetaDMInput:
        """Validate the credentials (or environment) and support.yml's ``public_replies``; build the channel."""
        settings = cls.settings_class.from_credentials(credentials)
        public = load_support_config().public_reply(settings.platform.public_platform)
        return cls(settings, public)

    def __init__(
        self,
        settings: MetaSettings,
        public_reply: PublicReply | None = None,
        store: ChannelStore | None = None,
        inbox: Inbox | None = None,
        client: GraphClient | None = None,
    ) -> None:
        """Build the Graph client (no network call) and open the channel store and the inbox."""
        self.settings = settings
        self.platform = settings.platform
        self.public_reply = public_reply or PublicReply()
        inbox = self.open_inbox(store, inbox)
        self.client = client or build_client(settings)
        self.names: BoundedDict[str, str | None] = BoundedDict()
        self.start_connector(MetaOutput(self.client, self.platform, settings.account_id, inbox=inbox))

    async def sources(self) -> list[str]:
        """Return the inbox source: this account's events."""
        return [self.settings.source]

    async def close_clients(self) -> None:
        """Close the Graph client's connections."""
        await self.client.close()

    def blueprint(self, on_new_message: OnNewMessage) -> Blueprint:
        """Return the Sanic routes: ``GET /`` (health), ``GET /webhook`` (handshake), ``POST /webhook``."""
        routes = self.connector_blueprint(f"firstreply_{self.name()}")
        self._on_new_message = on_new_message

        @routes.route("/webhook", methods=["GET"])
        async def verify(request: Request) -> HTTPResponse:
            return handshake(request.args, self.settings.verify_token, self.name())

        @routes.route("/webhook", methods=["POST"])
        async def webhook(request: Request) -> HTTPResponse:
            return await self.handle_webhook(request, on_new_message)

        return routes

    async def handle_webhook(self, request: Request, on_new_message: OnNewMessage) -> HTTPResponse:
        """Check, store and start every event of one POST; answer Meta without waiting for Rasa."""
        if not signed_by(self.settings.secret, request.body, request.headers.get(SIGNATURE_HEADER)):
            log.warning("%s webhook: wrong or missing %s, request dropped", self.name(), SIGNATURE_HEADER)
            return response.json({"ok": False, "error": "unauthorized"}, status=401)
        data = read_body(request.body, self.name())
        if data is None or data.get("object") != self.platform.webhook_object:
            if data is not None:
                log.warning("%s webhook: object %r is not %r", self.name(), str(data.get("object"))[:40],
                            self.platform.webhook_object)  # fmt: skip
            return response.json({"ok": False, "error": "malformed webhook body"}, status=400)
        self._on_new_message = on_new_message
        events, skipped = inbound_events(data, self.platform, self.settings.account_id, self.settings.source)
        intake = await self.accept_all(events) if events else Intake.COPY
        if intake is Intake.UNAVAILABLE:
            # Not all stored: Meta sends the whole POST again; the stored ones are then copies.
            return response.json({"ok": False, "error": "temporarily unavailable"}, status=503)
        if intake is Intake.STORED:
            for customer in presence_customers(events):
                self.tasks.start(self.show_presence(customer), f"presence:{customer}")
        return response.json({"ok": True, "events": len(events), "skipped": skipped})

    async def show_presence(self, customer: str) -> None:
        """Mark the customer's messages seen and show typing (a courtesy: a failure is only logged)."""
        for action in ("mark_seen", "typing_on"):
            try:
                await self.output.sender_action(customer, action)
            except GraphError as error:
                log.warning("%s %s to %s failed (%s); the reply still comes", self.name(), action, customer, error)
                return

    def output_for(self, entry: InboxEntry) -> MetaOutput:
        """Return the sender bound to a stored event (a DM's text replies in doubt are looked up from its time on)."""
        return self.output.for_message(self.message_id(entry), since=_dm_sent(entry.body))

    def message_id(self, entry: InboxEntry) -> str:
        """Return the Rasa message id of a stored event (also the key of its recorded replies)."""
        return f"{self.name()}-{entry.update_id}"

    async def _hold(self, entry: InboxEntry, error: BaseException) -> None:
        """After a first failure, tell a DM customer their message is kept; a commenter has no DM yet."""
        if json.loads(entry.body).get("kind") != COMMENT:
            await super()._hold(entry, error)

    async def handle(self, entry: InboxEntry, on_new_message: OnNewMessage) -> None:
        """Handle one stored event (first time or again); raise to have it tried again."""
        body = json.loads(entry.body)
        if body["kind"] == COMMENT:
            await self.on_comment(entry, body["event"]["value"], on_new_message)
        else:
            await self.on_dm(entry, body["event"], on_new_message)

    # --- DMs --------------------------------------------------------------------------

    async def on_dm(self, entry: InboxEntry, event: dict[str, Any], on_new_message: OnNewMessage) -> None:
        """Pass a DM to Rasa (a notice first for what the assistant cannot read)."""
        customer = str(event["sender"]["id"])
        content = dm_content(event)
        metadata = {**await self.customer_metadata(customer), **content.metadata}
        output = self.output_for(entry)
        message = UserMessage(
            content.text, output, customer, input_channel=self.name(), message_id=self.message_id(entry),
            metadata=metadata,
        )  # fmt: skip
        if content.noun is None:
            await on_new_message(message)
            return
        notice = non_text_notice(content.noun, with_text=content.with_text)
        await pass_on(output.send_text_message(customer, notice), on_new_message, message)

    async def customer_metadata(self, customer: str) -> dict[str, Any]:
        """Return what Rasa keeps about the customer: their id and, where permitted, their name."""
        found: dict[str, Any] = {"user_id": customer, "account_id": self.settings.account_id}
        name = await self.customer_name(customer)
        if name:
            found["customer_name"] = name
        return found

    async def customer_name(self, customer: str) -> str | None:
        """Return the customer's name from the profile API (remembered), or ``None`` where not permitted."""
        if customer in self.names:
            return self.names[customer]
        name = await optional_lookup(
            self.name(), "profile", customer,
            lambda: self.client.get(customer, {"fields": self.platform.profile_fields}), _profile_name, (GraphError,),
        )  # fmt: skip
        self.names[customer] = name
        return name

    # --- public comments ----------------------------------------------------------------

    async def on_comment(self, entry: InboxEntry, value: dict[str, Any], on_new_message: OnNewMessage) -> None:
        """Answer a comment in public, then hand it to Rasa and send its replies as the one private reply."""
        comment = Comment.read(value, self.platform)
        if comment is None:  # only new comments are stored; a body changed since is not one
            log.error("%s stored comment %s is no longer a new comment; nothing sent", self.name(), entry.update_id)
            return
        output = self.output_for(entry)
        tone = comment_tone(comment.text)
        if self.public_reply.enabled:
            text = self.public_reply.thanks if tone.praise else self.public_reply.text
            await output.public_reply(comment.id, text, seq=PUBLIC_REPLY_SEQ)
        if tone.praise:
            log.info("%s comment %s reads as praise: thanked in public only", self.name(), comment.id)
            return
        draft = PrivateReplyDraft(self.name())
        metadata = {
            **await self.customer_metadata(comment.author_id),
            "public_post": {
                "platform": self.platform.public_platform, "id": comment.id, "text": comment.text,
                "url": comment.url or await self.permalink(comment), "author": comment.author,
                "hostile": tone.hostile,
            },
        }  # fmt: skip
        if comment.author and "customer_name" not in metadata:
            metadata["customer_name"] = comment.author
        await on_new_message(UserMessage(
            comment.text or "[comment]", draft, comment.author_id, input_channel=self.name(),
            message_id=self.message_id(entry), metadata=metadata,
        ))  # fmt: skip
        if comment.created is not None and datetime.now(timezone.utc) - comment.created > PRIVATE_REPLY_WINDOW:
            log.warning("%s comment %s is over 7 days old: Meta allows no private reply; the case has it",
                        self.name(), comment.id)  # fmt: skip
            return
        if not draft.text and not draft.buttons:
            log.warning("%s comment %s: Rasa gave no reply to send privately", self.name(), comment.id)
            return
        await output.private_reply(comment.id, draft.text, draft.buttons, seq=PRIVATE_REPLY_SEQ)

    async def permalink(self, comment: Comment) -> str:
        """Return a link to the commented post (Instagram's webhook carries none: looked up, or "")."""
        if not comment.media_id:
            return ""
        found = await optional_lookup(
            self.name(), "permalink", comment.media_id,
            lambda: self.client.get(comment.media_id, {"fields": "permalink"}), lambda a: str(a["permalink"]),
            (GraphError,),
        )  # fmt: skip
        return found or ""


def _profile_name(profile: dict[str, Any]) -> str | None:
    """Return the name a profile answer gives: Messenger's first name, Instagram's name or username."""
    for key in ("first_name", "name", "username"):
        value = profile.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


class MessengerInput(MetaDMInput):
    """Facebook Messenger: a Page's DMs and the comments under its posts."""

    settings_class = MessengerSettings


def presence_customers(events: Sequence[InboundEvent]) -> list[str]:
    """Return the customers of a batch's DMs, each once, in order."""
    return list(dict.fromkeys(e.conversation for e in events if json.loads(e.body).get("kind") != COMMENT))


def _dm_sent(body: str) -> float | None:
    """Return when a stored DM was sent (its event's ``timestamp``, epoch ms, as epoch seconds), or None."""
    try:
        stored = json.loads(body)
        return int(stored["event"]["timestamp"]) / 1000 if stored.get("kind") != COMMENT else None
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
