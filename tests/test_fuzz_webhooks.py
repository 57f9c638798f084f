"""Every webhook, fuzzed: hostile requests never get a 5xx, never reach Rasa, never store anything.

Property-based (hypothesis, fixed seed) against the real channels in Rasa's real Sanic app,
as the channels' own tests serve them, with the fake Telegram, Slack Web and X APIs:

- a request that is not authenticated (no, wrong, near-miss or non-UTF-8 secret, token or
  signature; a stale Slack timestamp) is a 4xx whatever its body, and leaves no trace:
  the agent sees no message, the channel database is unchanged, no platform API is called;
- an authenticated request that is malformed (random bytes, non-UTF-8, too deep, 1-5 MB,
  a wrong type at any field) is a 4xx, or the 200 the platform needs for an update kind we
  ignore, and nothing unreadable reaches Rasa;
- a valid request with any text up to the channel's cap (emoji, right-to-left, control
  characters) reaches Rasa exactly once, even when delivered twice, with its text intact;
- after every example the server still answers a valid request.

Each test serves one app for all its examples; every example compares against a snapshot
taken just before it.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import re
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import pytest_asyncio
from hypothesis import example, given
from hypothesis import strategies as st

from bot.channels.dedupe import ChannelStore, button_payloads, seen_updates
from bot.channels.inbox import inbox, replies
from bot.channels.rest import MAX_MESSAGE_CHARS, MAX_SENDER_CHARS, RestInput
from bot.channels.slack import EVENTS_PATH, SlackDMInput
from bot.channels.slack_client import SlackSettings, build_client
from bot.channels.slack_output import escape
from bot.channels.telegram import TelegramInput
from bot.channels.telegram_output import SECRET_HEADER, TelegramSettings
from bot.channels.webchat import MAX_NAME_CHARS, MAX_TEXT_CHARS, WebChatInput
from bot.channels.webchat_store import WebChatStore, webchat_messages
from bot.channels.choices import offered_choices
from bot.channels.public_posts import public_threads
from bot.channels.x import XInput
from bot.channels.x_client import XSettings
from bot.constants import INTENT_GREET
from tests.channel_support import RecordingAgent
from tests.fakes.slack_api import FakeSlackAPI
from tests.fakes.telegram_api import TOKEN as TELEGRAM_TOKEN
from tests.fakes.telegram_api import FakeTelegramAPI
from tests.fakes.x_api import CONSUMER_SECRET as X_CONSUMER_SECRET
from tests.fakes.x_api import FakeXAPI
from tests.fakes.x_api import activity as x_activity
from tests.fakes.x_api import dm_event as x_dm_event
from tests.fakes.x_api import post as x_post
from tests.fakes.x_api import signed_headers as x_signed
from tests.fuzz_support import (
    ANY_BODY,
    CHARACTERS,
    HEADER_BYTES,
    JSON_VALUES,
    REST_WEBHOOK,
    SLASHY_TEXTS,
    RestServed,
    TableWatch,
    customer_texts,
    dumps,
    fuzz_settings,
    huge_bodies,
    not_a,
    handling_failed,
    refused_or_ignored,
    sendable,
    serve_rest,
    with_wrong_type,
    without_command_prefix,
    wrong_secrets,
)
from tests.test_slack_channel import MARIA as SLACK_MARIA
from tests.test_slack_channel import SECRET as SLACK_SECRET
from tests.test_slack_channel import TOKEN as SLACK_TOKEN
from tests.test_slack_channel import Served as SlackServed
from tests.test_slack_channel import button_press, dm, event_body, signed
from tests.test_slack_channel import serve as serve_slack
from tests.test_telegram_channel import PRIVATE_CHAT, callback_update, message_update
from tests.test_telegram_channel import SECRET as TELEGRAM_SECRET
from tests.test_telegram_channel import Served as TelegramServed
from tests.test_telegram_channel import serve as serve_telegram
from tests.test_webchat_channel import RecordingAgent as WebChatAgent
from tests.test_webchat_channel import Served as WebChatServed
from tests.test_webchat_channel import serve as serve_webchat
from tests.test_x_channel import ENV as X_ENV
from tests.test_x_channel import MARIA as X_MARIA
from tests.test_x_channel import REPLY as X_REPLY
from tests.test_x_channel import Served as XServed
from tests.test_x_channel import serve as serve_x

REST_TOKEN = "rest-token_0123456789abcdefABCDEF"
WEBCHAT_SECRET = "a-webchat-secret-for-fuzzing-0123456789"
WEBCHAT = "/webhooks/webchat"
TELEGRAM_WEBHOOK = "/webhooks/telegram/webhook"
X_WEBHOOK = "/webhooks/x/webhook"
SLACK_CAP = 40_000  # what Slack accepts in one message
TELEGRAM_CAP = 4096  # what Telegram accepts in one message
FEW, SOME, MANY = 4, 25, 40  # examples per test: huge bodies, the rest
ENV_NAMES = ("FIRSTREPLY_REST_TOKEN", "FIRSTREPLY_WEBCHAT_SECRET", "TELEGRAM_BOT_TOKEN", "TELEGRAM_WEBHOOK_SECRET",
             "TELEGRAM_API_BASE_URL", "TELEGRAM_BOT_USERNAME", "SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET",
             "SLACK_API_BASE_URL", "SLACK_CLIENT_ID", "SLACK_CLIENT_SECRET", "X_CONSUMER_KEY", "X_CONSUMER_SECRET",
             "X_ACCESS_TOKEN", "X_ACCESS_TOKEN_SECRET", "X_BRAND_USER_ID", "X_BRAND_HANDLE", "X_API_BASE_URL")  # fmt: skip


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FIRSTREPLY_CHANNEL_DB", str(tmp_path / "channels.db"))


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'channels.db'}"


def texts_of(agent: Any) -> list[str | None]:
    return [message.text for message in agent.messages]


class Rig:
    """What every channel's rig does between examples."""

    served: Any

    def reset(self) -> None:
        """Forget what earlier examples sent, so each example (and its shrinking) stands alone."""
        self.served.agent.messages.clear()


# --- REST ------------------------------------------------------------------------------------


@dataclass
class RestRig(Rig):
    served: RestServed
    token: str | None

    @property
    def bearer(self) -> str | None:
        return f"Bearer {self.token}" if self.token else None

    async def still_serves(self) -> None:
        """A valid request right after: answered 200, and it reaches Rasa."""
        before = len(self.served.agent.messages)
        answer = await self.served.post(dumps({"sender": "probe", "message": "still there?"}), self.bearer)
        assert (answer.status_code, answer.json()) == (200, [])
        assert texts_of(self.served.agent)[before:] == ["still there?"]
        self.served.agent.messages.clear()


@pytest_asyncio.fixture(params=[None, REST_TOKEN], ids=["no-token", "token"])
async def rest(request: pytest.FixtureRequest) -> AsyncIterator[RestRig]:
    async with serve_rest(RestInput(token=request.param), RecordingAgent()) as served:
        yield RestRig(served, request.param)


@pytest_asyncio.fixture
async def rest_locked() -> AsyncIterator[RestRig]:
    channel = RestInput.from_credentials(None, {"FIRSTREPLY_REST_TOKEN": REST_TOKEN})
    async with serve_rest(channel, RecordingAgent()) as served:
        yield RestRig(served, REST_TOKEN)


SENDERS = customer_texts(MAX_SENDER_CHARS, min_size=1).filter(str.strip)
REST_REQUESTS = st.fixed_dictionaries(
    {"sender": SENDERS, "message": customer_texts(MAX_MESSAGE_CHARS)},
    optional={"metadata": st.dictionaries(st.text(CHARACTERS, max_size=8), JSON_VALUES, max_size=4)},
)


@st.composite
def malformed_rest_requests(draw: st.DrawFn) -> tuple[bytes, set[int]]:
    """A body that must not reach Rasa, and the statuses that may answer it."""
    valid = draw(REST_REQUESTS)
    flaw = draw(st.sampled_from(["bytes", "wrong type", "missing", "blank sender", "long sender", "long message"]))
    if flaw == "bytes":
        return draw(ANY_BODY), {400, 413}
    if flaw == "wrong type":
        key = draw(st.sampled_from(["sender", "message", "metadata", "input_channel"]))
        valid[key] = draw(not_a(str) if key != "metadata" else not_a(dict, type(None)))
        return dumps(valid), {400}
    if flaw == "missing":
        del valid[draw(st.sampled_from(["sender", "message"]))]
        return dumps(valid), {400}
    if flaw == "blank sender":
        valid["sender"] = draw(st.text(" \t\r\n\u00a0\u2003", max_size=10))
        return dumps(valid), {400}
    if flaw == "long sender":
        valid["sender"] = draw(customer_texts(4 * MAX_SENDER_CHARS, min_size=MAX_SENDER_CHARS + 1))
        return dumps(valid), {400}
    valid["message"] = draw(customer_texts(3 * MAX_MESSAGE_CHARS, min_size=MAX_MESSAGE_CHARS + 1))
    return dumps(valid), {413}


@pytest.mark.asyncio
@fuzz_settings(MANY)
@given(body=st.one_of(ANY_BODY, REST_REQUESTS.map(dumps)), authorization=wrong_secrets(REST_TOKEN).flatmap(
    lambda secret: st.sampled_from([None, b"Bearer " + secret, b"bearer " + secret, b"Basic " + secret, secret])
    if secret is not None else st.none()
).filter(sendable))  # fmt: skip
async def test_rest_without_the_bearer_token_is_a_401_whatever_the_body(
    rest_locked: RestRig, body: bytes, authorization: bytes | None
) -> None:
    rest_locked.reset()
    answer = await rest_locked.served.post(body, authorization)

    assert (answer.status_code, answer.json()) == (401, {"error": "missing or wrong bearer token"})
    assert rest_locked.served.agent.messages == []
    await rest_locked.still_serves()


@pytest.mark.asyncio
@fuzz_settings(MANY)
@given(case=malformed_rest_requests())
async def test_rest_a_malformed_body_is_a_4xx_and_reaches_nobody(rest: RestRig, case: tuple[bytes, set[int]]) -> None:
    rest.reset()
    body, statuses = case
    answer = await rest.served.post(body, rest.bearer)

    assert answer.status_code in statuses, answer.text[:300]
    assert set(answer.json()) == {"error"}
    assert rest.served.agent.messages == []
    await rest.still_serves()


@pytest.mark.asyncio
@fuzz_settings(MANY)
@given(request=REST_REQUESTS)
async def test_rest_a_valid_request_reaches_rasa_once_with_its_text(rest: RestRig, request: dict[str, Any]) -> None:
    rest.reset()
    answer = await rest.served.post(dumps(request), rest.bearer)

    assert (answer.status_code, answer.json()) == (200, [])
    [message] = rest.served.agent.messages
    # Rasa's UserMessage strips the text; nothing else changes it.
    assert (message.text, message.sender_id, message.input_channel) == (
        request["message"].strip(), request["sender"], "rest",
    )  # fmt: skip
    assert message.metadata == request.get("metadata")


@pytest.mark.asyncio
@fuzz_settings(FEW)
@given(body=huge_bodies(lambda text: dumps({"sender": "maria", "message": text})), authorized=st.booleans())
async def test_rest_a_huge_body_is_a_4xx(rest_locked: RestRig, body: bytes, authorized: bool) -> None:
    rest_locked.reset()
    answer = await rest_locked.served.post(body, rest_locked.bearer if authorized else None)

    assert answer.status_code in ({400, 413} if authorized else {401})
    assert rest_locked.served.agent.messages == []
    await rest_locked.still_serves()


# --- Telegram ----------------------------------------------------------------------------------


@dataclass
class TelegramRig(Rig):
    served: TelegramServed
    api: FakeTelegramAPI
    watch: TableWatch
    # Above the ids the update strategies draw (at most 2**40), so a probe is never a copy.
    update_ids: Iterator[int] = field(default_factory=lambda: itertools.count(10**13))

    async def post(self, body: bytes, secret: bytes | str | None = TELEGRAM_SECRET) -> httpx.Response:
        headers: dict[str, bytes | str] = {"Content-Type": "application/json"}
        if secret is not None:
            headers[SECRET_HEADER] = secret
        answer = await self.served.client.post(TELEGRAM_WEBHOOK, content=body, headers=headers)
        await self.served.channel.tasks.wait()
        return answer

    async def still_serves(self) -> None:
        before = len(self.served.agent.messages)
        answer = await self.post(dumps(message_update(next(self.update_ids), text="still there?")))
        assert (answer.status_code, answer.json()) == (200, {"ok": True})
        assert texts_of(self.served.agent)[before:] == ["still there?"]
        self.served.agent.messages.clear()


@pytest.fixture
def telegram_api() -> Iterator[FakeTelegramAPI]:
    with FakeTelegramAPI() as fake:
        yield fake


@pytest_asyncio.fixture
async def telegram(telegram_api: FakeTelegramAPI, db_url: str) -> AsyncIterator[TelegramRig]:
    settings = TelegramSettings(TELEGRAM_TOKEN, TELEGRAM_SECRET, telegram_api.base_url, "firstreply_test_bot")
    channel = TelegramInput(settings, store=ChannelStore.from_url(db_url))
    watch = TableWatch(db_url, [seen_updates, inbox, replies, button_payloads])
    async with serve_telegram(channel, RecordingAgent()) as served:
        yield TelegramRig(served, telegram_api, watch)
    watch.dispose()
    channel.store.dispose()


TELEGRAM_TEXTS = st.one_of(customer_texts(TELEGRAM_CAP, min_size=1), SLASHY_TEXTS)


@st.composite
def telegram_updates(draw: st.DrawFn) -> dict[str, Any]:
    """A well-formed update: a private text or captioned message, an edit, or a button press."""
    kind = draw(st.sampled_from(["message", "edited_message", "caption", "button"]))
    update_id = draw(st.integers(1, 2**40))
    if kind == "button":
        return callback_update(update_id, draw(st.text(max_size=64)))
    if kind == "caption":
        photo = [{"file_id": "ph1", "file_unique_id": "u1", "width": 90, "height": 90}]
        return message_update(update_id, caption=draw(TELEGRAM_TEXTS), photo=photo)
    return message_update(update_id, kind=kind, text=draw(TELEGRAM_TEXTS))


def reply_chain(depth: int) -> bytes:
    """A private message replying to a message replying to ... ``depth`` deep."""
    message: dict[str, Any] = {"message_id": 1, "date": 1714986000, "chat": PRIVATE_CHAT, "text": "deep"}
    for number in range(2, depth + 2):
        message = {"message_id": number, "date": 1714986000, "chat": PRIVATE_CHAT, "text": "re",
                   "reply_to_message": message}  # fmt: skip
    return dumps({"update_id": depth, "message": message})


@st.composite
def mistyped(draw: st.DrawFn, valid: st.SearchStrategy[dict[str, Any]]) -> dict[str, Any]:
    return with_wrong_type(draw(valid), draw)


@pytest.mark.asyncio
@fuzz_settings(MANY)
@given(
    secret=wrong_secrets(TELEGRAM_SECRET).filter(sendable),
    body=st.one_of(telegram_updates().map(dumps), ANY_BODY),
)
async def test_telegram_without_the_secret_is_a_401_and_leaves_no_trace(
    telegram: TelegramRig, secret: bytes | None, body: bytes
) -> None:
    telegram.reset()
    stored, calls = telegram.watch.snapshot(), len(telegram.api.calls(answered=None))
    answer = await telegram.post(body, secret)

    assert (answer.status_code, answer.json()) == (401, {"ok": False, "error": "unauthorized"})
    assert telegram.served.agent.messages == []
    assert telegram.watch.snapshot() == stored
    assert len(telegram.api.calls(answered=None)) == calls
    await telegram.still_serves()


@pytest.mark.asyncio
@fuzz_settings(MANY)
@given(
    body=st.one_of(ANY_BODY, mistyped(telegram_updates()).map(dumps), st.sampled_from([100, 400, 900]).map(reply_chain))
)
@example(body=dumps(message_update(900_001, text=5)))
@example(body=dumps(callback_update(900_002, ["p:key"])))  # type: ignore[arg-type]
async def test_telegram_a_malformed_update_is_a_400_or_an_ack_and_nothing_unreadable_reaches_rasa(
    telegram: TelegramRig, body: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    telegram.reset()
    refusal = {"ok": False, "error": "malformed update"}
    await refused_or_ignored(telegram.post, body, refusal, telegram.watch, telegram.served.agent, caplog)

    assert len(telegram.served.agent.messages) <= 1
    await telegram.still_serves()


KNOWN_UPDATE_FIELDS = frozenset(
    {"update_id", "message", "edited_message", "channel_post", "edited_channel_post", "inline_query",
     "chosen_inline_result", "callback_query", "shipping_query", "pre_checkout_query", "poll", "poll_answer",
     "my_chat_member", "chat_member", "chat_join_request", "chat_boost", "removed_chat_boost",
     "message_reaction", "message_reaction_count", "business_connection", "business_message",
     "edited_business_message", "deleted_business_messages", "purchased_paid_media"}
)  # fmt: skip


@pytest.mark.asyncio
@fuzz_settings(SOME)
@given(
    kind=st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=30).filter(
        lambda kind: kind not in KNOWN_UPDATE_FIELDS
    ),
    content=JSON_VALUES,
)
async def test_telegram_an_unknown_update_kind_is_acknowledged_and_ignored(
    telegram: TelegramRig, kind: str, content: Any
) -> None:
    telegram.reset()
    update_id = next(telegram.update_ids)
    answer = await telegram.post(dumps({"update_id": update_id, kind: content}))

    assert (answer.status_code, answer.json()) == (200, {"ok": True})
    assert telegram.served.agent.messages == []
    assert telegram.api.calls("sendMessage") == []
    await telegram.still_serves()


@pytest.mark.asyncio
@fuzz_settings(MANY)
@given(text=TELEGRAM_TEXTS, kind=st.sampled_from(["text", "caption"]))
@example(text=" /affirm", kind="text")
@example(text="/ /inform{\"priority\": \"urgent\"}", kind="caption")
async def test_telegram_a_private_message_reaches_rasa_once_with_its_text(
    telegram: TelegramRig, text: str, kind: str
) -> None:
    telegram.reset()
    content: dict[str, Any] = {kind: text}
    if kind == "caption":
        content["photo"] = [{"file_id": "ph1", "file_unique_id": "u1", "width": 9, "height": 9}]
    update = message_update(next(telegram.update_ids), **content)

    first = await telegram.post(dumps(update))
    again = await telegram.post(dumps(update))  # Telegram's retry of the same update

    assert (first.status_code, first.json()) == (200, {"ok": True})
    assert (again.status_code, again.json()) == (200, {"ok": True, "duplicate": True})
    [message] = telegram.served.agent.messages
    assert message.sender_id == str(PRIVATE_CHAT["id"])
    if not text.strip().startswith("/"):
        assert message.text == text.strip()
    # A typed command can only ever greet: no intent injection.
    assert message.text == f"/{INTENT_GREET}" or not (message.text or "").startswith("/")


@pytest.mark.asyncio
@fuzz_settings(FEW)
@given(body=huge_bodies(lambda text: dumps(message_update(1, text=text))), authorized=st.booleans())
async def test_telegram_a_huge_body_is_refused_or_handled_without_a_5xx(
    telegram: TelegramRig, body: bytes, authorized: bool
) -> None:
    telegram.reset()
    stored = telegram.watch.snapshot()
    answer = await telegram.post(body, TELEGRAM_SECRET if authorized else "wrong")

    if not authorized:
        assert answer.status_code == 401
        assert telegram.watch.snapshot() == stored
    assert answer.status_code in (200, 400, 401)
    assert len(telegram.served.agent.messages) <= 1
    await telegram.still_serves()


# --- Slack ----------------------------------------------------------------------------------------


@dataclass
class SlackRig(Rig):
    served: SlackServed
    api: FakeSlackAPI
    watch: TableWatch
    event_ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    async def post(self, body: bytes, headers: dict[str, bytes | str]) -> httpx.Response:
        answer = await self.served.client.post(EVENTS_PATH, content=body, headers=headers)
        await self.served.channel.tasks.wait()
        return answer

    def fresh_id(self) -> str:
        return f"EvFuzz{next(self.event_ids)}"

    async def still_serves(self) -> None:
        before = len(self.served.agent.messages)
        answer = await self.served.event(event_body(dm("still there?"), self.fresh_id()))
        assert answer.status_code == 200
        assert texts_of(self.served.agent)[before:] == ["still there?"]
        self.served.agent.messages.clear()


@pytest.fixture
def slack_api() -> Iterator[FakeSlackAPI]:
    with FakeSlackAPI() as fake:
        fake.add_user(SLACK_MARIA, "Maria Silva", display_name="maria", locale="pt-BR")
        yield fake


@pytest_asyncio.fixture
async def slack(slack_api: FakeSlackAPI, db_url: str) -> AsyncIterator[SlackRig]:
    settings = SlackSettings(SLACK_TOKEN, SLACK_SECRET, slack_api.base_url)
    channel = SlackDMInput(settings, ChannelStore.from_url(db_url), build_client(settings, backoff_seconds=0.01))
    watch = TableWatch(db_url, [seen_updates, inbox, replies, button_payloads])
    async with serve_slack(channel, RecordingAgent()) as served:  # type: ignore[arg-type]
        yield SlackRig(served, slack_api, watch)
    watch.dispose()
    channel.store.dispose()


def as_form(payload: Any) -> bytes:
    return urlencode({"payload": json.dumps(payload)}).encode()


def content_type_of(body: bytes) -> str:
    return "application/x-www-form-urlencoded" if body.startswith(b"payload=") else "application/json"


SLACK_TEXTS = st.one_of(customer_texts(SLACK_CAP), SLASHY_TEXTS)


@st.composite
def slack_bodies(draw: st.DrawFn) -> bytes:
    """What Slack posts: a DM event (JSON) or a button press (form), well-formed."""
    if draw(st.booleans()):
        return dumps(event_body(dm(escape(draw(SLACK_TEXTS))), draw(st.text("abcdef0123456789", min_size=1))))
    return as_form(button_press(value=draw(st.text(CHARACTERS, min_size=1, max_size=200))))


@st.composite
def unsigned_headers(draw: st.DrawFn, body: bytes) -> dict[str, bytes | str]:
    """Headers that do not prove Slack sent ``body``: no, wrong, stale or garbled signature."""
    now = int(time.time())
    flaw = draw(st.sampled_from(["none", "no signature", "no timestamp", "wrong secret", "stale", "future",
                                 "garbled timestamp", "garbled signature", "other body"]))  # fmt: skip
    headers: dict[str, bytes | str] = {"Content-Type": content_type_of(body)}
    if flaw == "none":
        return headers
    good = signed(body)
    if flaw in ("no signature", "no timestamp"):
        kept = "X-Slack-Request-Timestamp" if flaw == "no signature" else "X-Slack-Signature"
        return {**headers, kept: good[kept]}
    if flaw == "wrong secret":
        return {**headers, **signed(body, draw(wrong_secrets(SLACK_SECRET).filter(bool)).decode("latin-1"))}
    if flaw in ("stale", "future"):
        age = draw(st.integers(301, 10**9))
        return {**headers, **signed(body, timestamp=now - age if flaw == "stale" else now + age)}
    if flaw == "garbled timestamp":
        stamp = draw(HEADER_BYTES.filter(lambda raw: not raw.isdigit() or abs(int(raw) - now) > 300))
        digest = hmac.new(SLACK_SECRET.encode(), b"v0:" + stamp + b":" + body, hashlib.sha256).hexdigest()
        return {**headers, "X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": f"v0={digest}"}
    if flaw == "garbled signature":
        garbled = draw(st.one_of(HEADER_BYTES, HEADER_BYTES.map(lambda raw: b"v0=" + raw)))
        return {**headers, "X-Slack-Request-Timestamp": good["X-Slack-Request-Timestamp"], "X-Slack-Signature": garbled}
    other = draw(ANY_BODY.filter(lambda raw: raw != body))
    return {**headers, **signed(other)}


@pytest.mark.asyncio
@fuzz_settings(MANY)
@given(data=st.data(), body=st.one_of(slack_bodies(), ANY_BODY))
async def test_slack_without_a_valid_fresh_signature_is_a_4xx_and_leaves_no_trace(
    slack: SlackRig, data: st.DataObject, body: bytes
) -> None:
    slack.reset()
    headers = data.draw(unsigned_headers(body), label="headers")
    stored, calls = slack.watch.snapshot(), len(slack.api.calls(answered=None))
    answer = await slack.post(body, headers)

    assert answer.status_code in (400, 401), answer.text[:300]
    assert slack.served.agent.messages == []
    assert slack.watch.snapshot() == stored
    assert len(slack.api.calls(answered=None)) == calls
    await slack.still_serves()


@st.composite
def slack_mistyped(draw: st.DrawFn) -> bytes:
    if draw(st.booleans()):
        return dumps(with_wrong_type(event_body(dm(draw(SLACK_TEXTS)), draw(st.text(min_size=1))), draw))
    return as_form(with_wrong_type(button_press(), draw))


@pytest.mark.asyncio
@fuzz_settings(MANY)
@given(body=st.one_of(ANY_BODY, slack_mistyped()))
async def test_slack_a_signed_malformed_request_is_never_a_5xx(slack: SlackRig, body: bytes) -> None:
    slack.reset()
    answer = await slack.post(body, {"Content-Type": content_type_of(body), **signed(body)})

    assert answer.status_code < 500, answer.text[:300]
    assert len(slack.served.agent.messages) <= 1
    assert all(isinstance(text, str) for text in texts_of(slack.served.agent))
    await slack.still_serves()


# Signed bodies with the right envelope but a field our listeners read missing or of
# another type. Slack never sends these (they need the signing secret), but each one
# makes a listener fail after the ack, or lets a non-user id through as the sender.
SIGNED_BUT_ODD = {
    "no event_id": dumps({key: value for key, value in event_body(dm("no id")).items() if key != "event_id"}),
    "user not an id": dumps(event_body({**dm("who?"), "user": {"id": SLACK_MARIA}}, "EvOdd2")),
    "no channel": dumps(event_body({key: value for key, value in dm("x").items() if key != "channel"}, "EvOdd3")),
    "files not objects": dumps(event_body({**dm("x"), "files": ["F1"]}, "EvOdd4")),
    "press without user": as_form({key: value for key, value in button_press().items() if key != "user"}),
    "press user not an object": as_form({**button_press(message_ts="1.5"), "user": SLACK_MARIA}),
    "press text not an object": as_form({**button_press(message_ts="1.6"),
                                         "actions": [{"action_id": "fr_button_0", "value": "x", "text": "t"}]}),
}  # fmt: skip


@pytest.mark.asyncio
@pytest.mark.parametrize("body", SIGNED_BUT_ODD.values(), ids=SIGNED_BUT_ODD.keys())
async def test_slack_a_signed_body_of_the_wrong_shape_is_refused_before_the_listeners(
    slack: SlackRig, body: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    answer = await slack.post(body, {"Content-Type": content_type_of(body), **signed(body)})

    assert answer.status_code == 400
    assert [record.getMessage() for record in caplog.records if record.levelname == "ERROR"] == []
    assert slack.served.agent.messages == []


@pytest.mark.asyncio
@fuzz_settings(SOME)
@given(
    kind=st.text("abcdefghijklmnopqrstuvwxyz_.", min_size=1, max_size=30).filter(
        lambda kind: kind not in ("message", "app_mention")
    ),
    extra=st.dictionaries(st.text("abcdefghijklmnopqrstuvwxyz_", max_size=10), JSON_VALUES, max_size=4),
)
async def test_slack_an_unknown_event_type_is_acknowledged_and_ignored(
    slack: SlackRig, kind: str, extra: dict[str, Any]
) -> None:
    slack.reset()
    event = {**extra, "type": kind, "user": SLACK_MARIA, "channel": "D0MARIA", "event_ts": "1.1"}
    answer = await slack.served.event(event_body(event, slack.fresh_id()))

    assert answer.status_code < 500
    assert answer.status_code in (200, 404), answer.text[:300]
    assert slack.served.agent.messages == []
    assert slack.api.posted() == []
    await slack.still_serves()


@pytest.mark.asyncio
@fuzz_settings(MANY)
@given(text=SLACK_TEXTS)
@example(text="/ /affirm")
async def test_slack_a_dm_reaches_rasa_once_with_the_text_the_customer_typed(slack: SlackRig, text: str) -> None:
    slack.reset()
    body = event_body(dm(escape(text)), slack.fresh_id())  # Slack escapes &, < and > in what was typed

    first = await slack.served.event(body)
    retry = {"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"}
    again = await slack.served.event(body, headers=retry)

    assert (first.status_code, again.status_code) == (200, 200)
    expected = without_command_prefix(text)  # no intent injection
    assert texts_of(slack.served.agent) == ([expected] if expected else [])


@pytest.mark.asyncio
@fuzz_settings(SOME)
@given(value=st.text(CHARACTERS, min_size=1, max_size=2000).filter(str.strip))
async def test_slack_a_button_press_reaches_rasa_once_with_its_value(slack: SlackRig, value: str) -> None:
    slack.reset()
    press = button_press(value=value, message_ts=f"1800000000.{next(slack.event_ids):06d}")

    first = await slack.served.interaction(press)
    again = await slack.served.interaction(press)

    assert (first.status_code, again.status_code) == (200, 200)
    assert texts_of(slack.served.agent) == [value.strip()]


@pytest.mark.asyncio
@fuzz_settings(FEW)
@given(body=huge_bodies(lambda text: dumps(event_body(dm(text)))), authorized=st.booleans())
async def test_slack_a_huge_body_is_never_a_5xx(slack: SlackRig, body: bytes, authorized: bool) -> None:
    slack.reset()
    stored = slack.watch.snapshot()
    headers = {"Content-Type": "application/json", **signed(body, SLACK_SECRET if authorized else "wrong")}
    answer = await slack.post(body, headers)

    assert answer.status_code < 500
    if not authorized:
        assert answer.status_code in (400, 401)
        assert (slack.watch.snapshot(), slack.served.agent.messages) == (stored, [])
    await slack.still_serves()


# --- web chat -------------------------------------------------------------------------------------


@dataclass
class WebChatRig(Rig):
    served: WebChatServed
    watch: TableWatch
    session: dict[str, str]
    client_ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def fresh_client_id(self) -> str:
        return f"fuzz-client-{next(self.client_ids):06d}"

    def body(self, message: str, **extra: Any) -> dict[str, Any]:
        return {**self.session, "client_id": self.fresh_client_id(), "message": message, **extra}

    async def post(self, body: bytes) -> httpx.Response:
        return await self.served.client.post(f"{WEBCHAT}/message", content=body,
                                             headers={"Content-Type": "application/json"})  # fmt: skip

    async def still_serves(self) -> None:
        before = len(self.served.agent.messages)
        answer = await self.post(dumps(self.body("still there?")))
        assert answer.status_code == 200, answer.text
        assert texts_of(self.served.agent)[before:] == ["still there?"]
        self.served.agent.messages.clear()


@pytest_asyncio.fixture
async def webchat(db_url: str) -> AsyncIterator[WebChatRig]:
    channel = WebChatInput(WEBCHAT_SECRET, WebChatStore.from_url(db_url))
    watch = TableWatch(db_url, [webchat_messages])
    async with serve_webchat(channel, WebChatAgent()) as served:
        yield WebChatRig(served, watch, await served.session())
    watch.dispose()


def token_for(sender: str, secret: str = WEBCHAT_SECRET) -> str:
    return hmac.new(secret.encode(), sender.encode(), hashlib.sha256).hexdigest()


WEBCHAT_TEXTS = st.one_of(customer_texts(MAX_TEXT_CHARS, min_size=1), SLASHY_TEXTS).filter(without_command_prefix)
# Senders as JSON can carry what UTF-8 cannot: lone surrogates.
ODD_SENDERS = st.text(st.one_of(CHARACTERS, st.characters(whitelist_categories=("Cs",))), min_size=1, max_size=40)


@st.composite
def unauthentic_messages(draw: st.DrawFn, session: dict[str, str], body: dict[str, Any]) -> bytes:
    """A message body whose token was not issued for its sender by this deployment."""
    right = session["token"]
    flaw = draw(st.sampled_from(["token", "sender", "both", "other secret"]))
    wrong_tokens = st.one_of(
        st.sampled_from([right.upper(), right[:-1], right + "0", right[::-1], "0" * 64, token_for("webchat-x")]),
        st.text(CHARACTERS, min_size=1, max_size=80),
        ODD_SENDERS,
    ).filter(lambda token: token != right)
    if flaw in ("token", "both"):
        body["token"] = draw(wrong_tokens)
    if flaw in ("sender", "both"):
        body["sender"] = draw(ODD_SENDERS.filter(lambda sender: sender != session["sender"] and sender.strip()))
    if flaw == "other secret":
        body["token"] = token_for(session["sender"], "another-deployments-secret-0123")
    return json.dumps(body).encode()  # ASCII escapes: lone surrogates survive as \udXXX


@pytest.mark.asyncio
@fuzz_settings(MANY)
@given(data=st.data(), text=customer_texts(MAX_TEXT_CHARS, min_size=1))
async def test_webchat_a_message_without_its_sessions_token_is_a_4xx_and_leaves_no_trace(
    webchat: WebChatRig, data: st.DataObject, text: str
) -> None:
    webchat.reset()
    body = data.draw(unauthentic_messages(webchat.session, webchat.body(text)), label="body")
    stored = webchat.watch.snapshot()
    answer = await webchat.post(body)

    assert answer.status_code in (400, 401), answer.text[:300]
    assert webchat.served.agent.messages == []
    assert webchat.watch.snapshot() == stored
    await webchat.still_serves()


@st.composite
def malformed_webchat_messages(draw: st.DrawFn, rig: WebChatRig) -> bytes:
    """An authentic session's message that is malformed: not JSON, a wrong type, a bad value."""
    body = rig.body(draw(WEBCHAT_TEXTS))
    flaw = draw(st.sampled_from(["bytes", "wrong type", "missing", "bad client_id", "no text", "long text",
                                 "long name", "bad payload", "lone surrogate"]))  # fmt: skip
    if flaw == "bytes":
        return draw(ANY_BODY)
    if flaw == "wrong type":
        key = draw(st.sampled_from(["sender", "token", "client_id", "message", "name", "payload", "metadata"]))
        body[key] = draw(not_a(str, type(None)) if key != "metadata" else not_a(dict, type(None)))
    elif flaw == "missing":
        del body[draw(st.sampled_from(["sender", "token", "client_id", "message"]))]
    elif flaw == "bad client_id":
        body["client_id"] = draw(st.text(CHARACTERS, max_size=80).filter(
            lambda cid: not (8 <= len(cid) <= 64 and all(c.isascii() and (c.isalnum() or c in "_-") for c in cid))
        ))  # fmt: skip
    elif flaw == "no text":
        body["message"] = draw(st.text(" \t\n/\u00a0", max_size=20))
    elif flaw == "long text":
        body["message"] = draw(customer_texts(3 * MAX_TEXT_CHARS, min_size=MAX_TEXT_CHARS + 1).filter(
            lambda t: len(t.strip()) > MAX_TEXT_CHARS))  # fmt: skip
    elif flaw == "long name":
        body["name"] = draw(customer_texts(200, min_size=MAX_NAME_CHARS + 1).filter(
            lambda n: len(n.strip()) > MAX_NAME_CHARS))  # fmt: skip
    elif flaw == "bad payload":
        body["payload"] = draw(st.one_of(st.just(""), customer_texts(3000, min_size=1025)))
    else:
        body["message"] = draw(st.sampled_from(["\ud800", "hi \udfff there", "\udbff\udbff"]))
    return json.dumps(body).encode()


@pytest.mark.asyncio
@fuzz_settings(MANY)
@given(data=st.data())
async def test_webchat_a_malformed_message_is_a_4xx_and_leaves_no_trace(
    webchat: WebChatRig, data: st.DataObject
) -> None:
    webchat.reset()
    body = data.draw(malformed_webchat_messages(webchat), label="body")
    stored = webchat.watch.snapshot()
    answer = await webchat.post(body)

    assert answer.status_code in (400, 401, 413), answer.text[:300]
    assert set(answer.json()) == {"error"}
    assert webchat.served.agent.messages == []
    assert webchat.watch.snapshot() == stored
    await webchat.still_serves()


@pytest.mark.asyncio
@fuzz_settings(MANY)
@given(
    text=WEBCHAT_TEXTS,
    name=st.one_of(st.none(), customer_texts(MAX_NAME_CHARS)),
)
@example(text="/\u00a0/affirm", name=None)
async def test_webchat_a_message_reaches_rasa_once_and_is_kept_as_typed(
    webchat: WebChatRig, text: str, name: str | None
) -> None:
    webchat.reset()
    body = webchat.body(text, **({"name": name} if name is not None else {}))

    first = await webchat.post(dumps(body))
    again = await webchat.post(dumps(body))  # the browser's retry after a lost answer

    assert first.status_code == again.status_code == 200, first.text[:300]
    assert (first.json()["duplicate"], again.json()["duplicate"]) == (False, True)
    assert first.json()["customer"]["text"] == again.json()["customer"]["text"] == text.strip()
    [message] = webchat.served.agent.messages
    assert message.text == without_command_prefix(text)  # no intent injection
    assert message.metadata == ({"customer_name": name.strip()} if name and name.strip() else None)
    history = await webchat.served.history(webchat.session)
    assert [m["text"] for m in history if m["from"] == "customer"][-1] == text.strip()


@pytest.mark.asyncio
@fuzz_settings(MANY)
@given(
    sender=st.one_of(st.none(), st.just("own"), st.text(CHARACTERS, max_size=40)),
    token=st.one_of(st.none(), st.just("own"), st.text(CHARACTERS, max_size=80), HEADER_BYTES).filter(
        lambda token: token is None or sendable(b"Bearer " + (token if isinstance(token, bytes) else token.encode()))
    ),
    in_header=st.booleans(),
    after=st.one_of(st.none(), st.text(CHARACTERS, max_size=10), st.integers(-(10**30), 10**30).map(str),
                    st.sampled_from(["²", "٣", "9" * 5000, "0" * 30 + "1", " 1"])),  # fmt: skip
)
@example(sender="own", token="own", in_header=True, after="²")  # a digit to isdigit(), not to int()
@example(sender="own", token="own", in_header=False, after="9" * 5000)
async def test_webchat_history_is_never_a_5xx_and_only_for_the_sessions_token(
    webchat: WebChatRig, sender: str | None, token: str | bytes | None, in_header: bool, after: str | None
) -> None:
    webchat.reset()
    own_sender, own_token = webchat.session["sender"], webchat.session["token"]
    sender = own_sender if sender == "own" else sender
    token = own_token if token == "own" else token
    params = {key: value for key, value in (("sender", sender), ("after", after)) if value is not None}
    headers: dict[str, bytes | str] = {}
    if token is not None and in_header:
        headers["Authorization"] = b"Bearer " + (token if isinstance(token, bytes) else token.encode())
    elif token is not None:
        params["token"] = token.decode("latin-1") if isinstance(token, bytes) else token
    stored = webchat.watch.snapshot()
    answer = await webchat.served.client.get(f"{WEBCHAT}/history", params=params, headers=headers)

    assert answer.status_code in (200, 400, 401), answer.text[:300]
    if answer.status_code == 200:
        assert (sender, token) == (own_sender, own_token)
        assert isinstance(answer.json()["messages"], list)
    assert webchat.watch.snapshot() == stored
    await webchat.still_serves()


@pytest.mark.asyncio
@fuzz_settings(SOME)
@given(method=st.sampled_from(["GET", "POST"]), body=ANY_BODY, junk=st.dictionaries(
    st.sampled_from(["Authorization", "Content-Type", "Cookie", "X-Forwarded-For"]), HEADER_BYTES, max_size=3,
))  # fmt: skip
async def test_webchat_a_session_is_issued_whatever_comes_with_the_request_and_nothing_is_stored(
    webchat: WebChatRig, method: str, body: bytes, junk: dict[str, bytes]
) -> None:
    webchat.reset()
    stored = webchat.watch.snapshot()
    answer = await webchat.served.client.request(method, f"{WEBCHAT}/session", content=body, headers=junk)

    assert answer.status_code == 200
    session = answer.json()
    assert session["token"] == token_for(session["sender"]) and session["sender"] != webchat.session["sender"]
    assert webchat.watch.snapshot() == stored


@pytest.mark.asyncio
@fuzz_settings(FEW)
@given(data=st.data())
async def test_webchat_a_huge_body_is_a_413_and_leaves_no_trace(webchat: WebChatRig, data: st.DataObject) -> None:
    webchat.reset()
    body = data.draw(huge_bodies(lambda text: dumps(webchat.body(text))), label="body")
    stored = webchat.watch.snapshot()
    answer = await webchat.post(body)

    assert (answer.status_code, webchat.served.agent.messages) == (413, [])
    assert webchat.watch.snapshot() == stored
    await webchat.still_serves()


@pytest.mark.asyncio
async def test_rest_and_webchat_routes_answer_other_methods_without_a_5xx(rest: RestRig, webchat: WebChatRig) -> None:
    rest.reset()
    for client, path in ((rest.served.client, REST_WEBHOOK), (webchat.served.client, f"{WEBCHAT}/message"),
                         (webchat.served.client, f"{WEBCHAT}/history")):  # fmt: skip
        for method in ("GET", "PUT", "DELETE", "PATCH", "OPTIONS"):
            answer = await client.request(method, path, content=b"\xff")
            assert answer.status_code < 500, (method, path, answer.status_code)
    assert rest.served.agent.messages == webchat.served.agent.messages == []


# --- X ---------------------------------------------------------------------------------------------

X_CAP = 10_000  # what X accepts in one DM


@dataclass
class XRig(Rig):
    served: XServed
    api: FakeXAPI
    watch: TableWatch
    event_ids: Iterator[int] = field(default_factory=lambda: itertools.count(10**15))

    async def post(self, body: bytes, headers: dict[str, bytes | str] | None = None) -> httpx.Response:
        answer = await self.served.client.post(
            X_WEBHOOK, content=body, headers=x_signed(body) if headers is None else headers  # type: ignore[arg-type]
        )
        await self.served.channel.tasks.wait()
        return answer

    async def still_serves(self) -> None:
        before = len(self.served.agent.messages)
        answer = await self.post(x_dm(str(next(self.event_ids)), "still there?"))
        assert (answer.status_code, answer.json()) == (200, {"ok": True})
        assert texts_of(self.served.agent)[before:] == ["still there?"]
        self.served.agent.messages.clear()


def x_dm(event_id: str, text: str) -> bytes:
    return x_activity(dms=[x_dm_event(event_id, X_MARIA, text)], users=[X_MARIA])


@pytest.fixture
def x_api() -> Iterator[FakeXAPI]:
    with FakeXAPI() as fake:
        yield fake


@pytest_asyncio.fixture
async def x(x_api: FakeXAPI, db_url: str) -> AsyncIterator[XRig]:
    settings = XSettings.from_credentials({"base_url": x_api.base_url}, X_ENV)
    channel = XInput(settings, X_REPLY, ChannelStore.from_url(db_url))
    watch = TableWatch(db_url, [inbox, replies, offered_choices, public_threads])
    async with serve_x(channel, RecordingAgent()) as served:
        yield XRig(served, x_api, watch)
    watch.dispose()
    channel.store.dispose()


@st.composite
def x_bodies(draw: st.DrawFn) -> dict[str, Any]:
    """What X posts: a DM or a public post that mentions the brand, well-formed."""
    event_id = str(draw(st.integers(1, 2**60)))
    text = draw(customer_texts(280))
    if draw(st.booleans()):
        return json.loads(x_activity(dms=[x_dm_event(event_id, X_MARIA, text)], users=[X_MARIA]))
    return json.loads(x_activity(posts=[x_post(event_id, X_MARIA, "@NorthwindHelp " + text)]))


@st.composite
def x_unsigned(draw: st.DrawFn, body: bytes) -> dict[str, bytes | str]:
    """Headers that do not prove X sent ``body``: no, wrong, garbled signature, or another body's."""
    flaw = draw(st.sampled_from(["none", "wrong secret", "garbled", "other body"]))
    if flaw == "none":
        return {"Content-Type": "application/json"}
    if flaw == "wrong secret":
        other = draw(wrong_secrets(X_CONSUMER_SECRET).filter(bool)).decode("latin-1")
        return x_signed(body, other)  # type: ignore[return-value]
    if flaw == "garbled":
        garbled = draw(st.one_of(HEADER_BYTES, HEADER_BYTES.map(lambda raw: b"sha256=" + raw)))
        return {"Content-Type": "application/json", "x-twitter-webhooks-signature": garbled}
    return x_signed(draw(ANY_BODY.filter(lambda raw: raw != body)))  # type: ignore[return-value]


@pytest.mark.asyncio
@fuzz_settings(SOME)
@given(data=st.data(), body=st.one_of(x_bodies().map(dumps), ANY_BODY))
async def test_x_without_a_valid_signature_is_a_401_and_leaves_no_trace(
    x: XRig, data: st.DataObject, body: bytes
) -> None:
    x.reset()
    headers = data.draw(x_unsigned(body).filter(lambda h: all(sendable(v) for v in h.values())), label="headers")
    stored, calls = x.watch.snapshot(), len(x.api.calls(answered=None))
    answer = await x.post(body, headers)

    assert (answer.status_code, answer.json()) == (401, {"error": "unauthorized"})
    assert x.served.agent.messages == []
    assert x.watch.snapshot() == stored
    assert len(x.api.calls(answered=None)) == calls
    await x.still_serves()


@pytest.mark.asyncio
@fuzz_settings(SOME)
@given(body=st.one_of(ANY_BODY, mistyped(x_bodies()).map(dumps)))
async def test_x_a_malformed_body_is_a_400_or_an_ack_never_a_5xx(
    x: XRig, body: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    x.reset()
    stored = x.watch.snapshot()
    caplog.clear()
    answer = await x.post(body)
    failures = [r.getMessage() for r in caplog.records if handling_failed(r)]

    assert answer.status_code in (200, 400), answer.text[:300]
    assert failures == [], (body[:300], [repr(r.exc_info[1]) for r in caplog.records if r.exc_info])
    if answer.status_code == 400:
        assert answer.json()["error"].startswith("malformed event: ")
        assert x.served.agent.messages == [] and x.watch.snapshot() == stored
    assert all(isinstance(text, str) for text in texts_of(x.served.agent))
    await x.still_serves()


@pytest.mark.asyncio
@fuzz_settings(SOME)
@given(text=st.one_of(customer_texts(X_CAP), SLASHY_TEXTS).filter(lambda text: text.strip()))
async def test_x_a_dm_reaches_rasa_once_with_its_text(x: XRig, text: str) -> None:
    x.reset()
    body = x_dm(str(next(x.event_ids)), text)

    first, again = await x.post(body), await x.post(body)

    assert (first.json(), again.json()) == ({"ok": True}, {"ok": True, "duplicate": True})
    [message] = x.served.agent.messages
    assert message.sender_id == X_MARIA["id_str"]
    assert message.text == without_command_prefix(text) or not text.strip().lstrip("/").strip()


@pytest.mark.asyncio
@fuzz_settings(FEW)
@given(body=huge_bodies(lambda text: x_dm("1", text)), signed=st.booleans())
async def test_x_a_huge_body_is_refused_or_handled_without_a_5xx(x: XRig, body: bytes, signed: bool) -> None:
    x.reset()
    stored = x.watch.snapshot()
    answer = await x.post(body, None if signed else {"Content-Type": "application/json"})

    assert answer.status_code in ((200, 400, 413) if signed else (401, 413))
    if not signed:
        assert x.watch.snapshot() == stored
    assert len(x.served.agent.messages) <= 1
    await x.still_serves()
