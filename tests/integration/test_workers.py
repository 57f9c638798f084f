"""One machine, several worker processes: what ``make run`` starts on a machine with several cores.

Rasa runs two Sanic workers behind one port (``SANIC_WORKERS``, as ``FIRSTREPLY_RASA_WORKERS``
sets it in scripts/run.sh) and the action server two as well, with ``endpoints.yml`` as shipped:
conversations in the SQLite tracker store, their locks in the SQLite lock store
(``bot.locks.SQLiteLockStore``). The kernel hands each connection to either worker, so one
customer's two messages sent at once are handled by both workers at the same moment unless the
shared lock store orders them; and a worker killed while it holds a conversation must not
leave that customer waiting for its lock to expire.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from bench.workers import shipped_endpoints
from bot.locks import process_started
from tests.integration.conftest import Assistant, serve_assistant, texts
from tests.integration.stack_support import check_handled_in_turn, two_at_once
from tests.processes import base_env, free_port, require_model, wait_until

WORKERS = 2
GREETING = "I'm Northwind's assistant."


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Assistant]:
    """Start Rasa and the action server with two workers each, on endpoints.yml as shipped."""
    require_model()
    work = tmp_path_factory.mktemp("workers")
    rasa_port, actions_port = free_port(), free_port()
    case_db_url = f"sqlite:///{work / 'cases.db'}"
    env = {
        **base_env(),
        "SANIC_WORKERS": str(WORKERS),
        "ACTION_SERVER_SANIC_WORKERS": str(WORKERS),
        "FIRSTREPLY_CASE_DB": case_db_url,
        "FIRSTREPLY_CHANNEL_DB": str(work / "channels.db"),
        "FIRSTREPLY_REST_TOKEN": "workers-test-token",
        "FIRSTREPLY_WEBCHAT_SECRET": "workers-test-webchat-secret",
    }
    running = Assistant(f"http://127.0.0.1:{rasa_port}", case_db_url, env, env["FIRSTREPLY_REST_TOKEN"])
    with serve_assistant(running, work, actions_port, rasa_port, shipped_endpoints(work, actions_port)):
        yield running


def _worker_pids(parent: int) -> list[int]:
    """Return the processes whose parent is ``parent`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
                found.append(int(entry.name))
    return found


def test_both_servers_run_their_workers(workers: Assistant) -> None:
    rasa, actions = workers.processes[1], workers.processes[0]

    assert len(_worker_pids(rasa.popen.pid)) == WORKERS, rasa.tail()
    assert len(_worker_pids(actions.popen.pid)) == WORKERS, actions.tail()


def test_two_messages_of_one_customer_at_once_are_handled_in_turn(workers: Assistant) -> None:
    senders = [f"workers-{number:02d}" for number in range(10)]

    answered = asyncio.run(two_at_once(senders, workers.webhook, [workers.rasa_url], workers.token))

    check_handled_in_turn(answered, workers.tracker)


def test_a_worker_killed_mid_conversation_does_not_hold_its_customers_up(workers: Assistant) -> None:
    rasa = workers.processes[1]
    victim = _worker_pids(rasa.popen.pid)[0]
    # A conversation lock taken by the worker about to die, as if it were killed mid-message.
    store_db = Path(yaml.safe_load((Path(rasa.log).parent / "endpoints.yml").read_text())["lock_store"]["db"])
    started = process_started(victim)
    with sqlite3.connect(store_db) as db:
        db.execute(
            "INSERT INTO conversation_tickets (conversation_id, expires, pid, started) VALUES (?, ?, ?, ?)",
            ("workers-killed", 4_102_444_800.0, victim, started),  # held until 2100
        )
    os.kill(victim, signal.SIGKILL)

    replies = wait_until(
        "the customer whose conversation the killed worker held is answered",
        lambda: _answer_or_none(workers, "workers-killed"),
        60,
    )

    assert texts(replies)[0].endswith(GREETING), texts(replies)


def _answer_or_none(workers: Assistant, sender: str) -> list | None:
    try:
        return workers.say(sender, "hi, my parcel never came")
    except (AssertionError, OSError):
        return None  # the connection went to the killed worker; the customer's client sends again
