"""The web chat: a small DM-style page served by Rasa itself, and the routes it talks to.

Registered in ``credentials.yml`` (no required keys)::

    bot.channels.webchat.WebChatInput:

Rasa mounts it under ``/webhooks/webchat/``:

- ``GET  /webhooks/webchat/``         the page (``chat.js`` and ``chat.css`` beside it);
  ``GET /chat`` redirects there.
- ``POST /webhooks/webchat/session``  a new conversation: ``{"sender", "token"}``, where the
  token is HMAC-SHA256(secret, sender). The secret is ``FIRSTREPLY_WEBCHAT_SECRET`` (or the
  optional ``secret`` key); without one a random secret lives as long as the process, so
  sessions end when Rasa restarts.
- ``POST /webhooks/webchat/message``  ``{"sender", "token", "client_id", "message", "name"?,
  "payload"?, "partial"?}``: one customer message, through Rasa, answered with the bot's
  messages. A message repeated with the same ``client_id`` (a retry after a lost answer)
  reaches Rasa once and gets the same answer again. A new visitor's first message is
  greeted at once (``bot.channels.edge``): the greeting is stored before Rasa reads the
  message and comes first in the answer; with ``"partial": true`` (the page sends it) the
  answer is the greeting alone, with ``"more": true``, as soon as it is stored, and the same
  message sent again gets the whole answer when it is ready.
- ``GET  /webhooks/webchat/history?sender=&after=`` (token in ``Authorization: Bearer``, or
  ``token=``): the conversation so far, for a reload and for messages sent later (an agent's
  reply through ``WebChatOutput``).

Every displayed message is kept in the table ``webchat_messages`` of the channel database
(``bot.channels.webchat_store``). The web chat answers in the request itself, so it needs
none of the webhook connectors' inbox (``bot.channels.base``): a message repeated with the
same ``client_id`` is the duplicate filter. A message whose answer was never stored (the
process answering it died, or storing the answer failed) is taken over by its retry: at once
when that process is known to be gone (``bot.channels.leases``), else after
``STALE_CLAIM_SECONDS``; if Rasa saved the message already, its saved replies are the answer
and Rasa does not read it again.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rasa.core.channels.channel import CollectingOutputChannel, InputChannel, UserMessage
from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse

from bot.channels.common import ChannelCredentialsError, OnNewMessage, typed_text, unless_saved
from bot.channels.edge import Greeting, GreetingWords, edge_greeting_on
from bot.channels.leases import owner_gone, process_owner
from bot.channels.rest import request_problem, too_long
from bot.channels.webchat_store import CUSTOMER, WebChatStore, displayed
from bot.constants import GREETED_AT_EDGE

if TYPE_CHECKING:
    from sanic import Sanic

log = logging.getLogger(__name__)

CHANNEL_NAME = "webchat"
SHORT_URL = "/chat"
ENV_SECRET = "FIRSTREPLY_WEBCHAT_SECRET"
MIN_SECRET_CHARS = 16
SENDER_PREFIX = "webchat-"
MAX_BODY_BYTES = 64_000
MAX_TEXT_CHARS = 4_000
MAX_NAME_CHARS = 64
MAX_PAYLOAD_CHARS = 1_024
_CLIENT_ID = re.compile(r"[A-Za-z0-9_-]{8,64}")
_MESSAGE_ID = re.compile(r"[0-9]{1,18}")  # fits SQLite's 64-bit integer

STATIC_DIR = Path(__file__).with_name("webchat_static")
PAGE = "index.html"
STATIC_FILES: Mapping[str, str] = {
    PAGE: "text/html; charset=utf-8",
    "chat.js": "text/javascript; charset=utf-8",
    "chat.css": "text/css; charset=utf-8",
}
# The page loads nothing from elsewhere, and says so to the browser.
PAGE_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
NO_STORE = {"Cache-Control": "no-store"}


# --- sessions ----------------------------------------------------------------------


def session_token(secret: str, sender: str) -> str:
    """Return the token that proves a browser was given ``sender``."""
    return hmac.new(secret.encode("utf-8"), sender.encode("utf-8"), hashlib.sha256).hexdigest()


def token_matches(secret: str, sender: str, token: str) -> bool:
    """Return whether ``token`` is the token of ``sender`` (constant-time comparison)."""
    try:
        expected, given = session_token(secret, sender).encode("ascii"), token.encode("utf-8")
    except UnicodeEncodeError:  # an unpaired surrogate (JSON escape, non-UTF-8 header): never issued
        return False
    return hmac.compare_digest(expected, given)


def new_sender() -> str:
    """Return a fresh, unguessable conversation id."""
    return SENDER_PREFIX + secrets.token_hex(16)


def secret_from(credentials: Mapping[str, Any] | None, environ: Mapping[str, str]) -> str | None:
    """Return the configured session secret, or ``None`` when there is none.

    Raises:
        ChannelCredentialsError: the secret is set but too short to be safe.
    """
    value = str((credentials or {}).get("secret") or environ.get(ENV_SECRET) or "").strip()
    if value and len(value) < MIN_SECRET_CHARS:
        raise ChannelCredentialsError(
            f"{ENV_SECRET} must be at least {MIN_SECRET_CHARS} characters; generate one with "
            '`python -c "import secrets; print(secrets.token_urlsafe(32))"`.'
        )
    return value or None


# --- requests ----------------------------------------------------------------------


@dataclass(frozen=True)
class MessageRequest:
    """A checked ``POST /message`` body. The token never appears in ``repr``."""

    sender: str
    token: str = field(repr=False)
    client_id: str
    text: str
    name: str | None = None
    payload: str | None = None
    # The page shows a new visitor's greeting before the rest of the answer is ready.
    partial: bool = False


def parse_message_request(body: bytes) -> MessageRequest | tuple[int, str]:
    """Return the checked request, or (status, error) naming what is wrong."""
    if len(body) > MAX_BODY_BYTES:
        return 413, f"the body must be at most {MAX_BODY_BYTES} bytes"
    if problem := request_problem(body):
        return problem
    payload = json.loads(body)
    token = payload.get("token")
    if not isinstance(token, str) or not token:
        return 400, "'token' must be the session token from /session"
    client_id = payload.get("client_id")
    if not isinstance(client_id, str) or not _CLIENT_ID.fullmatch(client_id):
        return 400, "'client_id' must be 8-64 characters of A-Z, a-z, 0-9, _ and -, new for each message"
    text = payload["message"].strip()
    if not typed_text(text):
        return 400, "'message' must contain some text"
    name = payload.get("name")
    if problem := too_long("message", text, MAX_TEXT_CHARS, status=413) or _name_problem(name):
        return problem
    button = payload.get("payload")
    if button is not None and (not isinstance(button, str) or not button or len(button) > MAX_PAYLOAD_CHARS):
        return 400, f"'payload' must be a button's payload (1-{MAX_PAYLOAD_CHARS} characters) when given"
    partial = payload.get("partial", False)
    if not isinstance(partial, bool):
        return 400, "'partial' must be true or false when given"
    return MessageRequest(payload["sender"], token, client_id, text, (name or "").strip() or None, button, partial)


def _name_problem(name: object) -> tuple[int, str] | None:
    """Return (status, error) for a customer name that is given but not usable, else ``None``."""
    if name is None:
        return None
    if not isinstance(name, str):
        return 400, "'name' must be a string when given"
    return too_long("name", name.strip(), MAX_NAME_CHARS)


# --- sending -------------------------------------------------------------------------


class WebChatOutput(CollectingOutputChannel):
    """Sends to a web chat conversation by storing the message; the page fetches it.

    Rasa uses it for messages it starts itself (reminders, triggered intents with
    ``output_channel=latest``); the agent desk for agents' replies.
    """

    def __init__(self, store: WebChatStore) -> None:
        """Store messages in ``store``."""
        super().__init__()
        self.store = store

    @classmethod
    def name(cls) -> str:
        """Rasa's name for this output channel."""
        return CHANNEL_NAME

    async def _persist_message(self, message: dict[str, Any]) -> None:
        self.messages.append(message)
        shown = displayed(message)
        if shown is not None:
            await asyncio.to_thread(self.store.append, str(message["recipient_id"]), [shown])


class _Collector(CollectingOutputChannel):
    """Collects one turn's replies but the greeting shown ahead (the dialogue records it; it is not shown again)."""

    async def send_response(self, recipient_id: str, message: dict[str, Any]) -> None:
        if not message.get(GREETED_AT_EDGE):
            await super().send_response(recipient_id, message)


# --- receiving -----------------------------------------------------------------------



@dataclass(frozen=True)
class Answer:
    """What ``POST /message`` answers: a status and a JSON body."""

    status: int
    body: dict[str, Any]


class _WebChatBlueprint(Blueprint):
    """The channel's routes, plus ``GET /chat`` outside the ``/webhooks/webchat`` prefix.

    Rasa registers every channel blueprint with ``url_prefix=/webhooks/<name>``, which
    applies to all its routes; registration is the one moment the channel sees the app, so
    the short URL is added there (before the router is finalised).
    """

    def register(self, app: Sanic, options: dict[str, Any]) -> None:
        super().register(app, options)
        prefix = str(options.get("url_prefix", self.url_prefix) or "").strip("/")
        # Relative, so it also holds behind a reverse proxy that mounts Rasa under a path.
        target = f"{prefix}/" if prefix else "./"

        async def short_url(_: Request) -> HTTPResponse:
            return response.redirect(target)

        app.add_route(short_url, SHORT_URL, methods=["GET"], name=f"{self.name}_short_url")


class WebChatInput(InputChannel):
    """The web chat: page, sessions, messages and history (name ``webchat``)."""

    @classmethod
    def name(cls) -> str:
        """Rasa's name for the channel; also the URL prefix (``/webhooks/webchat``)."""
        return CHANNEL_NAME

    @classmethod
    def from_credentials(
        cls, credentials: dict[str, Any] | None, environ: Mapping[str, str] | None = None
    ) -> WebChatInput:
        """Build the channel; the session secret comes from ``FIRSTREPLY_WEBCHAT_SECRET``."""
        secret = secret_from(credentials, os.environ if environ is None else environ)
        if secret is None:
            log.warning(
                "webchat: %s is not set; a random secret is used, so chat sessions end when Rasa restarts",
                ENV_SECRET,
            )
        return cls(secret)

    def __init__(self, secret: str | None = None, store: WebChatStore | None = None) -> None:
        """Keep the session secret (random when ``None``) and open the message table."""
        self._secret = secret or secrets.token_urlsafe(32)
        self.store = store if store is not None else WebChatStore.from_url()
        self.output = WebChatOutput(self.store)
        # Messages being answered now, so a retry that arrives meanwhile waits for the answer.
        self._running: dict[tuple[str, str], asyncio.Task[Answer]] = {}
        # A new visitor is greeted before Rasa reads their first message (``bot.channels.edge``).
        self.edge_greeting = edge_greeting_on()
        self._greeting_words: GreetingWords | None = None

    def get_output_channel(self) -> WebChatOutput:
        """Return the sender, for messages Rasa starts itself."""
        return self.output

    def new_session(self) -> dict[str, str]:
        """Return a new conversation id and its token."""
        sender = new_sender()
        return {"sender": sender, "token": session_token(self._secret, sender)}

    def authentic(self, sender: str, token: str) -> bool:
        """Return whether ``token`` was issued for ``sender`` by this deployment."""
        return token_matches(self._secret, sender, token)

    def blueprint(self, on_new_message: OnNewMessage) -> Blueprint:
        """Return the routes: the page and its files, ``/session``, ``/message``, ``/history``."""
        webchat = _WebChatBlueprint("firstreply_webchat", __name__)

        @webchat.route("/", methods=["GET"])
        async def page(request: Request) -> HTTPResponse:
            if not request.path.endswith("/"):
                # The page's relative links need the slash.
                return response.redirect(request.path.rsplit("/", 1)[-1] + "/")
            return await static_file(PAGE)

        for filename in STATIC_FILES:
            if filename != PAGE:
                webchat.add_route(_static_handler(filename), f"/{filename}", methods=["GET"],
                                  name=f"static_{filename.replace('.', '_')}")  # fmt: skip

        @webchat.route("/session", methods=["GET", "POST"])
        async def session(_: Request) -> HTTPResponse:
            return response.json(self.new_session(), headers=NO_STORE)

        @webchat.route("/message", methods=["POST"])
        async def message(request: Request) -> HTTPResponse:
            answer = await self.handle_message(request.body, on_new_message, request.app)
            return response.json(answer.body, status=answer.status, headers=NO_STORE)

        @webchat.route("/history", methods=["GET"])
        async def history(request: Request) -> HTTPResponse:
            return await self.handle_history(request)

        @webchat.listener("after_server_stop")
        async def close(*_: Any) -> None:
            await self.close()

        return webchat

    async def handle_history(self, request: Request) -> HTTPResponse:
        """Answer ``GET /history``: the messages after ``after``, for an authentic session."""
        sender = request.args.get("sender", "")
        scheme, _, header_token = request.headers.get("Authorization", "").partition(" ")
        token = header_token.strip() if scheme.lower() == "bearer" else request.args.get("token", "")
        after = request.args.get("after", "0")
        if not sender or not token:
            return _error(400, "'sender' and the session token are required")
        if not _MESSAGE_ID.fullmatch(after):  # not isdigit(): "²" is a digit int() refuses
            return _error(400, "'after' must be a message id (a whole number)")
        if not self.authentic(sender, token):
            return _error(401, "unknown session: start a new one at /session")
        messages = await asyncio.to_thread(self.store.history, sender, int(after))
        return response.json({"messages": messages}, headers=NO_STORE)

    async def handle_message(self, body: bytes, on_new_message: OnNewMessage, app: Any = None) -> Answer:
        """Check one ``POST /message`` body and answer it, once per ``client_id``.

        ``app`` is Rasa's Sanic app, whose tracker store tells whether a message taken over
        from a dead answer was saved already.
        """
        parsed = parse_message_request(body)
        if isinstance(parsed, tuple):
            return Answer(parsed[0], {"error": parsed[1]})
        if not self.authentic(parsed.sender, parsed.token):
            log.info("webchat: message with a wrong token refused")
            return Answer(401, {"error": "unknown session: start a new one at /session"})
        key = (parsed.sender, parsed.client_id)
        running = self._running.get(key)
        if running is not None:  # a retry while the first copy is still being answered
            first = await asyncio.shield(running)
            return Answer(first.status, {**first.body, "duplicate": True}) if first.status == 200 else first
        # Not the request's own task: Sanic cancels that when the browser drops the
        # connection, and Rasa must still finish the turn so the retry finds the answer.
        greeted: asyncio.Future[Answer | None] = asyncio.get_running_loop().create_future()
        task = asyncio.get_running_loop().create_task(
            self._answer(parsed, on_new_message, app, greeted), name=f"{CHANNEL_NAME}:{parsed.client_id}"
        )
        self._running[key] = task
        task.add_done_callback(lambda done: self._finished(key, done, greeted))
        if parsed.partial:
            await asyncio.wait([task, greeted], return_when=asyncio.FIRST_COMPLETED)
            early = greeted.result() if greeted.done() else None
            if early is not None and not task.done():
                return early
        return await asyncio.shield(task)

    def _finished(
        self, key: tuple[str, str], task: asyncio.Task[Answer], greeted: asyncio.Future[Answer | None]
    ) -> None:
        if not greeted.done():
            greeted.set_result(None)
        self._running.pop(key, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("webchat: answering a message of %s failed", key[0], exc_info=task.exception())

    async def close(self, grace_seconds: float = 10.0) -> None:
        """Give messages being answered ``grace_seconds`` to finish, then close the database."""
        running = list(self._running.values())
        if running:
            _, pending = await asyncio.wait(running, timeout=grace_seconds)
            if pending:
                log.warning("webchat: %d message(s) still being answered at shutdown were cancelled", len(pending))
                for task in pending:
                    task.cancel()
        self.store.dispose()

    @property
    def owner(self) -> str:
        """Return the id of the process answering here (``process_owner``).

        Taken when asked, not when the channel is built: Rasa builds the channels before Sanic
        forks its workers, and each worker must name itself.
        """
        return process_owner()

    def abandoned(self, owner: str | None) -> bool:
        """Return whether an unanswered claim of ``owner`` has nobody answering it any more.

        Known when ``owner`` is a process of this machine that is gone, or this very process:
        here one task answers a message at a time (``_running``), so a claim of ours found by
        that task was left by an earlier answer that failed to store its outcome.
        """
        me = self.owner
        return owner is not None and (owner == me or owner_gone(owner, me))

    def greeting_words(self, app: Any) -> GreetingWords:
        """Return the greeting's wording (the served model's responses, support.yml's brand), read on first use."""
        if self._greeting_words is None:
            self._greeting_words = GreetingWords.for_app(app)
        return self._greeting_words

    async def _greet_new_visitor(
        self, request: MessageRequest, claim_id: int, app: Any
    ) -> tuple[Greeting, dict[str, Any]] | None:
        """Store the greeting of a new visitor's first message before Rasa reads it; return it and how it is shown."""
        metadata = {"customer_name": request.name} if request.name else {}
        greeting = self.greeting_words(app).for_message(request.text, metadata)
        if greeting is None:
            return None
        shown = await asyncio.to_thread(self.store.greet_first_turn, request.sender, claim_id, greeting.text)
        return None if shown is None else (greeting, shown)

    async def _answer(
        self, request: MessageRequest, on_new_message: OnNewMessage, app: Any,
        greeted: asyncio.Future[Answer | None] | None = None,
    ) -> Answer:  # fmt: skip
        shown_text, rasa_text = request.text, typed_text(request.text)
        if request.payload is not None:
            offered = await asyncio.to_thread(self.store.offered_buttons, request.sender)
            pressed = next((b for b in offered if b.get("payload") == request.payload), None)
            if pressed is not None:
                shown_text, rasa_text = pressed["title"], request.payload
        claim = await asyncio.to_thread(
            partial(self.store.claim, request.sender, request.client_id, shown_text, owner=self.owner,
                    abandoned=self.abandoned)
        )  # fmt: skip
        customer = {"id": claim.id, "from": CUSTOMER, "text": claim.text, "client_id": request.client_id}
        if not claim.new:
            if claim.replies is None:
                return Answer(409, {"error": "this message is still being answered; try again shortly"})
            return Answer(200, {"customer": customer, "replies": claim.replies, "duplicate": True})
        if claim.retaken is not None:
            log.warning("webchat: message %s of %s taken over (%s)", request.client_id, request.sender, claim.retaken)
            on_new_message = unless_saved(on_new_message, app, CHANNEL_NAME)
        metadata: dict[str, Any] = {"customer_name": request.name} if request.name else {}
        edge = None
        if self.edge_greeting and request.payload is None:
            edge = await self._greet_new_visitor(request, claim.id, app)
        ahead = [] if edge is None else [edge[1]]
        if edge is not None:
            metadata[GREETED_AT_EDGE] = edge[0].as_metadata()
        if greeted is not None and not greeted.done():
            early = Answer(200, {"customer": customer, "replies": ahead, "more": True, "duplicate": False})
            greeted.set_result(early if ahead else None)
        collector = _Collector()
        message = UserMessage(
            rasa_text,
            collector,
            request.sender,
            input_channel=CHANNEL_NAME,
            message_id=f"{CHANNEL_NAME}-{request.client_id}",
            metadata=metadata or None,
        )
        try:
            await on_new_message(message)
        except Exception:
            log.exception("webchat: Rasa failed on a message of %s; the browser will send it again", request.sender)
            await asyncio.to_thread(self.store.forget, claim.id)
            return Answer(500, {"error": "the assistant could not answer; please send it again"})
        shown = [reply for reply in map(displayed, collector.messages) if reply is not None]
        replies = await asyncio.to_thread(self.store.answer, request.sender, claim.id, shown)
        return Answer(200, {"customer": customer, "replies": [*ahead, *replies], "duplicate": False})


def _error(status: int, error: str) -> HTTPResponse:
    return response.json({"error": error}, status=status, headers=NO_STORE)


async def static_file(filename: str) -> HTTPResponse:
    """Return one of the page's files with its content type and the page's headers."""
    return await response.file(STATIC_DIR / filename, mime_type=STATIC_FILES[filename], headers=dict(PAGE_HEADERS))


def _static_handler(filename: str) -> Callable[[Request], Awaitable[HTTPResponse]]:
    async def serve(_: Request) -> HTTPResponse:
        return await static_file(filename)

    return serve

