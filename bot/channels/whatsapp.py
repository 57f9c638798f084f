"""WhatsApp Cloud API: the webhook Rasa listens on, reading what customers send.

Built on the connectors' shared base (``bot.channels.base``: storing before the answer,
dedupe, replay, holding line, non-text notices), Meta's shared webhook parts
(``bot.channels.meta``: the handshake, ``X-Hub-Signature-256``) and ``pywa_async`` for
sending (``bot.channels.whatsapp_output``). Registered in ``credentials.yml``::

    bot.channels.whatsapp.WhatsAppInput:
      access_token: ${WHATSAPP_ACCESS_TOKEN}
      app_secret: ${WHATSAPP_APP_SECRET}
      verify_token: ${WHATSAPP_VERIFY_TOKEN}
      phone_number_id: ${WHATSAPP_PHONE_NUMBER_ID}

Optional key, read from the environment when left out: ``base_url``
(``WHATSAPP_API_BASE_URL``: another Graph API server, e.g. the tests' fake).

Rasa serves it at ``/webhooks/whatsapp/webhook``: ``GET`` answers Meta's verification
handshake, ``POST`` takes the ``messages`` field's notifications. One POST may carry
several entries, changes and messages: each customer message is stored in the inbox as an
event of its own (keyed by its ``wamid``, so a redelivery is a copy however many replicas
see it), in order per customer, before Meta gets its 200. Statuses (sent, delivered, read,
failed) are acknowledged and not handed to Rasa; a failed one's errors are logged.

What becomes of a message: text is read as typed (a leading ``/`` dropped: no intent
injection); a reply button or list row passes its payload to Rasa; a template's quick-reply
button its text; a photo, sticker, voice note, video, file, location or contact card gets a
clear reply and is noted in the case; a reaction is no message and is only logged.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from rasa.core.channels.channel import UserMessage
from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse

from bot.channels.base import InboundEvent, Intake, WebhookConnector, non_text_notice, pass_on
from bot.channels.common import OnNewMessage, typed_text
from bot.channels.dedupe import PAYLOAD_KEY_PREFIX, ChannelStore
from bot.channels.inbox import Inbox, InboxEntry
from bot.channels.meta import SIGNATURE_HEADER, handshake, read_body, signed_by
from bot.channels.whatsapp_output import CHANNEL_NAME, WhatsAppClients, WhatsAppOutput, WhatsAppSettings

log = logging.getLogger(__name__)

# Longest ids the inbox keeps (``bot.channels.inbox`` columns); Meta's are far shorter.
KEY_LIMIT = 128
CONVERSATION_LIMIT = 255
# What the customer reads when the message kind is one WhatsApp added after this code.
UNSUPPORTED_NOUN = "message"


@dataclass(frozen=True)
class NonText:
    """A kind of WhatsApp message the assistant cannot read, and how it is recorded."""

    metadata_key: str  # what bot.conversation notes in the transcript
    noun: str  # in the reply to the customer


NON_TEXT_KINDS: Mapping[str, NonText] = {
    "image": NonText("photo", "photo"),
    "sticker": NonText("sticker", "sticker"),
    "audio": NonText("voice", "voice message"),
    "video": NonText("attachment", "video"),
    "document": NonText("document", "file"),
    "location": NonText("location", "location"),
    "contacts": NonText("contact", "contact card"),
}
# What a location keeps.
PLACE_KEYS = ("latitude", "longitude", "name", "address")
# Kinds that are no message from the customer to answer (a reaction to one of ours, a
# notice that their number changed, an ad's referral without text).
NOT_MESSAGES = frozenset({"reaction", "system", "ephemeral", "request_welcome"})


# --- reading notifications ------------------------------------------------------------


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def messages_in(data: Mapping[str, Any], phone_number_id: str) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """Yield (message, the sender's contact) for every customer message to ``phone_number_id`` in a body.

    Logs what is skipped: a message to another number of the account, one without an id
    or a sender, and the errors of failed statuses.
    """
    for entry in _list(data.get("entry")):
        for change in _list(_dict(entry).get("changes")):
            value = _dict(_dict(change).get("value"))
            if _dict(change).get("field") != "messages" or not value:
                continue
            _log_statuses(value.get("statuses"))
            to = _text(_dict(value.get("metadata")).get("phone_number_id"))
            found = _list(value.get("messages"))
            if found and to != phone_number_id:
                log.warning("whatsapp webhook: %d message(s) to phone number id %s, not this channel's; not "
                            "answered here", len(found), to)  # fmt: skip
                continue
            contacts = {c.get("wa_id"): c for c in _list(value.get("contacts")) if isinstance(c, dict)}
            for message in found:
                if not _readable(message):
                    log.warning("whatsapp webhook: a message without an id, a sender or a type was skipped")
                    continue
                yield message, _dict(contacts.get(message["from"]))


def _readable(message: Any) -> bool:
    if not isinstance(message, dict):
        return False
    ids = (_text(message.get("id")), _text(message.get("from")), _text(message.get("type")))
    return all(ids) and len(ids[0] or "") <= KEY_LIMIT and len(ids[1] or "") <= CONVERSATION_LIMIT


def _log_statuses(statuses: Any) -> None:
    """Log the errors of failed statuses (a reply Meta could not deliver); the rest are noise."""
    for status in map(_dict, _list(statuses)):
        for error in map(_dict, _list(status.get("errors"))):
            log.error(
                "whatsapp: message %s to %s was not delivered: code %s, %s", status.get("id"),
                status.get("recipient_id"), error.get("code"), error.get("title") or error.get("message"),
            )  # fmt: skip


def customer_metadata(message: Mapping[str, Any], contact: Mapping[str, Any], phone_number_id: str) -> dict[str, Any]:
    """Return what Rasa keeps about the sender (``bot.constants.NAME_METADATA_KEYS``): the profile name."""
    name = _text(_dict(contact.get("profile")).get("name"))
    found = {"wa_id": message["from"], "phone_number_id": phone_number_id,
             "customer_name": name.strip() if name else None}  # fmt: skip
    return {key: value for key, value in found.items() if value}


def non_text_content(message: Mapping[str, Any]) -> tuple[NonText, dict[str, Any], str | None] | None:
    """Return the kind of a message the assistant cannot read, the metadata noting it, and its caption."""
    kind = NON_TEXT_KINDS.get(str(message.get("type")))
    if kind is None:
        return None
    item = message.get(message["type"])
    if message["type"] == "location":
        place = {key: value for key, value in _dict(item).items() if key in PLACE_KEYS}
        return kind, {"location": place or True}, None
    if message["type"] == "contacts":
        names = [_dict(_dict(person).get("name")).get("formatted_name") for person in _list(item)]
        return kind, {"contact": {"names": [name for name in names if isinstance(name, str)]}}, None
    media = {key: value for key, value in _dict(item).items() if key in ("id", "mime_type", "filename")
             and isinstance(value, str)}  # fmt: skip
    caption = _text(_dict(item).get("caption"))
    if kind.metadata_key == "attachment":
        return kind, {"attachment": {"type": message["type"], **media}}, caption
    # The media id is what an agent (or a later tool) downloads the photo, sticker or file with.
    recorded: dict[str, Any] = {kind.metadata_key: media.get("id") or True}
    if media:
        recorded["media"] = media
    return kind, recorded, caption


# --- receiving -------------------------------------------------------------------------


class WhatsAppInput(WebhookConnector):
    """WhatsApp Cloud API webhook: verified, signed, stored, answered at once, handled after."""

    output: WhatsAppOutput

    @classmethod
    def name(cls) -> str:
        """Rasa's name for the channel; also the URL prefix (``/webhooks/whatsapp``)."""
        return CHANNEL_NAME

    @classmethod
    def from_credentials(cls, credentials: dict[str, Any] | None) -> WhatsAppInput:
        """Validate the credentials (or environment) and build the channel."""
        return cls(WhatsAppSettings.from_credentials(credentials))

    def __init__(
        self, settings: WhatsAppSettings, store: ChannelStore | None = None, inbox: Inbox | None = None
    ) -> None:
        """Set up the clients (no network call) and open the channel store and the inbox."""
        self.settings = settings
        inbox = self.open_inbox(store, inbox)
        self.clients = WhatsAppClients(settings)
        self.start_connector(WhatsAppOutput(self.clients, self.store, inbox=inbox))

    async def sources(self) -> list[str]:
        """Return the inbox source: this business number's messages."""
        return [self.settings.source]

    async def close_clients(self) -> None:
        """Close the clients' HTTP connections: Rasa's loop's and the sending thread's."""
        await self.clients.close()

    def blueprint(self, on_new_message: OnNewMessage) -> Blueprint:
        """Return the Sanic routes: ``GET /`` (health), ``GET /webhook`` (handshake), ``POST /webhook``."""
        whatsapp_webhook = self.connector_blueprint("firstreply_whatsapp")
        self._on_new_message = on_new_message

        @whatsapp_webhook.route("/webhook", methods=["GET"])
        async def verify(request: Request) -> HTTPResponse:
            return handshake(request.args, self.settings.verify_token, CHANNEL_NAME)

        @whatsapp_webhook.route("/webhook", methods=["POST"])
        async def webhook(request: Request) -> HTTPResponse:
            return await self.handle_webhook(request, on_new_message)

        return whatsapp_webhook

    async def handle_webhook(self, request: Request, on_new_message: OnNewMessage) -> HTTPResponse:
        """Check the signature, store every customer message of the call, answer Meta without waiting for Rasa."""
        raw = request.body or b""
        if not signed_by(self.settings.app_secret, raw, request.headers.get(SIGNATURE_HEADER)):
            log.warning("whatsapp webhook: missing or wrong %s, request dropped", SIGNATURE_HEADER)
            return response.json({"error": "unauthorized"}, status=401)
        data = read_body(raw, CHANNEL_NAME)
        if data is None:
            return response.json({"error": "malformed notification"}, status=400)
        self._on_new_message = on_new_message
        events = [
            InboundEvent(self.settings.source, message["id"], message["from"],
                         json.dumps({"message": message, "contact": contact}))
            for message, contact in messages_in(data, self.settings.phone_number_id)
        ]  # fmt: skip
        if not events:
            return response.json({"ok": True, "messages": 0})
        intake = await self.accept_all(events)
        if intake is Intake.UNAVAILABLE:
            # Meta sends the whole call again after a non-2xx answer; what was stored is then a copy.
            return response.json({"error": "temporarily unavailable"}, status=503)
        return response.json({"ok": True, "messages": len(events), "duplicate": intake is Intake.COPY})

    def output_for(self, entry: InboxEntry) -> WhatsAppOutput:
        """Return the sender bound to a stored message."""
        return self.output.for_message(message_id(entry.update_id))

    async def handle(self, entry: InboxEntry, on_new_message: OnNewMessage) -> None:
        """Handle one stored message (first time or again); raise to have it tried again."""
        stored = json.loads(entry.body)
        message, contact = stored["message"], stored["contact"]
        output = self.output_for(entry)
        kind = message["type"]
        if kind in NOT_MESSAGES:
            log.info("whatsapp %s from %s: a %s, nothing to answer", message["id"], message["from"], kind)
            return
        if not entry.replay:
            # The customer sees at once that the brand is there (read, then typing).
            await output.show_typing(message["id"])
        metadata = customer_metadata(message, contact, self.settings.phone_number_id)
        text = await self._text_of(message, metadata)
        found = non_text_content(message)
        if found is None and text is None:
            found = (NonText("attachment", UNSUPPORTED_NOUN), {"attachment": {"type": kind}}, None)
        if found is None:
            await on_new_message(self._user_message(message, text or "", metadata, output))
            return
        noun_kind, recorded, caption = found
        metadata.update(recorded)
        typed = typed_text(caption) if caption else ""
        user_message = self._user_message(message, typed or f"[{noun_kind.noun}]", metadata, output)
        notice = non_text_notice(noun_kind.noun, with_text=bool(typed))
        await pass_on(output.send_text_message(message["from"], notice), on_new_message, user_message)

    async def _text_of(self, message: Mapping[str, Any], metadata: dict[str, Any]) -> str | None:
        """Return what Rasa reads of a text or a choice, or ``None`` for any other kind."""
        kind = message["type"]
        if kind == "text":
            return typed_text(_text(_dict(message.get("text")).get("body")) or "")
        if kind == "interactive":
            interactive = _dict(message.get("interactive"))
            chosen = _dict(interactive.get("button_reply") or interactive.get("list_reply"))
            key, title = _text(chosen.get("id")) or "", _text(chosen.get("title")) or ""
            metadata["button"] = True
            ours = key.startswith(PAYLOAD_KEY_PREFIX)
            payload = await asyncio.to_thread(self.store.payload_for, key) if ours else None
            if payload is None:
                log.info("whatsapp choice %r unknown (expired or not ours): read as its title", key[:16])
            return payload if payload is not None else typed_text(title)
        if kind == "button":  # a template's quick-reply button: its text is what the customer chose
            button = _dict(message.get("button"))
            return typed_text(_text(button.get("text")) or _text(button.get("payload")) or "")
        return None

    def _user_message(
        self, message: Mapping[str, Any], text: str, metadata: dict[str, Any], output: WhatsAppOutput
    ) -> UserMessage:
        return UserMessage(
            text, output, str(message["from"]), input_channel=CHANNEL_NAME,
            message_id=message_id(str(message["id"])), metadata=metadata,
        )  # fmt: skip


def message_id(wamid: str) -> str:
    """Return the Rasa message id of a WhatsApp message (also the key of its recorded replies)."""
    return f"{CHANNEL_NAME}-{wamid}"
