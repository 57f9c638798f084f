"""The sending thread (``bot.channels.sending``): a reply's call and its records off Rasa's event loop.

The Telegram, Messenger, WhatsApp and X senders, bound to a stored event, against their fake
APIs answering 200 ms after they take a message (a platform across a network): while the
caller's loop is kept busy, the reply is recorded "sent" as soon as the answer comes, on the
sending thread; with the thread switched off, it stays in doubt until the loop comes back to it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import pytest_asyncio

from bot.channels.dedupe import ChannelStore
from bot.channels.graph_client import GraphClient
from bot.channels.inbox import SENDING as SENDING_STATE
from bot.channels.inbox import SENT, Inbox
from bot.channels.meta_output import MESSENGER_PLATFORM, MetaOutput
from bot.channels.replies import RecordedOutput
from bot.channels.sending import ENV_SENDING_THREAD, SENDING_THREAD, GroupedIntake, SendingThread
from bot.channels.sending import sending_thread_from_env
from bot.channels.telegram_output import TelegramOutput, TelegramSettings, build_bot, close_bot
from bot.channels.whatsapp import WhatsAppInput
from bot.channels.whatsapp_output import WhatsAppSettings
from bot.channels.x_client import XSettings, build_client, close_client
from bot.channels.x_output import XOutput
from tests.channel_support import channel_store
from tests.fakes import graph_api, whatsapp_api, x_api
from tests.fakes.server import FakeServer
from tests.fakes.telegram_api import TOKEN, FakeTelegramAPI

CHAT = "4242"
MESSAGE_ID = "telegram:123456:1"
ANSWER_LATENCY_S = 0.2
BUSY_S = 0.8  # the caller's loop held up this long once the platform took the reply
REPLY = "Thanks, we are on it."
Fake = TypeVar("Fake", bound=FakeServer)


@contextmanager
def _answering_late(fake: Fake) -> Iterator[Fake]:
    """Serve ``fake``, each answer ``ANSWER_LATENCY_S`` after it took the call (a platform across a network)."""
    with fake:
        fake.answer_latency = ANSWER_LATENCY_S
        yield fake


@pytest.fixture
def api() -> Iterator[FakeTelegramAPI]:
    with _answering_late(FakeTelegramAPI()) as fake:
        yield fake


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ChannelStore]:
    with channel_store(tmp_path) as opened:
        yield opened


@pytest.fixture
def inbox(store: ChannelStore) -> Inbox:
    return Inbox(store.engine, owner="test")


@pytest.fixture(params=["on", "off"])
def switch(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The sending thread switched on, then off (``$FIRSTREPLY_SENDING_THREAD``)."""
    monkeypatch.setenv(ENV_SENDING_THREAD, request.param)
    return str(request.param)


def _state_while_busy(switch: str) -> str:
    """Return a reply's record while the caller's loop is busy: sent on the sending thread, else in doubt."""
    return SENT if switch == "on" else SENDING_STATE


@pytest_asyncio.fixture
async def sender(api: FakeTelegramAPI, store: ChannelStore, inbox: Inbox) -> AsyncIterator[TelegramOutput]:
    bot = build_bot(TelegramSettings(TOKEN, "secret", api.base_url, None))
    yield TelegramOutput(bot, store, inbox=inbox).for_message(MESSAGE_ID)
    await close_bot(bot)


async def _state_after_a_busy_loop(api: FakeServer, output: RecordedOutput, send: Awaitable[Any]) -> str:
    """Start ``send`` (the bound ``output``'s first reply), hold the loop up once the platform took it.

    Returns the reply's record as read before the loop resumes; the reply ends "sent".
    """
    assert output.inbox is not None and output.origin is not None
    sending = asyncio.ensure_future(send)
    deadline = time.monotonic() + 10
    while not api.deliveries():  # taken by the platform, its answer still on the way
        assert time.monotonic() < deadline, "the platform never took the reply"
        await asyncio.sleep(0.01)
    time.sleep(BUSY_S)  # the dialogue of other customers, run on the same loop
    state = output.inbox.reply_states(output.origin)[0]
    await sending
    assert output.inbox.reply_states(output.origin)[0] == SENT
    return state


@pytest.mark.asyncio
async def test_telegram_replies_are_recorded_sent_on_the_sending_thread_while_the_loop_is_busy(
    api: FakeTelegramAPI, sender: TelegramOutput, switch: str
) -> None:
    assert sender.on_sending_thread() == (switch == "on")
    state = await _state_after_a_busy_loop(api, sender, sender.send_text_message(CHAT, REPLY))
    assert state == _state_while_busy(switch)
    assert api.sent_texts(CHAT) == [REPLY]


@pytest.mark.asyncio
async def test_messenger_replies_are_recorded_on_the_sending_thread_too(inbox: Inbox, switch: str) -> None:
    with _answering_late(graph_api.FakeGraphAPI()) as graph:
        graph.customer_wrote(CHAT)
        client = GraphClient(graph_api.TOKEN, graph.base_url)
        output = MetaOutput(client, MESSENGER_PLATFORM, graph_api.PAGE_ID, inbox=inbox).for_message("messenger:m_1")
        assert output.on_sending_thread() == (switch == "on")

        state = await _state_after_a_busy_loop(graph, output, output.send_text_message(CHAT, REPLY))
        # The caller's loop has a client of its own for calls made there (the typing indicator).
        await client.post(f"{graph_api.PAGE_ID}/messages", {"recipient": {"id": CHAT}, "sender_action": "typing_on"})
        await client.close()

        assert state == _state_while_busy(switch)
        assert [d.text for d in graph.deliveries()] == [REPLY]
        assert len(graph.calls("messages")) == 1 and len(graph.calls("sender_action")) == 1


@pytest.mark.asyncio
async def test_whatsapp_replies_go_out_on_the_sending_thread_with_a_client_of_its_own(
    store: ChannelStore, inbox: Inbox, switch: str
) -> None:
    with _answering_late(whatsapp_api.FakeWhatsAppAPI()) as api:
        settings = WhatsAppSettings(whatsapp_api.TOKEN, whatsapp_api.APP_SECRET, api.base_url,
                                    whatsapp_api.VERIFY_TOKEN, whatsapp_api.PHONE_NUMBER_ID)  # fmt: skip
        channel = WhatsAppInput(settings, store, inbox)
        output = channel.output.for_message("whatsapp-wamid.IN1")
        assert output.on_sending_thread() == (switch == "on")
        # Which session each request went out through, and on which thread (httpx's request hooks).
        used: list[tuple[str, httpx.AsyncClient]] = []

        async def watch() -> httpx.AsyncClient:
            session = channel.clients.session

            async def note(_request: httpx.Request) -> None:
                used.append((threading.current_thread().name, session))

            session.event_hooks["request"].append(note)
            return session

        mine, own = await watch(), await SENDING_THREAD.run(watch())
        assert mine is not own

        state = await _state_after_a_busy_loop(api, output, output.send_text_message(CHAT, REPLY))
        await output.show_typing("wamid.IN1")  # the read receipt, from the caller's loop
        await channel.close(grace_seconds=1)

        here = threading.current_thread().name
        assert state == _state_while_busy(switch)
        assert used == [(SENDING_THREAD.name, own) if switch == "on" else (here, mine), (here, mine)]
        assert api.delivered_texts(CHAT) == [REPLY] and len(api.calls("read")) == 1
        assert mine.is_closed and own.is_closed


@pytest.mark.asyncio
async def test_x_replies_are_recorded_on_the_sending_thread_too(inbox: Inbox, switch: str) -> None:
    with _answering_late(x_api.FakeXAPI()) as api:
        settings = XSettings(x_api.ACCESS_TOKEN, x_api.CONSUMER_SECRET, api.base_url, x_api.CONSUMER_KEY,
                             x_api.ACCESS_TOKEN_SECRET, x_api.BRAND_ID, x_api.BRAND_HANDLE)  # fmt: skip
        client = build_client(settings)
        output = XOutput(client, settings.source, inbox=inbox).for_message("x:dm:1")
        assert output.on_sending_thread() == (switch == "on")

        state = await _state_after_a_busy_loop(api, output, output.send_text_message(CHAT, REPLY))
        await asyncio.to_thread(close_client, client)  # a requests session: closed from any thread

        assert state == _state_while_busy(switch)
        assert api.dms(CHAT) == [REPLY]


@pytest.mark.asyncio
async def test_a_client_per_loop_is_built_and_closed_on_its_own_thread() -> None:
    from bot.channels.sending import PerLoop

    class Client:
        def __init__(self) -> None:
            self.built_on = threading.current_thread().name
            self.closed_on: str | None = None

        async def aclose(self) -> None:
            self.closed_on = threading.current_thread().name

    clients: PerLoop[Client] = PerLoop(Client, lambda client: client.closed_on is not None)

    async def on_the_thread() -> Client:
        return clients.get()

    mine, again = clients.get(), clients.get()
    own = await SENDING_THREAD.run(on_the_thread())
    assert mine is again and own is not mine
    assert own.built_on == SENDING_THREAD.name and mine.built_on == threading.current_thread().name
    await clients.close(lambda client: client.aclose())
    assert (mine.closed_on, own.closed_on) == (mine.built_on, SENDING_THREAD.name)
    assert clients.get() is not mine  # a new one after closing


@pytest.mark.asyncio
async def test_a_bot_not_built_for_two_loops_sends_on_the_caller_s_loop(
    api: FakeTelegramAPI, store: ChannelStore, inbox: Inbox
) -> None:
    from telegram import Bot

    bot = Bot(TOKEN, base_url=api.base_url)
    output = TelegramOutput(bot, store, inbox=inbox).for_message(MESSAGE_ID)
    assert not output.on_sending_thread()
    await output.send_text_message(CHAT, "hello")
    assert api.sent_texts(CHAT) == ["hello"]
    await bot.request.shutdown()


@pytest.mark.asyncio
async def test_the_thread_runs_a_coroutine_returns_its_result_and_raises_its_error() -> None:
    thread = SendingThread("test-sending")

    async def where() -> str:
        await asyncio.sleep(0)
        return threading.current_thread().name

    async def fails() -> None:
        raise LookupError("no such chat")

    assert await thread.run(where()) == "test-sending"
    with pytest.raises(LookupError, match="no such chat"):
        await thread.run(fails())


@pytest.mark.asyncio
async def test_cancelling_the_caller_cancels_the_call_on_the_thread() -> None:
    thread = SendingThread("test-sending-cancel")
    started, cancelled = threading.Event(), threading.Event()

    async def slow() -> None:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    caller = asyncio.create_task(thread.run(slow()))
    await asyncio.to_thread(started.wait, 5)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert await asyncio.to_thread(cancelled.wait, 5)


@pytest.mark.asyncio
async def test_run_from_the_thread_itself_awaits_in_place() -> None:
    async def nested() -> bool:
        return await SENDING_THREAD.run(asyncio.sleep(0, result=SENDING_THREAD.here()))

    assert await SENDING_THREAD.run(nested()) is True


@pytest.mark.parametrize(("raw", "expected"), [("", True), ("on", True), ("OFF", False), ("0", False)])
def test_the_switch_reads_on_and_off(raw: str, expected: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_SENDING_THREAD, raw)
    assert sending_thread_from_env() is expected


def test_a_malformed_switch_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_SENDING_THREAD, "sometimes")
    with pytest.raises(ValueError, match="FIRSTREPLY_SENDING_THREAD must be on or off"):
        sending_thread_from_env()


# --- storing webhooks' events together ----------------------------------------------------------


@pytest.mark.asyncio
async def test_events_arriving_together_are_stored_in_one_write_each_with_its_own_result() -> None:
    writes: list[list[int]] = []
    gate = threading.Event()

    def write_all(items: list[int]) -> list[int]:
        gate.wait(5)  # the first write holds the thread while the others arrive
        writes.append(items)
        return [item * 10 for item in items]

    intake: GroupedIntake[int, int] = GroupedIntake(write_all)
    first = asyncio.create_task(intake.write(1))
    await asyncio.sleep(0.05)
    rest = [asyncio.create_task(intake.write(n)) for n in range(2, 7)]
    await asyncio.sleep(0.05)
    gate.set()
    assert await asyncio.gather(first, *rest) == [10, 20, 30, 40, 50, 60]
    assert writes == [[1], [2, 3, 4, 5, 6]]


@pytest.mark.asyncio
async def test_a_failed_write_fails_every_event_of_its_group_and_the_next_write_goes_on() -> None:
    calls = 0

    def write_all(items: list[str]) -> list[str]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("database is locked")
        return items

    intake: GroupedIntake[str, str] = GroupedIntake(write_all)
    with pytest.raises(OSError, match="database is locked"):
        await intake.write("a")
    assert await intake.write("b") == "b"


@pytest.mark.asyncio
async def test_an_event_whose_webhook_gave_up_before_its_write_is_not_written() -> None:
    written: list[str] = []
    gate = threading.Event()

    def write_all(items: list[str]) -> list[str]:
        gate.wait(5)
        written.extend(items)
        return items

    intake: GroupedIntake[str, str] = GroupedIntake(write_all)
    first = asyncio.create_task(intake.write("first"))
    await asyncio.sleep(0.05)
    gone = asyncio.create_task(intake.write("gone"))
    await asyncio.sleep(0.05)
    gone.cancel()  # the platform's request was dropped: it sends the update again
    await asyncio.sleep(0.05)
    gate.set()
    assert await first == "first"
    await asyncio.sleep(0.1)
    assert written == ["first"]


def test_the_inbox_stores_a_group_in_one_transaction_and_reads_a_copy_in_it_as_a_copy(tmp_path: Path) -> None:
    store = ChannelStore.from_url(f"sqlite:///{tmp_path / 'channels.db'}")
    inbox = Inbox(store.engine, owner="test")
    stored = inbox.accept_many([("telegram:1", "7", "42", "{}"), ("telegram:1", "8", "43", "{}"),
                                ("telegram:1", "7", "42", "{}")])  # fmt: skip
    assert [entry.update_id if entry else None for entry in stored] == ["7", "8", None]
    assert inbox.accept("telegram:1", "8", "43", "{}") is None
    assert inbox.pending("telegram:1") == 2
    store.dispose()
