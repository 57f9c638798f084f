"""Telegram customers for ``bench.stack``: whole conversations through the real connector.

Each customer is a private Telegram chat. Its messages reach Rasa's Telegram webhook as
Telegram sends them (an ``Update`` with the secret-token header); the connector answers the
webhook at once and sends the bot's replies to the Bot API afterwards. So a message's *first
response* is timed where the customer would see it: from just before the webhook POST until
the first message to that chat is delivered at the fake Bot API (tests/fakes/telegram_api.py,
run in a thread of the benchmark process). A button press counts the same way (its first
response is the next message, not the ``answerCallbackQuery``).

Every conversation runs from ``/start`` (the greeting) through the questions and the summary to
the confirm button, which hands the case off into the case store. How many messages the bot
sends for each step is learnt once per stack (``calibrate``, one conversation per script, one
after the other); under load a turn is over when that many replies arrived, and a reply that
comes when no turn of its chat is open is counted as ``unexpected``.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import aiohttp

from bench.load import REQUEST_TIMEOUT_S, PhaseResult, Sample
from tests.fakes.telegram_api import BOT_USER, Delivery, FakeTelegramAPI

WEBHOOK_PATH = "/webhooks/telegram/webhook"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
CONFIRM = "Yes, that's right"
HANDOFF_MARK = "as case #"
# Seconds a customer takes to read and type before the next message, in the open-loop phases.
THINK_S = (0.25, 0.75)
# Calibration: a turn is over when no reply came for this long.
QUIET_S = 1.5
_NAMES = ("Maria", "Tom", "Aisha", "Kenji", "Lena", "Carlos", "Priya", "Sam")


@dataclass(frozen=True)
class Step:
    """One customer message: typed ``text``, or a press of the button titled ``button``."""

    text: Optional[str] = None
    button: Optional[str] = None


@dataclass(frozen=True)
class Script:
    """A whole conversation, greeting to hand-off."""

    name: str
    steps: Tuple[Step, ...]


# The conversations of tests/integration/test_telegram_e2e.py and test_production_stack.py.
SCRIPTS: Tuple[Script, ...] = (
    Script("order_status", (
        # "It has not arrived yet" answers the delivery question: the order number is the only one asked.
        Step("/start"), Step("Where is my parcel? It has not arrived yet"), Step("AC-2291734"), Step(button=CONFIRM),
    )),
    Script("change_order", (
        Step("/start"), Step("i need to change the delivery address on my order 48213907"),
        Step("new address is 12 Baker St NW1"), Step(button=CONFIRM),
    )),
    Script("billing", (
        Step("/start"), Step("i was charged twice for my order"), Step("I was charged twice"),
        Step("talk to a human please"), Step(button=CONFIRM),
    )),
    Script("complaint", (
        Step("/start"), Step("your service is a joke, nobody ever answers"),
        Step("I emailed four times about a broken table and never heard back"), Step("a refund and an apology"),
        Step(button=CONFIRM),
    )),
)  # fmt: skip
MEAN_MESSAGES = sum(len(script.steps) for script in SCRIPTS) / len(SCRIPTS)


class TimedBotAPI(FakeTelegramAPI):
    """The fake Bot API, also reporting each delivery the moment the fake accepts it.

    It serves from its own thread; ``listen`` hands each delivery (a message the customer can
    now see: its chat, its arrival time on ``time.perf_counter``'s clock and its parameters) to
    a callback in the load generator's event loop.
    """

    def __init__(self) -> None:
        """Serve with the fake's test token; nothing listens until ``listen``."""
        super().__init__()
        self._listener: Optional[Tuple[asyncio.AbstractEventLoop, Any]] = None

    def listen(self, loop: asyncio.AbstractEventLoop, callback: Any) -> None:
        """Call ``callback(chat, arrived_at, params)`` in ``loop`` for every delivery."""
        self._listener = (loop, callback)

    # The fake's one point where a message reaches the customer (tests/fakes/server.py):
    # extended, not replaced, so the fake's own records stay complete.
    def _deliver(self, delivery: Delivery) -> None:
        arrived_at = time.perf_counter()
        if self._listener is not None:
            loop, callback = self._listener
            loop.call_soon_threadsafe(callback, delivery.chat, arrived_at, delivery.params)
        super()._deliver(delivery)


@dataclass
class _Turn:
    expected: Optional[int]
    replies: List[Dict[str, Any]] = field(default_factory=list)
    first_at: Optional[float] = None
    last_at: float = 0.0
    done: asyncio.Event = field(default_factory=asyncio.Event)


class TelegramCustomers:
    """Customers chatting with one or more stacks over their Telegram webhooks."""

    def __init__(self, api: TimedBotAPI, secret: str, seed: int = 7) -> None:
        """Receive the bot's replies from ``api``; sign webhooks with ``secret``."""
        self.api = api
        self.secret = secret
        self.rng = random.Random(seed)
        self.expected: Dict[str, Dict[str, List[int]]] = {}  # stack url -> script -> replies per step
        self.unexpected = 0
        self.completed: Dict[str, int] = {}  # stack url -> conversations handed off
        self._turns: Dict[str, _Turn] = {}
        # Chat ids are unique in the run (Rasa's sender ids); update ids per bot, as Telegram's.
        self._chats = itertools.count(700_000_000 + random.randrange(1_000_000) * 100)
        self._updates = itertools.count(1)
        self._session: Optional[aiohttp.ClientSession] = None

    async def __aenter__(self) -> "TelegramCustomers":
        self.api.listen(asyncio.get_running_loop(), self._deliver)
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._session is not None
        await self._session.close()

    def _deliver(self, chat_id: str, arrived_at: float, params: Dict[str, Any]) -> None:
        turn = self._turns.get(chat_id)
        if turn is None:
            self.unexpected += 1
            return
        turn.replies.append(params)
        turn.first_at = arrived_at if turn.first_at is None else turn.first_at
        turn.last_at = arrived_at
        if turn.expected is not None and len(turn.replies) >= turn.expected:
            turn.done.set()

    def _update(self, chat_id: int, name: str, step: Step, replies: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
        """Return the Update Telegram would send for ``step`` (KeyError: no such button)."""
        number = next(self._updates)
        chat = {"id": chat_id, "type": "private", "first_name": name}
        user = {"id": chat_id, "is_bot": False, "first_name": name, "language_code": "en"}
        if step.button is None:
            message = {"message_id": number, "date": int(time.time()), "chat": chat, "from": user, "text": step.text}
            return {"update_id": number, "message": message}
        bot_message = {"message_id": 1, "date": int(time.time()), "chat": chat, "from": BOT_USER, "text": "?"}
        data = _button_data(replies, step.button)
        query = {"id": f"q{number}", "from": user, "chat_instance": "c", "message": bot_message, "data": data}
        return {"update_id": number, "callback_query": query}

    async def _turn(
        self, base_url: str, chat_id: int, name: str, step: Step, expected: Optional[int],
        previous: Sequence[Dict[str, Any]], t0: float,
    ) -> Tuple[Sample, List[Dict[str, Any]]]:
        """Send one step; wait for its replies (``expected`` of them, or until quiet if None)."""
        assert self._session is not None
        turn = _Turn(expected)
        key = str(chat_id)
        self._turns[key] = turn
        start = time.perf_counter()
        error: Optional[str] = None
        try:
            update = self._update(chat_id, name, step, previous)
            headers = {SECRET_HEADER: self.secret}
            async with self._session.post(base_url + WEBHOOK_PATH, json=update, headers=headers) as answer:
                await answer.read()
                if answer.status != 200:
                    error = f"webhook http {answer.status}"
            if error is None:
                error = await (self._quiet(turn) if expected is None else self._complete(turn))
        except KeyError:
            error = "no such button"
        except asyncio.TimeoutError:
            error = "webhook timeout"
        except (aiohttp.ClientError, OSError) as exc:
            error = type(exc).__name__
        finally:
            del self._turns[key]
        end = turn.first_at if turn.first_at is not None else time.perf_counter()
        return Sample(done_at=end - t0, latency=end - start, ok=error is None, error=error), turn.replies

    @staticmethod
    async def _complete(turn: _Turn) -> Optional[str]:
        try:
            await asyncio.wait_for(turn.done.wait(), REQUEST_TIMEOUT_S)
        except asyncio.TimeoutError:
            return "no reply" if turn.first_at is None else "replies missing"
        return None

    @staticmethod
    async def _quiet(turn: _Turn) -> Optional[str]:
        deadline = time.perf_counter() + REQUEST_TIMEOUT_S
        while time.perf_counter() < deadline:
            await asyncio.sleep(0.1)
            if turn.first_at is not None and time.perf_counter() - turn.last_at >= QUIET_S:
                return None
        return "no reply"

    async def conversation(self, base_url: str, script: Script, t0: float, think: bool) -> List[Sample]:
        """Hold one whole conversation; return a sample per message sent (it stops at an error)."""
        chat_id, name = next(self._chats), self.rng.choice(_NAMES)
        expected = self.expected.get(base_url, {}).get(script.name)
        samples: List[Sample] = []
        replies: List[Dict[str, Any]] = []
        for index, step in enumerate(script.steps):
            if index and think:
                await asyncio.sleep(self.rng.uniform(*THINK_S))
            sample, replies = await self._turn(
                base_url, chat_id, name, step, expected[index] if expected else None, replies, t0
            )
            samples.append(sample)
            if not sample.ok:
                return samples
        if any(HANDOFF_MARK in str(reply.get("text")) for reply in replies):
            self.completed[base_url] = self.completed.get(base_url, 0) + 1
        return samples

    async def calibrate(self, base_url: str) -> Dict[str, List[int]]:
        """Learn each script's replies per step on one stack, one slow conversation at a time.

        Raises:
            RuntimeError: a step got no reply or the conversation did not end in a hand-off.
        """
        counts: Dict[str, List[int]] = {}
        for script in SCRIPTS:
            chat_id, name = next(self._chats), self.rng.choice(_NAMES)
            replies: List[Dict[str, Any]] = []
            counts[script.name] = []
            for step in script.steps:
                sample, replies = await self._turn(base_url, chat_id, name, step, None, replies, time.perf_counter())
                if not sample.ok:
                    hint = ""
                    if not replies and self.api.deliveries(chat_id):
                        hint = " (the fake Bot API has replies for the chat: its delivery hook, _deliver, changed?)"
                    raise RuntimeError(f"{base_url}: {script.name}, step {step}: {sample.error}{hint}")
                counts[script.name].append(len(replies))
            if not any(HANDOFF_MARK in str(reply.get("text")) for reply in replies):
                raise RuntimeError(f"{base_url}: {script.name} did not end in a hand-off: {replies[-1:]}")
            self.completed[base_url] = self.completed.get(base_url, 0) + 1
        self.expected[base_url] = counts
        return counts

    async def open_loop(self, base_url: str, rate: float, ramp_s: float, measure_s: float) -> PhaseResult:
        """Offer ``rate`` customer messages/s: new conversations as a Poisson process.

        Conversations start at ``rate / MEAN_MESSAGES`` per second for ``ramp_s + measure_s`` s
        and each runs to its end (customers think ``THINK_S`` between messages). Only the
        messages sent in the last ``measure_s`` s count, so the figures are the steady state,
        not the ramp-up.
        """
        conversations: List[asyncio.Future] = []
        result = PhaseResult()
        t0 = time.perf_counter()
        due = self.rng.expovariate(rate / MEAN_MESSAGES)
        while due < ramp_s + measure_s:
            delay = due - (time.perf_counter() - t0)
            if delay > 0:
                await asyncio.sleep(delay)
            result.max_schedule_lag = max(result.max_schedule_lag, (time.perf_counter() - t0) - due)
            script = self.rng.choice(SCRIPTS)
            conversations.append(asyncio.ensure_future(self.conversation(base_url, script, t0, think=True)))
            due += self.rng.expovariate(rate / MEAN_MESSAGES)
        done = await asyncio.gather(*conversations)
        result.samples = [s for samples in done for s in samples if ramp_s <= s.done_at - s.latency < ramp_s + measure_s]
        result.sent = len(result.samples)
        result.duration = measure_s
        return result

    async def closed_loop(self, base_url: str, customers: int, ramp_s: float, measure_s: float) -> PhaseResult:
        """``customers`` chats, each sending its next message as soon as its last turn is over.

        Each customer holds conversation after conversation (finishing the one it is in);
        the figures are the first responses that arrived in the last ``measure_s`` s.
        """
        t0 = time.perf_counter()

        async def customer() -> List[Sample]:
            samples: List[Sample] = []
            while time.perf_counter() - t0 < ramp_s + measure_s:
                samples += await self.conversation(base_url, self.rng.choice(SCRIPTS), t0, think=False)
            return samples

        done = await asyncio.gather(*(customer() for _ in range(customers)))
        result = PhaseResult()
        result.samples = [s for samples in done for s in samples if ramp_s <= s.done_at < ramp_s + measure_s]
        result.sent = len(result.samples)
        result.duration = measure_s
        return result


def _button_data(replies: Sequence[Dict[str, Any]], title: str) -> str:
    """Return the callback data of the button titled ``title`` (KeyError if none)."""
    for reply in reversed(replies):
        markup = reply.get("reply_markup") or {}
        for row in markup.get("inline_keyboard") or []:
            for button in row:
                if button.get("text") == title and button.get("callback_data"):
                    return str(button["callback_data"])
    raise KeyError(title)
