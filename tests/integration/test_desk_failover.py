"""Two ``python -m bot desk`` processes on one case store: one delivers, the other takes over.

Both desks (HTTP mode, against the fake Slack Web API of ``tests.fakes``) share the case
store: a SQLite file (elected by a lock file) and, when ``FIRSTREPLY_TEST_POSTGRES_URL`` is
set, the test PostgreSQL database, emptied (elected by an advisory lock). Either desk takes
Slack's requests; only the leader runs the card, relay, watchdog and delivery loops. The
leader is killed with SIGKILL while Slack holds the answer to one of its posts: the other
desk takes the lead, finds the post by its key instead of posting it again, and delivers
everything that was left. Every message is in Slack exactly once.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from bot.cases import CaseStore
from bot.desk import messages
from tests.desk_support import open_case
from tests.integration.desk_stack import ANA, QUEUE, Stack, desk_env, desk_fakes
from tests.processes import free_ports, wait_until

pytestmark = pytest.mark.integration

LEADER_SECONDS = "0.3"


def _start_desk(stack: Stack, name: str, port: int) -> Stack:
    """Start one more desk process, ``name``, on ``port``; return the stack as seen through it."""
    desk = replace(stack, env={**stack.env, "FIRSTREPLY_DESK_PORT": str(port)}, desk_url=f"http://127.0.0.1:{port}/slack/events")
    desk.start_desk(name)
    return desk


def _leads(desk: Stack) -> bool:
    """Return whether ``desk`` says it leads (runs the loops)."""
    return bool(httpx.get(desk.health_url, timeout=5).json()["leader"])


def _relayed(stack: Stack, case_id: int) -> list[str]:
    """Return the customer's messages in the case's thread, in order (none before the card)."""
    case = stack.case(case_id)
    if case.card_ts is None:
        return []
    return [text.rsplit(">", 1)[-1] for text in stack.thread(case) if ":speech_balloon:" in text]


def test_two_desks_deliver_once_and_the_survivor_delivers_what_the_killed_leader_left(
    tmp_path: Path, db_url: str
) -> None:
    from rasa.core.brokers.sql import SQLEventBroker

    telegram, slack = desk_fakes()
    first_port, second_port, closed_port = free_ports(3)
    env = {
        **desk_env(tmp_path, telegram, slack, f"http://127.0.0.1:{closed_port}", first_port),
        "FIRSTREPLY_CASE_DB": db_url, "FIRSTREPLY_DESK_LEADER_SECONDS": LEADER_SECONDS,
    }  # fmt: skip
    stack = Stack(tmp_path, telegram, slack, env, "", "", db_url)
    store = CaseStore.from_url(db_url)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Calling URL\\(\\) directly is deprecated")
        broker = SQLEventBroker(dialect="sqlite", db=str(tmp_path / "events.db"))

    def customer_writes(text: str) -> None:
        broker.publish({"sender_id": "4242", "event": "user", "timestamp": time.time(), "text": text,
                        "input_channel": "telegram", "metadata": {}})  # fmt: skip

    try:
        maria = open_case(store, sender="4242", key="failover:1")
        customer_writes("message 0")
        first = _start_desk(stack, "desk-1", first_port)
        wait_until("desk-1 leads", lambda: _leads(first), 30, stack.alive)
        wait_until("relayed", lambda: _relayed(stack, maria.id) == ["message 0"], 30, stack.alive)

        # Slack takes the next post but holds its answer: the leader is mid-delivery.
        slack.delay_next(1, 30.0, method="chat.postMessage")
        tom = open_case(store, sender="5151", key="failover:2")
        wait_until("card taken", lambda: len(slack.calls("chat.postMessage")) == 3, 30, stack.alive)

        # A second desk: it serves Slack, but leaves the loops (and the leader's delivery) alone.
        second = _start_desk(stack, "desk-2", second_port)
        assert not _leads(second) and _leads(first)
        second.press(ANA, "desk_claim", stack.case(maria.id))
        wait_until("claimed", lambda: stack.case(maria.id).claimed_by == ANA, 30, stack.alive)
        notice = f":raising_hand: Claimed by <@{ANA}>."
        wait_until("notice posted by the leader", lambda: notice in stack.thread(stack.case(maria.id)), 30, stack.alive)
        [card] = store.outbox.items(case_id=tom.id, kind=messages.KIND_CARD_POST)
        assert (card.started_at is not None, card.in_doubt, card.delivered_at) == (True, False, None)
        assert slack.calls("conversations.history") == []  # nobody took the leader's delivery for cut off
        assert not _leads(second)

        stack.kill("desk-1")
        customer_writes("message 1")
        wait_until("desk-2 leads", lambda: _leads(second), 30, stack.alive)
        wait_until("card found", lambda: stack.case(tom.id).card_ts, 30, stack.alive)
        wait_until("relayed", lambda: _relayed(stack, maria.id) == ["message 0", "message 1"], 30, stack.alive)
        wait_until("all delivered", lambda: all(i.delivered_at for i in store.outbox.items()), 30, stack.alive)

        cards = [stack.case(maria.id).card_ts, stack.case(tom.id).card_ts]
        assert [m.ts for m in slack.top_level(QUEUE)] == cards
        keys = [c.params["metadata"]["event_payload"]["key"] for c in slack.calls("chat.postMessage")]
        assert len(keys) == len(set(keys)) == 5  # two cards, two relayed messages, the claim notice
        assert stack.thread(stack.case(maria.id)).count(notice) == 1
        assert len(slack.calls("conversations.history")) >= 1  # the cut-off card was looked for, and found
    finally:
        stack.stop_all()
        broker.engine.dispose()
        store.dispose()
        telegram.stop()
        slack.stop()
