"""WhatsApp Cloud API's sending side: the connector's settings, the pywa client, and the sender.

``WhatsAppOutput`` is what Rasa and the agent desk reply with (the desk builds it through
``bot.channels.outbound``). It is a ``bot.channels.replies.RecordedOutput``: splitting at
4,096 characters, the buttons prompt, the holding line and the reply records come from
there; this module adds the Cloud API calls (through ``pywa_async``, on httpx), their
bounded retries, and how Rasa's buttons become WhatsApp's:

- at most 3 buttons whose titles fit 20 characters: interactive **reply buttons**;
- more, or longer titles: a **list message** (up to 10 rows, titles up to 24 characters,
  the full title in the row's description when it is cut); beyond 10, further lists;
- a URL button has no reply-button form: its title and address go under the text.

A button's payload (a Rasa intent with entities, say) may be longer than the 256
characters a reply id holds, so every payload is kept in the channel store and the button
carries its key (``bot.channels.dedupe``), as Telegram's keyboard does.

Why pywa: it is typed, async (httpx), maintained, and speaks the Cloud API's current
shapes (interactive messages, the read receipt with a typing indicator, templates) and
error codes; its own webhook server is not used (the connector must store each message in
the inbox before Meta gets its answer, which pywa's handlers do not), only its client. That
client and its httpx session belong to the event loop they first ran on, so there is one
pair per loop (``WhatsAppClients``): the replies to a stored message go out on the sending
thread (``bot.channels.sending``), the read receipt, the set-up and the desk's calls on the
caller's loop.

Every failure is raised as ``bot.channels.meta.GraphError`` (Meta's code and subcode),
the same error the Messenger and Instagram senders raise, so the desk decides alike for
the three platforms: 130429/131056 back off, 131047 (the 24-hour window is closed) and
131026 (undeliverable) are refused for good, 190 (bad token) is retried and alerted.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
from pywa_async import WhatsApp
from pywa_async.errors import WhatsAppError
from pywa_async.types import Button, Section, SectionList, SectionRow
from pywa_async.types.templates import TemplateLanguage

from bot.channels.base import ConnectorSettings, optional_lookup
from bot.channels.common import credential, split_text
from bot.channels.dedupe import ChannelStore
from bot.channels.inbox import Inbox
from bot.channels.meta import WHATSAPP, GraphError
from bot.channels.replies import BUTTONS_PROMPT, RecordedOutput
from bot.channels.sending import PerLoop

log = logging.getLogger(__name__)
T = TypeVar("T")

CHANNEL_NAME = WHATSAPP
WEBHOOK_PATH = "/webhooks/whatsapp/webhook"
DEFAULT_BASE_URL = "https://graph.facebook.com"
API_VERSION = "21.0"
ENV_TOKEN = "WHATSAPP_ACCESS_TOKEN"
ENV_APP_SECRET = "WHATSAPP_APP_SECRET"
ENV_VERIFY_TOKEN = "WHATSAPP_VERIFY_TOKEN"
ENV_PHONE_NUMBER_ID = "WHATSAPP_PHONE_NUMBER_ID"
ENV_BASE_URL = "WHATSAPP_API_BASE_URL"

# The Cloud API's limits (Meta's messages reference).
TEXT_LIMIT = 4096
# The text of a message with reply buttons or a list (its interactive body).
INTERACTIVE_BODY_LIMIT = 1024
REPLY_BUTTONS_MAX = 3
REPLY_BUTTON_TITLE_MAX = 20
LIST_ROWS_MAX = 10
LIST_ROW_TITLE_MAX = 24
LIST_ROW_DESCRIPTION_MAX = 72
LIST_BUTTON_TITLE = "Choose"
MORE_CHOICES = "More choices:"

_PHONE_NUMBER_ID = re.compile(r"[0-9]{5,32}")
# An app secret is 32 hex digits; a test or a newer app may differ, so only its alphabet is checked.
_APP_SECRET = re.compile(r"[A-Za-z0-9]{16,128}")


# --- settings and the client -------------------------------------------------------------


@dataclass(frozen=True)
class WhatsAppSettings(ConnectorSettings):
    """Validated connector settings: access token, app secret, verify token, phone number id, API."""

    base_url: str = DEFAULT_BASE_URL
    verify_token: str = field(default="", repr=False)
    phone_number_id: str = ""

    @property
    def app_secret(self) -> str:
        """Return the app secret that signs Meta's webhook calls (``X-Hub-Signature-256``)."""
        return self.secret

    @property
    def source(self) -> str:
        """Inbox namespace: message ids count per business phone number."""
        return f"{CHANNEL_NAME}:{self.phone_number_id}"

    @classmethod
    def read(cls, credentials: Mapping[str, Any], environ: Mapping[str, str]) -> WhatsAppSettings:
        """Build the settings; every value is required except ``base_url``."""
        creds, env = credentials, environ
        token = credential(creds, "access_token", ENV_TOKEN, CHANNEL_NAME, env)
        secret = credential(
            creds, "app_secret", ENV_APP_SECRET, CHANNEL_NAME, env, pattern=_APP_SECRET,
            malformed=f"{ENV_APP_SECRET} must be the app secret from the Meta app's Basic settings (letters and "
            "digits only).",
        )  # fmt: skip
        verify = credential(creds, "verify_token", ENV_VERIFY_TOKEN, CHANNEL_NAME, env)
        phone = credential(
            creds, "phone_number_id", ENV_PHONE_NUMBER_ID, CHANNEL_NAME, env, pattern=_PHONE_NUMBER_ID,
            malformed=f"{ENV_PHONE_NUMBER_ID} must be the numeric Phone number ID from WhatsApp > API Setup "
            "(not the phone number itself).",
        )  # fmt: skip
        base_url = str(creds.get("base_url") or env.get(ENV_BASE_URL) or DEFAULT_BASE_URL).strip().rstrip("/")
        return cls(token, secret, base_url, verify, phone)


def new_session(timeout: float = 10.0) -> httpx.AsyncClient:
    """Return the HTTP session a client sends through (close it with ``aclose``)."""
    return httpx.AsyncClient(timeout=httpx.Timeout(timeout, connect=5.0))


def build_client(settings: WhatsAppSettings, session: httpx.AsyncClient) -> WhatsApp:
    """Return the pywa async client for ``settings``, sending through ``session`` (no network call)."""
    client = WhatsApp(phone_id=settings.phone_number_id, token=settings.token, session=session, api_version=API_VERSION)
    # pywa points the session at graph.facebook.com; the tests' fake (or a proxy) is elsewhere.
    session.base_url = f"{settings.base_url}/v{API_VERSION}"
    return client


@dataclass(frozen=True)
class Connection:
    """One pywa client and the HTTP session it sends through (both bound to one event loop)."""

    client: WhatsApp
    session: httpx.AsyncClient


class WhatsAppClients:
    """The pywa client for ``settings``, one per event loop: the sending thread's and the caller's.

    An httpx session belongs to the loop it first ran on (``bot.channels.sending.PerLoop``);
    each is built at its loop's first call (no network call) and ``close`` closes both.
    """

    def __init__(self, settings: WhatsAppSettings, timeout: float = 10.0) -> None:
        """Build clients for ``settings`` whose sessions wait ``timeout`` seconds for an answer."""
        self.settings = settings
        self.timeout = timeout
        self._connections: PerLoop[Connection] = PerLoop(self._connect, lambda found: found.session.is_closed)

    def _connect(self) -> Connection:
        session = new_session(self.timeout)
        return Connection(build_client(self.settings, session), session)

    @property
    def client(self) -> WhatsApp:
        """Return the caller's loop's pywa client (the sending thread's when called there)."""
        return self._connections.get().client

    @property
    def session(self) -> httpx.AsyncClient:
        """Return the HTTP session the caller's loop's client sends through."""
        return self._connections.get().session

    async def close(self) -> None:
        """Close the sessions: the caller's loop's here, the sending thread's on its own loop."""
        await self._connections.close(lambda found: found.session.aclose())


def graph_error(error: WhatsAppError) -> GraphError:
    """Return pywa's error as Meta's error object read (``GraphError``), the same for the three platforms."""
    return GraphError(error.status_code or 400, error.code, error.subcode, str(error.message or "")[:300])


# --- buttons -----------------------------------------------------------------------------


def fits_reply_buttons(titles: Sequence[str]) -> bool:
    """Return whether choices with ``titles`` can be WhatsApp reply buttons (else a list message)."""
    return 0 < len(titles) <= REPLY_BUTTONS_MAX and all(len(title) <= REPLY_BUTTON_TITLE_MAX for title in titles)


def _row(title: str, key: str) -> SectionRow:
    if len(title) <= LIST_ROW_TITLE_MAX:
        return SectionRow(title=title, callback_data=key)
    cut = title[: LIST_ROW_TITLE_MAX - 1].rstrip() + "…"
    return SectionRow(title=cut, callback_data=key, description=title[:LIST_ROW_DESCRIPTION_MAX])


def choice_sets(titles: Sequence[str], keys: Sequence[str]) -> list[list[Button] | SectionList]:
    """Return what carries the choices: one set of reply buttons, or lists of at most 10 rows each."""
    if fits_reply_buttons(titles):
        return [[Button(title=title, callback_data=key) for title, key in zip(titles, keys)]]
    rows = [_row(title, key) for title, key in zip(titles, keys)]
    chunks = [rows[i : i + LIST_ROWS_MAX] for i in range(0, len(rows), LIST_ROWS_MAX)]
    return [SectionList(button_title=LIST_BUTTON_TITLE, sections=[Section(title=LIST_BUTTON_TITLE, rows=chunk)])
            for chunk in chunks]  # fmt: skip


# --- sending ------------------------------------------------------------------------------


class WhatsAppOutput(RecordedOutput):
    """Sends to WhatsApp users: Rasa's responses and, later, the agents' replies.

    Split at 4,096 characters; throughput limits (130429, 131056) and network failures
    retried a bounded number of times (``max_attempts``; the desk's outbox gives 1 and
    retries itself). The copy made for one message (``for_message``) records each reply in
    the inbox, so handling the message again never sends a reply twice.
    """

    text_limit = TEXT_LIMIT
    sends_on_own_thread = True  # ``WhatsAppClients`` keeps a client per loop

    def __init__(
        self,
        clients: WhatsAppClients,
        store: ChannelStore,
        *,
        max_attempts: int = 4,
        backoff_seconds: float = 0.5,
        inbox: Inbox | None = None,
    ) -> None:
        """Send through ``clients``; keep button payloads in ``store``, replies sent in ``inbox``."""
        super().__init__(inbox)
        self.clients = clients
        self.store = store
        self.max_attempts = max_attempts
        self.backoff_seconds = backoff_seconds

    @property
    def client(self) -> WhatsApp:
        """Return the pywa client of the caller's loop (the sending thread's when called there)."""
        return self.clients.client

    @classmethod
    def name(cls) -> str:
        """Rasa's name for this output channel."""
        return CHANNEL_NAME

    def for_message(self, message_id: str) -> WhatsAppOutput:
        """Return a sender for the replies to the message ``message_id`` (recorded, sent once)."""
        return self.bound_to(message_id)

    def refused_for_good(self, error: BaseException) -> bool:
        """Return whether Meta refused for good: window closed, number undeliverable, a bad request."""
        return isinstance(error, GraphError) and error.refused_for_good

    async def _call(self, what: str, request: Callable[[], Awaitable[T]]) -> T:
        """Run one Cloud API call, its errors read as ``GraphError``; retry throughput limits and network failures."""
        for attempt in range(1, self.max_attempts + 1):
            try:
                return await request()
            except WhatsAppError as raised:
                error = graph_error(raised)
                if not error.rate_limited or attempt == self.max_attempts:
                    raise error from raised
            except httpx.TransportError as error:
                if attempt == self.max_attempts:
                    raise
                log.warning("whatsapp %s: %s", what, type(error).__name__)
            wait = self.backoff_seconds * 2 ** (attempt - 1)
            log.warning("whatsapp %s: try %d failed, again in %.1fs", what, attempt, wait)
            await asyncio.sleep(wait)
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _send_part(self, recipient_id: str, text: str, *, seq: int | None = None, **options: Any) -> Any:
        choices = options.get("choices")
        return await self._once(
            f"message to {recipient_id}",
            ("messages", str(recipient_id), text, repr(choices)),
            lambda: self.client.send_message(to=recipient_id, text=text, buttons=choices),
            seq=seq,
        )

    async def _button_options(self, text: str, buttons: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        sets = await self.choices(buttons)
        return {"choices": sets[0]} if sets else {}

    async def choices(self, buttons: Sequence[Mapping[str, Any]]) -> list[list[Button] | SectionList]:
        """Return Rasa ``buttons`` (those without a URL) as reply buttons or lists; payloads stored, keys sent."""
        chosen = [b for b in buttons if not b.get("url")]
        payloads = [str(b.get("payload") or b.get("title") or "") for b in chosen]
        keys = await asyncio.to_thread(self.store.store_payloads, payloads) if payloads else []
        titles = [str(b.get("title") or b.get("payload") or "?").strip() or "?" for b in chosen]
        return choice_sets(titles, keys) if chosen else []

    async def send_text_with_buttons(
        self, recipient_id: str, text: str, buttons: list[dict[str, Any]], **kwargs: Any
    ) -> None:
        """Send ``text`` with Rasa ``buttons``: the choices under its last part, links written out.

        More than one list (over 10 choices) goes as further messages after the text.
        """
        links = [f"{b.get('title') or b['url']}: {b['url']}" for b in buttons if b.get("url")]
        body = "\n".join([text or "", *links]).strip()
        sets = await self.choices(buttons)
        if not sets:
            await self.send_text_message(recipient_id, body)
            return
        parts = self.parts(body) or [BUTTONS_PROMPT]
        # The choices ride on the last part, whose text WhatsApp takes up to 1,024 characters.
        parts[-1:] = split_text(parts[-1], INTERACTIVE_BODY_LIMIT)
        for part in parts[:-1]:
            await self._send_part(recipient_id, part)
        await self._send_part(recipient_id, parts[-1], choices=sets[0])
        for more in sets[1:]:
            await self._send_part(recipient_id, MORE_CHOICES, choices=more)

    async def send_image_url(self, recipient_id: str, image: str, **kwargs: Any) -> None:
        """Send the image at ``image`` (a URL WhatsApp can fetch)."""
        await self._once(
            f"image to {recipient_id}", ("image", recipient_id, image),
            lambda: self.client.send_image(to=recipient_id, image=image),
        )  # fmt: skip

    async def send_custom_json(self, recipient_id: str, json_message: dict[str, Any], **kwargs: Any) -> None:
        """Send a custom payload: ``text`` (with optional ``buttons``); other keys are logged, not sent."""
        if json_message.get("text"):
            if json_message.get("buttons"):
                await self.send_text_with_buttons(recipient_id, json_message["text"], json_message["buttons"])
            else:
                await self.send_text_message(recipient_id, json_message["text"])
        ignored = sorted(set(json_message) - {"text", "buttons"})
        if ignored:
            log.warning("whatsapp custom payload: keys %s are not supported and were not sent", ignored)

    async def send_template(self, recipient_id: str, name: str, language: str) -> None:
        """Send the approved template ``name`` in ``language`` (reopens a conversation past 24 hours)."""
        await self._call(
            f"template {name} to {recipient_id}",
            lambda: self.client.send_template(to=recipient_id, name=name, language=TemplateLanguage(language)),
        )

    async def show_typing(self, message_id: str) -> None:
        """Mark the customer's message read and show the typing indicator (fails soft: a courtesy)."""
        await optional_lookup(
            CHANNEL_NAME, "read receipt", message_id,
            lambda: self._call_once(lambda: self.client.indicate_typing(message_id)),
            lambda answer: answer, (GraphError, httpx.HTTPError), describe=str,
        )  # fmt: skip

    async def _call_once(self, request: Callable[[], Awaitable[T]]) -> T:
        """Run one call without retries (a read receipt is worth nothing late)."""
        try:
            return await request()
        except WhatsAppError as raised:
            raise graph_error(raised) from raised
