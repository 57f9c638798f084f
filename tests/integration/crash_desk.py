"""Random kills while the desk's outbox delivers agents' replies to Telegram customers.

The desk (``python -m bot desk``, HTTP mode) runs against the local fakes of everything across
the network: Slack's Web API (``tests/fakes/slack_web_api.py``: the cards), Telegram's Bot API
(``tests/fakes/telegram_api.py``: the customers) and Rasa's HTTP API (``tests/fakes/rasa_api.py``:
the bot events each reply appends to the conversation). Its case store is a SQLite file
(``DeskStack`` as ``make desk`` runs it) or a PostgreSQL database.

One trial: new Telegram cases are opened, and agents' replies to them are queued in the
outbox at random moments of a few seconds, as the desk queues an agent's thread reply. The
fake Bot API takes each message at once but answers after ``TELEGRAM_LATENCY_S``, like a
platform across the network, so a delivery is *in doubt* for that long: the customer has the
message, the desk does not know yet. At a random moment the desk is killed (SIGKILL) and started
again at once, or every database connection is terminated (PostgreSQL). Right after the kill
the outbox rows under way are read (*in doubt at the kill*). Once every reply is delivered,
each one's deliveries are counted: *lost* (never reached the customer), *repeated* (reached
them twice or more) and whether it was in doubt at the kill (Telegram has no way to look a
sent message up, so the outbox sends one in doubt again, with a warning), *Slack posts
twice* (the cards: Slack posts are looked up by key before posting again). *Resumed*: from the restarted
desk answering to the first delivery of a reply not yet delivered at the kill.
"""

from __future__ import annotations

import asyncio
import random
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional

import httpx
from sqlalchemy.exc import SQLAlchemyError

from bot.cases import CaseStore
from bot.cases.records import OutboxItem, OutboxMessage
from bot.desk import messages
from bot.desk.outbox import CUT_OFF_SENT_AGAIN
from tests.desk_support import open_case
from tests.fakes.rasa_api import TOKEN as RASA_TOKEN
from tests.fakes.rasa_api import FakeRasa
from tests.fakes.server import ACCEPT_HOLD
from tests.fakes.slack_web_api import FakeDeskSlackAPI
from tests.fakes.telegram_api import FakeTelegramAPI
from tests.integration.crash_support import DATABASE, _sigkill, terminate_connections
from tests.integration.desk_stack import desk_env, desk_fakes
from tests.processes import Process, answers, free_ports, start_desk, wait_until

DESK = "desk"
TELEGRAM_LATENCY_S = 0.25
SETTLE_TIMEOUT_S = 180
QUIET_S = 1.5
AGENTS = ("U0ANA", "U0BEN")


@dataclass
class DeliveryOutcome:
    """What one trial did to the agents' replies (see the module doc)."""

    stack: str
    target: str
    kill_at_s: float
    replies: int
    killed: str = ""
    lost: int = 0
    repeated: int = 0
    repeated_not_in_doubt: int = 0
    in_doubt_at_kill: int = 0
    cut_off: int = 0
    delivered_at_kill: int = 0
    given_up: int = 0
    slack_posts_twice: int = 0
    resume_s: Optional[float] = None
    complete_s: float = 0.0
    problems: List[str] = field(default_factory=list)

    def as_dict(self) -> Dict[str, Any]:
        """Return the figures as JSON-ready values."""
        return asdict(self)


class DeskStack:
    """One desk process on a case store, against the fakes; killed and started again by a trial."""

    def __init__(self, work: Path, case_db_url: str, telegram: FakeTelegramAPI, slack: FakeDeskSlackAPI,
                 rasa: FakeRasa) -> None:  # fmt: skip
        """Set up in ``work`` with the case store at ``case_db_url``; ``desk_stack`` starts it."""
        self.work, self.case_db_url = work, case_db_url
        self.telegram, self.slack, self.rasa = telegram, slack, rasa
        self.targets = (DESK, DATABASE) if case_db_url.startswith("postgresql") else (DESK,)
        port, = free_ports(1)
        self.health_url = f"http://127.0.0.1:{port}/health"
        self.env = {
            **desk_env(work, telegram, slack, rasa.url, port),
            "FIRSTREPLY_CASE_DB": case_db_url, "FIRSTREPLY_API_TOKEN": RASA_TOKEN,
            # A restarted desk leads again soon after the killed one's lock is gone.
            "FIRSTREPLY_DESK_LEADER_SECONDS": "0.3",
        }  # fmt: skip
        self.process: Optional[Process] = None
        self.runs = 0
        self._killed = ""

    def start(self) -> None:
        """Start the desk (again); return once it leads."""
        self.runs += 1
        self.process = start_desk(f"desk-{self.runs}", self.env, self.work / f"desk-{self.runs}.log", verbose=True)
        wait_until("desk leads", self._leads, 60, [self.process])

    def _leads(self) -> bool:
        return answers(self.health_url) and bool(httpx.get(self.health_url, timeout=5).json().get("leader"))

    async def kill(self, target: str) -> str:
        """SIGKILL the desk, or terminate every connection to the case store's database."""
        self._killed = target
        if target == DATABASE:
            killed = await asyncio.to_thread(terminate_connections, self.case_db_url, [])
            return f"{killed} database connections"
        assert self.process is not None
        await _sigkill(self.process)
        return DESK

    async def restart(self) -> None:
        """Start the killed desk again (nothing to start after terminated connections)."""
        if self._killed == DESK:
            await asyncio.to_thread(self.start)

    def stop(self) -> None:
        """Stop the desk."""
        if self.process is not None:
            self.process.stop(timeout=30)

    def logs(self) -> str:
        """Return every desk log of this stack."""
        return "".join(path.read_text(errors="replace") for path in sorted(self.work.glob("desk-*.log")))


@contextmanager
def desk_stack(work: Path, case_db_url: Optional[str] = None) -> Iterator[DeskStack]:
    """Start the fakes and a desk on ``case_db_url`` (default: a SQLite file in ``work``); stop them at the end."""
    from rasa.core.brokers.sql import SQLEventBroker

    telegram, slack = desk_fakes()
    rasa = FakeRasa().start()
    # The relay follows Rasa's event table: made here as Rasa's broker makes it.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Calling URL\\(\\) directly is deprecated")
        broker = SQLEventBroker(dialect="sqlite", db=str(work / "events.db"))
    stack = DeskStack(work, case_db_url or f"sqlite:///{work / 'cases.db'}", telegram, slack, rasa)
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()
        broker.engine.dispose()
        for fake in (telegram, slack, rasa):
            fake.stop()


def _reply_key(chat: str, number: int) -> str:
    return f"crash:reply:{chat}:{number}"


def _reply_text(chat: int, number: int) -> str:
    # Letters and digits only: nothing a sender escapes, and no token a prefix of another.
    return f"Update {number} on your case from the team ref R{chat}x{number}"


def _replies(url: str, keys: set[str]) -> List[OutboxItem]:
    """Return the outbox rows of the replies ``keys``, now."""
    store = CaseStore.from_url(url)
    try:
        return [i for i in store.outbox.items(kind=messages.KIND_CUSTOMER) if i.key in keys]
    finally:
        store.dispose()


def _under_way(url: str, keys: set[str]) -> tuple[set[str], set[str]]:
    """Return the keys of the replies under way and of those delivered, now."""
    items = _replies(url, keys)
    under_way = {i.key for i in items if i.started_at is not None and i.delivered_at is None}
    return under_way, {i.key for i in items if i.delivered_at is not None}


def _settled(url: str, keys: set[str]) -> tuple[bool, int]:
    """Return whether every reply is delivered or given up, and how many were given up."""
    items = _replies(url, keys)
    given_up = sum(i.delivered_at is None and i.next_attempt_at is None for i in items)
    done = len(items) == len(keys) and all(i.delivered_at is not None or i.next_attempt_at is None for i in items)
    return done, given_up


async def run_desk_trial(
    stack: DeskStack, label: str, first_chat: int, customers: int, replies_each: int, target: str, kill_at: float,
    rng: random.Random, queue_window_s: float = 3.0,
) -> DeliveryOutcome:  # fmt: skip
    """Run one trial (see the module doc) and return its figures."""
    outcome = DeliveryOutcome(label, target, round(kill_at, 2), customers * replies_each)
    store = CaseStore.from_url(stack.case_db_url)
    chats = [first_chat + n for n in range(customers)]
    try:
        cases = [open_case(store, sender=str(chat), key=f"crash:{chat}") for chat in chats]
    finally:
        store.dispose()
    numbers = range(1, replies_each + 1)
    plan = sorted(((rng.uniform(0, queue_window_s), case, number) for case in cases for number in numbers),
                  key=lambda planned: planned[0])
    keys = {_reply_key(case.sender_id, number) for _, case, number in plan}
    at_kill: Dict[str, set[str]] = {}
    restarted_at = [0.0]
    cards_before = Counter(_card_keys(stack.slack))
    stack.telegram.fault(ACCEPT_HOLD, method="sendMessage", seconds=SETTLE_TIMEOUT_S, hold=TELEGRAM_LATENCY_S)
    stamps = Stamps(stack.telegram)
    started = time.monotonic()

    async def watch() -> None:
        while True:
            stamps.poll()
            await asyncio.sleep(0.05)

    async def agents() -> None:
        # Each reply queued as the desk queues an agent's thread reply: one outbox row.
        queue = CaseStore.from_url(stack.case_db_url)
        try:
            for moment, case, number in plan:
                await asyncio.sleep(max(0.0, started + moment - time.monotonic()))
                text = _reply_text(int(case.sender_id), number)
                reply = messages.customer_reply(case, _reply_key(case.sender_id, number), text, rng.choice(AGENTS))
                await asyncio.to_thread(_enqueue, queue, reply)
        finally:
            queue.dispose()

    async def fault() -> None:
        await asyncio.sleep(kill_at)
        outcome.killed = await stack.kill(target)
        under_way, delivered = await asyncio.to_thread(_under_way, stack.case_db_url, keys)
        at_kill.update(under_way=under_way, delivered=delivered)
        await stack.restart()
        restarted_at[0] = time.monotonic()

    watcher = asyncio.ensure_future(watch())
    try:
        await asyncio.gather(agents(), fault())
        given_up = await _settle(stack, keys)
    finally:
        watcher.cancel()
        stack.telegram.faults.clear()
    stamps.poll()
    outcome.given_up = given_up
    outcome.in_doubt_at_kill, outcome.delivered_at_kill = len(at_kill["under_way"]), len(at_kill["delivered"])
    logs = stack.logs()
    cut_off = {key for key in keys if f"{key} to telegram {CUT_OFF_SENT_AGAIN}" in logs}
    outcome.cut_off = len(cut_off)
    _judge(stack, outcome, plan, at_kill["under_way"] | cut_off, at_kill["delivered"], restarted_at[0], cards_before,
           stamps)  # fmt: skip
    return outcome


def _enqueue(store: CaseStore, reply: OutboxMessage) -> None:
    """Queue ``reply``; a database connection just terminated fails once, as an agent's reply is then tried again."""
    for attempt in range(3):
        try:
            store.outbox.enqueue([reply], datetime.now(timezone.utc))
            return
        except SQLAlchemyError:  # the connection the trial killed: try again, as Slack retries the agent's event
            if attempt == 2:
                raise
            time.sleep(0.2)


async def _settle(stack: DeskStack, keys: set[str]) -> int:
    """Wait until every reply is delivered or given up and nothing more is sent for a moment; return given up."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    count, quiet_since, given_up = -1, time.monotonic(), 0
    while time.monotonic() < deadline:
        done, given_up = await asyncio.to_thread(_settled, stack.case_db_url, keys)
        sent = len(stack.telegram.deliveries())
        if sent != count:
            count, quiet_since = sent, time.monotonic()
        if done and time.monotonic() - quiet_since > QUIET_S:
            return given_up
        await asyncio.sleep(0.25)
    return given_up


def _card_keys(slack: FakeDeskSlackAPI) -> List[str]:
    return [
        str(((d.params.get("metadata") or {}).get("event_payload") or {}).get("key"))
        for d in slack.deliveries()
        if d.method == "chat.postMessage"
    ]


def _judge(
    stack: DeskStack, outcome: DeliveryOutcome, plan: List[Any], in_doubt: set[str], delivered_at_kill: set[str],
    restarted_at: float, cards_before: Counter[str], stamps: Stamps,
) -> None:  # fmt: skip
    for _, case, number in plan:
        key, token = _reply_key(case.sender_id, number), f"R{case.sender_id}x{number}"
        received = sum(token in d.text for d in stack.telegram.deliveries(case.sender_id))
        if received == 0:
            outcome.lost += 1
            outcome.problems.append(f"{key}: never delivered")
        elif received > 1:
            outcome.repeated += 1
            if key not in in_doubt:
                outcome.repeated_not_in_doubt += 1
                outcome.problems.append(f"{key}: delivered {received} times, not in doubt at the kill")
    posts = Counter(_card_keys(stack.slack)) - cards_before
    outcome.slack_posts_twice = sum(1 for count in posts.values() if count > 1)
    waiting = {f"R{case.sender_id}x{number}" for _, case, number in plan
               if _reply_key(case.sender_id, number) not in delivered_at_kill}  # fmt: skip
    resumed = [stamp for stamp, text in stamps.seen if stamp >= restarted_at and any(t in text for t in waiting)]
    outcome.resume_s = round(min(resumed) - restarted_at, 2) if resumed and restarted_at else None
    last = max((stamp for stamp, _ in stamps.seen), default=restarted_at)
    outcome.complete_s = round(last - restarted_at, 2)


class Stamps:
    """The fake Bot API's deliveries from now on, each stamped with when it was seen (polled every 50 ms)."""

    def __init__(self, telegram: FakeTelegramAPI) -> None:
        """Watch ``telegram`` from now on."""
        self.telegram = telegram
        self.seen: List[tuple[float, str]] = []
        self._count = len(telegram.deliveries())

    def poll(self) -> None:
        """Stamp the deliveries that came since the last poll."""
        delivered, now = self.telegram.deliveries(), time.monotonic()
        self.seen += [(now, d.text) for d in delivered[self._count :]]
        self._count = len(delivered)
