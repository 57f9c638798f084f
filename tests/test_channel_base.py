"""The connectors' shared base (``bot.channels.base``), on a connector as small as a new one can be.

``ToyInput``/``ToyOutput`` are what a new platform adds: parsing into ``InboundEvent``s, a
sender of one text, its limit. Everything else (storing before the answer, dedupe, replay,
reply records, the holding line, splitting, fail-soft lookups) is the base's, exercised here
with the real inbox on SQLite. Telegram's and Slack's own tests run the same base against
their platforms' fakes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from prometheus_client import REGISTRY
from rasa.core.channels.channel import UserMessage
from sanic import Blueprint
from sqlalchemy.exc import OperationalError

from bot.channels.base import InboundEvent, Intake, WebhookConnector, non_text_notice, optional_lookup
from bot.channels.common import OnNewMessage
from bot.channels.dedupe import ChannelStore
from bot.channels.inbox import Inbox, InboxEntry
from bot.channels.replies import HOLDING_REPLY, RecordedOutput
from bot.channels.reply_windows import REPLY_WINDOWS
from tests.channel_support import RecordingAgent, channel_store
from tests.polling import until

SOURCE = "toy:bot-1"


class Refused(Exception):
    """The toy platform refusing a message for good (the customer blocked the bot)."""


class ToyOutput(RecordedOutput):
    """Sends by appending to ``sent``; refuses texts containing "blocked", fails on "down"."""

    text_limit = 20

    def __init__(self, inbox: Inbox | None = None) -> None:
        super().__init__(inbox)
        self.sent: list[tuple[str, str, dict[str, Any]]] = []

    @classmethod
    def name(cls) -> str:
        return "toy"

    def for_message(self, message_id: str) -> ToyOutput:
        return self.bound_to(message_id)

    def refused_for_good(self, error: BaseException) -> bool:
        return isinstance(error, Refused)

    async def _send_part(self, recipient_id: str, text: str, *, seq: int | None = None, **options: Any) -> None:
        async def send(_state: str | None) -> None:
            if "blocked" in text:
                raise Refused("blocked")
            if "down" in text:
                raise ConnectionError("platform down")
            self.sent.append((recipient_id, text, options))

        if not self.bound:
            await send(None)
            return
        await self.recorded("send", self.next_seq() if seq is None else seq, ("send", recipient_id, text), send)

    async def _button_options(self, text: str, buttons: Sequence[dict[str, Any]]) -> dict[str, Any]:
        return {"buttons": [button["title"] for button in buttons]}


class ToyInput(WebhookConnector):
    """Parses ``{"messages": [{"id", "from", "text"}]}``: several messages per webhook call."""

    output: ToyOutput

    @classmethod
    def name(cls) -> str:
        return "toy"

    def __init__(self, store: ChannelStore) -> None:
        self.start_connector(ToyOutput(inbox=self.open_inbox(store)))

    async def sources(self) -> list[str]:
        return [SOURCE]

    def blueprint(self, on_new_message: OnNewMessage) -> Blueprint:
        self._on_new_message = on_new_message
        return self.connector_blueprint("toy_webhook")

    @staticmethod
    def parse(body: dict[str, Any]) -> list[InboundEvent]:
        return [InboundEvent(SOURCE, m["id"], m["from"], json.dumps(m)) for m in body["messages"]]

    def output_for(self, entry: InboxEntry) -> ToyOutput:
        return self.output.for_message(f"toy-{entry.update_id}")

    async def handle(self, entry: InboxEntry, on_new_message: OnNewMessage) -> None:
        message = json.loads(entry.body)
        output = self.output_for(entry)
        await on_new_message(UserMessage(message["text"], output, message["from"], message_id=f"toy-{message['id']}"))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ChannelStore]:
    with channel_store(tmp_path) as opened:
        yield opened


@pytest.fixture
def agent() -> RecordingAgent:
    return RecordingAgent(replies=[{"text": "Thanks! One moment. I'm looking into it."}])


@pytest.fixture
def toy(store: ChannelStore, agent: RecordingAgent) -> ToyInput:
    channel = ToyInput(store)
    channel.blueprint(agent.handle_message)
    return channel


CALL = {"messages": [{"id": "m1", "from": "ana", "text": "hello"}, {"id": "m2", "from": "bo", "text": "hi"}]}


@pytest.mark.asyncio
async def test_every_event_of_a_call_is_stored_handled_and_answered_once(toy: ToyInput, agent: RecordingAgent) -> None:
    assert await toy.accept_all(toy.parse(CALL)) is Intake.STORED
    await toy.tasks.wait()
    assert await toy.accept_all(toy.parse(CALL)) is Intake.COPY  # the platform sent the call again
    await toy.tasks.wait()

    assert sorted(agent.seen()) == [("hello", "ana", None), ("hi", "bo", None)]
    # Split at the toy's 20 characters, each part recorded: none sent twice.
    assert sorted(toy.output.sent) == [
        ("ana", "I'm looking into it.", {}), ("ana", "Thanks! One moment.", {}),
        ("bo", "I'm looking into it.", {}), ("bo", "Thanks! One moment.", {}),
    ]  # fmt: skip
    assert toy.inbox.pending(SOURCE) == 0


@pytest.mark.asyncio
async def test_a_call_that_cannot_be_stored_is_refused_so_the_platform_sends_it_again(
    toy: ToyInput, agent: RecordingAgent, monkeypatch: pytest.MonkeyPatch
) -> None:
    def database_down(*_: Any) -> None:
        raise OperationalError("INSERT INTO channel_inbox", {}, Exception("database is locked"))

    with monkeypatch.context() as patched:
        patched.setattr(toy.inbox, "accept_many", database_down)
        assert await toy.accept_all(toy.parse(CALL)) is Intake.UNAVAILABLE
    assert await toy.accept_all(toy.parse(CALL)) is Intake.STORED
    await toy.tasks.wait()
    assert len(agent.messages) == 2


@pytest.mark.asyncio
async def test_a_failure_gets_one_holding_line_and_a_later_attempt_sends_only_what_is_missing(
    toy: ToyInput, agent: RecordingAgent
) -> None:
    agent.error = RuntimeError("action server down")
    await toy.accept(InboundEvent(SOURCE, "m1", "ana", json.dumps({"id": "m1", "from": "ana", "text": "hello"})))
    await toy.tasks.wait()
    assert toy.output.sent == [("ana", HOLDING_REPLY, {})]

    [entry] = await _due(toy)
    agent.error = None
    await toy.handle(entry, agent.handle_message)
    again = toy.output.for_message("toy-m1")
    await again.send_holding("ana")  # recorded at HOLDING_SEQ: not sent a second time

    assert [text for _, text, _ in toy.output.sent] == [HOLDING_REPLY, "Thanks! One moment.", "I'm looking into it."]


async def _due(toy: ToyInput) -> list[InboxEntry]:
    with toy.store.engine.begin() as conn:  # the retry's back-off has run out
        conn.exec_driver_sql("UPDATE channel_inbox SET lease_until = 0")
    return toy.inbox.claim_due(SOURCE)


@pytest.mark.asyncio
async def test_a_reply_refused_for_good_is_dropped_and_a_failed_one_is_sent_again(store: ChannelStore) -> None:
    output = ToyOutput(inbox=Inbox(store.engine)).for_message("toy-m9")
    await output.send_text_with_buttons("ana", "you are blocked", [{"title": "OK", "payload": "/affirm"}])
    with pytest.raises(ConnectionError):
        await output.send_text_message("ana", "platform down")

    assert output.sent == []
    retry = ToyOutput(inbox=output.inbox).for_message("toy-m9")
    await retry.send_text_with_buttons("ana", "you are blocked", [{"title": "OK", "payload": "/affirm"}])
    await retry.send_text_message("ana", "back up now")  # reply 1 again, failed before: sent now
    assert retry.sent == [("ana", "back up now", {})]


@pytest.mark.asyncio
async def test_buttons_ride_with_the_last_part_and_an_empty_text_gets_the_prompt() -> None:
    output = ToyOutput()
    await output.send_text_with_buttons("ana", "One moment. Which order is it?", [{"title": "A1"}, {"title": "B2"}])
    await output.send_text_with_buttons("ana", "", [{"title": "Yes"}])

    assert output.sent == [
        ("ana", "One moment.", {}), ("ana", "Which order is it?", {"buttons": ["A1", "B2"]}),
        ("ana", "Please choose:", {"buttons": ["Yes"]}),
    ]  # fmt: skip


def test_the_non_text_notice_asks_what_it_is_about_only_without_a_caption() -> None:
    assert non_text_notice("photo", with_text=True) == (
        "I can only read text, but I've attached your photo to your case for the person who picks it up."
    )
    assert non_text_notice("photo", with_text=False).endswith(" Could you also tell me in a few words what it's about?")


def _failures(lookup: str) -> float:
    labels = {"channel": "toy", "lookup": lookup}
    return REGISTRY.get_sample_value("firstreply_channel_lookup_failures_total", labels) or 0.0


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("answer", "problem"),
    [({"profile": None}, "answered in an unexpected shape (TypeError"), (ConnectionError("refused"), "failed (")],
    ids=["odd-shape", "upstream-down"],
)
async def test_an_optional_lookup_fails_soft_logged_and_counted(
    answer: Any, problem: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def call() -> Any:
        if isinstance(answer, Exception):
            raise answer
        return answer

    before = _failures("profile")
    with caplog.at_level(logging.WARNING, logger="bot.channels.base"):
        found = await optional_lookup(
            "toy", "profile", "ana", call, lambda got: got["profile"]["name"], upstream_errors=(ConnectionError,)
        )

    assert found is None
    assert _failures("profile") == before + 1
    [warning] = [r.getMessage() for r in caplog.records if r.name == "bot.channels.base"]
    assert warning.startswith(f"toy profile for ana {problem}") and warning.endswith(": going on without it")


# --- replies in doubt after a crash -----------------------------------------------------------

GREETING = {"text": "Hi Ana! I'm here.", "utter_action": "utter_greeting_named"}


class HangingToyOutput(ToyOutput):
    """A toy sender whose platform call for a text containing "hang" never returns (a crash mid-call)."""

    async def _send_part(self, recipient_id: str, text: str, *, seq: int | None = None, **options: Any) -> None:
        if "hang" in text:
            await self.recorded("send", self.next_seq() if seq is None else seq, ("send", recipient_id, text),
                                lambda _state: asyncio.Event().wait())  # fmt: skip
            return
        await super()._send_part(recipient_id, text, seq=seq, **options)


async def _cut_off(output: ToyOutput, *messages: dict[str, Any]) -> None:
    """Send ``messages`` until a call hangs, then stop there as a killed process would."""

    async def send_all() -> None:
        for message in messages:
            await output.send_response("ana", dict(message))

    task = asyncio.ensure_future(send_all())
    await asyncio.sleep(0.2)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def _in_doubt(outcome: str) -> float:
    labels = {"channel": "toy", "outcome": outcome}
    return REGISTRY.get_sample_value("firstreply_channel_replies_in_doubt_total", labels) or 0.0


@pytest.mark.asyncio
async def test_a_greeting_cut_off_mid_send_is_not_sent_again_but_the_rest_of_the_answer_is(store: ChannelStore) -> None:
    inbox = Inbox(store.engine)
    first = HangingToyOutput(inbox=inbox).for_message("toy-m1")
    await _cut_off(first, {**GREETING, "text": "Hi Ana! hang"}, {"text": "How can I help?"})
    assert first.sent == []
    before = _in_doubt("greeting not resent")

    again = ToyOutput(inbox=inbox).for_message("toy-m1")
    for message in ({**GREETING, "text": "Hi Ana! hang"}, {"text": "How can I help?"}):
        await again.send_response("ana", dict(message))

    assert [text for _, text, _ in again.sent] == ["How can I help?"]
    assert _in_doubt("greeting not resent") == before + 1


@pytest.mark.asyncio
async def test_a_reply_cut_off_mid_send_is_sent_again_and_counted_in_doubt(store: ChannelStore) -> None:
    inbox = Inbox(store.engine)
    first = HangingToyOutput(inbox=inbox).for_message("toy-m1")
    await _cut_off(first, GREETING, {"text": "Which one? hang"}, {"text": "Thanks."})
    assert [text for _, text, _ in first.sent] == ["Hi Ana! I'm here."]
    before = _in_doubt("resent")

    again = ToyOutput(inbox=inbox).for_message("toy-m1")
    for message in (GREETING, {"text": "Which one? hang"}, {"text": "Thanks."}):
        await again.send_response("ana", dict(message))

    # The greeting went out before; the reply in flight at the crash is sent again (in doubt).
    assert [text for _, text, _ in again.sent] == ["Which one? hang", "Thanks."]
    assert _in_doubt("resent") == before + 1


@pytest.mark.asyncio
async def test_a_customer_is_greeted_once_per_conversation_whatever_message_greets(store: ChannelStore) -> None:
    inbox = Inbox(store.engine)
    first = ToyOutput(inbox=inbox).for_message("toy-m1")
    await first.send_response("ana", dict(GREETING))
    # The conversation was lost with a crash before Rasa saved it: the next message greets again.
    second = ToyOutput(inbox=inbox).for_message("toy-m2")
    await second.send_response("ana", dict(GREETING))
    await second.send_response("ana", {"text": "How can I help?"})
    await second.send_response("bo", {**GREETING, "text": "Hi Bo!"})

    assert [text for _, text, _ in first.sent] == ["Hi Ana! I'm here."]
    assert [(to, text) for to, text, _ in second.sent] == [("ana", "How can I help?"), ("bo", "Hi Bo!")]


@pytest.mark.asyncio
async def test_a_reply_is_recorded_sent_without_waiting_for_the_thread_pool(store: ChannelStore) -> None:
    """Under a burst the default thread pool is busy: a record queued there is a crash's reply in doubt."""
    inbox = Inbox(store.engine)
    loop = asyncio.get_running_loop()
    busy_pool = ThreadPoolExecutor(max_workers=1)
    loop.set_default_executor(busy_pool)
    release = threading.Event()
    blocked = loop.run_in_executor(None, release.wait)
    replies_before = REPLY_WINDOWS.summary()["replies"]
    try:
        output = ToyOutput(inbox=inbox).for_message("toy-m1")
        await asyncio.wait_for(output.send_text_message("ana", "On it."), 5)
        # Recorded as sent already, while the pool is still blocked.
        assert inbox.begin_reply("toy-m1", 0, "") == "sent"
    finally:
        release.set()
        await blocked
        busy_pool.shutdown()
    summary = REPLY_WINDOWS.summary()
    assert summary["replies"] == min(replies_before + 1, 10_000)
    assert summary["in_doubt_window_ms"]["max"] >= summary["record_lag_ms"]["p50"] >= 0


class _RacedTables:
    """Tables whose first ``create_all`` meets another process creating them (or another failure)."""

    def __init__(self, message: str) -> None:
        self.message, self.calls = message, 0

    def create_all(self, engine: object) -> None:
        from sqlalchemy.exc import OperationalError

        self.calls += 1
        if self.calls == 1:
            raise OperationalError("CREATE TABLE channel_inbox", {}, Exception(self.message))


def test_tables_created_by_another_process_meanwhile_are_looked_at_again() -> None:
    from sqlalchemy.exc import OperationalError

    from bot.channels.dedupe import create_tables

    raced = _RacedTables("table channel_inbox already exists")
    create_tables(raced, object())  # type: ignore[arg-type]
    assert raced.calls == 2
    broken = _RacedTables("disk I/O error")
    with pytest.raises(OperationalError):
        create_tables(broken, object())  # type: ignore[arg-type]
    assert broken.calls == 1


def _burst(count: int) -> dict[str, Any]:
    return {"messages": [{"id": f"b{n}", "from": f"customer-{n}", "text": f"message {n}"} for n in range(count)]}


def _holders(store: ChannelStore) -> list[str | None]:
    with store.engine.connect() as conn:
        return [row[0] for row in conn.exec_driver_sql("SELECT lease_owner FROM channel_inbox WHERE state = 'pending'")]


@pytest.mark.asyncio
async def test_a_burst_beyond_a_worker_s_room_is_queued_and_taken_by_another_worker_with_room(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FIRSTREPLY_HANDLING_AT_ONCE", "2")
    monkeypatch.setenv("FIRSTREPLY_INBOX_SWEEP_SECONDS", "60")
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    busy_agent = RecordingAgent(replies=[{"text": "On it."}], gate=asyncio.Event())
    idle_agent = RecordingAgent(replies=[{"text": "On it."}])
    busy, idle = ToyInput(ChannelStore.from_url(url)), ToyInput(ChannelStore.from_url(url))
    busy.blueprint(busy_agent.handle_message)
    idle.blueprint(idle_agent.handle_message)
    idle.start_sweeping()  # sweeps at once (nothing yet); the next sweep is a minute away
    await asyncio.sleep(0.1)

    assert await busy.accept_all(busy.parse(_burst(6))) is Intake.STORED
    holders = _holders(busy.store)
    # Two held by the worker that accepted them (its room), four queued for whoever has room.
    assert len(holders) == 6 and holders.count(None) == 4

    # The idle worker's sweeper looks for queued events between its sweeps.
    await until("the idle worker took the queued events", lambda: len(idle_agent.messages) == 4, timeout=5)
    await idle.stop_sweeping()
    await asyncio.wait_for(idle.tasks.wait(), 10)
    assert sorted(m.sender_id for m in idle_agent.messages) == [f"customer-{n}" for n in range(2, 6)]
    assert sorted(m.sender_id for m in busy_agent.messages) == ["customer-0", "customer-1"]

    assert busy_agent.gate is not None
    busy_agent.gate.set()
    await asyncio.wait_for(busy.tasks.wait(), 10)
    assert len(busy_agent.messages) == 2 and busy.inbox.pending(SOURCE) == 0
    answered = [recipient for recipient, _, _ in busy.output.sent + idle.output.sent]
    assert sorted(answered) == sorted(f"customer-{n}" for n in range(6))  # each answered once


@pytest.mark.asyncio
async def test_a_worker_that_is_closing_takes_no_more_from_the_queue(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FIRSTREPLY_HANDLING_AT_ONCE", "1")
    agent = RecordingAgent(replies=[{"text": "On it."}], gate=asyncio.Event())
    toy = ToyInput(ChannelStore.from_url(f"sqlite:///{tmp_path / 'shared.db'}"))
    toy.blueprint(agent.handle_message)
    await toy.accept_all(toy.parse(_burst(3)))
    await asyncio.sleep(0.05)

    closing = asyncio.get_running_loop().create_task(toy.close(grace_seconds=5))
    await asyncio.sleep(0.05)
    assert agent.gate is not None
    agent.gate.set()
    await asyncio.wait_for(closing, 10)
    # The one it was handling ended; the two queued wait, unheld, for another process.
    assert [m.sender_id for m in agent.messages] == ["customer-0"]
    assert _holders(toy.store) == [None, None]
