"""The web chat channel: the real blueprint in Rasa's real Sanic app, served on a free port.

Rasa's agent is replaced by one that records each ``UserMessage`` and answers through the
message's output channel as Rasa does: a text, then a text with buttons.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from rasa.core.channels.channel import UserMessage
from rasa.core.tracker_store import InMemoryTrackerStore
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import BotUttered, UserUttered
from sqlalchemy.exc import OperationalError

from bot.channels.common import ChannelCredentialsError
from bot.channels.leases import process_owner
from bot.channels.webchat import ENV_SECRET, MAX_TEXT_CHARS, STATIC_DIR, WebChatInput
from bot.channels.webchat_store import ABANDONED, STALE, STALE_CLAIM_SECONDS, WebChatStore, displayed
from tests import channel_support
from tests.channel_support import served_app

SECRET = "a-webchat-secret-for-tests-0123456789"
BASE = "/webhooks/webchat"
REPLY_TEXT = "Thanks, I'm on it."
QUESTION = "What's happening with the delivery?"
BUTTONS = [{"title": "It's late", "payload": "It's late"}, {"title": "Yes, that's right", "payload": "/affirm"}]


@dataclass
class RecordingAgent(channel_support.RecordingAgent):
    """Records messages and answers like Rasa does: a text, then a text with buttons (or without)."""

    with_buttons: bool = True

    async def answer(self, message: UserMessage) -> None:
        question = {"text": QUESTION, "buttons": BUTTONS} if self.with_buttons else {"text": QUESTION}
        self.replies = [{"text": REPLY_TEXT}, question]
        await super().answer(message)

    def seen_on(self) -> list[tuple[str | None, str, str | None, dict[str, Any] | None]]:
        """Return (text, sender, input channel, metadata) of each message."""
        return [(m.text, m.sender_id, m.input_channel, m.metadata) for m in self.messages]


def replies_for(first_id: int) -> list[dict[str, Any]]:
    """The two bot messages the agent answers with, as the page gets them."""
    return [
        {"id": first_id, "from": "bot", "text": REPLY_TEXT},
        {"id": first_id + 1, "from": "bot", "text": QUESTION, "buttons": BUTTONS},
    ]


@dataclass
class Served:
    channel: WebChatInput
    agent: RecordingAgent
    client: httpx.AsyncClient
    store: WebChatStore

    async def session(self) -> dict[str, str]:
        answer = await self.client.post(f"{BASE}/session")
        assert answer.status_code == 200
        return dict(answer.json())

    async def say(self, session: dict[str, str], text: str, client_id: str, **extra: Any) -> httpx.Response:
        body = {"sender": session["sender"], "token": session["token"], "client_id": client_id, "message": text}
        return await self.client.post(f"{BASE}/message", json={**body, **extra})

    async def history(self, session: dict[str, str], after: int = 0) -> list[dict[str, Any]]:
        answer = await self.client.get(
            f"{BASE}/history", params={"sender": session["sender"], "after": after},
            headers={"Authorization": f"Bearer {session['token']}"},
        )  # fmt: skip
        assert answer.status_code == 200, answer.text
        return list(answer.json()["messages"])


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(ENV_SECRET, raising=False)
    monkeypatch.setenv("FIRSTREPLY_CHANNEL_DB", str(tmp_path / "channels.db"))


@asynccontextmanager
async def serve(channel: WebChatInput, agent: RecordingAgent) -> AsyncIterator[Served]:
    """Rasa's Sanic app (``configure_app``) with ``channel`` registered, on a free port."""
    try:
        async with served_app([channel], agent) as (_, client):
            yield Served(channel, agent, client, channel.store)
    finally:
        channel.store.dispose()


@pytest_asyncio.fixture
async def served() -> AsyncIterator[Served]:
    async with serve(WebChatInput.from_credentials(None, {ENV_SECRET: SECRET}), RecordingAgent()) as running:
        yield running


def expected_token(sender: str, secret: str = SECRET) -> str:
    return hmac.new(secret.encode(), sender.encode(), hashlib.sha256).hexdigest()


# --- sessions ------------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_a_session_is_a_random_sender_and_its_hmac_token(served: Served, method: str) -> None:
    first = await served.client.request(method, f"{BASE}/session")
    second = await served.client.request(method, f"{BASE}/session")

    assert first.status_code == second.status_code == 200
    assert first.headers["cache-control"] == "no-store"
    one, two = first.json(), second.json()
    assert set(one) == {"sender", "token"}
    assert re.fullmatch(r"webchat-[0-9a-f]{32}", one["sender"])
    assert one["sender"] != two["sender"]
    assert one["token"] == expected_token(one["sender"])
    assert two["token"] == expected_token(two["sender"])


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "token", ["0" * 64, expected_token("webchat-someone-else"), "not hex at all", expected_token("x", "other-secret")]
)
async def test_a_message_with_a_wrong_token_is_refused_and_nothing_is_recorded(served: Served, token: str) -> None:
    session = await served.session()

    answer = await served.say({**session, "token": token}, "hello", "client-0001")

    assert (answer.status_code, answer.json()) == (401, {"error": "unknown session: start a new one at /session"})
    assert served.agent.messages == []
    assert await served.history(session) == []
    # The genuine message with the same client id still goes through afterwards.
    assert (await served.say(session, "hello", "client-0001")).status_code == 200
    assert served.agent.seen_on() == [("hello", session["sender"], "webchat", None)]


@pytest.mark.asyncio
async def test_one_conversation_cannot_be_read_with_another_conversations_token(served: Served) -> None:
    maria, tom = await served.session(), await served.session()
    await served.say(maria, "my parcel is late", "client-0001")

    answer = await served.client.get(
        f"{BASE}/history", params={"sender": maria["sender"]}, headers={"Authorization": f"Bearer {tom['token']}"}
    )
    by_query = await served.client.get(f"{BASE}/history", params={"sender": maria["sender"], "token": tom["token"]})

    assert (answer.status_code, answer.json()) == (401, {"error": "unknown session: start a new one at /session"})
    assert by_query.status_code == 401
    assert (await served.client.get(f"{BASE}/history", params={"sender": maria["sender"]})).status_code == 400


def test_the_secret_comes_from_the_environment_so_sessions_survive_a_restart(tmp_path: Path) -> None:
    sender = "webchat-0123456789abcdef0123456789abcdef"
    before = WebChatInput.from_credentials(None, {ENV_SECRET: SECRET})
    after = WebChatInput.from_credentials(None, {ENV_SECRET: SECRET})
    random_one, random_two = WebChatInput.from_credentials(None, {}), WebChatInput.from_credentials(None, {})
    try:
        assert after.authentic(sender, expected_token(sender)) and before.authentic(sender, expected_token(sender))
        assert not random_one.authentic(sender, expected_token(sender))
        issued = random_one.new_session()
        assert random_one.authentic(issued["sender"], issued["token"])
        assert not random_two.authentic(issued["sender"], issued["token"])
        from_file = WebChatInput.from_credentials({"secret": SECRET}, {})
        assert from_file.authentic(sender, expected_token(sender))
        from_file.store.dispose()
    finally:
        for channel in (before, after, random_one, random_two):
            channel.store.dispose()


def test_a_short_secret_is_refused_with_a_message_naming_the_variable() -> None:
    with pytest.raises(ChannelCredentialsError, match=f"^{ENV_SECRET} must be at least 16 characters"):
        WebChatInput.from_credentials(None, {ENV_SECRET: "short"})


# --- messages ------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_message_goes_through_rasa_and_the_bot_messages_come_back(served: Served) -> None:
    session = await served.session()

    answer = await served.say(session, "  where is my parcel??  ", "client-0001", name=" Maria ")

    assert answer.status_code == 200
    assert answer.headers["cache-control"] == "no-store"
    assert answer.json() == {
        "customer": {"id": 1, "from": "customer", "text": "where is my parcel??", "client_id": "client-0001"},
        "replies": replies_for(2),
        "duplicate": False,
    }
    [message] = served.agent.messages
    assert (message.text, message.sender_id, message.input_channel, message.metadata, message.message_id) == (
        "where is my parcel??", session["sender"], "webchat", {"customer_name": "Maria"}, "webchat-client-0001",
    )  # fmt: skip


@pytest.mark.asyncio
async def test_the_same_client_id_twice_reaches_rasa_once_and_gets_the_same_answer(served: Served) -> None:
    session = await served.session()

    first = await served.say(session, "where is my parcel??", "client-0001")
    again = await served.say(session, "where is my parcel??", "client-0001")

    assert first.status_code == again.status_code == 200
    assert again.json() == {**first.json(), "duplicate": True}
    assert served.agent.seen_on() == [("where is my parcel??", session["sender"], "webchat", None)]
    assert [m["id"] for m in await served.history(session)] == [1, 2, 3]


@pytest.mark.asyncio
async def test_a_retry_while_the_first_copy_is_still_being_answered_waits_for_that_answer(served: Served) -> None:
    session = await served.session()
    served.agent.gate = asyncio.Event()

    first = asyncio.create_task(served.say(session, "hello?", "client-0001"))
    while not served.agent.messages:
        await asyncio.sleep(0.01)
    retry = asyncio.create_task(served.say(session, "hello?", "client-0001"))
    await asyncio.sleep(0.1)
    assert not retry.done()
    served.agent.gate.set()
    one, two = await first, await retry

    assert one.json()["replies"] == two.json()["replies"] == replies_for(2)
    assert (one.json()["duplicate"], two.json()["duplicate"]) == (False, True)
    assert len(served.agent.messages) == 1


@pytest.mark.asyncio
async def test_a_dropped_connection_does_not_stop_the_answer_and_the_retry_gets_it(served: Served) -> None:
    session = await served.session()
    served.agent.gate = asyncio.Event()

    with pytest.raises(httpx.ReadTimeout):
        # The browser gives up and closes the connection while Rasa is still working.
        await served.client.post(
            f"{BASE}/message", timeout=0.3,
            json={"sender": session["sender"], "token": session["token"], "client_id": "client-0001", "message": "hi"},
        )  # fmt: skip
    await asyncio.sleep(0.2)
    served.agent.gate.set()
    await asyncio.sleep(0.2)
    retry = await served.say(session, "hi", "client-0001")

    assert retry.status_code == 200
    assert (retry.json()["replies"], retry.json()["duplicate"]) == (replies_for(2), True)
    assert len(served.agent.messages) == 1


@pytest.mark.asyncio
async def test_when_rasa_fails_the_message_is_not_kept_and_a_retry_goes_through(served: Served) -> None:
    session = await served.session()
    served.agent.error = RuntimeError("tracker store down")

    failed = await served.say(session, "hello?", "client-0001")
    assert failed.status_code == 500
    assert failed.json() == {"error": "the assistant could not answer; please send it again"}
    assert await served.history(session) == []

    served.agent.error = None
    retried = await served.say(session, "hello?", "client-0001")
    assert retried.status_code == 200
    assert retried.json()["duplicate"] is False
    assert [m.text for m in served.agent.messages] == ["hello?", "hello?"]


def test_a_message_never_answered_is_given_up_after_a_while(tmp_path: Path) -> None:
    now = [1_000_000.0]
    store = WebChatStore.from_url(f"sqlite:///{tmp_path / 'c.db'}", clock=lambda: now[0])
    try:
        first = store.claim("webchat-a", "client-0001", "hello")
        waiting = store.claim("webchat-a", "client-0001", "hello")
        now[0] += STALE_CLAIM_SECONDS + 1
        taken_again = store.claim("webchat-a", "client-0001", "hello")

        assert (first.new, first.replies) == (True, None)
        assert (waiting.new, waiting.id, waiting.replies) == (False, first.id, None)
        assert (taken_again.new, taken_again.retaken) == (True, STALE)
        assert [m["id"] for m in store.history("webchat-a")] == [taken_again.id]
    finally:
        store.dispose()


def _gone_pid() -> int:
    """Return the id of a process of this machine that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_message_whose_process_is_gone_is_taken_over_at_once_and_a_living_ones_is_not(tmp_path: Path) -> None:
    store = WebChatStore.from_url(f"sqlite:///{tmp_path / 'c.db'}", clock=lambda: 1_000_000.0)
    me, gone, living = process_owner(), process_owner(_gone_pid()), process_owner(1)
    try:
        store.claim("webchat-a", "client-0001", "hello", owner=gone)
        store.claim("webchat-b", "client-0002", "hello", owner=living)

        def abandoned(owner: str | None) -> bool:
            return owner == gone

        taken = store.claim("webchat-a", "client-0001", "hello", owner=me, abandoned=abandoned)
        waiting = store.claim("webchat-b", "client-0002", "hello", owner=me, abandoned=abandoned)
        again = store.claim("webchat-a", "client-0001", "hello", owner=me, abandoned=abandoned)

        assert (taken.new, taken.retaken, taken.replies) == (True, ABANDONED, None)
        assert (waiting.new, waiting.retaken, waiting.replies) == (False, None, None)
        assert (again.new, again.retaken) == (False, None)  # now its own, and still being answered
        store.answer("webchat-a", taken.id, [{"text": "Hi!"}])
        answered = store.claim("webchat-a", "client-0001", "hello", owner=me, abandoned=lambda _: True)
        assert (answered.new, answered.retaken, [r["text"] for r in answered.replies or []]) == (False, None, ["Hi!"])
    finally:
        store.dispose()


def test_each_worker_forked_after_the_channel_was_built_names_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    channel = WebChatInput.from_credentials(None, {ENV_SECRET: SECRET})
    try:
        built_in = channel.owner
        monkeypatch.setattr(os, "getpid", lambda: 424242)  # the worker Sanic forked

        assert channel.owner.split(":")[1] == "424242" and built_in.split(":")[1] != "424242"
        assert channel.abandoned(channel.owner)  # its own claim, found by the one task answering that message
        assert not channel.abandoned(built_in)  # a process that runs: it may still be answering
    finally:
        channel.store.dispose()


def test_a_message_table_made_before_claims_named_their_process_gets_the_column(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE webchat_messages (id INTEGER PRIMARY KEY AUTOINCREMENT, sender VARCHAR(128) NOT NULL, "
            "role VARCHAR(16) NOT NULL, text TEXT NOT NULL, buttons TEXT, client_id VARCHAR(64), answered_at BIGINT, "
            "reply_to INTEGER, created_at BIGINT NOT NULL, CONSTRAINT uq_webchat_messages_client_id UNIQUE "
            "(sender, client_id))"
        )
        conn.execute("INSERT INTO webchat_messages (sender, role, text, client_id, created_at) "
                     "VALUES ('webchat-a', 'customer', 'hi', 'client-0001', 1)")  # fmt: skip
    store = WebChatStore.from_url(f"sqlite:///{path}")
    try:
        assert store.claim("webchat-a", "client-0002", "again", owner=process_owner()).new
        assert [m["text"] for m in store.history("webchat-a")] == ["hi", "again"]
    finally:
        store.dispose()


@dataclass
class SavingAgent(RecordingAgent):
    """Also saves the conversation as Rasa does, before the channel stores the answer."""

    tracker_store: InMemoryTrackerStore = field(default_factory=lambda: InMemoryTrackerStore(Domain.empty()))

    async def answer(self, message: UserMessage) -> None:
        await super().answer(message)
        tracker = await self.tracker_store.get_or_create_tracker(message.sender_id)
        tracker.update(UserUttered(message.text, message_id=message.message_id))
        for reply in self.replies:
            tracker.update(BotUttered(reply["text"], data={k: v for k, v in reply.items() if k != "text"}))
        await self.tracker_store.save(tracker)


@pytest.mark.asyncio
async def test_an_answer_rasa_saved_but_the_channel_failed_to_store_is_given_from_the_conversation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    channel = WebChatInput.from_credentials(None, {ENV_SECRET: SECRET})
    agent = SavingAgent()
    async with serve(channel, agent) as served:
        session = await served.session()
        store_answer = served.store.answer
        failures = [OperationalError("UPDATE", {}, Exception("database is locked"))]

        def answer_failing_once(*args: Any) -> list[dict[str, Any]]:
            if failures:
                raise failures.pop()
            return store_answer(*args)

        monkeypatch.setattr(served.store, "answer", answer_failing_once)
        failed = await served.say(session, "where is my parcel??", "client-0001")
        retried = await served.say(session, "where is my parcel??", "client-0001")

        assert failed.status_code == 500
        assert retried.status_code == 200, retried.text
        assert [r["text"] for r in retried.json()["replies"]] == [REPLY_TEXT, QUESTION]
        assert retried.json()["replies"][1]["buttons"] == BUTTONS
        assert len(agent.messages) == 1  # Rasa read it once
        assert [m["text"] for m in await served.history(session)] == ["where is my parcel??", REPLY_TEXT, QUESTION]


@pytest.mark.asyncio
async def test_a_pressed_button_sends_its_payload_and_shows_its_title(served: Served) -> None:
    session = await served.session()
    await served.say(session, "where is my parcel??", "client-0001")

    answer = await served.say(session, "Yes, that's right", "client-0002", payload="/affirm")

    assert answer.json()["customer"]["text"] == "Yes, that's right"
    assert served.agent.messages[-1].text == "/affirm"


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("typed", "payload", "rasa_reads"),
    [
        ("/affirm", None, "affirm"),
        ("  //deny{\"x\": 1}", None, "deny{\"x\": 1}"),
        ("Yes, that's right", "/affirm", "Yes, that's right"),  # no button offered yet
        ("Cancel it", "/cancel_order", "Cancel it"),
    ],
)
async def test_customers_cannot_inject_intents(
    served: Served, typed: str, payload: str | None, rasa_reads: str
) -> None:
    session = await served.session()

    answer = await served.say(session, typed, "client-0001", **({"payload": payload} if payload else {}))

    assert answer.status_code == 200
    assert answer.json()["customer"]["text"] == typed.strip()
    assert [m.text for m in served.agent.messages] == [rasa_reads]


@pytest.mark.asyncio
async def test_a_button_no_longer_offered_is_read_as_typed_text(served: Served) -> None:
    session = await served.session()
    await served.say(session, "where is my parcel??", "client-0001")
    served.agent.with_buttons = False
    await served.say(session, "AC-2291734", "client-0002")

    answer = await served.say(session, "Yes, that's right", "client-0003", payload="/affirm")

    assert answer.json()["customer"]["text"] == "Yes, that's right"
    assert [m.text for m in served.agent.messages][-1] == "Yes, that's right"


@pytest.mark.asyncio
async def test_history_is_the_conversation_in_order_with_only_the_last_buttons(served: Served) -> None:
    session = await served.session()
    other = await served.session()
    await served.say(session, "where is my parcel??", "client-0001", name="Maria")
    await served.say(other, "someone else's message", "client-0009")
    await served.say(session, "AC-2291734", "client-0002")
    await served.say(session, "It's late", "client-0003", payload="It's late")

    history = await served.history(session)

    assert history == [
        {"id": 1, "from": "customer", "text": "where is my parcel??", "client_id": "client-0001"},
        {"id": 2, "from": "bot", "text": REPLY_TEXT},
        {"id": 3, "from": "bot", "text": QUESTION},
        {"id": 7, "from": "customer", "text": "AC-2291734", "client_id": "client-0002"},
        {"id": 8, "from": "bot", "text": REPLY_TEXT},
        {"id": 9, "from": "bot", "text": QUESTION},
        {"id": 10, "from": "customer", "text": "It's late", "client_id": "client-0003"},
        {"id": 11, "from": "bot", "text": REPLY_TEXT},
        {"id": 12, "from": "bot", "text": QUESTION, "buttons": BUTTONS},
    ]
    assert await served.history(session, after=10) == history[-2:]
    assert await served.history(other) == [
        {"id": 4, "from": "customer", "text": "someone else's message", "client_id": "client-0009"},
        *replies_for(5),
    ]


@pytest.mark.asyncio
async def test_messages_rasa_sends_on_its_own_appear_in_the_history(served: Served) -> None:
    session = await served.session()
    await served.say(session, "where is my parcel??", "client-0001")
    output = served.channel.get_output_channel()

    await output.send_text_message(session["sender"], "Hi, this is Sam from the team. It left the depot today.")

    assert await served.history(session, after=3) == [
        {"id": 4, "from": "bot", "text": "Hi, this is Sam from the team. It left the depot today."}
    ]


@pytest.mark.parametrize(
    ("collected", "shown"),
    [
        ({"recipient_id": "s", "text": "Hi"}, {"text": "Hi", "buttons": []}),
        ({"recipient_id": "s", "text": "Pick", "buttons": [{"title": "A", "payload": "/a"}, {"payload": "b"}]},
         {"text": "Pick", "buttons": [{"title": "A", "payload": "/a"}, {"title": "b", "payload": "b"}]}),
        ({"recipient_id": "s", "custom": {"text": "Track it", "buttons": [
            {"title": "Tracking", "url": "https://track.example.com/1"},
            {"title": "Bad", "url": "javascript:alert(1)"}, "not a button"]}},
         {"text": "Track it", "buttons": [{"title": "Tracking", "url": "https://track.example.com/1"}]}),
        ({"recipient_id": "s", "image": "https://img.example.com/p.png"},
         {"text": "https://img.example.com/p.png", "buttons": []}),
        ({"recipient_id": "s", "custom": {"something": "else"}}, None),
    ],
)  # fmt: skip
def test_what_rasa_sends_is_turned_into_what_the_page_shows(collected: dict[str, Any], shown: Any) -> None:
    assert displayed(collected) == shown


# --- malformed requests ----------------------------------------------------------------------

GOOD = {"client_id": "client-0001", "message": "hi"}


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        (b"{not json", 400, "the body must be JSON: {\"sender\": \"...\", \"message\": \"...\"}"),
        (b"", 400, "the body must be JSON: {\"sender\": \"...\", \"message\": \"...\"}"),
        (b"[1, 2]", 400, "the body must be a JSON object"),
        ({**GOOD, "token": ""}, 400, "'token' must be the session token from /session"),
        ({**GOOD, "token": None}, 400, "'token' must be the session token from /session"),
        ({**GOOD, "sender": ""}, 400, "'sender' must be a non-empty string identifying the customer"),
        ({**GOOD, "sender": 42}, 400, "'sender' must be a non-empty string identifying the customer"),
        ({**GOOD, "message": None}, 400, "'message' must be a string (it may be empty)"),
        ({**GOOD, "message": "   "}, 400, "'message' must contain some text"),
        ({**GOOD, "message": "//"}, 400, "'message' must contain some text"),
        ({**GOOD, "message": "x" * (MAX_TEXT_CHARS + 1)}, 413,
         f"'message' must be at most {MAX_TEXT_CHARS} characters"),
        ({**GOOD, "client_id": None}, 400,
         "'client_id' must be 8-64 characters of A-Z, a-z, 0-9, _ and -, new for each message"),
        ({**GOOD, "client_id": "short"}, 400,
         "'client_id' must be 8-64 characters of A-Z, a-z, 0-9, _ and -, new for each message"),
        ({**GOOD, "client_id": "has spaces in it"}, 400,
         "'client_id' must be 8-64 characters of A-Z, a-z, 0-9, _ and -, new for each message"),
        ({**GOOD, "name": 7}, 400, "'name' must be a string when given"),
        ({**GOOD, "name": "n" * 65}, 400, "'name' must be at most 64 characters"),
        ({**GOOD, "payload": ""}, 400, "'payload' must be a button's payload (1-1024 characters) when given"),
        ({**GOOD, "payload": ["/affirm"]}, 400, "'payload' must be a button's payload (1-1024 characters) when given"),
        ({**GOOD, "message": "x" * 70_000}, 413, "the body must be at most 64000 bytes"),
    ],
)  # fmt: skip
async def test_a_malformed_message_is_a_clear_error_and_reaches_nobody(
    served: Served, body: Any, status: int, error: str
) -> None:
    session = await served.session()
    if isinstance(body, dict):
        body = json.dumps({"sender": session["sender"], "token": session["token"], **body}).encode()

    answer = await served.client.post(f"{BASE}/message", content=body, headers={"Content-Type": "application/json"})

    assert (answer.status_code, answer.json()) == (status, {"error": error})
    assert served.agent.messages == []
    assert await served.history(session) == []


@pytest.mark.asyncio
@pytest.mark.parametrize("after", ["-1", "abc", "1.5"])
async def test_a_malformed_history_query_is_a_400(served: Served, after: str) -> None:
    session = await served.session()
    answer = await served.client.get(
        f"{BASE}/history", params={"sender": session["sender"], "token": session["token"], "after": after}
    )
    assert (answer.status_code, answer.json()) == (400, {"error": "'after' must be a message id (a whole number)"})


# --- the page --------------------------------------------------------------------------------

STATIC = {"chat.js": "text/javascript; charset=utf-8", "chat.css": "text/css; charset=utf-8"}


@pytest.mark.asyncio
async def test_the_page_and_its_files_are_served_with_their_content_types(served: Served) -> None:
    page = await served.client.get(f"{BASE}/")

    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.text == (STATIC_DIR / "index.html").read_text()
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    assert re.findall(r'(?:src|href)="([^"]+)"', page.text) == ["data:,", "chat.css", "chat.js"]
    for name, content_type in STATIC.items():
        answer = await served.client.get(f"{BASE}/{name}")
        assert (answer.status_code, answer.headers["content-type"]) == (200, content_type)
        assert answer.text == (STATIC_DIR / name).read_text()
    assert (await served.client.get(f"{BASE}/missing.js")).status_code == 404
    assert (await served.client.get(f"{BASE}/../webchat.py")).status_code == 404


@pytest.mark.asyncio
@pytest.mark.parametrize(("path", "location"), [("/chat", "webhooks/webchat/"), (BASE, "webchat/")])
async def test_the_short_urls_redirect_to_the_page(served: Served, path: str, location: str) -> None:
    answer = await served.client.get(path)

    assert (answer.status_code, answer.headers["location"]) == (302, location)
    followed = await served.client.get(path, follow_redirects=True)
    assert (followed.status_code, str(followed.url.path)) == (200, f"{BASE}/")


@pytest.mark.parametrize("name", ["index.html", "chat.js", "chat.css"])
def test_the_static_files_load_nothing_from_elsewhere(name: str) -> None:
    text = (STATIC_DIR / name).read_text()

    assert re.findall(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, flags=re.IGNORECASE) == []
    assert "@import" not in text and "url(" not in text
    assert ".innerHTML" not in text and "insertAdjacentHTML" not in text and "document.write" not in text
