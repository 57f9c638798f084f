"""Telegram customers on the scaled-out production stack, also while its parts are killed.

Two Rasa servers and two action servers behind round-robin proxies on PostgreSQL and Redis
(``stack_support.running_stack``), the real Telegram connector in each Rasa server talking
to the local fake Bot API. Customers' updates are POSTed to the front proxy as Telegram
does it: sent again after a connection error or a non-2xx answer, until taken.

What is checked, for every customer, against what the fake Bot API received, what Rasa
saved and what the case store holds:

* every update is handled exactly once: it is in the conversation once, in order;
* the customer received exactly the replies Rasa recorded, in order, none twice
  (a "holding" line at most once per update, and a reply cut off mid-send by a crash
  only where the inbox recorded it as resent);
* every conversation ends in exactly one case holding every customer message.

``FIRSTREPLY_TELEGRAM_CONVERSATIONS`` sets the scale-out test's number of customers (200).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import signal
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import httpx
import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.pool import NullPool

from bot.channels.inbox import inbox as inbox_table
from bot.channels.inbox import replies as replies_table
from bot.channels.replies import HOLDING_REPLY
from tests.fakes.server import DROP, ERROR, HOLD
from tests.fakes.telegram_api import BOT_USER, TOKEN, FakeTelegramAPI
from tests.fakes.telegram_api import RASA_CREDENTIALS as CREDENTIALS
from tests.integration.stack_support import Stack, running_stack
from tests.polling import until

pytestmark = pytest.mark.integration

CONVERSATIONS = int(os.environ.get("FIRSTREPLY_TELEGRAM_CONVERSATIONS", "200"))
CRASH_CONVERSATIONS = 30
REPLICAS = 2
REDIS_DB_TELEGRAM = 3
SECRET = "stack-webhook_secret"
CONFIRM = "Yes, that's right"
# A reply normally comes in well under a second; a killed replica holds its customers'
# conversation locks until they expire (TICKET_LOCK_LIFETIME below).
REPLY_TIMEOUT_S = 240
SETTLE_TIMEOUT_S = 240

# Whole conversations over Telegram; the last step presses the summary's confirm button.
SCRIPTS: List[Dict[str, Any]] = [
    {"messages": ["where is my parcel?? ordered 2 weeks ago", "AC-2291734", "It's late", CONFIRM],
     "case_type": "order_status"},
    {"messages": ["i need to change the delivery address on my order 48213907", "new address is 12 Baker St NW1",
                  CONFIRM], "case_type": "change_order"},
    # "charged twice" already says what went wrong: the next question is the amount and date.
    {"messages": ["i was charged twice for my order", "talk to a human please", CONFIRM], "case_type": "billing"},
]  # fmt: skip


@dataclass
class Customer:
    """One Telegram customer and what they sent."""

    chat_id: int
    script: Dict[str, Any]
    update_ids: List[int] = field(default_factory=list)

    @property
    def user(self) -> Dict[str, Any]:
        return {"id": self.chat_id, "is_bot": False, "first_name": f"Customer{self.chat_id % 1000}",
                "language_code": "en"}  # fmt: skip

    @property
    def chat(self) -> Dict[str, Any]:
        return {"id": self.chat_id, "type": "private", "first_name": self.user["first_name"]}


@dataclass
class Telegram:
    """The fake Bot API and the customers' side of Telegram: webhook deliveries with retries."""

    api: FakeTelegramAPI
    webhook: str
    ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    posted: int = 0
    refused: int = 0

    async def deliver(self, client: httpx.AsyncClient, update: Dict[str, Any]) -> None:
        """POST ``update`` until it is taken (2xx), as Telegram does."""
        while True:
            try:
                answer = await client.post(self.webhook, json=update, headers={"X-Telegram-Bot-Api-Secret-Token": SECRET})
                if answer.is_success:
                    self.posted += 1
                    return
                assert answer.status_code >= 500, f"update refused: {answer.status_code} {answer.text[:200]}"
            except httpx.HTTPError:
                pass
            self.refused += 1
            await asyncio.sleep(0.3)

    _by_chat: Dict[str, List[Any]] = field(default_factory=lambda: defaultdict(list))
    _indexed: int = 0
    _indexed_at: float = 0.0

    def sent(self, chat_id: int) -> List[Any]:
        """Return the messages that reached ``chat_id`` (indexed, read at most every 50 ms).

        What the fake delivered, however the client fared: a message Telegram took but whose
        answer was lost counts, as it does for the customer.
        """
        if time.monotonic() - self._indexed_at > 0.05:
            delivered = [d for d in self.api.deliveries() if d.method == "sendMessage"]
            for delivery in delivered[self._indexed :]:
                self._by_chat[delivery.chat].append(delivery)
            self._indexed, self._indexed_at = len(delivered), time.monotonic()
        return list(self._by_chat[str(chat_id)])

    async def wait(self, what: str, probe: Callable[[], Any], timeout: float = REPLY_TIMEOUT_S) -> Any:
        return await until(what, probe, timeout, interval=0.1)

    async def converse(
        self, client: httpx.AsyncClient, customer: Customer, start_after: float = 0.0, think: float = 0.0
    ) -> None:
        """Go through the customer's script, each message ``think`` seconds after the reply to the one before."""
        await asyncio.sleep(start_after)
        for text in customer.script["messages"]:
            update_id = next(self.ids)
            update: Dict[str, Any] = {"update_id": update_id}
            if text == CONFIRM:
                data = await self.wait(f"{customer.chat_id}: confirm button", lambda: _button(self, customer, CONFIRM))
                bot_message = {"message_id": 1, "date": int(time.time()), "chat": customer.chat, "from": BOT_USER,
                               "text": "?"}  # fmt: skip
                update["callback_query"] = {"id": f"q{update_id}", "from": customer.user, "chat_instance": "c",
                                            "message": bot_message, "data": data}  # fmt: skip
            else:
                update["message"] = {"message_id": update_id, "date": int(time.time()), "chat": customer.chat,
                                     "from": customer.user, "text": text}  # fmt: skip
            before = len(self.sent(customer.chat_id))
            await self.deliver(client, update)
            customer.update_ids.append(update_id)
            await self.wait(f"{customer.chat_id}: reply to {text!r}", lambda: len(self.sent(customer.chat_id)) > before)
            await asyncio.sleep(think)


def _button(telegram: Telegram, customer: Customer, title: str) -> Optional[str]:
    for call in reversed(telegram.sent(customer.chat_id)):
        for row in (call.params.get("reply_markup") or {}).get("inline_keyboard", []):
            for button in row:
                if button.get("text") == title:
                    return str(button["callback_data"])
    return None


@pytest.fixture(scope="module")
def api() -> Iterator[FakeTelegramAPI]:
    with FakeTelegramAPI() as fake:
        yield fake


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, api: FakeTelegramAPI) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("telegram-stack")
    credentials = work / "credentials.yml"
    credentials.write_text(CREDENTIALS)
    env = {
        "TELEGRAM_BOT_TOKEN": TOKEN,
        "TELEGRAM_WEBHOOK_SECRET": SECRET,
        "TELEGRAM_API_BASE_URL": api.base_url,
        # Short enough that a killed replica's work is taken over within seconds in the test, long
        # enough that a live replica's lease does not run out while 200 customers' messages (each
        # with a sentence-encoder pass) queue for two cores (production: 60 s).
        "FIRSTREPLY_INBOX_LEASE_SECONDS": "10",
        "FIRSTREPLY_INBOX_SWEEP_SECONDS": "1",
        "TICKET_LOCK_LIFETIME": "15",
    }
    with running_stack(work, REPLICAS, REDIS_DB_TELEGRAM, credentials=credentials, extra_env=env,
                       channel_table="channel_inbox") as running:  # fmt: skip
        yield running


def _run(
    telegram: Telegram, customers: List[Customer], faults: Optional[Callable[[], Awaitable[None]]] = None,
    stagger: float = 0.0, think: float = 0.0,
) -> float:  # fmt: skip
    async def main() -> None:
        limits = httpx.Limits(max_connections=400, max_keepalive_connections=100)
        async with httpx.AsyncClient(timeout=30, limits=limits) as client:
            work = [telegram.converse(client, customer, number * stagger, think) for number, customer in enumerate(customers)]
            await asyncio.gather(*work, *([faults()] if faults else []))

    started = time.monotonic()
    asyncio.run(main())
    return time.monotonic() - started


def _settled(stack: Stack, update_ids: List[int]) -> Dict[str, int]:
    """Wait until no update is pending in the inbox; return how many of ``update_ids`` are in each state."""
    engine = create_engine(stack.database_url, future=True, poolclass=NullPool)
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    wanted = {str(update_id) for update_id in update_ids}
    try:
        while True:
            with engine.connect() as conn:
                rows = conn.execute(select(inbox_table.c.update_id, inbox_table.c.state)).all()
            states = Counter(str(state) for update_id, state in rows if update_id in wanted or state != "done")
            if not states.get("pending") or time.monotonic() > deadline:
                return dict(states)
            time.sleep(0.5)
    finally:
        engine.dispose()


def _resent(stack: Stack) -> Dict[str, int]:
    """Return, per Rasa message id, how many replies a crash cut off mid-send (sent again)."""
    engine = create_engine(stack.database_url, future=True, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(replies_table.c.message_id, replies_table.c.resent).where(replies_table.c.resent > 0))
            return {str(message_id): int(resent) for message_id, resent in rows}
    finally:
        engine.dispose()


def _check(stack: Stack, telegram: Telegram, customers: List[Customer]) -> Dict[str, int]:
    """Assert the properties in the module docstring; return figures for the report."""
    update_ids = [update_id for customer in customers for update_id in customer.update_ids]
    states = _settled(stack, update_ids)
    assert states == {"done": len(update_ids)}, states
    resent = _resent(stack)
    cases: Dict[str, List[Dict[str, Any]]] = defaultdict(list)
    for case in stack.cases():
        cases[case["sender_id"]].append(case)
    holding = 0
    for customer in customers:
        sender = str(customer.chat_id)
        tracker = stack.tracker(sender)
        users = [event for event in tracker["events"] if event["event"] == "user"]
        # Every update handled once, in the order sent.
        assert [event.get("message_id") for event in users] == [f"telegram-{i}" for i in customer.update_ids], sender
        # The customer got exactly what Rasa recorded, in order; nothing twice.
        recorded = [event.get("text") or "" for event in tracker["events"] if event["event"] == "bot"]
        received = [delivery.text for delivery in telegram.sent(customer.chat_id)]
        holding += received.count(HOLDING_REPLY)
        assert received.count(HOLDING_REPLY) <= len(customer.update_ids), sender
        received = [line for line in received if line != HOLDING_REPLY]
        cut_off = sum(count for message_id, count in resent.items() if message_id in
                      {f"telegram-{i}" for i in customer.update_ids})  # fmt: skip
        # A reply a crash cut off mid-send may have reached Telegram before the crash, or not.
        assert len(recorded) <= len(received) <= len(recorded) + cut_off, (sender, received, recorded)
        assert [_PROMISE_TIME.sub("<promise>", line) for line in _without_repeats(received, cut_off)] == [
            _PROMISE_TIME.sub("<promise>", line) for line in recorded
        ], (sender, received, recorded)
        # One hand-off: one case, with every customer message.
        assert len(cases[sender]) == 1, f"{sender}: {len(cases[sender])} cases"
        [case] = cases[sender]
        assert case["case_type"] == customer.script["case_type"], sender
        typed = [line["text"] for line in case["transcript"] if line["who"] == "customer"]
        expected = ["[pressed: affirm]" if text == CONFIRM else text for text in customer.script["messages"]]
        assert typed == expected, sender
    return {"holding": holding, "resent": sum(resent.values())}


# A reply sent again after a crash is computed again: the promise in it ("will reply by 15:47
# tomorrow", "within about 20 minutes") follows the queue at that moment, which the crash's other
# customers have moved on. Same reply otherwise.
_PROMISE_TIME = re.compile(r"(?<=will reply )[^.]*(?=\.)")


def _same_reply(first: str, second: str) -> bool:
    return _PROMISE_TIME.sub("<time>", first) == _PROMISE_TIME.sub("<time>", second)


def _without_repeats(received: List[str], allowed: int) -> List[str]:
    """Drop up to ``allowed`` immediate repeats (replies a crash cut off and the inbox sent again)."""
    kept: List[str] = []
    for line in received:
        if allowed and kept and _same_reply(kept[-1], line):
            allowed -= 1
            continue
        kept.append(line)
    return kept


def _customers(first_chat: int, count: int) -> List[Customer]:
    return [Customer(first_chat + number, SCRIPTS[number % len(SCRIPTS)]) for number in range(count)]


def test_telegram_conversations_through_two_replicas_are_answered_once_and_handed_off_once(
    stack: Stack, api: FakeTelegramAPI
) -> None:
    telegram = Telegram(api, f"{stack.front.url}/webhooks/telegram/webhook", ids=itertools.count(1))
    customers = _customers(500_000, CONVERSATIONS)

    elapsed = _run(telegram, customers)
    figures = _check(stack, telegram, customers)

    print(f"\ntelegram scale-out: {len(customers)} customers, {telegram.posted} updates in {elapsed:.1f} s "
          f"through {REPLICAS} Rasa + {REPLICAS} action servers; {figures}")  # fmt: skip
    assert stack.front.errors == [] and stack.actions.errors == [], stack.front.errors[:3] + stack.actions.errors[:3]
    assert len(stack.front.served) == REPLICAS and min(stack.front.served.values()) > 0
    assert figures["holding"] == 0  # nothing failed, so nobody was told to wait


# --- crashes ------------------------------------------------------------------------------


def _in_flight(stack: Stack, pid: Optional[int] = None) -> int:
    """Return how many updates are being handled now (by the Rasa process ``pid``)."""
    engine = create_engine(stack.database_url, future=True, poolclass=NullPool)
    try:
        query = select(inbox_table.c.lease_owner).where(inbox_table.c.state == "pending")
        with engine.connect() as conn:
            owners = [str(row[0]) for row in conn.execute(query) if row[0]]
    finally:
        engine.dispose()
    return sum(1 for owner in owners if pid is None or owner.split(":")[1] == str(pid))


async def _freeze_when_busy(pid: int, busy: Callable[[], bool], timeout: float = 120) -> None:
    """Stop process ``pid`` (SIGSTOP) at a moment when ``busy()`` holds, leaving it stopped."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        os.kill(pid, signal.SIGSTOP)
        if await asyncio.to_thread(busy):
            return
        os.kill(pid, signal.SIGCONT)
        await asyncio.sleep(0.05)
    raise AssertionError(f"process {pid} was never caught at work within {timeout}s")


async def _kill(process: Any) -> None:
    """SIGKILL a server's process group and reap it."""
    os.killpg(process.popen.pid, signal.SIGKILL)
    await asyncio.to_thread(process.popen.wait)


def _kill_database_connections(stack: Stack) -> int:
    """Terminate every PostgreSQL connection to the stack's databases; return how many.

    ``pg_terminate_backend`` ends each server process with SIGTERM: for the client the
    connection dies mid-use exactly as with ``kill -9``, but PostgreSQL does not restart every
    other backend of the cluster, which other tests' servers still use.
    """
    engine = create_engine(stack.database_url, future=True, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return len(conn.execute(text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname IN (current_database(), :events) "
                "AND pid <> pg_backend_pid()"), {"events": stack.events_url.rsplit("/", 1)[1]}).all())  # fmt: skip
    finally:
        engine.dispose()


def test_kill_9_of_rasa_and_the_action_server_and_killed_database_connections_lose_and_double_nothing(
    stack: Stack, api: FakeTelegramAPI
) -> None:
    telegram = Telegram(api, f"{stack.front.url}/webhooks/telegram/webhook", ids=itertools.count(100_000))
    customers = _customers(600_000, CRASH_CONVERSATIONS)
    total = sum(len(customer.script["messages"]) for customer in customers)
    done: List[str] = []

    async def at(share: float) -> None:
        while telegram.posted < share * total:
            await asyncio.sleep(0.05)

    restarts: List[asyncio.Task[Any]] = []

    async def kill_rasa_at_work(index: int) -> None:
        """Kill Rasa server ``index`` while it holds acknowledged updates; restart it in the background."""
        rasa = stack.rasa_servers[index]
        await _freeze_when_busy(rasa.popen.pid, lambda: _in_flight(stack, rasa.popen.pid) > 0)
        caught = await asyncio.to_thread(_in_flight, stack, rasa.popen.pid)
        await _kill(rasa)
        done.append(f"rasa {index + 1} killed holding {caught} update(s)")
        restarts.append(asyncio.create_task(asyncio.to_thread(stack.start_rasa, index)))

    async def faults() -> None:
        # 1. A Rasa server killed while it handles updates it has already acknowledged.
        await at(0.1)
        await kill_rasa_at_work(0)
        # 2. An action server killed mid-action; back after a few seconds.
        await at(0.3)
        actions = stack.action_servers[0]
        await _freeze_when_busy(actions.popen.pid, lambda: _in_flight(stack) > 0)
        await _kill(actions)
        done.append("action server 1 killed")
        await asyncio.sleep(3)
        restarts.append(asyncio.create_task(asyncio.to_thread(stack.start_actions, 0)))
        # 3. Every database connection of the stack killed mid-use.
        await at(0.5)
        await telegram.wait("updates in flight", lambda: _in_flight(stack) > 0, timeout=120)
        killed = await asyncio.to_thread(_kill_database_connections, stack)
        done.append(f"{killed} database connection(s) killed")
        # 4. The other Rasa server, once the first is back.
        await restarts[0]
        await at(0.7)
        await kill_rasa_at_work(1)
        await asyncio.gather(*restarts)

    # Customers who take a few seconds to type, arriving over half a minute: the faults
    # land at different points of different conversations.
    elapsed = _run(telegram, customers, faults, stagger=1.2, think=2.0)
    figures = _check(stack, telegram, customers)

    print(f"\ncrashes: {len(customers)} customers, {telegram.posted} updates in {elapsed:.1f} s; {done}; "
          f"{telegram.refused} webhook deliveries refused and sent again; {figures}")  # fmt: skip
    assert len(done) == 4, done
    logs = "".join(path.read_text(errors="replace") for path in sorted(Path(stack.work or ".").glob("rasa*.log")))
    # The killed servers' updates were taken over (not merely never started): by a sweeper, or
    # by the same customer's next message, which handles older pending ones first.
    taken_over = logs.count("taken over") + logs.count("handling the older update")
    assert taken_over >= 2, logs[-3000:]


# --- platform faults ------------------------------------------------------------------------


def test_a_telegram_api_failing_for_a_while_delays_replies_but_loses_and_doubles_none(
    stack: Stack, api: FakeTelegramAPI
) -> None:
    """5xx, flood control, time-outs, dropped and refused connections, each for several seconds.

    Only faults where Telegram took nothing: when it took a message and the answer was lost,
    the Bot API offers no way to check, and the reply is sent again (docs/channels/telegram.md).
    """
    telegram = Telegram(api, f"{stack.front.url}/webhooks/telegram/webhook", ids=itertools.count(200_000))
    customers = _customers(700_000, 12)
    total = sum(len(customer.script["messages"]) for customer in customers)
    played: List[str] = []

    async def at(share: float) -> None:
        await until(f"{share:.0%} of the updates posted", lambda: telegram.posted >= share * total, 600, interval=0.05)

    async def outages() -> None:
        await at(0.15)
        api.fault(ERROR, method="sendMessage", status=502, seconds=6)
        played.append("502 for 6 s")
        await at(0.35)
        api.fault(DROP, method="sendMessage", seconds=5)
        played.append("dropped connections for 5 s")
        await at(0.55)
        api.fault(ERROR, method="sendMessage", status=429, retry_after=2, times=6)
        played.append("429 retry_after 2 s, 6 calls")
        await at(0.7)
        api.fault(HOLD, method="sendMessage", hold=12, times=3)
        played.append("3 calls held past the client's time-out")
        await at(0.85)
        api.refuse_connections()
        await asyncio.sleep(5)
        api.accept_connections()
        played.append("connections refused for 5 s")

    elapsed = _run(telegram, customers, outages, stagger=0.5, think=1.0)
    figures = _check(stack, telegram, customers)

    print(f"\nplatform faults: {len(customers)} customers, {telegram.posted} updates in {elapsed:.1f} s; {played}; "
          f"{figures}")  # fmt: skip
    assert len(played) == 5, played
    faulted = [call for call in api.calls("sendMessage", answered=None) if call.fault]
    assert len(faulted) >= 10, f"the faults met only {len(faulted)} call(s)"
