"""Telegram's Bot API side: the connector's settings, the ``Bot``, and the sender.

``TelegramOutput`` is what Rasa and the agent desk reply with (the desk builds it through
``bot.channels.outbound``). It is a ``bot.channels.replies.RecordedOutput``: splitting, the
buttons prompt, the holding line and the reply records come from there; this module adds
the Bot API calls, their retries, Telegram's limits, and the inline keyboard (whose button
payloads are kept in the channel store: Telegram allows only 64 bytes of callback data).
Plain text only: no parse_mode anywhere.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, ReplyParameters, Update
from telegram.constants import ChatAction, InlineKeyboardButtonLimit, MessageLimit
from telegram.error import BadRequest, Forbidden, NetworkError, RetryAfter, TimedOut
from telegram.request import BaseRequest, RequestData

from bot.channels.base import ConnectorSettings
from bot.channels.common import credential
from bot.channels.dedupe import ChannelStore
from bot.channels.inbox import Inbox
from bot.channels.replies import RecordedOutput
from bot.channels.sending import PerLoop

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
# What Telegram accepts as a webhook secret token.
_SECRET_FORMAT = re.compile(r"[A-Za-z0-9_-]{1,256}")
_TOKEN_FORMAT = re.compile(r"[0-9]+:[A-Za-z0-9_-]+")


# --- settings and the Bot ----------------------------------------------------------------


@dataclass(frozen=True)
class TelegramSettings(ConnectorSettings):
    """Validated connector settings: the bot's token, the webhook's secret token, the Bot API, the bot's name."""

    base_url: str = DEFAULT_BASE_URL
    bot_username: str | None = None

    @property
    def webhook_secret(self) -> str:
        """Return the secret token Telegram sends with every webhook call."""
        return self.secret

    @classmethod
    def read(cls, credentials: Mapping[str, Any], environ: Mapping[str, str]) -> TelegramSettings:
        """Build the settings: a token and a secret of the formats Telegram gives and takes."""
        creds, env = credentials, environ
        token = credential(
            creds, "token", ENV_TOKEN, CHANNEL_NAME, env, pattern=_TOKEN_FORMAT,
            malformed=f"{ENV_TOKEN} does not look like a bot token from @BotFather (digits:letters).",
        )  # fmt: skip
        secret = credential(
            creds, "webhook_secret", ENV_SECRET, CHANNEL_NAME, env, pattern=_SECRET_FORMAT,
            malformed=f"{ENV_SECRET} must be 1-256 characters of A-Z, a-z, 0-9, _ and - only.",
        )  # fmt: skip
        base_url = str(creds.get("base_url") or env.get(ENV_BASE_URL) or DEFAULT_BASE_URL).strip()
        username = str(creds.get("bot_username") or env.get(ENV_BOT_USERNAME) or "").strip().lstrip("@")
        return cls(token, secret, base_url, username or None)

    @property
    def source(self) -> str:
        """Dedupe namespace: update ids count per bot; the bot id is the token's public part."""
        return f"{CHANNEL_NAME}:{self.token.split(':', 1)[0]}"


# What PTB passes for a timeout the caller did not set (its ``DefaultValue``): the request's own then.
_UNSET = type(BaseRequest.DEFAULT_NONE)


class BotRequest(BaseRequest):
    """python-telegram-bot's requests made with aiohttp, with a session of their own per event loop.

    PTB's own backend (httpx) took twice the CPU per call (about 1.9 against 1.0 ms for one
    ``sendMessage`` to a local server, the server's share included), and a burst makes
    hundreds of calls. An HTTP session belongs to the event loop it first ran on; the replies'
    calls run on the sending thread's loop (``bot.channels.sending``), everything else (the
    webhook's set-up, the edge's typing, the desk) on the caller's, so each loop gets its own
    (``PerLoop``) and one ``Bot`` serves both.

    Timeouts as PTB gives them: ``connect_timeout`` for the connection, ``pool_timeout`` on top
    of it for a free place in the pool, ``read_timeout`` for each read (``None``: no limit;
    ``get_updates`` adds its long poll); aiohttp has no write timeout of its own. A timeout
    raises ``TimedOut``, any other failure ``NetworkError``, with the bot's token never in the
    message (it is part of every Bot API URL).
    """

    def __init__(
        self, token: str, *, connection_pool_size: int = 16, connect_timeout: float = 5.0,
        read_timeout: float | None = 10.0, pool_timeout: float = 5.0,
    ) -> None:  # fmt: skip
        """Redact ``token`` from errors; at most ``connection_pool_size`` connections per loop."""
        self._token = token
        self._pool_size = connection_pool_size
        self._connect_timeout, self._read_timeout, self._pool_timeout = connect_timeout, read_timeout, pool_timeout
        self._sessions: PerLoop[aiohttp.ClientSession] = PerLoop(self._session, lambda session: session.closed)

    @property
    def read_timeout(self) -> float | None:
        """Return the default read timeout (PTB adds ``get_updates``' long poll to it)."""
        return self._read_timeout

    def _session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._pool_size), headers={"User-Agent": self.USER_AGENT}
        )

    async def initialize(self) -> None:
        """Open the caller's loop's session."""
        self._sessions.get()

    async def shutdown(self) -> None:
        """Close the caller's session, and the sending thread's on its own loop."""
        await self._sessions.close(lambda session: session.close())

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: Any = BaseRequest.DEFAULT_NONE,
        write_timeout: Any = BaseRequest.DEFAULT_NONE,
        connect_timeout: Any = BaseRequest.DEFAULT_NONE,
        pool_timeout: Any = BaseRequest.DEFAULT_NONE,
    ) -> tuple[int, bytes]:
        """Make one Bot API call; return its status and body (PTB reads the rest)."""
        read = self._read_timeout if isinstance(read_timeout, _UNSET) else read_timeout
        connect = self._connect_timeout if isinstance(connect_timeout, _UNSET) else connect_timeout
        pool = self._pool_timeout if isinstance(pool_timeout, _UNSET) else pool_timeout
        timeout = aiohttp.ClientTimeout(
            total=None, connect=None if connect is None or pool is None else connect + pool,
            sock_connect=connect, sock_read=read,
        )  # fmt: skip
        try:
            async with self._sessions.get().request(method, url, data=_body(request_data), timeout=timeout) as answer:
                return answer.status, await answer.read()
        except asyncio.TimeoutError as error:
            raise TimedOut(f"Bot API call timed out: {self._redacted(error)}") from None
        except aiohttp.ClientError as error:
            raise NetworkError(f"aiohttp.{type(error).__name__}: {self._redacted(error)}") from None

    def _redacted(self, error: BaseException) -> str:
        return str(error).replace(self._token, "<token>")


def _body(request_data: RequestData | None) -> Any:
    """Return a call's parameters as aiohttp posts them: a form, multipart when it carries files."""
    if request_data is None:
        return None
    fields = request_data.json_parameters
    files = request_data.multipart_data
    if not files:
        return fields
    form = aiohttp.FormData()
    for name, value in fields.items():
        form.add_field(name, value)
    for name, part in files.items():
        filename, content, *rest = part
        form.add_field(name, content, filename=filename, content_type=rest[0] if rest else None)
    return form


def build_bot(settings: TelegramSettings) -> Bot:
    """Return a Bot for ``settings`` (no network call); close it with ``close_bot``."""
    # One request object for both: get_updates adds its long-poll time to the read timeout.
    request = BotRequest(settings.token, connection_pool_size=16, connect_timeout=5.0, read_timeout=10.0,
                       pool_timeout=5.0)  # fmt: skip
    return Bot(settings.token, base_url=settings.base_url, request=request, get_updates_request=request)


async def close_bot(bot: Bot) -> None:
    """Close the Bot's HTTP connections."""
    await bot.request.shutdown()


# --- sending ---------------------------------------------------------------------------


class TelegramOutput(RecordedOutput):
    """Sends to Telegram chats: Rasa's responses and, later, the agents' replies.

    Plain text only (no parse_mode), split at 4096 characters; flood control (429) and
    network failures retried a bounded number of times. The copy made for one update
    (``for_message``) records each reply in the inbox, so handling the update again never
    sends a reply twice (``bot.channels.replies.RecordedOutput``).
    """

    text_limit = TEXT_LIMIT
    sends_on_own_thread = True  # with a Bot from ``build_bot``: a client per loop (``BotRequest``)

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
        super().__init__(inbox)
        self.bot = bot
        self.store = store
        self.max_attempts = max_attempts
        self.backoff_seconds = backoff_seconds
        self.max_retry_after = max_retry_after

    def on_sending_thread(self) -> bool:
        """Return whether recorded replies go out on the sending thread: a ``Bot`` from ``build_bot`` can."""
        return isinstance(self.bot.request, BotRequest) and super().on_sending_thread()

    def for_message(self, message_id: str) -> TelegramOutput:
        """Return a sender for the replies to the update ``message_id`` (recorded, sent once)."""
        return self.bound_to(message_id)

    @classmethod
    def name(cls) -> str:
        """Rasa's name for this output channel."""
        return CHANNEL_NAME

    def refused_for_good(self, error: BaseException) -> bool:
        """Return whether Telegram refused for good: the customer blocked the bot, the chat is gone."""
        return isinstance(error, (Forbidden, BadRequest))

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

    async def _send_part(self, recipient_id: str | int, text: str, *, seq: int | None = None, **options: Any) -> Any:
        return await self._once(
            f"sendMessage to {recipient_id}",
            ("sendMessage", str(recipient_id), text, repr(options.get("reply_markup"))),
            lambda: self.bot.send_message(recipient_id, text, parse_mode=None, **options),
            seq=seq,
        )

    async def _button_options(self, text: str, buttons: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        return {"reply_markup": await self.keyboard(buttons)}

    async def keyboard(self, buttons: Sequence[Mapping[str, Any]]) -> InlineKeyboardMarkup:
        """Return the inline keyboard for Rasa buttons, one per row; payloads are stored, keys sent."""
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

    async def show_typing(self, recipient_id: str) -> None:
        """Show "typing…" in the chat until the next message (or 5 s): one call, not retried."""
        await self.bot.send_chat_action(recipient_id, ChatAction.TYPING)

    async def answer_callback(self, query_id: str, text: str | None = None) -> None:
        """Stop the button's spinner, optionally showing ``text``."""
        await self._call("answerCallbackQuery", lambda: self.bot.answer_callback_query(query_id, text=text))

    async def reply_to(self, chat_id: int, message_id: int, text: str) -> None:
        """Answer one message (in a group: as a visible reply to it)."""
        reply = ReplyParameters(message_id=message_id, allow_sending_without_reply=True)
        await self._send_part(chat_id, text, reply_parameters=reply)
