"""Telegram: the webhook Rasa listens on and the sender Rasa and the agent desk reply with.

Built on python-telegram-bot (``Bot``, ``Update.de_json``), not Rasa's aiogram connector.
Registered in ``credentials.yml``::

    bot.channels.telegram.TelegramInput:
      token: ${TELEGRAM_BOT_TOKEN}
      webhook_secret: ${TELEGRAM_WEBHOOK_SECRET}

Optional keys, read from the environment when left out (a ``${VAR}`` in the file makes
the variable mandatory for Rasa): ``bot_username`` (``TELEGRAM_BOT_USERNAME``: group
mentions and the private-chat link) and ``base_url`` (``TELEGRAM_API_BASE_URL``: another
Bot API server, e.g. the tests' fake).

Rasa serves it at ``/webhooks/telegram/webhook``. Without a public URL, ``python -m bot
telegram poll`` fetches updates and posts them to that same webhook.
"""

from __future__ import annotations

import asyncio
import copy
import hmac
import json
import logging
import os
import re
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
from rasa.core.channels.channel import InputChannel, OutputChannel, UserMessage
from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse
from sqlalchemy.exc import SQLAlchemyError
from telegram import (
    Bot,
    Chat,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    ReplyParameters,
    Update,
    User,
)
from telegram.constants import InlineKeyboardButtonLimit, MessageLimit
from telegram.error import BadRequest, Conflict, Forbidden, NetworkError, RetryAfter, TelegramError
from telegram.request import HTTPXRequest

from bot.channels.common import (
    BackgroundTasks,
    ChannelCredentialsError,
    OnNewMessage,
    credential,
    split_text,
    unless_saved,
)
from bot.channels.dedupe import PAYLOAD_KEY_PREFIX, ChannelStore
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

log = logging.getLogger(__name__)
T = TypeVar("T")

CHANNEL_NAME = "telegram"
WEBHOOK_PATH = "/webhooks/telegram/webhook"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
DEFAULT_BASE_URL = "https://api.telegram.org/bot"
ENV_TOKEN = "TELEGRAM_BOT_TOKEN"
ENV_SECRET = "TELEGRAM_WEBHOOK_SECRET"
ENV_BASE_URL = "TELEGRAM_API_BASE_URL"
ENV_BOT_USERNAME = "TELEGRAM_BOT_USERNAME"
ALLOWED_UPDATES: tuple[str, ...] = (Update.MESSAGE, Update.EDITED_MESSAGE, Update.CALLBACK_QUERY)
TEXT_LIMIT = int(MessageLimit.MAX_TEXT_LENGTH)
CALLBACK_DATA_LIMIT = int(InlineKeyboardButtonLimit.MAX_CALLBACK_DATA)
START_PAYLOAD_FROM_GROUP = "from_group"
# What Telegram accepts as a webhook secret token.
_SECRET_FORMAT = re.compile(r"[A-Za-z0-9_-]{1,256}")
_TOKEN_FORMAT = re.compile(r"[0-9]+:[A-Za-z0-9_-]+")

# What the customer reads. Plain text: no parse_mode anywhere in this module.
NON_TEXT_REPLY = "I can only read text, but I've attached your {noun} to your case for the person who picks it up."
NON_TEXT_ASK = " Could you also tell me in a few words what it's about?"
GROUP_REPLY = "Thanks! Please send me a private message so we can look into it."
GROUP_REPLY_WITH_LINK = "Thanks! I'll help you privately so we can look into it. Tap here to open our chat: {link}"
EXPIRED_BUTTON = "That button has expired. Please type your answer instead."
BUTTONS_PROMPT = "Please choose:"
HOLDING_REPLY = (
    "Sorry, I'm having a technical problem and can't answer right away. Your message is safe with us: "
    "I'll reply here as soon as I can."
)
# Where the holding line sits among an update's recorded replies: after any real one.
HOLDING_SEQ = 1_000_000


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


@dataclass(frozen=True)
class TelegramSettings:
    """Validated connector settings. Token and secret never appear in ``repr``."""

    token: str = field(repr=False)
    webhook_secret: str = field(repr=False)
    base_url: str = DEFAULT_BASE_URL
    bot_username: str | None = None

    @classmethod
    def from_credentials(
        cls, credentials: Mapping[str, Any] | None, environ: Mapping[str, str] | None = None
    ) -> TelegramSettings:
        """Read ``credentials.yml`` values, falling back to the environment variables.

        Raises:
            ChannelCredentialsError: a value is missing or malformed; names the variable.
        """
        env = os.environ if environ is None else environ
        creds = credentials or {}
        token = credential(creds, "token", ENV_TOKEN, CHANNEL_NAME, env)
        if not _TOKEN_FORMAT.fullmatch(token):
            raise ChannelCredentialsError(
                f"{ENV_TOKEN} does not look like a bot token from @BotFather (digits:letters)."
            )
        secret = credential(creds, "webhook_secret", ENV_SECRET, CHANNEL_NAME, env)
        if not _SECRET_FORMAT.fullmatch(secret):
            raise ChannelCredentialsError(f"{ENV_SECRET} must be 1-256 characters of A-Z, a-z, 0-9, _ and - only.")
        base_url = str(creds.get("base_url") or env.get(ENV_BASE_URL) or DEFAULT_BASE_URL).strip()
        username = str(creds.get("bot_username") or env.get(ENV_BOT_USERNAME) or "").strip().lstrip("@")
        return cls(token, secret, base_url, username or None)

    @property
    def source(self) -> str:
        """Dedupe namespace: update ids count per bot; the bot id is the token's public part."""
        return f"{CHANNEL_NAME}:{self.token.split(':', 1)[0]}"


class _RedactToken(logging.Filter):
    """httpx logs every request URL at INFO, and Bot API URLs contain the token."""

    def __init__(self, token: str) -> None:
        super().__init__()
        self.token = token

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self.token in message:
            record.msg, record.args = message.replace(self.token, "<token>"), None
        return True


def build_bot(settings: TelegramSettings) -> Bot:
    """Return a Bot for ``settings`` (no network call); close it with ``close_bot``."""
    httpx_log = logging.getLogger("httpx")
    if not any(isinstance(f, _RedactToken) and f.token == settings.token for f in httpx_log.filters):
        httpx_log.addFilter(_RedactToken(settings.token))
    # One request object for both: get_updates adds its long-poll time to the read timeout.
    request = HTTPXRequest(connection_pool_size=16, connect_timeout=5.0, read_timeout=10.0, pool_timeout=5.0)
    return Bot(settings.token, base_url=settings.base_url, request=request, get_updates_request=request)


async def close_bot(bot: Bot) -> None:
    """Close the Bot's HTTP connections."""
    await bot.request.shutdown()


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
    text = f"{command} {rest}".strip()
    while text.startswith("/"):  # nor "/ /affirm"
        text = text.lstrip("/").lstrip()
    return text, {}


# --- sending ---------------------------------------------------------------------------


class TelegramOutput(OutputChannel):
    """Sends to Telegram chats: Rasa's responses and, later, the agents' replies.

    Plain text only (no parse_mode), split at 4096 characters; flood control (429) and
    network failures retried a bounded number of times. The copy made for one update
    (``for_message``) records each reply in the inbox, so handling the update again never
    sends a reply twice (``bot.channels.inbox``).
    """

    def __init__(
        self,
        bot: Bot,
        store: ChannelStore,
        *,
        max_attempts: int = 4,
        backoff_seconds: float = 0.5,
        max_retry_after: float = 60.0,
        inbox: Inbox | None = None,
    ) -> None:
        """Send through ``bot``; keep button payloads in ``store``, replies sent in ``inbox``."""
        self.bot = bot
        self.store = store
        self.max_attempts = max_attempts
        self.backoff_seconds = backoff_seconds
        self.max_retry_after = max_retry_after
        self.inbox = inbox
        self.origin: str | None = None
        self._seq = 0

    def for_message(self, message_id: str) -> TelegramOutput:
        """Return a sender for the replies to the update ``message_id`` (recorded, sent once)."""
        bound = copy.copy(self)
        bound.origin, bound._seq = message_id, 0
        return bound

    @classmethod
    def name(cls) -> str:
        """Rasa's name for this output channel."""
        return CHANNEL_NAME

    async def _call(self, what: str, request: Callable[[], Awaitable[T]]) -> T:
        """Run one Bot API call, retrying flood control and network failures."""
        for attempt in range(1, self.max_attempts + 1):
            try:
                return await request()
            except RetryAfter as error:
                wait = float(error.retry_after)
                if attempt == self.max_attempts or wait > self.max_retry_after:
                    raise
                log.warning("telegram %s: flood control, retry %d in %.0fs", what, attempt, wait)
            except BadRequest:
                raise  # a NetworkError subclass, but sending it again cannot help
            except NetworkError as error:
                if attempt == self.max_attempts:
                    raise
                wait = self.backoff_seconds * 2 ** (attempt - 1)
                log.warning("telegram %s: %s, retry %d in %.1fs", what, error, attempt, wait)
            await asyncio.sleep(wait)
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _once(
        self, what: str, fingerprint: tuple[Any, ...], request: Callable[[], Awaitable[T]], seq: int | None = None
    ) -> T | None:
        """Make one reply call, at most once per place in the update's replies (see class doc).

        Returns ``None`` when the reply had been sent before or was refused for good (the
        customer blocked the bot, the chat is gone): neither is worth handling the update again.
        """
        if self.inbox is None or self.origin is None:
            return await self._call(what, request)
        if seq is None:
            seq, self._seq = self._seq, self._seq + 1
        state = await asyncio.to_thread(self.inbox.begin_reply, self.origin, seq, reply_digest(*fingerprint))
        if state == SENT:
            log.info("telegram %s: reply %d to %s went out before, not sent again", what, seq, self.origin)
            return None
        if state == SENDING:
            log.warning(
                "telegram %s: reply %d to %s was cut off mid-send by a crash; sending it again "
                "(Telegram may have had it: the customer may see it twice)", what, seq, self.origin,
            )  # fmt: skip
        try:
            result: T | None = await self._call(what, request)
        except (Forbidden, BadRequest) as error:
            log.error("telegram %s: refused for good (%s); reply %d to %s dropped", what, error, seq, self.origin)
            result = None
        except Exception:
            # A failure seen here (after _call's own retries) is not a crash: the reply goes
            # out again when the update is handled again, without counting as resent.
            await asyncio.to_thread(self.inbox.fail_reply, self.origin, seq)
            raise
        await asyncio.to_thread(self.inbox.finish_reply, self.origin, seq)
        return result

    async def _send(self, chat_id: str | int, text: str, **options: Any) -> Message | None:
        return await self._once(
            f"sendMessage to {chat_id}",
            ("sendMessage", str(chat_id), text, repr(options.get("reply_markup"))),
            lambda: self.bot.send_message(chat_id, text, parse_mode=None, **options),
        )

    async def send_holding(self, chat_id: str | int) -> None:
        """Tell the customer their message is kept and will be answered (once per update)."""
        await self._once(
            f"sendMessage to {chat_id}",
            ("holding", str(chat_id)),
            lambda: self.bot.send_message(chat_id, HOLDING_REPLY, parse_mode=None),
            seq=HOLDING_SEQ,
        )

    async def send_text_message(self, recipient_id: str, text: str, **kwargs: Any) -> None:
        """Send ``text``, in as many messages as Telegram's length limit needs."""
        for part in split_text(text, TEXT_LIMIT):
            await self._send(recipient_id, part)

    async def send_text_with_buttons(
        self, recipient_id: str, text: str, buttons: list[dict[str, Any]], **kwargs: Any
    ) -> None:
        """Send ``text`` with Rasa ``buttons`` as an inline keyboard, one button per row."""
        markup = await self.keyboard(buttons)
        parts = split_text(text or "", TEXT_LIMIT) or [BUTTONS_PROMPT]
        for part in parts[:-1]:
            await self._send(recipient_id, part)
        await self._send(recipient_id, parts[-1], reply_markup=markup)

    async def keyboard(self, buttons: Sequence[Mapping[str, Any]]) -> InlineKeyboardMarkup:
        """Return the inline keyboard for Rasa buttons; payloads are stored, keys sent."""
        payloads = [str(b.get("payload") or b.get("title") or "") for b in buttons if not b.get("url")]
        keys = iter(await asyncio.to_thread(self.store.store_payloads, payloads))
        rows = []
        for button in buttons:
            title = str(button.get("title") or button.get("payload") or "?")
            if button.get("url"):
                rows.append([InlineKeyboardButton(title, url=str(button["url"]))])
            else:
                rows.append([InlineKeyboardButton(title, callback_data=next(keys))])
        return InlineKeyboardMarkup(rows)

    async def send_image_url(self, recipient_id: str, image: str, **kwargs: Any) -> None:
        """Send the image at ``image`` (a URL Telegram can fetch)."""
        await self._once(
            f"sendPhoto to {recipient_id}", ("sendPhoto", recipient_id, image),
            lambda: self.bot.send_photo(recipient_id, image),
        )  # fmt: skip

    async def send_custom_json(self, recipient_id: str, json_message: dict[str, Any], **kwargs: Any) -> None:
        """Send a custom payload: ``text`` (with optional ``buttons``), ``photo``, ``document``, ``location``."""
        handled = {"text", "buttons", "photo", "document", "location"}
        if json_message.get("text"):
            if json_message.get("buttons"):
                await self.send_text_with_buttons(recipient_id, json_message["text"], json_message["buttons"])
            else:
                await self.send_text_message(recipient_id, json_message["text"])
        if json_message.get("photo"):
            await self.send_image_url(recipient_id, json_message["photo"])
        if json_message.get("document"):
            document = json_message["document"]
            await self._once(
                f"sendDocument to {recipient_id}", ("sendDocument", recipient_id, repr(document)),
                lambda: self.bot.send_document(recipient_id, document),
            )  # fmt: skip
        if json_message.get("location"):
            where = json_message["location"]
            await self._once(
                f"sendLocation to {recipient_id}", ("sendLocation", recipient_id, repr(where)),
                lambda: self.bot.send_location(recipient_id, where["latitude"], where["longitude"]),
            )  # fmt: skip
        ignored = sorted(set(json_message) - handled)
        if ignored:
            log.warning("telegram custom payload: keys %s are not supported and were not sent", ignored)

    async def answer_callback(self, query_id: str, text: str | None = None) -> None:
        """Stop the button's spinner, optionally showing ``text``."""
        await self._call("answerCallbackQuery", lambda: self.bot.answer_callback_query(query_id, text=text))

    async def reply_to(self, chat_id: int, message_id: int, text: str) -> None:
        """Answer one message (in a group: as a visible reply to it)."""
        reply = ReplyParameters(message_id=message_id, allow_sending_without_reply=True)
        await self._send(chat_id, text, reply_parameters=reply)


# --- receiving -------------------------------------------------------------------------



class TelegramInput(InputChannel):
    """Telegram webhook: authenticated, stored, answered at once, handled after.

    Each update is kept in the inbox before Telegram gets its 200 and handled until Rasa has
    saved it, by this process or, if it dies or the handling fails, by the inbox sweeper of
    any Rasa process (``bot.channels.inbox``).
    """

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
        self.store = store if store is not None else ChannelStore.from_url()
        self.inbox = inbox if inbox is not None else Inbox(self.store.engine, lease_seconds=lease_seconds_from_env())
        self.bot = build_bot(settings)
        self.output = TelegramOutput(self.bot, self.store, inbox=self.inbox)
        self.tasks = BackgroundTasks(CHANNEL_NAME)
        self.worker = InboxWorker(
            self.inbox, settings.source, self._handle_entry, self.tasks,
            sweep_seconds=sweep_seconds_from_env(), on_failure=self._hold,
        )  # fmt: skip
        self._on_new_message: OnNewMessage | None = None
        self._app: Any = None

    def get_output_channel(self) -> TelegramOutput:
        """Return the sender, for messages Rasa starts itself (reminders, triggered intents)."""
        return self.output

    async def close(self, grace_seconds: float = 10.0) -> None:
        """Give running work ``grace_seconds`` to finish, then close the HTTP connections."""
        await self.worker.stop_sweeping()
        try:
            await asyncio.wait_for(self.tasks.wait(), grace_seconds)
        except asyncio.TimeoutError:
            log.warning("telegram: %d update(s) still being handled at shutdown were cancelled", len(self.tasks))
        await close_bot(self.bot)

    def blueprint(self, on_new_message: OnNewMessage) -> Blueprint:
        """Return the Sanic routes: ``GET /`` (health) and ``POST /webhook``."""
        telegram_webhook = Blueprint("firstreply_telegram", __name__)
        self._on_new_message = on_new_message

        @telegram_webhook.route("/", methods=["GET"])
        async def health(_: Request) -> HTTPResponse:
            return response.json({"status": "ok"})

        @telegram_webhook.route("/webhook", methods=["POST"])
        async def webhook(request: Request) -> HTTPResponse:
            return await self.handle_webhook(request, on_new_message)

        @telegram_webhook.listener("after_server_start")
        async def start_sweeping(app: Any, *_: Any) -> None:
            self._app = app
            self.worker.start_sweeping()

        @telegram_webhook.listener("after_server_stop")
        async def close(*_: Any) -> None:
            await self.close()

        return telegram_webhook

    def _authentic(self, request: Request) -> bool:
        given = request.headers.get(SECRET_HEADER, "")
        return bool(given) and _compare(given, self.settings.webhook_secret)

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
        try:
            # ASCII JSON: lone surrogates and NULs survive any database as escapes.
            entry = await asyncio.to_thread(
                self.inbox.accept, self.settings.source, str(update.update_id), _conversation(update), json.dumps(data)
            )
        except SQLAlchemyError as error:
            # Not stored, so not taken: Telegram sends the update again after a non-2xx answer.
            log.error("telegram update %s not stored (%s); Telegram will send it again", update.update_id, error)
            return response.json({"ok": False, "error": "temporarily unavailable"}, status=503)
        if entry is None:
            log.info("telegram update %s already taken, copy dropped", update.update_id)
            return response.json({"ok": True, "duplicate": True})
        self.worker.start(entry)
        return response.json({"ok": True})

    async def _handle_entry(self, entry: InboxEntry) -> None:
        """Handle one stored update (first time or again); raise to have it tried again."""
        update = Update.de_json(json.loads(entry.body), self.bot)
        output = self.output.for_message(_message_id(update.update_id))
        on_new_message = self._on_new_message
        if on_new_message is None:
            raise RuntimeError("the Telegram channel is not registered with Rasa yet")
        if entry.replay:
            on_new_message = unless_saved(on_new_message, self._app, CHANNEL_NAME)
        await self.process(update, on_new_message, output)

    async def _hold(self, entry: InboxEntry, _error: BaseException) -> None:
        """After a first failure, tell the customer their message is kept (once)."""
        if entry.conversation:
            update_id = json.loads(entry.body)["update_id"]
            await self.output.for_message(_message_id(update_id)).send_holding(entry.conversation)

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
        text = message.text or message.caption
        metadata = customer_metadata(message.from_user, message.chat)
        if update.edited_message is not None:
            metadata["edited"] = True
        found = non_text_content(message)
        if found is None and text is None:
            log.debug("telegram update %s: service message ignored", update.update_id)
            return
        if text is not None:
            text, extra = command_text(text)
            metadata.update(extra)
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
        notice = NON_TEXT_REPLY.format(noun=kind.noun) + ("" if text else NON_TEXT_ASK)
        try:
            await output.send_text_message(str(message.chat.id), notice)
        finally:
            # Even if the notice could not be sent, Rasa (and the case) gets the message.
            await on_new_message(user_message)

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


def _conversation(update: Update) -> str:
    """Return the private chat an update belongs to, or "" (groups, anything else)."""
    message = update.message or update.edited_message
    if update.callback_query is not None and update.callback_query.message is not None:
        message = update.callback_query.message  # type: ignore[assignment]
    chat = message.chat if message is not None else None
    return str(chat.id) if chat is not None and chat.type == Chat.PRIVATE else ""


def _compare(given: str, expected: str) -> bool:
    # Sanic keeps header bytes that are not UTF-8 as surrogates: give them back as they came.
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode("utf-8"))


# --- command line: webhook registration and local polling ------------------------------


async def set_webhook(settings: TelegramSettings, url: str) -> None:
    """Register ``url`` as the bot's webhook, with the secret Telegram will send back."""
    bot = build_bot(settings)
    try:
        await bot.set_webhook(url, secret_token=settings.webhook_secret, allowed_updates=list(ALLOWED_UPDATES))
    finally:
        await close_bot(bot)


async def delete_webhook(settings: TelegramSettings) -> None:
    """Remove the bot's webhook (``getUpdates`` refuses to work while one is set)."""
    bot = build_bot(settings)
    try:
        await bot.delete_webhook()
    finally:
        await close_bot(bot)


class WebhookRefused(RuntimeError):
    """Rasa's webhook refused a forwarded update for good (wrong secret)."""


async def forward_update(
    client: httpx.AsyncClient, webhook_url: str, secret: str, update: Mapping[str, Any], stop: asyncio.Event,
    retry_seconds: float = 2.0,
) -> bool:  # fmt: skip
    """POST one update to Rasa's webhook until it is taken; return False if stopped first."""
    while not stop.is_set():
        try:
            answer = await client.post(webhook_url, json=dict(update), headers={SECRET_HEADER: secret})
        except httpx.HTTPError as error:
            log.warning("telegram poll: Rasa not reachable at %s (%s), retrying", webhook_url, error)
        else:
            if answer.status_code == 401:
                raise WebhookRefused(f"Rasa refused the secret: is {ENV_SECRET} the same for Rasa and the poller?")
            if answer.status_code == 400:
                log.error("telegram poll: Rasa rejected update %s as malformed", update.get("update_id"))
                return True
            if answer.is_success:
                return True
            log.warning("telegram poll: Rasa answered %s, retrying", answer.status_code)
        await asyncio.sleep(retry_seconds)
    return False


async def poll(
    bot: Bot, webhook_url: str, secret: str, stop: asyncio.Event, *,
    client: httpx.AsyncClient, long_poll_seconds: int = 25, retry_seconds: float = 2.0,
) -> None:  # fmt: skip
    """Fetch updates with ``getUpdates`` and forward each to Rasa's webhook, until ``stop``."""
    offset: int | None = None
    while not stop.is_set():
        try:
            updates = await bot.get_updates(
                offset=offset, timeout=long_poll_seconds, allowed_updates=list(ALLOWED_UPDATES)
            )
        except Conflict as error:
            raise WebhookRefused(
                "Telegram refuses getUpdates while a webhook is set: run "
                "`python -m bot telegram delete-webhook` or poll with --delete-webhook"
            ) from error
        except RetryAfter as error:
            await asyncio.sleep(float(error.retry_after))
            continue
        except BadRequest:
            raise
        except NetworkError as error:
            log.warning("telegram poll: getUpdates failed (%s), retrying", error)
            await asyncio.sleep(retry_seconds)
            continue
        for update in updates:
            if not await forward_update(client, webhook_url, secret, update.to_dict(), stop, retry_seconds):
                return
            # Telegram forgets an update once a later offset is asked for.
            offset = update.update_id + 1


async def run_poll(settings: TelegramSettings, rasa_url: str, drop_webhook: bool) -> None:
    """``python -m bot telegram poll``: forward updates to Rasa until interrupted."""
    bot = build_bot(settings)
    webhook_url = rasa_url.rstrip("/") + WEBHOOK_PATH
    try:
        if drop_webhook:
            await bot.delete_webhook()
        log.info("telegram poll: forwarding updates to %s", webhook_url)
        async with httpx.AsyncClient(timeout=30.0) as client:
            await poll(bot, webhook_url, settings.webhook_secret, asyncio.Event(), client=client)
    finally:
        await close_bot(bot)


def run_command(command: str, argument: str | None = None, drop_webhook: bool = False) -> int:
    """Run a ``python -m bot telegram`` command; return its exit code."""
    try:
        settings = TelegramSettings.from_credentials(None)
        if command == "set-webhook":
            assert argument is not None
            if not argument.rstrip("/").endswith(WEBHOOK_PATH):
                print(f"note: Rasa serves the Telegram webhook at <public URL>{WEBHOOK_PATH}")
            asyncio.run(set_webhook(settings, argument))
            print(f"Webhook set to {argument}")
        elif command == "delete-webhook":
            asyncio.run(delete_webhook(settings))
            print("Webhook deleted")
        elif command == "poll":
            asyncio.run(run_poll(settings, argument or "http://127.0.0.1:5005", drop_webhook))
        else:
            raise ValueError(f"unknown telegram command {command!r}")
    except (ChannelCredentialsError, WebhookRefused) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except TelegramError as error:
        print(f"error: Telegram answered: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0

