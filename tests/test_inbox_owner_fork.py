"""An inbox built before Sanic forks its workers: each worker's leases name that worker.

Rasa 3.6 builds the input channels (and so each webhook connector's ``Inbox``) in the main
process, then Sanic forks the workers (``SANIC_WORKERS``; ``make run`` starts one per core).
Were the owner taken once, in the parent, every worker would lease updates in the parent's
name, and a killed worker's updates would wait out the lease (60 s) instead of being taken
over at once by another worker.
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import select

from bot.channels.dedupe import channel_engine
from bot.channels.inbox import Inbox, inbox as inbox_table


def _worker_accepts(inbox: Inbox, update_id: str) -> int:
    """Fork a 'worker' that stores one update, as a Sanic worker's webhook does; return its pid (exited)."""
    pid = os.fork()
    if pid == 0:
        try:
            inbox.accept("telegram", update_id, "42", "{}")
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    return pid


def test_a_forked_workers_lease_names_the_worker(tmp_path: Path) -> None:
    engine = channel_engine(f"sqlite:///{tmp_path / 'channels.db'}")
    inbox = Inbox(engine)  # built before the fork, as Rasa builds the channels
    worker = _worker_accepts(inbox, "1")
    with engine.connect() as conn:
        [owner] = conn.execute(select(inbox_table.c.lease_owner)).scalars().all()
    assert owner.split(":")[1] == str(worker), f"lease names pid {owner.split(':')[1]}, the worker was {worker}"


def test_a_dead_workers_update_is_taken_over_at_once_by_another_worker(tmp_path: Path) -> None:
    engine = channel_engine(f"sqlite:///{tmp_path / 'channels.db'}")
    inbox = Inbox(engine)
    _worker_accepts(inbox, "1")  # that worker is gone now; the lease has 60 s to run
    # Another worker of the same Rasa (forked from the same parent): a process other than the parent.
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        taken = inbox.claim_due("telegram")
        os.write(write, str(len(taken)).encode())
        os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 16) == b"1", "the dead worker's update waits for its lease to run out"
