"""The Slack DM channel: the real blueprint (a slack-bolt app) in Rasa's real Sanic app, the
real slack_sdk client against a local fake Web API (``tests/fakes/slack_api.py``), every
request signed as Slack signs it.

Rasa's agent is replaced by one that records each ``UserMessage`` and can reply through
the message's output channel, as Rasa does; given a real Rasa tracker store it also saves
the conversation as Rasa does (after the replies, not when handling fails). The inbox's
clock is the test's, so a retry is due when the test says.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import httpx
import pytest
import pytest_asyncio
import yaml
from prometheus_client import REGISTRY
from rasa.core.channels.channel import UserMessage
from rasa.core.tracker_store import InMemoryTrackerStore
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import BotUttered, UserUttered
from sanic import Sanic
from slack_sdk.errors import SlackApiError
from sqlalchemy.exc import OperationalError

from bot.channels.common import ChannelCredentialsError
from bot.channels.dedupe import ChannelStore
from bot.channels.inbox import MAX_ATTEMPTS, Inbox, inbox
from bot.channels.replies import HOLDING_REPLY
from bot.channels.slack import EVENTS_PATH, MENTION_REPLY, MENTION_REPLY_NO_DM, SlackDMInput, customer_text
from bot.channels.slack_client import ENV_BASE_URL, ENV_SIGNING_SECRET, ENV_TOKEN, SlackSettings, build_client
from bot.channels.slack_output import SlackDMOutput, escape, message_parts
from tests import channel_support
from tests.channel_support import logged_failure, served_app
from tests.fakes.server import ACCEPT_DROP
from tests.fakes.slack_api import APP_ID, BOT_ID, BOT_USER_ID, DROP_CONNECTION, TEAM_ID, TOKEN, FakeSlackAPI

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
EVENTS = "/webhooks/slack_dm/events"  # written out: the URL Slack is given must not change by accident
MARIA = "U0MARIA"
MARIA_DM = "D0MARIA"
PUBLIC = "C0GENERAL"
MARIA_METADATA = {"customer_name": "Maria Silva", "locale": "pt-BR", "slack_user_id": MARIA,
                  "slack_channel_id": MARIA_DM, "team_id": TEAM_ID}  # fmt: skip
TS = "1714986000.000100"
LATE = '/inform{"delivery_problem": "late"}'
FILE_NOTICE = "I can only read text, but I've attached your file to your case for the person who picks it up."
FILE_ASK = " Could you also tell me in a few words what it's about?"


def event_body(event: dict[str, Any], event_id: str = "Ev0001") -> dict[str, Any]:
    """An Events API envelope as Slack posts it."""
    return {
        "token": "legacy-verification-token", "team_id": TEAM_ID, "api_app_id": APP_ID, "event": event,
        "type": "event_callback", "event_id": event_id, "event_time": 1714986000,
        "authorizations": [{"enterprise_id": None, "team_id": TEAM_ID, "user_id": BOT_USER_ID, "is_bot": True,
                            "is_enterprise_install": False}],
    }  # fmt: skip


def dm(text: str = "Where is my parcel??", ts: str = TS, user: str = MARIA, **extra: Any) -> dict[str, Any]:
    """A ``message`` event in the app's DM with ``user``."""
    return {"type": "message", "channel": "D" + user[1:], "user": user, "text": text, "ts": ts, "event_ts": ts,
            "channel_type": "im", "team": TEAM_ID, **extra}  # fmt: skip


QUESTION_BLOCKS = [
    {"type": "section", "block_id": "q", "text": {"type": "mrkdwn", "text": "What&#39;s happening?"}},
    {"type": "actions", "block_id": "a", "elements": [
        {"type": "button", "action_id": "fr_button_0", "text": {"type": "plain_text", "text": "It's late"},
         "value": LATE},
        {"type": "button", "action_id": "fr_button_1", "text": {"type": "plain_text", "text": "Damaged"},
         "value": '/inform{"delivery_problem": "damaged"}'},
    ]},
]  # fmt: skip


def button_press(value: str = LATE, title: str = "It's late", message_ts: str = "1714986000.000200",
                 channel: str = MARIA_DM) -> dict[str, Any]:  # fmt: skip
    """A ``block_actions`` payload: Maria pressed a button under one of the app's messages."""
    return {
        "type": "block_actions", "api_app_id": APP_ID, "token": "legacy-verification-token",
        "user": {"id": MARIA, "username": "maria", "name": "maria", "team_id": TEAM_ID},
        "team": {"id": TEAM_ID, "domain": "brand"},
        "container": {"type": "message", "message_ts": message_ts, "channel_id": channel, "is_ephemeral": False},
        "channel": {"id": channel, "name": "directmessage"}, "trigger_id": "1.2.abc",
        "message": {"type": "message", "user": BOT_USER_ID, "bot_id": BOT_ID, "text": "What's happening?",
                    "ts": message_ts, "blocks": QUESTION_BLOCKS},
        "actions": [{"type": "button", "action_id": "fr_button_0", "block_id": "a", "value": value,
                     "text": {"type": "plain_text", "text": title, "emoji": True}, "action_ts": "1714986010.000001"}],
    }  # fmt: skip


def signed(body: bytes, secret: str = SECRET, timestamp: int | None = None) -> dict[str, str]:
    """The headers Slack sends: ``v0=`` HMAC-SHA256 of ``v0:{timestamp}:{body}``."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), b"v0:" + stamp.encode() + b":" + body, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": f"v0={digest}"}


@dataclass
class RecordingAgent(channel_support.RecordingAgent):
    """Records messages and answers like Rasa does; given a tracker store, saves the conversation too.

    With ``error`` set it fails after sending the first ``replies_before_error`` replies,
    without saving the conversation (as Rasa does when an action or the database fails).
    """

    replies_before_error: int = 0
    tracker_store: InMemoryTrackerStore | None = None

    async def fail(self, message: UserMessage, error: Exception) -> None:
        for reply in self.replies[: self.replies_before_error]:
            await message.output_channel.send_response(message.sender_id, dict(reply))
        raise error

    async def answer(self, message: UserMessage) -> None:
        await super().answer(message)
        if self.tracker_store is not None:
            await save_conversation(self.tracker_store, message, self.replies)


async def save_conversation(store: InMemoryTrackerStore, message: UserMessage, replies: list[dict[str, Any]]) -> None:
    """Save ``message`` and its ``replies`` in the customer's tracker, as Rasa does once it answered."""
    tracker = await store.get_or_create_tracker(message.sender_id)
    tracker.update(UserUttered(message.text, message_id=message.message_id))
    for reply in replies:
        tracker.update(BotUttered(reply.get("text"), {key: value for key, value in reply.items() if key != "text"}))
    await store.save(tracker)


class Clock:
    """The inbox's clock: leases and retry delays run out when the test advances it."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Served:
    channel: SlackDMInput
    agent: RecordingAgent
    client: httpx.AsyncClient
    tasks_at_answer: list[int] = field(default_factory=list)

    async def send(
        self, body: bytes, content_type: str, *, secret: str = SECRET, timestamp: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:  # fmt: skip
        sent = {"Content-Type": content_type, **signed(body, secret, timestamp), **(headers or {})}
        answer = await self.client.post(EVENTS, content=body, headers=sent)
        await self.channel.tasks.wait()
        return answer

    async def event(self, body: dict[str, Any], **options: Any) -> httpx.Response:
        return await self.send(json.dumps(body).encode(), "application/json", **options)

    async def interaction(self, payload: dict[str, Any], **options: Any) -> httpx.Response:
        form = urlencode({"payload": json.dumps(payload)}).encode()
        return await self.send(form, "application/x-www-form-urlencoded", **options)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in (ENV_TOKEN, ENV_SIGNING_SECRET, ENV_BASE_URL, "SLACK_CLIENT_ID", "SLACK_CLIENT_SECRET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FIRSTREPLY_CHANNEL_DB", str(tmp_path / "channels.db"))
    # The tests sweep the inbox themselves (``channel.sweep()``), when they advance the clock.
    monkeypatch.setenv("FIRSTREPLY_INBOX_SWEEP_SECONDS", "3600")


@pytest.fixture
def api() -> Iterator[FakeSlackAPI]:
    with FakeSlackAPI() as fake:
        fake.add_user(MARIA, "Maria Silva", display_name="maria", locale="pt-BR")
        fake.add_user("U0JOAO", "João Costa")
        yield fake


@pytest.fixture
def settings(api: FakeSlackAPI) -> SlackSettings:
    return SlackSettings(TOKEN, SECRET, api.base_url)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_channel(settings: SlackSettings, clock: Clock | None = None) -> SlackDMInput:
    store = ChannelStore.from_url()
    inbox_ = Inbox(store.engine, clock=clock or time.time)
    return SlackDMInput(settings, store, build_client(settings, backoff_seconds=0.01), inbox_)


@asynccontextmanager
async def serve(channel: SlackDMInput, agent: RecordingAgent) -> AsyncIterator[Served]:
    """Rasa's Sanic app (``configure_app``) with ``channel`` registered, on a free port."""
    tasks_at_answer: list[int] = []

    def note_tasks_at_answer(app: Sanic) -> None:
        @app.on_response
        async def note_tasks(request: Any, response: Any) -> None:
            # What is running the moment the answer leaves for Slack.
            tasks_at_answer.append(len(channel.tasks))

    async with served_app([channel], agent, prepare=note_tasks_at_answer) as (_, client):
        yield Served(channel, agent, client, tasks_at_answer)


@pytest_asyncio.fixture
async def served(settings: SlackSettings, clock: Clock) -> AsyncIterator[Served]:
    agent = RecordingAgent(tracker_store=InMemoryTrackerStore(Domain.empty()))
    async with serve(make_channel(settings, clock), agent) as running:
        yield running


def methods(api: FakeSlackAPI) -> list[str]:
    return [call.method for call in api.calls(answered=None)]


# --- verification -----------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("secret", ["", "wrong-secret", SECRET + "0", SECRET[:-1]])
async def test_a_wrong_signature_is_a_401_and_nothing_happens(
    served: Served, api: FakeSlackAPI, secret: str
) -> None:
    answer = await served.event(event_body(dm()), secret=secret)

    assert answer.status_code == 401
    assert served.agent.messages == []
    assert api.calls(answered=None) == []
    # Not even remembered: the genuine delivery of the same event still goes through.
    assert (await served.event(event_body(dm()))).status_code == 200
    assert served.agent.seen() == [("Where is my parcel??", MARIA, MARIA_METADATA)]


@pytest.mark.asyncio
async def test_a_body_changed_after_signing_or_unsigned_is_a_401(served: Served, api: FakeSlackAPI) -> None:
    body = json.dumps(event_body(dm("hello"))).encode()
    tampered = body.replace(b"hello", b"hullo")
    headers = {"Content-Type": "application/json", **signed(body)}
    changed = await served.client.post(EVENTS, content=tampered, headers=headers)
    unsigned = await served.client.post(EVENTS, content=body, headers={"Content-Type": "application/json"})
    await served.channel.tasks.wait()

    assert (changed.status_code, unsigned.status_code) == (401, 401)
    assert (served.agent.messages, api.calls(answered=None)) == ([], [])


@pytest.mark.asyncio
@pytest.mark.parametrize("age", [6 * 60, -6 * 60], ids=["stale", "future"])
async def test_a_timestamp_outside_five_minutes_is_a_401(served: Served, api: FakeSlackAPI, age: int) -> None:
    answer = await served.event(event_body(dm()), timestamp=int(time.time()) - age)

    assert answer.status_code == 401
    assert (served.agent.messages, api.calls(answered=None)) == ([], [])


@pytest.mark.asyncio
async def test_the_url_verification_challenge_is_answered(served: Served, api: FakeSlackAPI) -> None:
    body = {"token": "legacy", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
            "type": "url_verification"}  # fmt: skip
    answer = await served.event(body)

    assert (answer.status_code, answer.json()) == (200, {"challenge": body["challenge"]})
    assert served.agent.messages == []


@pytest.mark.asyncio
async def test_a_body_that_is_not_json_is_a_400(served: Served, api: FakeSlackAPI) -> None:
    answer = await served.send(b"{not json", "application/json")

    assert (answer.status_code, answer.json()) == (400, {"ok": False, "error": "malformed request"})
    assert (served.agent.messages, api.calls(answered=None)) == ([], [])


# --- direct messages ----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_dm_becomes_one_user_message_with_the_customer_metadata(served: Served, api: FakeSlackAPI) -> None:
    answer = await served.event(event_body(dm()))

    assert (answer.status_code, answer.text) == (200, "")
    [message] = served.agent.messages
    assert (message.text, message.sender_id, message.input_channel, message.message_id) == (
        "Where is my parcel??", MARIA, "slack_dm", "slack_dm-Ev0001",
    )  # fmt: skip
    assert message.metadata == MARIA_METADATA
    # The channel's sender, bound to this event so its replies are recorded and posted once.
    assert isinstance(message.output_channel, SlackDMOutput)
    assert (message.output_channel.client, message.output_channel.origin) == (served.channel.client, "slack_dm-Ev0001")
    assert [(c.method, c.params) for c in api.calls()] == [
        ("auth.test", {"team_id": TEAM_ID}), ("users.info", {"user": MARIA, "include_locale": "1"}),
    ]  # fmt: skip


@pytest.mark.asyncio
async def test_rasa_replies_go_back_to_the_dm(served: Served, api: FakeSlackAPI) -> None:
    served.agent.replies = [{"text": "Hi Maria! *Sorry* about that."}, {"text": "Which order?"}]
    await served.event(event_body(dm()))

    assert api.posted() == [
        {"channel": MARIA_DM, "text": "Hi Maria! *Sorry* about that."},
        {"channel": MARIA_DM, "text": "Which order?"},
    ]
    assert "conversations.open" not in methods(api)  # the DM was known from the message


@pytest.mark.asyncio
async def test_the_name_is_looked_up_once_per_customer(served: Served, api: FakeSlackAPI) -> None:
    await served.event(event_body(dm("one", ts="1.1"), "Ev1"))
    await served.event(event_body(dm("two", ts="1.2"), "Ev2"))
    await served.event(event_body(dm("olá", ts="1.3", user="U0JOAO"), "Ev3"))

    assert [c.params["user"] for c in api.calls("users.info")] == [MARIA, "U0JOAO"]
    assert [(m.text, (m.metadata or {}).get("customer_name")) for m in served.agent.messages] == [
        ("one", "Maria Silva"), ("two", "Maria Silva"), ("olá", "João Costa"),
    ]  # fmt: skip


@pytest.mark.asyncio
async def test_without_users_info_the_message_still_reaches_rasa_and_the_name_is_asked_again(
    served: Served, api: FakeSlackAPI
) -> None:
    await served.event(event_body(dm("hello", user="U0NOBODY"), "Ev1"))
    api.add_user("U0NOBODY", "Nadia Nobody")
    await served.event(event_body(dm("again", user="U0NOBODY"), "Ev2"))

    assert [c.status for c in api.calls("users.info", answered=None)] == [200, 200]
    assert [(m.text, m.metadata) for m in served.agent.messages] == [
        ("hello", {"slack_user_id": "U0NOBODY", "slack_channel_id": "D0NOBODY", "team_id": TEAM_ID}),
        ("again", {"customer_name": "Nadia Nobody", "slack_user_id": "U0NOBODY", "slack_channel_id": "D0NOBODY",
                   "team_id": TEAM_ID}),
    ]  # fmt: skip


@pytest.mark.asyncio
async def test_when_slack_cannot_be_reached_for_the_name_the_message_goes_on_without_it(
    served: Served, api: FakeSlackAPI
) -> None:
    api.fail_next(4, status=DROP_CONNECTION, method="users.info")
    await served.event(event_body(dm("hello"), "Ev1"))
    await served.event(event_body(dm("again", ts="1.2"), "Ev2"))

    assert [c.status for c in api.calls("users.info", answered=None)] == [0, 0, 0, 0, 200]
    assert [(m.text, m.metadata) for m in served.agent.messages] == [
        ("hello", {"slack_user_id": MARIA, "slack_channel_id": MARIA_DM, "team_id": TEAM_ID}),
        ("again", MARIA_METADATA),
    ]


def lookup_failures(lookup: str) -> float:
    """Return how many ``lookup`` calls of the Slack channel have failed soft so far (the Prometheus counter)."""
    return REGISTRY.get_sample_value(
        "firstreply_channel_lookup_failures_total", {"channel": "slack_dm", "lookup": lookup}
    ) or 0.0


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "answer",
    [
        {"ok": True},  # no ``user`` at all: the handler used to raise AttributeError and retry until dead
        {"ok": True, "user": None},
        {"ok": True, "user": "U0MARIA"},
        {"ok": True, "user": {"id": MARIA, "profile": "Maria Silva"}},
    ],
    ids=["no-user", "null-user", "user-is-a-string", "profile-is-a-string"],
)
async def test_users_info_in_an_unexpected_shape_is_logged_counted_and_the_message_goes_on(
    served: Served, api: FakeSlackAPI, answer: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    before = lookup_failures("users.info")
    api.answer_oddly("users.info", answer)
    with caplog.at_level(logging.WARNING, logger="bot.channels.base"):
        first = await served.event(event_body(dm("hello"), "Ev1"))
    await served.event(event_body(dm("again", ts="1.2"), "Ev2"))

    assert first.status_code == 200
    assert [(m.text, m.metadata) for m in served.agent.messages] == [
        ("hello", {"slack_user_id": MARIA, "slack_channel_id": MARIA_DM, "team_id": TEAM_ID}),
        ("again", MARIA_METADATA),  # not remembered: asked again, and this time Slack answered
    ]
    assert (served.channel.inbox.pending(), served.channel.inbox.dead()) == (0, [])
    assert HOLDING_REPLY not in api.posted_texts()  # nothing failed: no "we're on it" line
    assert lookup_failures("users.info") == before + 1
    [warning] = [r.getMessage() for r in caplog.records if r.name == "bot.channels.base"]
    assert warning.startswith(f"slack_dm users.info for {MARIA} answered in an unexpected shape")


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "answer", [{"ok": True}, {"ok": True, "channel": MARIA_DM}], ids=["no-channel", "channel-is-a-string"]
)
async def test_conversations_open_in_an_unexpected_shape_asks_for_a_dm_like_a_refusal(
    served: Served, api: FakeSlackAPI, answer: dict[str, Any]
) -> None:
    before = lookup_failures("conversations.open")
    api.answer_oddly("conversations.open", answer)
    await served.event(event_body(mention(f"<@{BOT_USER_ID}> help")))

    assert api.posted() == [{"channel": PUBLIC, "thread_ts": "1714986100.000300", "text": MENTION_REPLY_NO_DM}]
    assert served.agent.messages == []
    assert (served.channel.inbox.pending(), served.channel.inbox.dead()) == (0, [])
    assert lookup_failures("conversations.open") == before + 1


@pytest.mark.asyncio
async def test_the_webhook_answers_before_rasa_has_finished(served: Served) -> None:
    served.agent.gate = asyncio.Event()
    body = json.dumps(event_body(dm("hello"))).encode()
    answer = await asyncio.wait_for(
        served.client.post(EVENTS, content=body, headers={"Content-Type": "application/json", **signed(body)}), 3
    )

    assert answer.status_code == 200
    assert served.tasks_at_answer == [1]  # handed over before Slack got its answer
    assert len(served.channel.tasks) == 1  # and referenced while it runs
    served.agent.gate.set()
    await served.channel.tasks.wait()
    assert [m.text for m in served.agent.messages] == ["hello"]


@pytest.mark.asyncio
async def test_a_customers_messages_reach_rasa_in_order(served: Served) -> None:
    served.agent.gate = asyncio.Event()
    for number, text in enumerate(["first", "second", "third"]):
        body = json.dumps(event_body(dm(text, ts=f"1.{number}"), f"Ev{number}")).encode()
        answer = await served.client.post(EVENTS, content=body, headers={"Content-Type": "application/json",
                                                                          **signed(body)})  # fmt: skip
        assert answer.status_code == 200
    await asyncio.sleep(0.2)
    assert [m.text for m in served.agent.messages] == ["first"]  # the others wait for their turn
    served.agent.gate.set()
    await served.channel.tasks.wait()
    assert [m.text for m in served.agent.messages] == ["first", "second", "third"]


@pytest.mark.asyncio
async def test_a_failure_while_handling_is_logged_with_its_traceback(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    # Handling fails are now retried by the inbox, which reports them (before: the background task, at ERROR).
    served.agent.error = RuntimeError("tracker store down")
    answer, record = await logged_failure(caplog, served.event(event_body(dm())))

    assert answer.status_code == 200
    assert record.getMessage() == "slack_dm:A0FIRSTREPLY update Ev0001: attempt 1 failed; retrying in 2s"
    assert record.exc_info is not None and str(record.exc_info[1]) == "tracker store down"


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("typed", "text"),
    [
        ("my order is &lt;A-1&gt; &amp; it's late", "my order is <A-1> & it's late"),
        ("see <https://shop.example.com/o/1|shop.example.com/o/1>", "see shop.example.com/o/1"),
        ("ask <@U0JOAO> or <#C0GENERAL|general>, <!here>", "ask @U0JOAO or #general, @here"),
        ("/affirm", "affirm"),
        ("mail <mailto:m@example.com|m@example.com>", "mail m@example.com"),
    ],
)
async def test_slack_markup_becomes_plain_text_and_intents_cannot_be_typed(
    served: Served, typed: str, text: str
) -> None:
    await served.event(event_body(dm(typed)))
    assert [m.text for m in served.agent.messages] == [text]


# --- copies and retries ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_the_same_event_twice_is_handled_once(served: Served, api: FakeSlackAPI) -> None:
    served.agent.replies = [{"text": "On it."}]
    first = await served.event(event_body(dm()))
    second = await served.event(event_body(dm()))

    assert (first.status_code, second.status_code) == (200, 200)
    assert [m.text for m in served.agent.messages] == ["Where is my parcel??"]
    assert api.posted_texts() == ["On it."]


@pytest.mark.asyncio
async def test_a_retry_is_acknowledged_without_handling_the_event_again(served: Served, api: FakeSlackAPI) -> None:
    served.agent.replies = [{"text": "On it."}]
    await served.event(event_body(dm()))
    retry = await served.event(
        event_body(dm()), headers={"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"}
    )

    assert (retry.status_code, retry.text) == (200, "")
    assert [m.text for m in served.agent.messages] == ["Where is my parcel??"]
    assert api.posted_texts() == ["On it."]


@pytest.mark.asyncio
async def test_a_retry_after_a_restart_is_still_not_handled_again(settings: SlackSettings, api: FakeSlackAPI) -> None:
    agent = RecordingAgent(replies=[{"text": "On it."}])
    async with serve(make_channel(settings), agent) as first_run:
        await first_run.event(event_body(dm()))
    async with serve(make_channel(settings), agent) as second_run:
        retry = await second_run.event(event_body(dm()), headers={"X-Slack-Retry-Num": "2"})
        await second_run.event(event_body(dm("still there?", ts="2.0"), "Ev0002"))

    assert retry.status_code == 200
    assert [m.text for m in agent.messages] == ["Where is my parcel??", "still there?"]
    assert api.posted_texts() == ["On it.", "On it."]


@pytest.mark.asyncio
async def test_a_retry_of_an_event_that_never_arrived_is_the_one_handled(served: Served) -> None:
    # Rasa was down for the first delivery: the retry is the customer's only copy.
    answer = await served.event(event_body(dm()), headers={"X-Slack-Retry-Num": "1"})
    await served.event(event_body(dm()), headers={"X-Slack-Retry-Num": "2"})

    assert answer.status_code == 200
    assert [m.text for m in served.agent.messages] == ["Where is my parcel??"]


# --- failures and crashes: the inbox ----------------------------------------------------------------


async def sweep_later(served: Served, clock: Clock, seconds: float = 61) -> int:
    """Let ``seconds`` pass (retry delays, a dead process's lease) and sweep the inbox once."""
    clock.advance(seconds)
    started = await served.channel.sweep()
    await served.channel.tasks.wait()
    return started


def left_by_a_dead_process(served: Served, body: dict[str, Any]) -> Inbox:
    """Store ``body`` as another Rasa process did before it was killed (its lease runs out in 60 s)."""
    channel = served.channel
    dead = Inbox(channel.store.engine, clock=channel.inbox._clock, owner="killed-process")
    stored = json.dumps({"body": body, "bot_user_id": BOT_USER_ID})
    assert dead.accept(f"slack_dm:{APP_ID}", body["event_id"], MARIA, stored) is not None
    return dead


@pytest.mark.asyncio
async def test_a_failure_gets_one_holding_reply_and_the_message_is_handled_later_once(
    served: Served, api: FakeSlackAPI, clock: Clock
) -> None:
    served.agent.replies = [{"text": "On it."}]
    served.agent.error = RuntimeError("action server down")
    answer = await served.event(event_body(dm()))

    assert (answer.status_code, api.posted()) == (200, [{"channel": MARIA_DM, "text": HOLDING_REPLY}])
    assert served.channel.inbox.pending() == 1
    assert await sweep_later(served, clock, 1) == 0  # the first retry is due after 2 s
    assert await sweep_later(served, clock, 2) == 1  # fails again: no second holding line
    assert api.posted_texts() == [HOLDING_REPLY]

    served.agent.error = None
    assert await sweep_later(served, clock) == 1
    assert api.posted_texts() == [HOLDING_REPLY, "On it."]
    assert [m.message_id for m in served.agent.messages] == ["slack_dm-Ev0001"] * 3  # never saved before
    assert served.channel.inbox.pending() == 0
    assert await sweep_later(served, clock) == 0
    retry = await served.event(event_body(dm()), headers={"X-Slack-Retry-Num": "1"})
    assert (retry.status_code, len(served.agent.messages), api.posted_texts()) == (200, 3, [HOLDING_REPLY, "On it."])


@pytest.mark.asyncio
async def test_replies_sent_before_a_failure_are_not_sent_again(served: Served, api: FakeSlackAPI, clock: Clock) -> None:
    served.agent.replies = [{"text": "Sorry about that."}, {"text": "Which order?"}]
    served.agent.error, served.agent.replies_before_error = RuntimeError("action server down"), 1
    await served.event(event_body(dm()))
    assert api.posted_texts() == ["Sorry about that.", HOLDING_REPLY]

    served.agent.error = None
    await sweep_later(served, clock)
    assert api.posted_texts() == ["Sorry about that.", HOLDING_REPLY, "Which order?"]
    assert len(served.agent.messages) == 2


@pytest.mark.asyncio
@pytest.mark.parametrize("slack_had_it", [True, False], ids=["slack had it", "slack never got it"])
async def test_a_reply_a_crash_cut_off_mid_send_is_looked_up_before_it_is_posted(
    served: Served, api: FakeSlackAPI, clock: Clock, slack_had_it: bool
) -> None:
    served.agent.replies = [{"text": "On it."}, {"text": "Which order?"}]
    dead = left_by_a_dead_process(served, event_body(dm()))
    # The killed process had recorded reply 0 as going out; it died before the answer.
    assert dead.begin_reply("slack_dm-Ev0001", 0, "-") is None
    if slack_had_it:
        await SlackDMOutput(served.channel.client).post_once(MARIA_DM, "On it.", "slack_dm-Ev0001:0", since=0)

    assert await sweep_later(served, clock, 30) == 0  # its lease still holds
    assert await sweep_later(served, clock) == 1

    assert api.posted_texts() == ["On it.", "Which order?"]
    assert [m.text for m in served.agent.messages] == ["Where is my parcel??"]  # Rasa had not saved it
    assert len(api.calls("conversations.history")) == 1
    assert served.channel.inbox.pending() == 0


@pytest.mark.asyncio
async def test_a_post_slack_took_without_answering_is_found_and_not_posted_again(
    served: Served, api: FakeSlackAPI
) -> None:
    served.agent.replies = [{"text": "On it."}]
    api.fault(ACCEPT_DROP, method="chat.postMessage", times=1)
    await served.event(event_body(dm()))

    assert [(m.channel, m.text) for m in api.messages] == [(MARIA_DM, "On it.")]  # posted, the answer lost
    assert [c.method for c in api.calls(answered=None) if c.method.startswith(("chat", "conv"))] == [
        "chat.postMessage", "conversations.history",
    ]  # fmt: skip
    assert served.channel.inbox.pending() == 0


@pytest.mark.asyncio
async def test_a_history_in_an_unexpected_shape_counts_as_not_posted_and_the_reply_goes_out_again(
    served: Served, api: FakeSlackAPI
) -> None:
    before = lookup_failures("conversations.history")
    served.agent.replies = [{"text": "On it."}]
    api.fault(ACCEPT_DROP, method="chat.postMessage", times=1)
    api.answer_oddly("conversations.history", {"ok": True, "messages": "none"})
    await served.event(event_body(dm()))

    # Seen twice rather than not at all: the post was in doubt and the history could not say.
    assert [(m.channel, m.text) for m in api.messages] == [(MARIA_DM, "On it."), (MARIA_DM, "On it.")]
    assert (served.channel.inbox.pending(), served.channel.inbox.dead()) == (0, [])
    assert lookup_failures("conversations.history") == before + 1


@pytest.mark.asyncio
async def test_a_replayed_message_rasa_already_saved_is_not_passed_to_rasa_again(
    served: Served, api: FakeSlackAPI, clock: Clock
) -> None:
    replies = [{"text": "On it."}, {"text": "Which order?"}]
    dead = left_by_a_dead_process(served, event_body(dm()))
    # The killed process got the message through Rasa, posted the first reply, and died.
    saved = UserMessage("Where is my parcel??", sender_id=MARIA, message_id="slack_dm-Ev0001")
    assert served.agent.tracker_store is not None
    await save_conversation(served.agent.tracker_store, saved, replies)
    dead_output = served.channel.output.for_message("slack_dm-Ev0001", 0)
    dead_output.inbox = dead
    await dead_output.send_text_message(MARIA, "On it.")

    assert await sweep_later(served, clock) == 1

    assert served.agent.messages == []
    assert api.posted_texts() == ["On it.", "Which order?"]
    assert served.channel.inbox.pending() == 0


@pytest.mark.asyncio
async def test_an_event_that_cannot_be_stored_is_refused_so_slack_sends_it_again(
    served: Served, api: FakeSlackAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    def database_down(*_: Any) -> None:
        raise OperationalError("INSERT INTO channel_inbox", {}, Exception("database is locked"))

    with monkeypatch.context() as patched:
        patched.setattr(served.channel.inbox, "accept_many", database_down)
        refused = await served.event(event_body(dm()))
    retry = await served.event(event_body(dm()), headers={"X-Slack-Retry-Num": "1"})

    assert (refused.status_code, retry.status_code) == (503, 200)
    assert [m.text for m in served.agent.messages] == ["Where is my parcel??"]


@pytest.mark.asyncio
async def test_an_event_that_keeps_failing_is_set_aside_as_dead(served: Served, api: FakeSlackAPI, clock: Clock) -> None:
    served.agent.error = RuntimeError("action server down")
    await served.event(event_body(dm()))
    with served.channel.store.engine.begin() as conn:  # as if it had failed all but once already
        conn.execute(inbox.update().values(attempts=MAX_ATTEMPTS - 1))
    await sweep_later(served, clock)

    assert served.channel.inbox.dead() == [(f"slack_dm:{APP_ID}", "Ev0001", "RuntimeError: action server down")]
    assert (served.channel.inbox.pending(), await sweep_later(served, clock, 3600)) == (0, 0)
    assert api.posted_texts() == [HOLDING_REPLY]


@pytest.mark.asyncio
async def test_a_button_press_left_by_a_dead_process_is_handled_once(
    served: Served, api: FakeSlackAPI, clock: Clock
) -> None:
    served.agent.gate = asyncio.Event()  # Rasa is slow; the process is "killed" meanwhile
    await served.client.post(EVENTS, content=(form := urlencode({"payload": json.dumps(button_press())}).encode()),
                             headers={"Content-Type": "application/x-www-form-urlencoded", **signed(form)})  # fmt: skip
    await asyncio.sleep(0.2)
    for task in list(served.channel.tasks._tasks):
        task.cancel()
    await served.channel.tasks.wait()
    served.agent.gate = None

    assert await sweep_later(served, clock) == 1
    assert [m.text for m in served.agent.messages] == [LATE, LATE]  # Rasa had not saved it
    assert served.channel.inbox.pending() == 0


# --- what is not a customer writing ---------------------------------------------------------------

IGNORED = [
    ("own message", dm("Hi Maria!", user=BOT_USER_ID, bot_id=BOT_ID, app_id=APP_ID) | {"channel": MARIA_DM}),
    ("other bot", {"type": "message", "subtype": "bot_message", "bot_id": "B0OTHER", "text": "Deploy done",
                   "channel": MARIA_DM, "ts": TS, "channel_type": "im"}),
    ("other bot as user", dm("beep", user="U0OTHERBOT", bot_id="B0OTHER")),
    ("edited", {"type": "message", "subtype": "message_changed", "channel": MARIA_DM, "channel_type": "im",
                "hidden": True, "ts": "1.5", "message": {"type": "message", "user": MARIA, "text": "edited",
                                                         "ts": TS, "edited": {"user": MARIA, "ts": "1.5"}},
                "previous_message": {"type": "message", "user": MARIA, "text": "original", "ts": TS}}),
    ("deleted", {"type": "message", "subtype": "message_deleted", "channel": MARIA_DM, "channel_type": "im",
                 "hidden": True, "ts": "1.6", "deleted_ts": TS,
                 "previous_message": {"type": "message", "user": MARIA, "text": "original", "ts": TS}}),
    ("in a channel", dm("hello all") | {"channel": PUBLIC, "channel_type": "channel"}),
    ("empty", dm("")),
]  # fmt: skip


@pytest.mark.asyncio
@pytest.mark.parametrize("event", [event for _, event in IGNORED], ids=[name for name, _ in IGNORED])
async def test_what_is_not_a_customer_writing_is_acknowledged_and_ignored(
    served: Served, api: FakeSlackAPI, event: dict[str, Any]
) -> None:
    answer = await served.event(event_body(event))

    assert (answer.status_code, answer.text) == (200, "")
    assert served.agent.messages == []
    assert methods(api) == ["auth.test"]


@pytest.mark.asyncio
async def test_an_edit_after_a_message_gives_no_second_reply(served: Served, api: FakeSlackAPI) -> None:
    served.agent.replies = [{"text": "On it."}]
    await served.event(event_body(dm("original"), "Ev1"))
    await served.event(event_body(IGNORED[3][1], "Ev2"))

    assert ([m.text for m in served.agent.messages], api.posted_texts()) == (["original"], ["On it."])


# --- files ------------------------------------------------------------------------------------------

RECEIPT = {"id": "F0RECEIPT", "name": "receipt.pdf", "title": "receipt.pdf", "mimetype": "application/pdf",
           "filetype": "pdf", "size": 1234, "url_private": "https://files.slack.com/files-pri/T0-F0/receipt.pdf"}
PHOTO = {"id": "F0PHOTO", "name": "box.jpg", "mimetype": "image/jpeg", "filetype": "jpg"}  # fmt: skip


@pytest.mark.asyncio
async def test_a_file_gets_a_clear_reply_and_reaches_rasa_with_the_file_ids(served: Served, api: FakeSlackAPI) -> None:
    await served.event(event_body(dm("", subtype="file_share", files=[RECEIPT], upload=False)))

    assert api.posted() == [{"channel": MARIA_DM, "text": FILE_NOTICE + FILE_ASK}]
    assert served.agent.seen() == [("[file]", MARIA, {
        **MARIA_METADATA, "slack_file_ids": ["F0RECEIPT"],
        "attachments": [{"file_id": "F0RECEIPT", "name": "receipt.pdf", "mimetype": "application/pdf"}],
    })]  # fmt: skip


@pytest.mark.asyncio
async def test_files_with_text_pass_the_text_and_every_file(served: Served, api: FakeSlackAPI) -> None:
    await served.event(event_body(dm("The box arrived crushed", subtype="file_share", files=[PHOTO, RECEIPT])))

    assert api.posted_texts(MARIA_DM) == [FILE_NOTICE.replace("your file", "your files")]
    [message] = served.agent.messages
    assert (message.text, (message.metadata or {})["slack_file_ids"]) == ("The box arrived crushed",
                                                                         ["F0PHOTO", "F0RECEIPT"])  # fmt: skip


@pytest.mark.asyncio
async def test_a_file_still_reaches_rasa_when_the_notice_cannot_be_sent_and_the_notice_follows_later(
    served: Served, api: FakeSlackAPI, clock: Clock
) -> None:
    # Before the inbox, a notice failing past the client's retries was lost; now the event is tried again.
    api.fail_next(4, status=500, method="chat.postMessage")
    await served.event(event_body(dm("", subtype="file_share", files=[RECEIPT])))

    assert api.posted_texts() == [HOLDING_REPLY]
    assert [m.text for m in served.agent.messages] == ["[file]"]

    await sweep_later(served, clock)
    assert api.posted_texts() == [HOLDING_REPLY, FILE_NOTICE + FILE_ASK]
    assert [m.text for m in served.agent.messages] == ["[file]"]  # Rasa saved it the first time


# --- mentions in channels ----------------------------------------------------------------------------


def mention(text: str, channel: str = PUBLIC, **extra: Any) -> dict[str, Any]:
    return {"type": "app_mention", "user": MARIA, "text": text, "ts": "1714986100.000300", "channel": channel,
            "event_ts": "1714986100.000300", "team": TEAM_ID, **extra}  # fmt: skip


@pytest.mark.asyncio
async def test_a_mention_gets_a_short_public_reply_and_the_case_moves_to_a_dm(
    served: Served, api: FakeSlackAPI
) -> None:
    served.agent.replies = [{"text": "Sorry to hear that, Maria. Which card was charged twice?"}]
    await served.event(event_body(mention(f"<@{BOT_USER_ID}> my card was charged twice! ask <@U0JOAO>")))

    assert [c.params for c in api.calls("conversations.open")] == [{"users": MARIA}]
    assert api.posted() == [
        {"channel": PUBLIC, "thread_ts": "1714986100.000300", "text": MENTION_REPLY},
        {"channel": MARIA_DM, "text": "Sorry to hear that, Maria. Which card was charged twice?"},
    ]
    assert served.agent.seen() == [
        ("my card was charged twice! ask @U0JOAO", MARIA, {**MARIA_METADATA, "slack_mention_channel_id": PUBLIC})
    ]


@pytest.mark.asyncio
async def test_a_mention_in_a_thread_is_answered_in_that_thread_and_a_bare_mention_greets(
    served: Served, api: FakeSlackAPI
) -> None:
    await served.event(event_body(mention(f"<@{BOT_USER_ID}>", thread_ts="1714986000.000001")))

    assert api.posted(PUBLIC) == [{"channel": PUBLIC, "thread_ts": "1714986000.000001", "text": MENTION_REPLY}]
    assert [m.text for m in served.agent.messages] == ["/greet"]


@pytest.mark.asyncio
async def test_when_no_dm_can_be_opened_the_mention_asks_for_one_and_nothing_reaches_rasa(
    served: Served, api: FakeSlackAPI
) -> None:
    api.fail_next(1, status=200, method="conversations.open", error="cannot_dm_bot")
    await served.event(event_body(mention(f"<@{BOT_USER_ID}> help")))

    assert api.posted() == [{"channel": PUBLIC, "thread_ts": "1714986100.000300", "text": MENTION_REPLY_NO_DM}]
    assert served.agent.messages == []


@pytest.mark.asyncio
async def test_a_bots_mention_is_ignored(served: Served, api: FakeSlackAPI) -> None:
    await served.event(event_body(mention(f"<@{BOT_USER_ID}> ping", bot_id="B0OTHER")))
    assert (served.agent.messages, api.posted()) == ([], [])


# --- buttons --------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_pressed_button_becomes_the_message_and_its_buttons_are_replaced(
    served: Served, api: FakeSlackAPI
) -> None:
    answer = await served.interaction(button_press())

    assert (answer.status_code, answer.text) == (200, "")
    assert served.agent.seen() == [(LATE, MARIA, {**MARIA_METADATA, "button": True})]
    assert [c.params for c in api.calls("chat.update")] == [{
        "channel": MARIA_DM, "ts": "1714986000.000200", "text": "What's happening?",
        "blocks": [QUESTION_BLOCKS[0],
                   {"type": "context", "elements": [{"type": "mrkdwn", "text": "You chose: *It's late*"}]}],
    }]  # fmt: skip


@pytest.mark.asyncio
async def test_a_second_press_on_the_same_message_is_ignored(served: Served, api: FakeSlackAPI) -> None:
    await served.interaction(button_press())
    again = await served.interaction(button_press('/inform{"delivery_problem": "damaged"}', "Damaged"))
    await served.interaction(button_press("/affirm", "Yes", message_ts="1714986000.000300"))

    assert again.status_code == 200
    assert [m.text for m in served.agent.messages] == [LATE, "/affirm"]
    assert len(api.calls("chat.update")) == 2


@pytest.mark.asyncio
async def test_a_chosen_title_cannot_mention_anyone(served: Served, api: FakeSlackAPI) -> None:
    await served.interaction(button_press("/affirm", "<!channel> yes"))
    [update] = api.calls("chat.update")
    assert update.params["blocks"][-1]["elements"][0]["text"] == "You chose: *&lt;!channel&gt; yes*"


@pytest.mark.asyncio
async def test_the_press_reaches_rasa_even_if_the_buttons_cannot_be_replaced(
    served: Served, api: FakeSlackAPI
) -> None:
    api.fail_next(4, status=503, method="chat.update")
    await served.interaction(button_press())
    assert [m.text for m in served.agent.messages] == [LATE]


@pytest.mark.asyncio
async def test_a_press_outside_a_dm_is_acknowledged_and_ignored(served: Served, api: FakeSlackAPI) -> None:
    answer = await served.interaction(button_press(channel=PUBLIC))
    assert answer.status_code == 200
    assert (served.agent.messages, api.calls("chat.update")) == ([], [])


# --- the sender --------------------------------------------------------------------------------------------


@pytest_asyncio.fixture
async def output(settings: SlackSettings) -> SlackDMOutput:
    return SlackDMOutput(build_client(settings, backoff_seconds=0.01))


@pytest.mark.asyncio
async def test_text_is_escaped_so_it_cannot_mention_or_link(output: SlackDMOutput, api: FakeSlackAPI) -> None:
    await output.send_text_message(MARIA, "<!channel> hi <@U123> <http://evil|x> & more")

    assert api.posted() == [
        {"channel": MARIA_DM, "text": "&lt;!channel&gt; hi &lt;@U123&gt; &lt;http://evil|x&gt; &amp; more"}
    ]
    assert [c.params for c in api.calls("conversations.open")] == [{"users": MARIA}]


@pytest.mark.asyncio
async def test_the_dm_is_opened_once_per_customer(output: SlackDMOutput, api: FakeSlackAPI) -> None:
    await output.send_text_message(MARIA, "one")
    await output.send_text_message(MARIA, "two")
    await output.send_text_message("D0ELSEWHERE", "three")

    assert len(api.calls("conversations.open")) == 1
    assert [(p["channel"], p["text"]) for p in api.posted()] == [
        (MARIA_DM, "one"), (MARIA_DM, "two"), ("D0ELSEWHERE", "three"),
    ]  # fmt: skip


@pytest.mark.asyncio
async def test_buttons_become_an_actions_block(output: SlackDMOutput, api: FakeSlackAPI) -> None:
    buttons = [{"title": "It's late", "payload": LATE}, {"title": "Yes & no", "payload": "/affirm"},
               {"title": "Track it", "url": "https://example.com/t/1"}]  # fmt: skip
    await output.send_text_with_buttons(MARIA, "What's <happening>?", buttons)

    assert api.posted() == [{
        "channel": MARIA_DM, "text": "What's &lt;happening&gt;?",
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": "What's &lt;happening&gt;?"}},
            {"type": "actions", "elements": [
                {"type": "button", "text": {"type": "plain_text", "text": "It's late", "emoji": True},
                 "action_id": "fr_button_0", "value": LATE},
                {"type": "button", "text": {"type": "plain_text", "text": "Yes & no", "emoji": True},
                 "action_id": "fr_button_1", "value": "/affirm"},
                {"type": "button", "text": {"type": "plain_text", "text": "Track it", "emoji": True},
                 "action_id": "fr_button_2", "url": "https://example.com/t/1"},
            ]},
        ],
    }]  # fmt: skip


@pytest.mark.asyncio
async def test_a_long_text_with_buttons_puts_them_under_the_last_part(output: SlackDMOutput, api: FakeSlackAPI) -> None:
    first = ("The first paragraph. " * 100).strip()  # 2099 characters
    second = ("Then the second one. " * 60).strip()  # 1259
    await output.send_text_with_buttons(MARIA, first + "\n\n" + second, [{"title": "Yes", "payload": "/affirm"}])

    sent = api.posted()
    assert [p["text"] for p in sent] == [first, second]
    assert ["blocks" in p for p in sent] == [False, True]


@pytest.mark.asyncio
async def test_no_part_is_longer_than_3000_characters_after_escaping(output: SlackDMOutput, api: FakeSlackAPI) -> None:
    text = "a<b " * 1000  # 4000 characters, 6000 escaped
    await output.send_text_message(MARIA, text)

    sent = api.posted_texts()
    assert all(len(part) <= 3000 for part in sent)
    assert " ".join(sent) == escape(text.strip())


@pytest.mark.asyncio
async def test_a_429_is_waited_out_and_the_message_arrives_once(output: SlackDMOutput, api: FakeSlackAPI) -> None:
    output.remember_dm(MARIA, MARIA_DM)
    api.fail_next(1, status=429, retry_after=1)
    started = time.monotonic()
    await output.send_text_message(MARIA, "Your case is with the team.")

    assert time.monotonic() - started >= 1.0
    assert [(c.method, c.status) for c in api.calls(answered=None)] == [
        ("chat.postMessage", 429), ("chat.postMessage", 200),
    ]  # fmt: skip
    assert api.posted_texts(MARIA_DM) == ["Your case is with the team."]


@pytest.mark.asyncio
async def test_server_errors_are_retried_then_given_up(output: SlackDMOutput, api: FakeSlackAPI) -> None:
    output.remember_dm(MARIA, MARIA_DM)
    api.fail_next(2, status=500, method="chat.postMessage")
    await output.send_text_message(MARIA, "one")
    assert api.posted_texts() == ["one"]

    api.fail_next(4, status=502, method="chat.postMessage")
    with pytest.raises(SlackApiError) as raised:
        await output.send_text_message(MARIA, "two")
    assert raised.value.response.status_code == 502
    assert [c.status for c in api.calls("chat.postMessage", answered=None)] == [500, 500, 200, 502, 502, 502, 502]


@pytest.mark.asyncio
async def test_a_dropped_connection_is_retried_then_given_up(output: SlackDMOutput, api: FakeSlackAPI) -> None:
    output.remember_dm(MARIA, MARIA_DM)
    api.fail_next(2, status=DROP_CONNECTION, method="chat.postMessage")
    await output.send_text_message(MARIA, "one")

    api.fail_next(4, status=DROP_CONNECTION, method="chat.postMessage")
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await output.send_text_message(MARIA, "two")
    assert [c.status for c in api.calls("chat.postMessage", answered=None)] == [0, 0, 200, 0, 0, 0, 0]
    assert api.posted_texts() == ["one"]


@pytest.mark.asyncio
async def test_a_rate_limit_longer_than_the_cap_is_not_waited_for(output: SlackDMOutput, api: FakeSlackAPI) -> None:
    output.remember_dm(MARIA, MARIA_DM)
    api.fail_next(1, status=429, retry_after=3600)
    with pytest.raises(SlackApiError) as raised:
        await output.send_text_message(MARIA, "hello")
    assert (raised.value.response.status_code, len(api.calls(answered=None))) == (429, 1)


@pytest.mark.asyncio
async def test_an_api_error_is_not_retried(output: SlackDMOutput, api: FakeSlackAPI) -> None:
    with pytest.raises(SlackApiError) as raised:
        await output.send_text_message("", "hello")
    assert (raised.value.response["error"], len(api.calls(answered=None))) == ("channel_not_found", 1)


@pytest.mark.asyncio
async def test_images_and_custom_payloads(output: SlackDMOutput, api: FakeSlackAPI) -> None:
    output.remember_dm(MARIA, MARIA_DM)
    await output.send_response(MARIA, {"text": "Here it is", "image": "https://example.com/label.png"})
    blocks = [{"type": "divider"}]
    await output.send_custom_json(MARIA, {"text": "<b>", "blocks": blocks, "poll": {}})

    assert api.posted() == [
        {"channel": MARIA_DM, "text": "Here it is"},
        {"channel": MARIA_DM, "text": "https://example.com/label.png",
         "blocks": [{"type": "image", "image_url": "https://example.com/label.png", "alt_text": "image"}]},
        {"channel": MARIA_DM, "text": "&lt;b&gt;", "blocks": blocks},
    ]  # fmt: skip


@pytest.mark.asyncio
async def test_the_token_never_reaches_the_log(
    output: SlackDMOutput, api: FakeSlackAPI, caplog: pytest.LogCaptureFixture
) -> None:
    api.fail_next(1, status=500)
    with caplog.at_level(logging.DEBUG):
        await output.send_text_message(MARIA, "hello")
    assert any("chat.postMessage" in record.getMessage() for record in caplog.records)
    assert [r.getMessage() for r in caplog.records if TOKEN in r.getMessage() or SECRET in r.getMessage()] == []


# --- credentials ---------------------------------------------------------------------------------------------


def test_a_token_that_is_not_a_bot_token_is_refused_without_echoing_it() -> None:
    with pytest.raises(ChannelCredentialsError) as raised:
        SlackSettings.from_credentials({"token": "xoxp-user-token-123", "signing_secret": SECRET}, {})
    assert str(raised.value) == (
        "SLACK_BOT_TOKEN must be the app's bot token (xoxb-...), from OAuth & Permissions in the app settings."
    )


@pytest.mark.asyncio
async def test_the_desk_builds_the_sender_from_the_environment(api: FakeSlackAPI) -> None:
    # As bot.channels.outbound does: a sender never receives, so any signing secret will do.
    settings = SlackSettings.from_credentials(
        {"signing_secret": "sender-only"}, {ENV_TOKEN: TOKEN, ENV_BASE_URL: api.base_url}
    )
    output = SlackDMOutput(build_client(settings))
    await output.send_text_message(MARIA, "An agent here: your refund is on its way.")

    assert api.posted() == [{"channel": MARIA_DM, "text": "An agent here: your refund is on its way."}]


def test_oauth_variables_that_would_make_bolt_ignore_the_token_are_refused() -> None:
    environ = {"SLACK_CLIENT_ID": "111.222", "SLACK_CLIENT_SECRET": "abc"}
    with pytest.raises(ChannelCredentialsError) as raised:
        SlackSettings.from_credentials({"token": TOKEN, "signing_secret": SECRET}, environ)
    assert str(raised.value) == (
        "SLACK_CLIENT_ID and SLACK_CLIENT_SECRET are set: slack-bolt would switch the slack_dm channel "
        "to OAuth installs and ignore SLACK_BOT_TOKEN. Unset them for Rasa."
    )


def test_credentials_fall_back_to_the_environment_and_stay_out_of_repr() -> None:
    settings = SlackSettings.from_credentials(
        {"token": TOKEN}, {ENV_SIGNING_SECRET: SECRET, ENV_BASE_URL: "http://127.0.0.1:9/api"}
    )
    assert (settings.token, settings.signing_secret, settings.base_url) == (TOKEN, SECRET, "http://127.0.0.1:9/api/")
    assert repr(settings) == "SlackSettings(base_url='http://127.0.0.1:9/api/')"
    assert SlackSettings.from_credentials({"token": TOKEN, "signing_secret": SECRET}, {}).base_url == (
        "https://slack.com/api/"
    )


# --- the pieces ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "plain"),
    [
        ("&lt;!channel&gt;", "<!channel>"),
        ("<!subteam^S123|@support> hi", "@support hi"),
        ("<https://x.example>", "https://x.example"),
        ("  /start  ", "start"),
        ("a &amp;lt; b", "a &lt; b"),
    ],
)
def test_customer_text(text: str, plain: str) -> None:
    assert customer_text(text) == plain


def test_message_parts_escape_and_split() -> None:
    assert message_parts("") == []
    assert message_parts("a < b") == ["a &lt; b"]
    assert message_parts("&&&& &&&&", limit=20) == ["&amp;&amp;&amp;&amp;", "&amp;&amp;&amp;&amp;"]


def test_the_app_manifest_asks_for_what_the_channel_uses_and_points_at_its_url() -> None:
    manifest = yaml.safe_load((Path(__file__).resolve().parents[1] / "slack" / "customer-app-manifest.yml").read_text())
    settings = manifest["settings"]

    assert sorted(manifest["oauth_config"]["scopes"]["bot"]) == [
        "app_mentions:read", "chat:write", "im:history", "im:read", "im:write", "users:read",
    ]  # fmt: skip
    assert sorted(settings["event_subscriptions"]["bot_events"]) == ["app_mention", "message.im"]
    assert settings["event_subscriptions"]["request_url"] == "https://YOUR-HOST" + EVENTS
    assert settings["interactivity"] == {"is_enabled": True, "request_url": "https://YOUR-HOST" + EVENTS}
    assert manifest["features"]["app_home"]["messages_tab_enabled"] is True
    assert manifest["features"]["app_home"]["messages_tab_read_only_enabled"] is False
    assert EVENTS_PATH == EVENTS


def test_the_store_keeps_slack_ids_apart_from_telegrams(tmp_path: Path) -> None:
    store = ChannelStore.from_url(f"sqlite:///{tmp_path / 'store.db'}")
    assert [store.first_time(f"slack_dm:{APP_ID}", "Ev1"), store.first_time("telegram:1", "Ev1")] == [True, True]
    store.dispose()
