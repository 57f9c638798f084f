"""The channel's greeting of a new customer, ahead of NLU and the dialogue (``bot.channels.edge``).

The wording and the language from the domain; on the Telegram connector (the real blueprint in
Rasa's Sanic app, python-telegram-bot against the fake Bot API) the greeting goes first, once
per conversation, also after a restart on the same inbox file; and the dialogue's greeting
step records it instead of sending it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from rasa.core.channels.channel import UserMessage
from rasa_sdk.executor import CollectingDispatcher
from sqlalchemy import delete, update

from actions.acknowledge import ActionAcknowledge
from bot.channels.common import BackgroundTasks, OnNewMessage
from bot.channels.edge import (
    ENV_EDGE_GREETING,
    EarlyGreetings,
    GreetingWords,
    domain_responses,
    edge_greeting_on,
    greet_at_edge,
)
from bot.channels.inbox import GREETING_KEY, InboxEntry
from bot.channels.inbox import inbox as inbox_table
from bot.channels.inbox import replies
from bot.channels.replies import EDGE_GREETING_SEQ
from bot.channels.telegram import TelegramInput
from bot.channels.telegram_output import SECRET_HEADER, TelegramSettings, build_bot, close_bot
from bot.channels.telegram_poll import poll
from bot.constants import GREETED_AT_EDGE
from tests.channel_support import RecordingAgent
from tests.fakes.telegram_api import FakeTelegramAPI
from tests.polling import until
from tests.test_actions import tracker, user
from tests.test_telegram_channel import GROUP_CHAT, MARIA_METADATA, SECRET, WEBHOOK, Served, message_update, serve
from tests.test_telegram_channel import api, settings  # noqa: F401  (the fake Bot API and the connector's settings)

pytestmark = pytest.mark.edge_greeting

ASSISTANT = "Northwind's assistant"
LANGUAGES = ["en", "es", "fr", "de", "pt", "it"]
PARCEL = "where is my parcel? I ordered it two weeks ago and nothing came"
PARCEL_FR = "Bonjour, où est mon colis ? Je l'ai commandé il y a deux semaines et rien n'est arrivé"
ACK = {"text": "Thanks for letting us know about your order.", "utter_action": "utter_ack_order_status"}


def words() -> GreetingWords:
    return GreetingWords(domain_responses, ASSISTANT, LANGUAGES)


# --- the wording ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "metadata", "expected"),
    [
        (PARCEL, {"customer_name": "Maria Keller"}, "Hi Maria! I'm Northwind's assistant."),
        (PARCEL, {}, "Hi there! I'm Northwind's assistant."),
        (PARCEL, {"username": "@maria_k"}, "Hi maria_k! I'm Northwind's assistant."),
        (PARCEL_FR, {"first_name": "Élodie"}, "Bonjour Élodie ! Je suis Northwind's assistant."),
        ("¿Dónde está mi pedido? Lo compré hace dos semanas", {}, "¡Hola! Soy Northwind's assistant."),
        # Too short to tell: the channel's locale decides, else the main language.
        ("hi", {"customer_name": "Maria", "language_code": "pt-BR"}, "Olá, Maria! Sou Northwind's assistant."),
        ("ok", {}, "Hi there! I'm Northwind's assistant."),
    ],
)
def test_the_greeting_is_the_domain_s_in_the_message_s_language_with_the_first_name(
    text: str, metadata: dict[str, Any], expected: str
) -> None:
    greeting = words().for_message(text, metadata)
    assert greeting is not None and greeting.text == expected


def test_a_switched_off_language_is_greeted_in_the_main_one() -> None:
    greeting = GreetingWords(domain_responses, ASSISTANT, ["en"]).for_message(PARCEL_FR, {})
    assert greeting is not None and (greeting.text, greeting.language) == ("Hi there! I'm Northwind's assistant.", "en")


def test_the_wording_is_read_from_the_responses_given_each_time() -> None:
    served = {"utter_greeting": [{"text": "Hello from the new model, {assistant_name}."}]}
    greeting = GreetingWords(lambda: served, ASSISTANT, ["en"]).for_message(PARCEL, {})
    assert greeting is not None and greeting.text == "Hello from the new model, Northwind's assistant."


@pytest.mark.parametrize(("value", "on"), [(None, True), ("on", True), ("off", False), ("OFF", False), ("0", False)])
def test_the_switch(value: str | None, on: bool) -> None:
    assert edge_greeting_on({} if value is None else {ENV_EDGE_GREETING: value}) is on


# --- on the Telegram connector -----------------------------------------------------------


@pytest.fixture(autouse=True)
def channel_db(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    path = tmp_path / "channels.db"
    monkeypatch.setenv("FIRSTREPLY_CHANNEL_DB", str(path))
    return path


class DialogueAgent(RecordingAgent):
    """Answers as the dialogue does: its greeting recorded (not sent again) when the channel greeted."""

    async def answer(self, message: UserMessage) -> None:
        edge = (message.metadata or {}).get(GREETED_AT_EDGE)
        replies = [{"text": edge["text"], "utter_action": edge["response"], GREETED_AT_EDGE: True}] if edge else []
        for reply in [*replies, *self.replies]:
            await message.output_channel.send_response(message.sender_id, dict(reply))


@pytest_asyncio.fixture
async def served(settings: TelegramSettings) -> AsyncIterator[Served]:
    async with serve(TelegramInput(settings), DialogueAgent(replies=[ACK])) as running:
        yield running


@pytest.mark.asyncio
async def test_a_new_customer_is_greeted_first_with_typing_and_rasa_is_told(served: Served, api: FakeTelegramAPI) -> None:
    assert (await served.post(message_update(1, text=PARCEL))).status_code == 200

    greeting = "Hi Maria! I'm Northwind's assistant."
    assert api.sent_texts(4242) == [greeting, ACK["text"]]
    assert [call.params["action"] for call in api.calls("sendChatAction")] == ["typing"]
    [(text, sender, metadata)] = served.agent.seen()
    assert (text, sender) == (PARCEL, "4242")
    assert metadata == {**MARIA_METADATA, GREETED_AT_EDGE: {"response": "utter_greeting_named", "text": greeting,
                                                            "language": "en"}}  # fmt: skip


@pytest.mark.asyncio
async def test_the_greeting_goes_as_soon_as_the_message_is_stored_not_at_the_worker_s_turn(
    served: Served, api: FakeTelegramAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The inbox worker's turn is held back (in a burst: behind other customers' NLU); the greeting is not.
    turn = asyncio.Event()
    handle = served.channel.handle

    async def held(entry: InboxEntry, on_new_message: OnNewMessage) -> None:
        await turn.wait()
        await handle(entry, on_new_message)

    monkeypatch.setattr(served.channel, "handle", held)
    answer = await served.client.post(WEBHOOK, json=message_update(1, text=PARCEL), headers={SECRET_HEADER: SECRET})
    # The first sign rides on the webhook's answer: Telegram shows "typing…" with no call of ours.
    assert (answer.status_code, answer.json()) == (200, {"method": "sendChatAction", "chat_id": 4242,
                                                         "action": "typing"})  # fmt: skip

    greeting = "Hi Maria! I'm Northwind's assistant."
    await until("the greeting", lambda: api.sent_texts(4242) == [greeting])
    assert api.calls("sendChatAction") == []  # not sent a second time by the greeting
    assert served.agent.seen() == []
    turn.set()
    await served.channel.tasks.wait()
    assert api.sent_texts(4242) == [greeting, ACK["text"]]  # not sent again by the worker
    [(_, _, metadata)] = served.agent.seen()
    assert metadata[GREETED_AT_EDGE]["text"] == greeting


@pytest.mark.asyncio
async def test_a_returning_customer_s_next_message_is_not_greeted(served: Served, api: FakeTelegramAPI) -> None:
    await served.post(message_update(1, text=PARCEL))
    await served.post(message_update(2, text="AC-2291734"))

    assert api.sent_texts(4242) == ["Hi Maria! I'm Northwind's assistant.", ACK["text"], ACK["text"]]
    assert GREETED_AT_EDGE not in (served.agent.seen()[1][2] or {})


@pytest.mark.asyncio
async def test_the_greeting_claim_holds_across_a_restart_on_the_same_inbox_file(
    settings: TelegramSettings, api: FakeTelegramAPI
) -> None:
    # Rasa fails on the first try: the greeting went out, the message stays in the inbox.
    async with serve(TelegramInput(settings), DialogueAgent(error=RuntimeError("action server down"))) as first:
        await first.post(message_update(1, text=PARCEL))
    assert api.sent_texts(4242)[0] == "Hi Maria! I'm Northwind's assistant."
    # A new process, a new inbox object on the same SQLite file, takes the message over.
    restarted = TelegramInput(settings)
    with restarted.store.engine.begin() as conn:  # its retry is due now
        conn.execute(update(inbox_table).values(lease_until=0))
    async with serve(restarted, DialogueAgent(replies=[ACK])) as second:
        await second.channel.sweep()  # (or its sweeper loop, at start)
        await until("the message handled again", lambda: api.sent_texts(4242)[-1:] == [ACK["text"]])
        await second.channel.tasks.wait()
        [(_, _, metadata)] = second.agent.seen()

    texts = api.sent_texts(4242)
    assert texts.count("Hi Maria! I'm Northwind's assistant.") == 1
    assert texts[-1] == ACK["text"]
    assert metadata[GREETED_AT_EDGE]["text"] == "Hi Maria! I'm Northwind's assistant."
    # Another message claiming the greeting later in this conversation may not.
    assert not restarted.inbox.claim_greeting(GREETING_KEY.format(channel="telegram", recipient="4242"), "telegram-9", 3600)


class GreetingDialogueAgent(DialogueAgent):
    """The dialogue with its own greeting step: it greets unless the channel did (then it records that greeting)."""

    async def answer(self, message: UserMessage) -> None:
        if not (message.metadata or {}).get(GREETED_AT_EDGE):
            greeting = {"text": "Hi Maria! I'm Northwind's assistant.", "utter_action": "utter_greeting_named"}
            await message.output_channel.send_response(message.sender_id, greeting)
        await super().answer(message)


@pytest.mark.asyncio
async def test_handled_again_after_part_of_the_answer_went_out_the_greeting_is_recorded_and_nothing_shifts(
    settings: TelegramSettings, api: FakeTelegramAPI
) -> None:
    question = {"text": "What's your order number?", "utter_action": "utter_ask_order_number"}
    channel = TelegramInput(settings)
    async with serve(channel, GreetingDialogueAgent(replies=[ACK, question])) as running:
        await running.post(message_update(1, text=PARCEL))
        greeting = "Hi Maria! I'm Northwind's assistant."
        assert api.sent_texts(4242) == [greeting, ACK["text"], question["text"]]
        # As after a crash before Rasa saved the turn, the question's call cut off before it began:
        # the message is handled again, with the greeting and the acknowledgement out already.
        with channel.store.engine.begin() as conn:
            conn.execute(delete(replies).where(replies.c.message_id == "telegram-1", replies.c.seq == 1))
            conn.execute(update(inbox_table).values(state="pending", lease_until=0, lease_owner=None))
        await running.channel.sweep()
        await until("the message handled again", lambda: len(running.agent.seen()) == 2)
        await running.channel.tasks.wait()

    assert api.sent_texts(4242) == [greeting, ACK["text"], question["text"], question["text"]]
    assert running.agent.seen()[1][2][GREETED_AT_EDGE]["text"] == greeting


@pytest.mark.parametrize("replay", [False, True])
@pytest.mark.asyncio
async def test_a_queued_message_waits_for_the_greeting_another_worker_is_sending(
    served: Served, api: FakeTelegramAPI, replay: bool
) -> None:
    channel = served.channel
    entry = InboxEntry(channel.settings.source, "1", "4242", json.dumps(message_update(1, text=PARCEL)), 0, replay=replay)
    message = channel.first_message(entry)
    assert message is not None
    # The worker that stored it is sending the greeting still (it is "sending" in the records).
    channel.inbox.begin_reply("telegram-1", EDGE_GREETING_SEQ, "greeting")
    sent_by_the_other = asyncio.get_running_loop().call_later(
        0.3, channel.inbox.finish_reply, "telegram-1", EDGE_GREETING_SEQ
    )

    began = time.monotonic()
    greeting = await greet_at_edge(message, entry, channel.inbox, channel.greeting_words, 3600)
    waited = time.monotonic() - began
    sent_by_the_other.cancel()

    assert greeting is not None and greeting.text == "Hi Maria! I'm Northwind's assistant."
    assert api.sent_texts(4242) == []  # recorded as the customer's greeting, never sent twice
    # Never tried: the other worker is alive and sending, so its greeting comes first. Handled
    # again after a crash: the one in doubt is not waited for.
    assert (waited >= 0.3) is not replay


@pytest.mark.asyncio
async def test_a_group_message_s_webhook_answer_carries_no_typing(served: Served, api: FakeTelegramAPI) -> None:
    await served.post(message_update(1, text=PARCEL))
    answer = await served.post(message_update(2, text="@firstreply_test_bot hello", chat=GROUP_CHAT))
    assert answer.json() == {"ok": True}  # a group message: no greeting, no typing in the answer
    assert [call.params["chat_id"] for call in api.calls("sendChatAction")] == ["4242"]


@pytest.mark.asyncio
async def test_the_poller_runs_the_typing_indicator_of_rasa_s_answer(
    served: Served, api: FakeTelegramAPI, settings: TelegramSettings
) -> None:
    # Without a public URL the poller stands in for Telegram: it runs the method Rasa answers with.
    api.queue_update(message_update(21, text=PARCEL))
    bot = build_bot(settings)
    stop = asyncio.Event()
    poller = asyncio.create_task(
        poll(bot, str(served.client.base_url) + WEBHOOK, SECRET, stop, client=served.client, long_poll_seconds=1)
    )
    try:
        await until("the greeting", lambda: api.sent_texts(4242)[:1] == ["Hi Maria! I'm Northwind's assistant."])
        await until("the typing indicator", lambda: len(api.calls("sendChatAction")) == 1)
    finally:
        stop.set()
        await asyncio.wait_for(poller, 5)
        await close_bot(bot)
    await served.channel.tasks.wait()
    assert [(c.params["chat_id"], c.params["action"]) for c in api.calls("sendChatAction")] == [("4242", "typing")]


@pytest.mark.asyncio
async def test_when_the_greeting_cannot_be_sent_the_dialogue_greets(served: Served, api: FakeTelegramAPI) -> None:
    served.channel.output.backoff_seconds = 0.0
    api.fail_next(times=served.channel.output.max_attempts, status=502, method="sendMessage")

    await served.post(message_update(1, text=PARCEL))

    [(_, _, metadata)] = served.agent.seen()
    assert GREETED_AT_EDGE not in metadata  # the dialogue's own greeting step greets, as before
    assert api.sent_texts(4242) == [ACK["text"]]


@pytest.mark.asyncio
async def test_switched_off_nothing_is_sent_ahead(
    settings: TelegramSettings, api: FakeTelegramAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_EDGE_GREETING, "off")
    async with serve(TelegramInput(settings), DialogueAgent(replies=[ACK])) as running:
        await running.post(message_update(1, text=PARCEL))
        [(_, _, metadata)] = running.agent.seen()
    assert api.sent_texts(4242) == [ACK["text"]]
    assert api.calls("sendChatAction") == []
    assert metadata == MARIA_METADATA


@pytest.mark.asyncio
async def test_no_message_goes_to_rasa_while_a_greeting_started_ahead_is_under_way() -> None:
    early, tasks = EarlyGreetings(), BackgroundTasks("test")
    sent = asyncio.Event()

    async def greet() -> None:
        await sent.wait()

    early.start("telegram-7", greet, tasks)
    waiting = asyncio.get_running_loop().create_task(early.quiet())
    for _ in range(5):
        await asyncio.sleep(0)
    assert not waiting.done()
    sent.set()
    await waiting
    assert (await early.outcome("telegram-7"), await early.outcome("telegram-8")) == ((True, None), (False, None))


@pytest.mark.asyncio
async def test_a_greeting_ahead_that_failed_leaves_the_decision_to_the_message_s_handling() -> None:
    early, tasks = EarlyGreetings(), BackgroundTasks("test")

    async def greet() -> None:
        raise ConnectionError("database gone mid-greeting")

    early.start("telegram-7", greet, tasks)
    await tasks.wait()
    # Not "sent nothing" (the dialogue would greet, perhaps a second time): the handling reads the records.
    assert await early.outcome("telegram-7") == (False, None)


@pytest.mark.asyncio
async def test_a_greeting_that_hangs_holds_the_others_back_only_for_a_while() -> None:
    early, tasks = EarlyGreetings(), BackgroundTasks("test")
    sent = asyncio.Event()

    async def greet() -> None:
        await sent.wait()

    early.start("telegram-7", greet, tasks)
    await early.quiet(limit_seconds=0.01)  # returns, the greeting still under way
    sent.set()
    await tasks.wait()


# --- the dialogue's greeting step ----------------------------------------------------------


def _edge_message(channel: str) -> dict[str, Any]:
    edge = {"response": "utter_greeting_named", "text": "Bonjour Maria ! Je suis Northwind's assistant.", "language": "fr"}
    event = user(PARCEL_FR, "order_status", metadata={"customer_name": "Maria", GREETED_AT_EDGE: edge})
    return {**event, "input_channel": channel}


def test_the_dialogue_records_the_channel_s_greeting_instead_of_sending_it(services: Any, domain: dict) -> None:
    dispatcher = CollectingDispatcher()
    ActionAcknowledge(services).run(dispatcher, tracker([_edge_message("telegram")]), domain)

    greeting, ack = dispatcher.messages
    assert (greeting["text"], greeting["utter_action"], greeting[GREETED_AT_EDGE], greeting["response"]) == (
        "Bonjour Maria ! Je suis Northwind's assistant.", "utter_greeting_named", True, None,
    )  # fmt: skip
    assert ack["response"] == "utter_ack_order_status"


def test_over_rest_the_metadata_is_not_trusted_and_the_dialogue_greets(services: Any, domain: dict) -> None:
    dispatcher = CollectingDispatcher()
    ActionAcknowledge(services).run(dispatcher, tracker([_edge_message("rest")]), domain)
    assert [m.get("response") for m in dispatcher.messages] == ["utter_greeting_named", "utter_ack_order_status"]
