"""Platform faults: Telegram and Slack fail for a while, and every message still arrives once.

The desk's real ``OutboxWorker`` delivers to the fake Slack Web API (the desk app's card
and thread posts), to a second fake Slack (the customer app's DMs) and to the fake
Telegram Bot API, through the real slack_sdk and python-telegram-bot clients with short
time-outs. The Slack customer channel's sender (``SlackDMOutput``, what Rasa answers
through) is tested against the fake directly. Every fault of ``tests.fakes.server`` is
played for some calls or for a while; "arrived" is read from the fake's deliveries (what
the customer or the channel can see), not from what the client was told.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
import pytest_asyncio
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from telegram import Bot
from telegram.request import HTTPXRequest

from bot.cases import Case, CaseStore
from bot.cases.records import OutboxMessage
from bot.channels.outbound import Outbound
from bot.channels.slack_client import SlackSettings, build_client
from bot.channels.slack_output import SlackDMOutput
from bot.channels.telegram_output import TelegramSettings
from bot.desk import messages
from bot.desk.metrics import IN_DOUBT_FOUND, IN_DOUBT_UNCHECKED, DeliveryStats, build_registry, exposition
from bot.desk.outbox import CUT_OFF_SENT_AGAIN, OutboxWorker, utc_now
from bot.desk.rasa_api import RasaClient
from tests.desk_support import open_case
from tests.fakes.rasa_api import TOKEN as RASA_TOKEN
from tests.fakes.rasa_api import FakeRasa
from tests.fakes.server import ACCEPT_DROP, ACCEPT_HOLD, DROP, ERROR, HOLD
from tests.fakes.slack_api import TOKEN as CUSTOMER_APP_TOKEN
from tests.fakes.slack_api import FakeSlackAPI, dm_channel_of
from tests.fakes.slack_web_api import TOKEN as DESK_TOKEN
from tests.fakes.slack_web_api import FakeDeskSlackAPI
from tests.fakes.telegram_api import TOKEN as TELEGRAM_TOKEN
from tests.fakes.telegram_api import FakeTelegramAPI
from tests.fakes.x_api import FakeXAPI
from tests.polling import until as poll_until
from tests.test_x_channel import ENV as X_ENV

QUEUE = "C0QUEUE"
MARIA_CHAT = "4242"
MARIA_SLACK = "U0MARIA"
MARIA_DM = dm_channel_of(MARIA_SLACK)
# Every client waits this long for an answer; a held request is held three times as long.
CLIENT_TIMEOUT = 1
HELD = 3.0
REPLIES = ["First reply", "Second reply", "Third reply"]


class ShortTimeouts(Outbound):
    """The desk's customer senders, as built in production (16 connections) but with one-second time-outs."""

    def _telegram_bot(self, settings: TelegramSettings) -> Bot:
        request = HTTPXRequest(connection_pool_size=16, connect_timeout=CLIENT_TIMEOUT, read_timeout=CLIENT_TIMEOUT,
                               pool_timeout=CLIENT_TIMEOUT)  # fmt: skip
        return Bot(settings.token, base_url=settings.base_url, request=request)

    def _slack_client(self, slack: ModuleType, settings: Any) -> AsyncWebClient:
        return build_client(settings, backoff_seconds=0.05, timeout=CLIENT_TIMEOUT)


@dataclass
class World:
    store: CaseStore
    worker: OutboxWorker
    desk_slack: FakeDeskSlackAPI
    customer_slack: FakeSlackAPI
    telegram: FakeTelegramAPI
    rasa: FakeRasa
    x: FakeXAPI

    async def until(self, what: str, probe: Callable[[], Any], timeout: float = 30.0) -> Any:
        def outbox() -> str:
            items = [(i.key, i.attempts, i.delivered_at is not None, i.last_error) for i in self.store.outbox.items()]
            return f"outbox: {items}"

        return await poll_until(what, probe, timeout, context=outbox)

    def queue(self, *items: OutboxMessage) -> None:
        self.store.outbox.enqueue(list(items), self.worker.clock())
        self.worker.wake()

    async def settled(self, timeout: float = 30.0) -> None:
        """Wait until nothing in the outbox is due or under way (given-up rows stay)."""

        def quiet() -> bool:
            return not [i for i in self.store.outbox.items() if i.delivered_at is None and i.next_attempt_at is not None]

        await self.until("outbox settled", quiet, timeout)

    def item(self, key: str) -> Any:
        [found] = [i for i in self.store.outbox.items() if i.key == key]
        return found

    async def carded(self, case: Case) -> Case:
        self.queue(messages.card_post(case.id))
        return await self.until("card", lambda: (c := self.store.lookup.get(case.id)) and c.card_ts and c)


@pytest_asyncio.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    desk_slack = FakeDeskSlackAPI().start()
    desk_slack.add_channel(QUEUE, "support-queue")
    customer_slack = FakeSlackAPI().start()
    telegram = FakeTelegramAPI().start()
    rasa = FakeRasa().start()
    x = FakeXAPI().start()
    env = {
        **X_ENV, "X_API_BASE_URL": x.base_url,
        "TELEGRAM_BOT_TOKEN": TELEGRAM_TOKEN, "TELEGRAM_API_BASE_URL": telegram.base_url,
        "SLACK_BOT_TOKEN": CUSTOMER_APP_TOKEN, "SLACK_API_BASE_URL": customer_slack.base_url,
        "FIRSTREPLY_CHANNEL_DB": str(tmp_path / "channels.db"),
    }  # fmt: skip
    store = CaseStore.from_url(f"sqlite:///{tmp_path / 'cases.db'}")
    # As the desk builds its client (no retries in it: the outbox retries), with a short time-out.
    client = AsyncWebClient(token=DESK_TOKEN, base_url=desk_slack.base_url, timeout=CLIENT_TIMEOUT, retry_handlers=[])
    outbound = ShortTimeouts(env)
    rasa_client = RasaClient(rasa.url, RASA_TOKEN)
    worker = OutboxWorker(
        store, client, rasa_client, outbound, retry_seconds=0.05, retry_max_seconds=0.3, poll_seconds=0.05,
        stats=DeliveryStats(),
    )  # fmt: skip
    stop = asyncio.Event()
    loop = asyncio.create_task(worker.run(stop, grace_seconds=HELD + 2))
    try:
        yield World(store, worker, desk_slack, customer_slack, telegram, rasa, x)
    finally:
        stop.set()
        await loop
        await outbound.close()
        await rasa_client.close()
        rasa.stop()
        store.dispose()
        telegram.stop()
        x.stop()
        customer_slack.stop()
        desk_slack.stop()


def _replies(case: Case, prefix: str = "reply") -> list[OutboxMessage]:
    return [messages.customer_reply(case, f"{prefix}:{n}", text, "U0ANA") for n, text in enumerate(REPLIES)]


# Each fault, for a number of calls or for a while; then the platform recovers.
FAULTS = [
    pytest.param(dict(mode=ERROR, status=500, times=3), id="500-three-times"),
    pytest.param(dict(mode=ERROR, status=502, seconds=0.6), id="502-for-a-while"),
    pytest.param(dict(mode=ERROR, status=503, times=2), id="503"),
    pytest.param(dict(mode=ERROR, status=429, retry_after=1, times=2), id="429-retry-after"),
    pytest.param(dict(mode=DROP, times=2), id="dropped-before-anything"),
    pytest.param(dict(mode=HOLD, times=1, hold=HELD), id="time-out-nothing-taken"),
    pytest.param(dict(mode=ACCEPT_HOLD, times=1, hold=HELD), id="taken-answer-too-late"),
    pytest.param(dict(mode=ACCEPT_DROP, times=2), id="taken-then-dropped"),
]
# The faults where the platform took the message but the client never heard so.
ANSWER_LOST_AFTER_TAKING = {ACCEPT_HOLD, ACCEPT_DROP}


# --- the desk's own Slack posts: cards and thread messages ----------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("fault", FAULTS)
async def test_desk_posts_to_slack_arrive_once_and_in_order_through_each_fault(world: World, fault: dict[str, Any]) -> None:
    case = open_case(world.store)
    world.desk_slack.fault(method="chat.postMessage", **fault)

    carded = await world.carded(case)
    world.desk_slack.fault(method="chat.postMessage", **fault)
    world.queue(*[messages.thread_message(case.id, f"note:{n}", text) for n, text in enumerate(REPLIES)])
    await world.until("three thread posts", lambda: len(world.desk_slack.thread(QUEUE, str(carded.card_ts))) >= 3)
    await world.settled()

    delivered = world.desk_slack.deliveries(QUEUE)
    keys = [d.params["metadata"]["event_payload"]["key"] for d in delivered]
    assert keys == [messages.card_post(case.id).key, "note:0", "note:1", "note:2"]
    assert [m.text for m in world.desk_slack.thread(QUEUE, str(carded.card_ts))] == REPLIES
    assert [m.ts for m in world.desk_slack.top_level(QUEUE)] == [carded.card_ts]
    assert all(item.delivered_at is not None for item in world.store.outbox.items())
    # Each post Slack took without the desk hearing so was found by its key, not posted again.
    taken_unheard = sum(1 for d in delivered if d.call_fault in ANSWER_LOST_AFTER_TAKING)
    assert (taken_unheard > 0) == (fault["mode"] in ANSWER_LOST_AFTER_TAKING)
    assert world.worker.stats.counts().get(("slack", IN_DOUBT_FOUND), 0) == taken_unheard


@pytest.mark.asyncio
async def test_desk_posts_wait_out_a_slack_that_refuses_connections(world: World) -> None:
    case = open_case(world.store)
    world.desk_slack.refuse_connections()
    world.queue(messages.card_post(case.id))
    await world.until("a refused try", lambda: world.item(messages.card_post(case.id).key).attempts >= 2)
    world.desk_slack.accept_connections()

    carded = await world.until("card", lambda: (c := world.store.lookup.get(case.id)) and c.card_ts and c)
    await world.settled()
    assert [m.ts for m in world.desk_slack.top_level(QUEUE)] == [carded.card_ts]
    assert len(world.desk_slack.deliveries(QUEUE)) == 1


# --- agents' replies to customers on Telegram --------------------------------------------------------


TELEGRAM_NOTHING_TAKEN = [p for p in FAULTS if p.values[0]["mode"] not in ANSWER_LOST_AFTER_TAKING]  # type: ignore[index]


@pytest.mark.asyncio
@pytest.mark.parametrize("fault", TELEGRAM_NOTHING_TAKEN)
async def test_replies_to_telegram_arrive_once_and_in_order_when_telegram_took_nothing(
    world: World, fault: dict[str, Any]
) -> None:
    case = open_case(world.store)
    world.telegram.fault(method="sendMessage", **fault)

    world.queue(*_replies(case))
    await world.until("three replies", lambda: len(world.telegram.delivered_texts(MARIA_CHAT)) >= 3)
    await world.settled()

    assert world.telegram.delivered_texts(MARIA_CHAT) == REPLIES
    assert [e["text"] for e in world.rasa.events[MARIA_CHAT]] == REPLIES  # each recorded once in the conversation
    assert all(item.delivered_at is not None for item in world.store.outbox.items())
    # A held request or a dropped connection cannot be told from a lost answer: counted, though nothing was doubled.
    unchecked = world.worker.stats.counts().get(("telegram", IN_DOUBT_UNCHECKED), 0)
    assert unchecked == {HOLD: 1, DROP: 2}.get(fault["mode"], 0)


@pytest.mark.asyncio
async def test_replies_to_telegram_wait_out_a_telegram_that_refuses_connections(world: World) -> None:
    case = open_case(world.store)
    world.telegram.refuse_connections()
    world.queue(*_replies(case))
    await world.until("refused tries", lambda: world.item("reply:0").attempts >= 3)
    assert world.telegram.delivered_texts() == []
    world.telegram.accept_connections()

    await world.until("three replies", lambda: len(world.telegram.delivered_texts(MARIA_CHAT)) >= 3)
    await world.settled()
    assert world.telegram.delivered_texts(MARIA_CHAT) == REPLIES
    assert world.worker.stats.counts() == {}  # refused: nothing was sent, nothing is in doubt


@pytest.mark.asyncio
@pytest.mark.parametrize("mode", [ACCEPT_HOLD, ACCEPT_DROP])
async def test_a_telegram_reply_whose_answer_was_lost_is_sent_again_warned_and_counted(
    world: World, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    case = open_case(world.store)
    world.telegram.fault(mode, method="sendMessage", times=1, hold=HELD)

    with caplog.at_level(logging.WARNING, logger="bot.desk.outbox"):
        world.queue(*_replies(case))
        await world.until("all replies", lambda: len(world.telegram.delivered_texts(MARIA_CHAT)) >= 4)
        await world.settled()

    # At least once: Telegram has no lookup, so the first reply is there twice; none lost, order kept.
    assert world.telegram.delivered_texts(MARIA_CHAT) == [REPLIES[0], *REPLIES]
    assert world.worker.stats.counts() == {("telegram", IN_DOUBT_UNCHECKED): 1}
    [warning] = [r for r in caplog.records if "answer was lost after sending" in r.getMessage()]
    assert warning.levelno == logging.WARNING and "reply:0" in warning.getMessage()
    assert [e["text"] for e in world.rasa.events[MARIA_CHAT]] == REPLIES


@pytest.mark.asyncio
async def test_a_telegram_reply_cut_off_under_way_is_sent_again_warned_and_counted(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    case = open_case(world.store)
    [first, *rest] = _replies(case)
    # The desk stopped while the first reply was under way (Telegram took it), as a crash leaves it.
    now = world.worker.clock()
    world.store.outbox.enqueue([first], now)
    world.store.outbox.start_delivery(world.item("reply:0").id, now)
    await _take_directly(world.telegram, REPLIES[0])
    assert world.store.outbox.recover_interrupted() == 1

    with caplog.at_level(logging.WARNING, logger="bot.desk.outbox"):
        world.queue(*rest)
        await world.until("all replies", lambda: len(world.telegram.delivered_texts(MARIA_CHAT)) >= 4)
        await world.settled()

    assert world.telegram.delivered_texts(MARIA_CHAT) == [REPLIES[0], *REPLIES]
    assert world.worker.stats.counts() == {("telegram", IN_DOUBT_UNCHECKED): 1}
    [warning] = [r for r in caplog.records if CUT_OFF_SENT_AGAIN in r.getMessage()]
    assert "reply:0" in warning.getMessage()


async def _take_directly(telegram: FakeTelegramAPI, text: str) -> None:
    """Have the fake Bot API take ``text`` for Maria, as the cut-off attempt's request did."""
    async with httpx.AsyncClient() as client:
        url = f"{telegram.base_url}{TELEGRAM_TOKEN}/sendMessage"
        answer = await client.post(url, json={"chat_id": MARIA_CHAT, "text": text})
        assert answer.status_code == 200, answer.text


@pytest.mark.asyncio
async def test_one_reply_no_lookup_can_confirm_is_in_doubt_at_a_time_while_slack_dms_go_alongside(world: World) -> None:
    # Each Telegram call is answered 0.3 s after Telegram took it: that long, the reply is in doubt.
    world.telegram.answer_latency = 0.3
    taken: list[float] = []
    process = world.telegram._process

    def timed(method: str, params: dict[str, Any]) -> Any:
        answer = process(method, params)
        if answer[2] is not None:  # the call put a message in front of the customer
            taken.append(asyncio.get_running_loop().time())
        return answer

    world.telegram._process = timed  # type: ignore[method-assign]
    telegram_cases = [open_case(world.store, sender=str(5000 + n), key=f"t{n}") for n in range(3)]
    dm_case = open_case(world.store, channel="slack_dm", sender=MARIA_SLACK, key="dm")

    world.queue(*[messages.customer_reply(case, f"reply:{case.id}", "On its way", "U0ANA") for case in telegram_cases])
    world.queue(messages.customer_reply(dm_case, "reply:dm", "On its way", "U0ANA"))
    await world.until("the Slack DM", lambda: world.customer_slack.delivered_texts(MARIA_DM) == ["On its way"])
    telegram_done_before_the_dm = len(world.telegram.delivered_texts())
    await world.until("three Telegram replies", lambda: len(world.telegram.delivered_texts()) == 3)
    await world.settled()

    # Telegram took each only after answering the one before: never two in doubt at once.
    assert len(taken) == 3
    assert min(later - earlier for earlier, later in zip(taken, taken[1:])) >= 0.3 * 0.9
    # The Slack DM, which a lookup confirms after a crash, did not wait for them.
    assert telegram_done_before_the_dm < 3
    assert all(item.delivered_at is not None for item in world.store.outbox.items())


# --- agents' replies to customers in Slack DMs (the customer app) ------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("fault", FAULTS)
async def test_replies_to_slack_dms_arrive_once_and_in_order_through_each_fault(world: World, fault: dict[str, Any]) -> None:
    case = open_case(world.store, channel="slack_dm", sender=MARIA_SLACK, key="dm")
    world.customer_slack.fault(method="chat.postMessage", **fault)

    world.queue(*_replies(case))
    await world.until("three replies", lambda: len(world.customer_slack.delivered_texts(MARIA_DM)) >= 3)
    await world.settled()

    assert world.customer_slack.delivered_texts(MARIA_DM) == REPLIES
    assert [m.text for m in world.customer_slack.messages] == REPLIES
    assert [e["text"] for e in world.rasa.events[MARIA_SLACK]] == REPLIES
    assert all(item.delivered_at is not None for item in world.store.outbox.items())


# --- permanent failures: given up at once, with the reason -------------------------------------------


@pytest.mark.asyncio
async def test_a_customer_who_blocked_the_telegram_bot_is_given_up_on_with_the_reason(world: World) -> None:
    case = await world.carded(open_case(world.store))
    world.telegram.fault(ERROR, method="sendMessage", status=403, seconds=60)
    [first, *rest] = _replies(case)

    world.queue(first)
    await world.settled()

    item = world.item("reply:0")
    assert (item.delivered_at, item.next_attempt_at, item.attempts) == (None, None, 1)
    assert item.last_error == "Forbidden: bot was blocked by the user"
    assert len(world.telegram.calls("sendMessage", answered=None)) == 1
    notices = await world.until("notice", lambda: [m.text for m in world.desk_slack.thread(QUEUE, str(case.card_ts))])
    assert notices == [":x: Could not deliver a reply to the customer: Forbidden: bot was blocked by the user"]


@pytest.mark.asyncio
async def test_an_x_customer_who_does_not_accept_dms_is_given_up_on_with_the_reason(world: World) -> None:
    case = await world.carded(open_case(world.store, channel="x", sender="2244994945"))
    world.x.refuse_dms("2244994945")
    [first, *rest] = _replies(case)

    world.queue(first)
    await world.settled()

    item = world.item("reply:0")
    assert (item.delivered_at, item.next_attempt_at, item.attempts) == (None, None, 1)
    assert item.last_error == "HTTP 403 You are not permitted to send this message."
    notices = await world.until("notice", lambda: [m.text for m in world.desk_slack.thread(QUEUE, str(case.card_ts))])
    assert notices == [":x: Could not deliver a reply to the customer: HTTP 403 You are not permitted to send this message."]


@pytest.mark.asyncio
async def test_a_slack_channel_that_is_gone_is_given_up_on_with_the_reason(world: World) -> None:
    case = open_case(world.store)
    world.desk_slack.fault(ERROR, method="chat.postMessage", status=200, error="channel_not_found", seconds=60)

    world.queue(messages.card_post(case.id))
    await world.settled()

    item = world.item(messages.card_post(case.id).key)
    assert (item.delivered_at, item.next_attempt_at, item.attempts) == (None, None, 1)
    assert item.last_error == "slack: channel_not_found"
    assert len(world.desk_slack.calls("chat.postMessage", answered=None)) == 1


@pytest.mark.asyncio
async def test_a_slack_dm_that_is_gone_is_given_up_on_with_a_notice(world: World) -> None:
    case = await world.carded(open_case(world.store, channel="slack_dm", sender=MARIA_SLACK, key="dm"))
    world.customer_slack.fault(ERROR, method="chat.postMessage", status=200, error="channel_not_found", seconds=60)

    world.queue(_replies(case)[0])
    await world.settled()

    item = world.item("reply:0")
    assert (item.delivered_at, item.next_attempt_at, item.attempts, item.last_error) == (
        None, None, 1, "slack: channel_not_found",
    )  # fmt: skip
    assert len(world.customer_slack.calls("chat.postMessage", answered=None)) == 1
    notices = await world.until("notice", lambda: [m.text for m in world.desk_slack.thread(QUEUE, str(case.card_ts))])
    assert notices == [":x: Could not deliver a reply to the customer: slack: channel_not_found"]


# --- metrics --------------------------------------------------------------------------------------------


def test_deliveries_in_doubt_are_exported_as_a_counter(tmp_path: Path) -> None:
    store = CaseStore.from_url(f"sqlite:///{tmp_path / 'cases.db'}")
    stats = DeliveryStats()
    stats.count("telegram", IN_DOUBT_UNCHECKED)
    stats.count("slack", IN_DOUBT_FOUND)
    stats.count("slack", IN_DOUBT_FOUND)
    try:
        text = exposition(build_registry(store, utc_now, stats)).decode()
    finally:
        store.dispose()
    assert 'firstreply_desk_deliveries_in_doubt_total{outcome="unchecked",platform="telegram"} 1.0' in text
    assert 'firstreply_desk_deliveries_in_doubt_total{outcome="found",platform="slack"} 2.0' in text


# --- the Slack customer channel: what Rasa answers through ----------------------------------------------


@pytest.fixture
def customer_api() -> Any:
    with FakeSlackAPI() as fake:
        yield fake


def _output(api: FakeSlackAPI) -> SlackDMOutput:
    settings = SlackSettings(CUSTOMER_APP_TOKEN, "signing-secret-for-tests", api.base_url)
    # Backoff 0.2 s doubling: four tries span more than the 0.6 s outage of the parametrized faults.
    output = SlackDMOutput(build_client(settings, backoff_seconds=0.2, timeout=CLIENT_TIMEOUT))
    output.remember_dm(MARIA_SLACK, MARIA_DM)
    return output


@pytest.mark.asyncio
@pytest.mark.parametrize("fault", FAULTS)
async def test_rasa_replies_in_slack_arrive_once_and_in_order_through_each_fault(
    customer_api: FakeSlackAPI, fault: dict[str, Any]
) -> None:
    output = _output(customer_api)
    customer_api.fault(method="chat.postMessage", **fault)

    for text in REPLIES:
        await output.send_text_message(MARIA_SLACK, text)

    assert customer_api.delivered_texts(MARIA_DM) == REPLIES
    keys = [d.params["metadata"]["event_payload"]["key"] for d in customer_api.deliveries(MARIA_DM)]
    assert len(set(keys)) == 3
    if fault["mode"] in ANSWER_LOST_AFTER_TAKING | {DROP, HOLD} or fault.get("status", 0) >= 500:
        assert customer_api.calls("conversations.history")  # looked before posting again


@pytest.mark.asyncio
async def test_rasa_replies_in_slack_wait_for_a_refused_connection_to_come_back(customer_api: FakeSlackAPI) -> None:
    output = _output(customer_api)
    customer_api.refuse_connections()
    sending = asyncio.create_task(output.send_text_message(MARIA_SLACK, REPLIES[0]))
    await asyncio.sleep(0.1)  # lets the first try be refused; the client retries after its backoff
    customer_api.accept_connections()
    await asyncio.wait_for(sending, 30)
    assert customer_api.delivered_texts(MARIA_DM) == [REPLIES[0]]


@pytest.mark.asyncio
async def test_a_slack_outage_longer_than_the_retries_fails_the_reply_without_doubling_it(
    customer_api: FakeSlackAPI,
) -> None:
    output = _output(customer_api)
    customer_api.fault(ACCEPT_DROP, method="chat.postMessage", times=1)
    customer_api.fault(ERROR, method="chat.postMessage", status=503, seconds=60)

    await output.send_text_message(MARIA_SLACK, REPLIES[0])  # taken on the first try: found, not sent again

    with pytest.raises(SlackApiError) as raised:
        await output.send_text_message(MARIA_SLACK, REPLIES[1])
    assert raised.value.response.status_code == 503
    assert customer_api.delivered_texts(MARIA_DM) == [REPLIES[0]]
    assert len(customer_api.calls("chat.postMessage", answered=503)) == output.max_attempts


@pytest.mark.asyncio
async def test_a_slack_refusal_of_the_reply_is_not_retried(customer_api: FakeSlackAPI) -> None:
    output = _output(customer_api)
    customer_api.fault(ERROR, method="chat.postMessage", status=200, error="channel_not_found", seconds=60)

    with pytest.raises(SlackApiError, match="channel_not_found"):
        await output.send_text_message(MARIA_SLACK, REPLIES[0])
    assert len(customer_api.calls("chat.postMessage", answered=None)) == 1
    assert customer_api.calls("conversations.history", answered=None) == []
