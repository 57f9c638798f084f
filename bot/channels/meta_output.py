"""Messenger's and Instagram's Send API side: the platforms, their settings, and the sender.

The two platforms differ in a handful of values (``Platform``: the webhook object, the
comments field, the text limit, the profile fields, the edge a public reply goes to);
everything else is one code path. ``MetaOutput`` is a ``bot.channels.base.RecordedOutput``
(splitting, the buttons prompt, the holding line and the reply records come from there)
that adds the Send API calls and Meta's limits:

- text split at 2,000 characters (Messenger) or 1,000 (Instagram);
- Rasa buttons as quick replies (at most 13, titles at most 20 characters), or, when one
  opens a link, as a button template (at most 3 buttons, text at most 640 characters);
- ``tag="HUMAN_AGENT"`` on ``send_text_message`` / ``send_text_with_buttons`` sends with
  ``messaging_type: MESSAGE_TAG`` (the desk passes it for a person's reply 24 hours to 7
  days after the customer's last message; the bot never does);
- ``mark_seen`` / ``typing_on``, the private reply to a public comment (``recipient:
  {"comment_id": ...}``) and the public reply under it;
- a text reply in doubt (a crash between its call and its "sent" record, or a call whose answer
  was lost after it was sent) is looked up in the conversation first (``find_sent``: the
  Conversations API, the account's messages to the customer since their message, by text) and
  sent again only if it is not there.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, TypeVar

from bot.channels.base import ConnectorSettings, optional_lookup
from bot.channels.common import BoundedDict, ChannelCredentialsError, credential
from bot.channels.graph_client import DEFAULT_BASE_URL, GraphClient
from bot.channels.inbox import SENDING, Inbox
from bot.channels.meta import BAD_TOKEN_CODE, INSTAGRAM, MESSENGER, GraphError
from bot.channels.replies import BUTTONS_PROMPT, RecordedOutput, call_looking_first

log = logging.getLogger(__name__)
T = TypeVar("T")

HUMAN_AGENT_TAG = "HUMAN_AGENT"
QUICK_REPLY_LIMIT = 13
QUICK_REPLY_TITLE_LIMIT = 20
BUTTON_LIMIT = 3
BUTTON_TITLE_LIMIT = 20
TEMPLATE_TEXT_LIMIT = 640
PAYLOAD_LIMIT = 1000
ENV_APP_SECRET = "META_APP_SECRET"
ENV_VERIFY_TOKEN = "META_VERIFY_TOKEN"
ENV_BASE_URL = "META_GRAPH_BASE_URL"
_ACCOUNT_ID = re.compile(r"[0-9]{1,32}")
# A reply in doubt is looked for among the account's messages created since the customer's
# message, less this margin (Meta's times are in whole seconds), in the conversation's latest
# messages (Meta gives the details of the 20 most recent).
LOOKUP_MARGIN_SECONDS = 2.0
LOOKUP_MESSAGES = 20


@dataclass(frozen=True)
class Platform:
    """What Messenger and Instagram Direct do differently."""

    channel: str  # Rasa's name, the case's channel
    public_platform: str  # where a comment was posted: support.yml ``public_replies`` key, case metadata
    webhook_object: str  # the webhook body's ``object``
    comment_field: str  # the ``changes[].field`` of comments
    text_limit: int
    profile_fields: str  # the profile API's fields: the customer's name
    public_reply_edge: str  # POST /{comment_id}/<edge> answers a comment in public
    env_account: str
    env_token: str
    account_key: str  # in credentials.yml


MESSENGER_PLATFORM = Platform(
    MESSENGER, "facebook", "page", "feed", 2000, "first_name,last_name", "comments",
    "MESSENGER_PAGE_ID", "MESSENGER_PAGE_TOKEN", "page_id",
)  # fmt: skip
INSTAGRAM_PLATFORM = Platform(
    INSTAGRAM, "instagram", "instagram", "comments", 1000, "name,username", "replies",
    "INSTAGRAM_ACCOUNT_ID", "INSTAGRAM_TOKEN", "account_id",
)  # fmt: skip


# --- settings ----------------------------------------------------------------------------


@dataclass(frozen=True)
class MetaSettings(ConnectorSettings):
    """Validated settings of one Page or Instagram account. No secret ever appears in ``repr``.

    ``token`` is the Page access token, ``secret`` the app secret (it signs webhooks).
    """

    platform: ClassVar[Platform]
    base_url: str = DEFAULT_BASE_URL
    account_id: str = ""
    verify_token: str = field(default="", repr=False)

    @classmethod
    def read(cls, credentials: Mapping[str, Any], environ: Mapping[str, str]) -> MetaSettings:
        """Build the settings: the account id (digits), the token, the app secret, the verify token."""
        platform, name = cls.platform, cls.platform.channel
        account = credential(
            credentials, platform.account_key, platform.env_account, name, environ, pattern=_ACCOUNT_ID,
            malformed=f"{platform.env_account} must be the numeric id Meta shows for the account.",
        )  # fmt: skip
        token = credential(credentials, "token", platform.env_token, name, environ)
        secret = credential(credentials, "app_secret", ENV_APP_SECRET, name, environ)
        verify = credential(credentials, "verify_token", ENV_VERIFY_TOKEN, name, environ)
        if len(verify) < 16:
            raise ChannelCredentialsError(f"{ENV_VERIFY_TOKEN} must be at least 16 characters (a random string).")
        base_url = str(credentials.get("base_url") or environ.get(ENV_BASE_URL) or DEFAULT_BASE_URL).strip()
        return cls(token, secret, base_url, account, verify)

    @property
    def source(self) -> str:
        """The inbox namespace: message and comment ids count per account."""
        return f"{self.platform.channel}:{self.account_id}"


class MessengerSettings(MetaSettings):
    """A Facebook Page's settings (``MESSENGER_PAGE_ID``, ``MESSENGER_PAGE_TOKEN``)."""

    platform = MESSENGER_PLATFORM


class InstagramSettings(MetaSettings):
    """An Instagram professional account's settings (``INSTAGRAM_ACCOUNT_ID``, ``INSTAGRAM_TOKEN``)."""

    platform = INSTAGRAM_PLATFORM


def build_client(settings: MetaSettings, max_attempts: int = 3) -> GraphClient:
    """Return the Graph client for ``settings`` (no network call)."""
    return GraphClient(settings.token, settings.base_url, max_attempts=max_attempts)


# --- Rasa buttons as Meta shows them --------------------------------------------------------


def short_title(title: str, limit: int) -> str:
    """Return ``title`` cut to ``limit`` characters (an ellipsis marks the cut)."""
    title = " ".join(title.split())
    return title if len(title) <= limit else title[: limit - 1].rstrip() + "…"


def quick_replies(buttons: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """Return Rasa ``buttons`` as Meta quick replies: at most 13, titles cut to 20 characters.

    ``python -m bot ops check`` names responses with more or longer ones; here the extra
    ones are logged, so a live conversation still gets the first 13.
    """
    if len(buttons) > QUICK_REPLY_LIMIT:
        log.warning("%d buttons: Meta shows at most %d quick replies, the rest are left out", len(buttons),
                    QUICK_REPLY_LIMIT)  # fmt: skip
    return [
        {
            "content_type": "text",
            "title": short_title(str(b.get("title") or b.get("payload") or "?"), QUICK_REPLY_TITLE_LIMIT),
            "payload": str(b.get("payload") or b.get("title") or "")[:PAYLOAD_LIMIT],
        }
        for b in buttons[:QUICK_REPLY_LIMIT]
    ]


def button_template(text: str, buttons: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Return a button template (links and postbacks): at most 3 buttons, text at most 640 characters."""
    if len(buttons) > BUTTON_LIMIT:
        log.warning("%d buttons with a link: Meta shows at most %d, the rest are left out", len(buttons), BUTTON_LIMIT)
    shown = []
    for b in buttons[:BUTTON_LIMIT]:
        title = short_title(str(b.get("title") or b.get("payload") or b.get("url") or "?"), BUTTON_TITLE_LIMIT)
        if b.get("url"):
            shown.append({"type": "web_url", "url": str(b["url"]), "title": title})
        else:
            shown.append({"type": "postback", "title": title,
                          "payload": str(b.get("payload") or b.get("title") or "")[:PAYLOAD_LIMIT]})  # fmt: skip
    # Line breaks kept: the caller sends a template only for a text within the limit.
    payload = {"template_type": "button", "text": text[:TEMPLATE_TEXT_LIMIT], "buttons": shown}
    return {"type": "template", "payload": payload}


# --- sending ---------------------------------------------------------------------------


class MetaOutput(RecordedOutput):
    """Sends to one Page's or Instagram account's customers: Rasa's replies and the agents'."""

    text_limit: ClassVar[int] = MESSENGER_PLATFORM.text_limit
    sends_on_own_thread = True  # the Graph client keeps an HTTP client per loop

    def __init__(self, client: GraphClient, platform: Platform, account_id: str, inbox: Inbox | None = None) -> None:
        """Send through ``client`` as ``account_id``; record replies to an event in ``inbox``."""
        super().__init__(inbox)
        self.client = client
        self.platform = platform
        self.account_id = account_id
        self.text_limit = platform.text_limit  # type: ignore[misc]  # per platform, not per class
        # When the customer's message was sent (epoch seconds): a text reply in doubt is looked
        # for among the account's messages since then. ``None``: not looked for, sent again.
        self.since: float | None = None
        self._conversations: BoundedDict[str, str] = BoundedDict()

    # A text reply in doubt is looked up in the conversation (``find_sent``) before it is sent again.
    can_look_up_sent = True

    def name(self) -> str:  # type: ignore[override]  # Rasa asks the instance; the platform says
        """Rasa's name for this output channel: its platform's."""
        return self.platform.channel

    def for_message(self, message_id: str, since: float | None = None) -> MetaOutput:
        """Return a sender for the replies to the event ``message_id`` (recorded, sent once).

        ``since``: when the customer's message was sent (epoch seconds), from where a text
        reply left in doubt is looked up before it is sent again.
        """
        bound = self.bound_to(message_id)  # the conversation ids found stay shared
        bound.since = since
        return bound

    def refused_for_good(self, error: BaseException) -> bool:
        """Return whether Meta refused for good: outside the window, person unavailable, already replied."""
        return isinstance(error, GraphError) and error.refused_for_good

    async def _once(
        self, what: str, fingerprint: tuple[Any, ...], request: Callable[[], Awaitable[T]], seq: int | None = None
    ) -> T | None:
        """Make one reply call, at most once per place in the bound event's replies."""
        if not self.bound:
            return await self._told(request)
        place = self.next_seq() if seq is None else seq
        return await self.recorded(what, place, fingerprint, lambda _state: self._told(request))

    async def _told(self, request: Callable[[], Awaitable[T]]) -> T:
        """Run ``request``; a dead token is said loudly (every send fails until it is replaced)."""
        try:
            return await request()
        except GraphError as error:
            if error.code == BAD_TOKEN_CODE:
                log.error("%s: Meta refused the access token (code 190): replace %s; replies wait in the inbox",
                          self.platform.channel, self.platform.env_token)  # fmt: skip
            raise

    async def _message(
        self, recipient: Mapping[str, str], message: Mapping[str, Any], tag: str | None, seq: int | None
    ) -> Any:
        """Send one ``message`` to ``recipient``; with ``tag``, as a tagged message."""
        body: dict[str, Any] = {"recipient": dict(recipient), "message": dict(message)}
        if tag is not None:
            body.update(messaging_type="MESSAGE_TAG", tag=tag)
        elif "id" in recipient:  # a private reply to a comment takes no messaging type
            body["messaging_type"] = "RESPONSE"
        target = recipient.get("id") or f"comment {recipient.get('comment_id')}"
        what, fingerprint = f"message to {target}", ("message", repr(sorted(recipient.items())), repr(body))
        text, since = message.get("text"), self.since
        if not self.bound or "id" not in recipient or not isinstance(text, str) or since is None:
            # Not recorded, or nothing to look for (an attachment, a private reply): sent again if in doubt.
            return await self._once(what, fingerprint, lambda: self.client.post(f"{self.account_id}/messages", body),
                                    seq=seq)  # fmt: skip
        place = self.next_seq() if seq is None else seq
        return await self.recorded(
            what, place, fingerprint,
            lambda state: self._post_once(body, recipient["id"], text, since, in_doubt=state == SENDING),
        )  # fmt: skip

    async def _post_once(self, body: dict[str, Any], customer: str, text: str, since: float, *, in_doubt: bool) -> Any:
        """Send a text message once: when it may have gone out already, look for it first.

        In doubt from the start (``in_doubt``: a crash cut its call off) or after a call whose
        answer was lost (``GraphError.unsure``), it is looked for (``find_sent``) before each
        new try; found, it is not sent again (``call_looking_first``).
        """
        backoff = self.client.backoff_seconds

        def retry(error: BaseException, attempt: int) -> tuple[float, bool] | None:
            unsure = isinstance(error, GraphError) and error.unsure
            return (backoff * 2 ** (attempt - 1), True) if unsure else None

        return await call_looking_first(
            f"{self.platform.channel} message to {customer}",
            lambda: self._told(lambda: self.client.post(f"{self.account_id}/messages", body, again_if_unsure=False)),
            attempts=self.client.max_attempts, retry=retry, look_up=lambda: self.find_sent(customer, text, since),
            in_doubt=in_doubt, describe=str,
        )  # fmt: skip

    async def find_sent(self, customer: str, text: str, since: float) -> dict[str, Any] | None:
        """Return the account's message to ``customer`` with ``text`` sent since ``since`` (epoch seconds), if any.

        The Conversations API: the conversation with the customer (``/{account}/conversations``,
        remembered), then its latest messages, newest first. The customer's later messages are
        handled after this one, so a message of this text since theirs is this reply. A lookup
        that fails or answers oddly counts as "not there": the reply is sent again (logged and
        counted in ``firstreply_channel_lookup_failures``).
        """
        channel = self.platform.channel
        conversation = self._conversations.get(customer)
        if conversation is None:
            conversation = await optional_lookup(
                channel, "conversation", customer,
                lambda: self.client.get(f"{self.account_id}/conversations",
                                        {"platform": channel, "user_id": customer}),
                _conversation_id, (GraphError,),
            )  # fmt: skip
            if conversation is None:
                return None
            self._conversations[customer] = conversation
        latest = await optional_lookup(
            channel, "conversation messages", customer,
            lambda: self.client.get(f"{conversation}/messages",
                                    {"fields": "message,from,created_time", "limit": str(LOOKUP_MESSAGES)}),
            lambda answer: list(answer["data"]), (GraphError,),
        )  # fmt: skip
        for item in latest or []:
            created = _created(item)
            if created is None:
                continue
            if created < since - LOOKUP_MARGIN_SECONDS:
                return None  # newest first: the rest is older than the customer's message
            sender = item.get("from") if isinstance(item.get("from"), Mapping) else {}
            if str(sender.get("id")) == self.account_id and str(item.get("message") or "").strip() == text.strip():
                return dict(item)
        return None

    async def _send_part(self, recipient_id: str, text: str, *, seq: int | None = None, **options: Any) -> Any:
        message: dict[str, Any] = {"text": text}
        if options.get("attachment") is not None:
            message = {"attachment": options["attachment"]}
        if options.get("quick_replies"):
            message["quick_replies"] = options["quick_replies"]
        return await self._message({"id": recipient_id}, message, options.get("tag"), seq)

    async def _button_options(self, text: str, buttons: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        if any(b.get("url") for b in buttons) and len(text) <= TEMPLATE_TEXT_LIMIT:
            return {"attachment": button_template(text, buttons)}
        return {"quick_replies": quick_replies([b for b in buttons if not b.get("url")])}

    async def send_text_message(self, recipient_id: str, text: str, *, tag: str | None = None, **kwargs: Any) -> None:
        """Send ``text`` in as many messages as the limit needs; ``tag="HUMAN_AGENT"`` for a person's late reply."""
        for part in self.parts(text):
            await self._send_part(recipient_id, part, tag=tag)

    async def send_text_with_buttons(
        self, recipient_id: str, text: str, buttons: list[dict[str, Any]], *, tag: str | None = None, **kwargs: Any
    ) -> None:
        """Send ``text`` with Rasa ``buttons`` under its last part (``tag`` as ``send_text_message``)."""
        parts = self.parts(text or "") or [BUTTONS_PROMPT]
        options = await self._button_options(parts[-1], buttons)
        for part in parts[:-1]:
            await self._send_part(recipient_id, part, tag=tag)
        await self._send_part(recipient_id, parts[-1], tag=tag, **options)

    async def send_image_url(self, recipient_id: str, image: str, **kwargs: Any) -> None:
        """Send the image at ``image`` (a URL Meta can fetch)."""
        attachment = {"type": "image", "payload": {"url": image, "is_reusable": True}}
        await self._message({"id": recipient_id}, {"attachment": attachment}, kwargs.get("tag"), None)

    async def send_custom_json(self, recipient_id: str, json_message: dict[str, Any], **kwargs: Any) -> None:
        """Send a custom payload: ``text`` (with optional ``buttons``) or a Send API ``attachment``."""
        if json_message.get("text") and json_message.get("buttons"):
            await self.send_text_with_buttons(recipient_id, json_message["text"], json_message["buttons"])
        elif json_message.get("text"):
            await self.send_text_message(recipient_id, json_message["text"])
        if isinstance(json_message.get("attachment"), dict):
            await self._message({"id": recipient_id}, {"attachment": json_message["attachment"]}, None, None)
        ignored = sorted(set(json_message) - {"text", "buttons", "attachment"})
        if ignored:
            log.warning("%s custom payload: keys %s are not supported and were not sent", self.platform.channel,
                        ignored)  # fmt: skip

    # --- beyond Rasa's replies ---------------------------------------------------------

    async def sender_action(self, recipient_id: str, action: str) -> None:
        """Send ``mark_seen`` or ``typing_on`` (not recorded: showing it twice does no harm)."""
        await self.client.post(
            f"{self.account_id}/messages", {"recipient": {"id": recipient_id}, "sender_action": action}
        )

    async def private_reply(
        self, comment_id: str, text: str, buttons: Sequence[Mapping[str, Any]], *, seq: int
    ) -> Any:
        """Send the one private message a public comment allows: it opens the customer's DM conversation."""
        message: dict[str, Any] = {"text": self.parts(text)[0] if text.strip() else BUTTONS_PROMPT}
        if buttons:
            message["quick_replies"] = quick_replies([b for b in buttons if not b.get("url")])
        return await self._message({"comment_id": comment_id}, message, None, seq)

    async def public_reply(self, comment_id: str, text: str, *, seq: int) -> Any:
        """Answer a public comment in public, under it (Facebook ``/comments``, Instagram ``/replies``)."""
        edge = self.platform.public_reply_edge
        return await self._once(
            f"public reply to comment {comment_id}", ("public", comment_id, text),
            lambda: self.client.post(f"{comment_id}/{edge}", {"message": text}), seq=seq,
        )  # fmt: skip


def _conversation_id(answer: Mapping[str, Any]) -> str:
    """Return the one conversation's id in ``/{account}/conversations``' answer (KeyError if none)."""
    return str(answer["data"][0]["id"])


def _created(item: Mapping[str, Any]) -> float | None:
    """Return a message's ``created_time`` (``2026-12-07T14:00:00+0000``) in epoch seconds, or None."""
    raw = str(item.get("created_time") or "")
    try:
        return datetime.strptime(raw, "%Y-%m-%dT%H:%M:%S%z").timestamp()
    except ValueError:
        return None
