"""Telegram: the webhook Rasa listens on, reading what customers send.

Built on python-telegram-bot (``Update.de_json``), not Rasa's aiogram connector, and on the
connectors' shared base (``bot.channels.base``: storing before the answer, dedupe, replay,
holding line, non-text notices). Registered in ``credentials.yml``::

    bot.channels.telegram.TelegramInput:
      token: ${TELEGRAM_BOT_TOKEN}
      webhook_secret: ${TELEGRAM_WEBHOOK_SECRET}

Optional keys, read from the environment when left out (a ``${VAR}`` in the file makes
the variable mandatory for Rasa): ``bot_username`` (``TELEGRAM_BOT_USERNAME``: group
mentions and the private-chat link) and ``base_url`` (``TELEGRAM_API_BASE_URL``: another
Bot API server, e.g. the tests' fake).

Rasa serves it at ``/webhooks/telegram/webhook``. Without a public URL, ``python -m bot
telegram poll`` (``bot.channels.telegram_poll``) fetches updates and posts them to that same
webhook. The settings, the Bot and the sender are in ``bot.channels.telegram_output``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any

from rasa.core.channels.channel import UserMessage
from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse
from telegram import Chat, Message, Update, User
from telegram.constants import ChatAction
from telegram.error import TelegramError

from bot.channels.base import InboundEvent, Intake, WebhookConnector, non_text_notice, pass_on
from bot.channels.common import OnNewMessage, same_secret, typed_text
from bot.channels.dedupe import PAYLOAD_KEY_PREFIX, ChannelStore
from bot.channels.inbox import Inbox, InboxEntry
from bot.channels.telegram_output import (
    CHANNEL_NAME,
    SECRET_HEADER,
    TelegramOutput,
    TelegramSettings,
    build_bot,
    close_bot,
)
from bot.constants import INTENT_GREET

log = logging.getLogger(__name__)

START_PAYLOAD_FROM_GROUP = "from_group"

# What the customer reads. Plain text: no parse_mode anywhere in this connector.
GROUP_REPLY = "Thanks! Please send me a private message so we can look into it."
GROUP_REPLY_WITH_LINK = "Thanks! I'll help you privately so we can look into it. Tap here to open our chat: {link}"
EXPIRED_BUTTON = "That button has expired. Please type your answer instead."


@dataclass(frozen=True)
class NonText:
    """A kind of message the assistant cannot read, and how it is recorded."""

    attribute: str  # on telegram.Message
    metadata_key: str  # what bot.conversation notes in the transcript
    noun: str  # in the reply to the customer


# Order matters: a GIF also carries a document, a venue also a location.
NON_TEXT_KINDS: tuple[NonText, ...] = (
    NonText("photo", "photo", "photo"),
    NonText("sticker", "sticker", "sticker"),
    NonText("voice", "voice", "voice message"),
    NonText("animation", "attachment", "GIF"),
    NonText("video", "attachment", "video"),
    NonText("video_note", "attachment", "video message"),
    NonText("audio", "attachment", "audio file"),
    NonText("document", "document", "file"),
    NonText("location", "location", "location"),
    NonText("contact", "contact", "contact"),
)



# --- reading updates -------------------------------------------------------------------


def customer_metadata(user: User | None, chat: Chat) -> dict[str, Any]:
    """Return what Rasa keeps about the sender (see ``bot.constants.NAME_METADATA_KEYS``)."""
    found: dict[str, Any] = {"chat_id": chat.id, "chat_type": chat.type}
    if user is not None:
        found.update(
            customer_name=user.first_name,
            username=user.username,
            language_code=user.language_code,
            user_id=user.id,
        )
    return {key: value for key, value in found.items() if value is not None}


def non_text_content(message: Message) -> tuple[NonText, dict[str, Any]] | None:
    """Return the kind of a non-text message and the metadata that records it, or ``None``."""
    for kind in NON_TEXT_KINDS:
        item = getattr(message, kind.attribute)
        if not item:
            continue
        if kind.attribute == "photo":
            largest = max(item, key=lambda size: (size.width * size.height, size.file_size or 0))
            return kind, {"photo": largest.file_id}
        if kind.attribute == "location":
            place = {"latitude": item.latitude, "longitude": item.longitude}
            if message.venue is not None:
                place.update(title=message.venue.title, address=message.venue.address)
            return kind, {"location": place}
        if kind.attribute == "contact":
            person = {"phone_number": item.phone_number, "first_name": item.first_name,
                      "last_name": item.last_name, "user_id": item.user_id}  # fmt: skip
            return kind, {"contact": {key: value for key, value in person.items() if value is not None}}
        if kind.metadata_key == "attachment":
            return kind, {"attachment": {"type": kind.attribute, "file_id": item.file_id}}
        extra = {
            "sticker": {"sticker_emoji": getattr(item, "emoji", None)},
            "document": {"document_name": getattr(item, "file_name", None),
                         "document_mime_type": getattr(item, "mime_type", None)},
        }.get(kind.metadata_key, {})  # fmt: skip
        return kind, {kind.metadata_key: item.file_id, **{k: v for k, v in extra.items() if v is not None}}
    return None


def command_text(text: str) -> tuple[str, dict[str, Any]]:
    """Turn a typed ``/command`` into what Rasa should read.

    ``/start`` (what Telegram sends when a customer opens the chat, optionally with a
    deep-link payload) greets. Any other leading ``/`` is dropped: Rasa would otherwise
    read ``/affirm`` as an intent, and customers must not be able to inject intents.
    """
    if not text.lstrip().startswith("/"):  # Rasa strips the text: " /affirm" would be an intent
        return text, {}
    # Every leading slash goes: "//affirm" must not become the intent "/affirm".
    command, _, rest = text.lstrip().lstrip("/").partition(" ")
    command = command.split("@", 1)[0]
    if command.lower() == "start":
        return f"/{INTENT_GREET}", ({"start_payload": rest.strip()} if rest.strip() else {})
    return typed_text(f"{command} {rest}"), {}  # nor "/ /affirm"



# --- receiving -------------------------------------------------------------------------


class TelegramInput(WebhookConnector):
    """Telegram webhook: authenticated, stored, answered at once, handled after.

    Each update is kept in the inbox before Telegram gets its 200 and handled until Rasa has
    saved it, by this process or, if it dies or the handling fails, by the inbox sweeper of
    any Rasa process (``bot.channels.base``).
    """

    output: TelegramOutput
    typing_in_answer = True  # Telegram runs a method given in the webhook's answer

    @classmethod
    def name(cls) -> str:
        """Rasa's name for the channel; also the URL prefix (``/webhooks/telegram``)."""
        return CHANNEL_NAME

    @classmethod
    def from_credentials(cls, credentials: dict[str, Any] | None) -> TelegramInput:
        """Validate the credentials (or environment) and build the channel."""
        return cls(TelegramSettings.from_credentials(credentials))

    def __init__(
        self, settings: TelegramSettings, store: ChannelStore | None = None, inbox: Inbox | None = None
    ) -> None:
        """Build the Bot (no network call) and open the channel store and the inbox."""
        self.settings = settings
        inbox = self.open_inbox(store, inbox)
        self.bot = build_bot(settings)
        self.start_connector(TelegramOutput(self.bot, self.store, inbox=inbox))

    async def sources(self) -> list[str]:
        """Return the inbox source: this bot's updates."""
        return [self.settings.source]

    async def close_clients(self) -> None:
        """Close the Bot's HTTP connections."""
        await close_bot(self.bot)

    def blueprint(self, on_new_message: OnNewMessage) -> Blueprint:
        """Return the Sanic routes: ``GET /`` (health) and ``POST /webhook``."""
        telegram_webhook = self.connector_blueprint("firstreply_telegram")
        self._on_new_message = on_new_message

        @telegram_webhook.route("/webhook", methods=["POST"])
        async def webhook(request: Request) -> HTTPResponse:
            return await self.handle_webhook(request, on_new_message)

        return telegram_webhook

    def _authentic(self, request: Request) -> bool:
        given = request.headers.get(SECRET_HEADER, "")
        return bool(given) and same_secret(given, self.settings.webhook_secret)

    async def handle_webhook(self, request: Request, on_new_message: OnNewMessage) -> HTTPResponse:
        """Check, store and start one update; answer Telegram without waiting for Rasa."""
        if not self._authentic(request):
            log.warning("telegram webhook: wrong or missing secret token, request dropped")
            return response.json({"ok": False, "error": "unauthorized"}, status=401)
        parsed = self._parse(request.body)
        if parsed is None:
            return response.json({"ok": False, "error": "malformed update"}, status=400)
        update, data = parsed
        self._on_new_message = on_new_message
        event = InboundEvent(self.settings.source, str(update.update_id), _conversation(update), json.dumps(data))
        intake = await self.accept(event)
        if intake is Intake.UNAVAILABLE:
            # Not stored, so not taken: Telegram sends the update again after a non-2xx answer.
            return response.json({"ok": False, "error": "temporarily unavailable"}, status=503)
        if intake is Intake.COPY:
            return response.json({"ok": True, "duplicate": True})
        if self.early_greetings.started(event.platform_id):
            # The first sign a new customer sees, with no call of its own: Telegram runs a
            # method given in the webhook's answer (its result is not reported, as for typing).
            return response.json(typing_answer(event.conversation))
        return response.json({"ok": True})

    def output_for(self, entry: InboxEntry) -> TelegramOutput:
        """Return the sender bound to a stored update."""
        return self.output.for_message(_message_id(int(entry.update_id)))

    async def handle(self, entry: InboxEntry, on_new_message: OnNewMessage) -> None:
        """Handle one stored update (first time or again); raise to have it tried again."""
        update = Update.de_json(json.loads(entry.body), self.bot)
        await self.process(update, on_new_message, self.output_for(entry))

    def _parse(self, body: bytes) -> tuple[Update, dict[str, Any]] | None:
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):  # RecursionError: nested too deep
            log.warning("telegram webhook: body is not JSON")
            return None
        if not isinstance(data, dict) or not isinstance(data.get("update_id"), int):
            log.warning("telegram webhook: JSON without an update_id")
            return None
        try:
            update = Update.de_json(data, self.bot)
        except (KeyError, TypeError, ValueError, AttributeError, RecursionError) as error:
            log.warning("telegram webhook: update %s malformed: %r", data.get("update_id"), error)
            return None
        # PTB does not check types; what is read as text must be text, or handling fails later.
        messages = [m for m in (update.message, update.edited_message) if m is not None]
        if any(m.chat is None for m in messages):
            log.warning("telegram webhook: update %s has a message without a chat", data.get("update_id"))
            return None
        texts = [m.text for m in messages] + [m.caption for m in messages]
        texts.append(update.callback_query.data if update.callback_query is not None else None)
        if any(value is not None and not isinstance(value, str) for value in texts):
            log.warning("telegram webhook: update %s has text that is not a string", data.get("update_id"))
            return None
        return update, data

    async def process(self, update: Update, on_new_message: OnNewMessage, output: TelegramOutput | None = None) -> None:
        """Handle one update: reply directly where needed, pass customer messages to Rasa.

        ``output`` sends every reply to this update (default: one bound to it).
        """
        output = output if output is not None else self.output.for_message(_message_id(update.update_id))
        if update.callback_query is not None:
            await self._on_button(update, on_new_message, output)
            return
        message = update.message or update.edited_message
        if message is None:
            log.debug("telegram update %s: nothing for the assistant", update.update_id)
            return
        if message.chat.type in (Chat.GROUP, Chat.SUPERGROUP):
            if update.message is not None:  # an edit of a mention is not a new question
                await self._on_group_message(message, output)
            return
        if message.chat.type != Chat.PRIVATE:
            return
        text, metadata = _read_private(message, edited=update.edited_message is not None)
        found = non_text_content(message)
        if found is None and text is None:
            log.debug("telegram update %s: service message ignored", update.update_id)
            return
        user_message = self._user_message(update, text or "", metadata, output)
        if found is None:
            await on_new_message(user_message)
            return
        kind, recorded = found
        metadata.update(recorded)
        if not text:
            user_message.text = f"[{kind.noun}]"
        if update.edited_message is not None:  # the notice went out with the original
            await on_new_message(user_message)
            return
        notice = non_text_notice(kind.noun, with_text=bool(text))
        await pass_on(output.send_text_message(str(message.chat.id), notice), on_new_message, user_message)

    def first_message(self, entry: InboxEntry) -> UserMessage | None:
        """Return the customer text of a stored update as Rasa will read it (no call, no reply); else ``None``.

        Only a new text message in a private chat: a button, an edit, a photo or a group message
        is greeted, if at all, when it is handled (``bot.channels.edge``).
        """
        update = Update.de_json(json.loads(entry.body), self.bot)
        message = update.message
        if message is None or message.chat.type != Chat.PRIVATE or non_text_content(message) is not None:
            return None
        text, metadata = _read_private(message, edited=False)
        return None if text is None else self._user_message(update, text, metadata, self.output_for(entry))

    def _user_message(self, update: Update, text: str, metadata: dict[str, Any], output: TelegramOutput) -> UserMessage:
        return UserMessage(
            text,
            output,
            str(metadata["chat_id"]),
            input_channel=CHANNEL_NAME,
            message_id=_message_id(update.update_id),
            metadata=metadata,
        )

    async def _on_button(self, update: Update, on_new_message: OnNewMessage, output: TelegramOutput) -> None:
        query = update.callback_query
        assert query is not None
        data = query.data or ""
        payload = None
        if data.startswith(PAYLOAD_KEY_PREFIX):
            payload = await asyncio.to_thread(self.store.payload_for, data)
        chat = query.message.chat if query.message is not None else None
        if payload is None or chat is None or chat.type != Chat.PRIVATE:
            log.info("telegram button %r unknown or outside a private chat", data[:16])
            await output.answer_callback(query.id, EXPIRED_BUTTON)
            return
        metadata = {**customer_metadata(query.from_user, chat), "button": True}
        try:
            await output.answer_callback(query.id)
        except TelegramError as error:  # only the spinner: the answer itself matters more
            log.warning("telegram button %s: answerCallbackQuery failed: %s", update.update_id, error)
        await on_new_message(self._user_message(update, payload, metadata, output))

    def _addressed(self, message: Message) -> bool:
        """Return whether a group message is meant for the assistant."""
        username = (self.settings.bot_username or "").lower()
        if not username:
            return True  # with privacy mode on, Telegram only sends what is meant for the bot
        replied = message.reply_to_message
        if replied is not None and replied.from_user is not None:
            if (replied.from_user.username or "").lower() == username:
                return True
        text = (message.text or message.caption or "").lower()
        if f"@{username}" in text:
            return True
        first_word = text.split(" ", 1)[0]
        return first_word.startswith("/") and "@" not in first_word

    async def _on_group_message(self, message: Message, output: TelegramOutput) -> None:
        """Answer in public briefly; the case itself is for a private chat, not for Rasa here."""
        if not self._addressed(message):
            return
        if self.settings.bot_username:
            link = f"https://t.me/{self.settings.bot_username}?start={START_PAYLOAD_FROM_GROUP}"
            text = GROUP_REPLY_WITH_LINK.format(link=link)
        else:
            text = GROUP_REPLY
        await output.reply_to(message.chat.id, message.message_id, text)


def _message_id(update_id: int) -> str:
    """Return the Rasa message id of an update (also the key of its recorded replies)."""
    return f"{CHANNEL_NAME}-{update_id}"


def _read_private(message: Message, *, edited: bool) -> tuple[str | None, dict[str, Any]]:
    """Return the text (a command read as Rasa reads it) and the metadata of a private chat's message."""
    text = message.text or message.caption
    metadata = customer_metadata(message.from_user, message.chat)
    if edited:
        metadata["edited"] = True
    if text is not None:
        text, extra = command_text(text)
        metadata.update(extra)
    return text, metadata


def typing_answer(chat_id: str) -> dict[str, Any]:
    """Return a webhook answer that has Telegram show "typing…" in the private chat ``chat_id``."""
    return {"method": "sendChatAction", "chat_id": int(chat_id), "action": ChatAction.TYPING.value}


def _conversation(update: Update) -> str:
    """Return the private chat an update belongs to, or "" (groups, anything else)."""
    message = update.message or update.edited_message
    if update.callback_query is not None and update.callback_query.message is not None:
        message = update.callback_query.message  # type: ignore[assignment]
    chat = message.chat if message is not None else None
    return str(chat.id) if chat is not None and chat.type == Chat.PRIVATE else ""
