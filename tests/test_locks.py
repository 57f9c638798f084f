"""The SQLite lock store: one conversation handled by one worker process at a time, in order."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rasa.core.lock_store import LockError
from rasa.utils.endpoints import EndpointConfig

from bot.locks import SQLiteLockStore, process_started
from tests.lock_support import hold, three_in_turn


def test_one_conversation_is_served_in_turn_first_come_first_served(tmp_path: Path) -> None:
    # Two stores on one file: two worker processes, as far as the tickets can tell.
    one, other = SQLiteLockStore(db=str(tmp_path / "locks.db")), SQLiteLockStore(db=str(tmp_path / "locks.db"))

    log = three_in_turn(one, other, 0.2)

    assert log == ["a in", "a out", "b in", "b out", "c in", "c out"]
    assert sqlite3.connect(tmp_path / "locks.db").execute("SELECT count(*) FROM conversation_tickets").fetchone() == (0,)


def test_other_conversations_do_not_wait(tmp_path: Path) -> None:
    store = SQLiteLockStore(endpoint_config=EndpointConfig(type="bot.locks.SQLiteLockStore", db=str(tmp_path / "l.db")))
    log: list[str] = []

    async def run() -> None:
        await asyncio.gather(hold(store, "maria", "a", log, 0.2), hold(store, "sam", "b", log, 0.0))

    asyncio.run(run())

    assert log.index("b out") < log.index("a out")


def _ticket_of(pid: int, started: str, path: Path, expires_in: float = 60.0) -> None:
    with sqlite3.connect(path) as db:
        db.execute(
            "INSERT INTO conversation_tickets (conversation_id, expires, pid, started) VALUES (?, ?, ?, ?)",
            ("maria", time.time() + expires_in, pid, started),
        )


def test_a_ticket_of_a_process_that_is_gone_is_dropped_at_once(tmp_path: Path) -> None:
    path = tmp_path / "locks.db"
    store = SQLiteLockStore(db=str(path))
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    started = process_started(gone.pid)
    gone.wait()
    _ticket_of(gone.pid, started or "0", path)  # a worker killed while it held the conversation

    async def run() -> bool:
        # Its own ticket lives 0.5 s: were the dead worker's ticket (a minute) waited for, this raises.
        async with store.lock("maria", lock_lifetime=0.5, wait_time_in_seconds=0.05):
            return True

    assert asyncio.run(run())
    assert sqlite3.connect(path).execute("SELECT count(*) FROM conversation_tickets").fetchone() == (0,)


def test_a_ticket_of_a_live_process_is_waited_for_until_it_expires(tmp_path: Path) -> None:
    path = tmp_path / "locks.db"
    store = SQLiteLockStore(db=str(path))
    _ticket_of(1, process_started(1) or "", path, expires_in=0.3)  # pid 1 lives; its ticket runs out
    log: list[str] = []

    async def run() -> None:
        waiter = asyncio.create_task(hold(store, "maria", "b", log, 0.0))
        await asyncio.sleep(0.1)
        log.append("still waiting" if not log else "served early")
        await waiter

    asyncio.run(run())

    assert log == ["still waiting", "b in", "b out"]


def test_a_ticket_that_expired_before_its_turn_raises(tmp_path: Path) -> None:
    path = tmp_path / "locks.db"
    store = SQLiteLockStore(db=str(path))
    _ticket_of(1, process_started(1) or "", path, expires_in=30)  # a live holder for a long time

    async def run() -> None:
        async with store.lock("maria", lock_lifetime=0.2, wait_time_in_seconds=0.05):
            pytest.fail("served while another live worker held the conversation")

    with pytest.raises(LockError):
        asyncio.run(run())


def test_a_pid_used_again_by_another_process_is_not_taken_for_the_old_one() -> None:
    started = process_started(1)
    assert started is not None and started != "0"
    assert process_started(2**22 + 12345) is None
