"""bot/channels/inbox.py on a real SQLite database: leases, retries, order, reply records."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.channels.common import BackgroundTasks
from bot.channels.dedupe import ChannelStore
from sqlalchemy import select

from bot.channels.inbox import (
    DEAD,
    FAILED,
    MAX_ATTEMPTS,
    SENDING,
    SENT,
    Arrival,
    Inbox,
    InboxEntry,
    replies,
)
from bot.channels.inbox_worker import ENV_HANDLING_AT_ONCE, InboxWorker
from bot.channels.leases import owner_gone, process_owner
from tests.polling import until

SOURCE = "telegram:1"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_inbox(tmp_path: Path, clock: Clock, owner: str) -> Inbox:
    store = ChannelStore.from_url(f"sqlite:///{tmp_path / 'channels.db'}")
    return Inbox(store.engine, lease_seconds=10, clock=clock, owner=owner)


def test_an_update_is_taken_once_and_a_copy_is_refused(tmp_path: Path, clock: Clock) -> None:
    inbox = make_inbox(tmp_path, clock, "a")

    first = inbox.accept(SOURCE, "7", "42", "{}")
    copy = inbox.accept(SOURCE, "7", "42", "{}")

    assert first is not None and first.update_id == "7" and copy is None
    assert inbox.pending(SOURCE) == 1


def test_a_dead_process_s_update_is_taken_over_only_after_its_lease(tmp_path: Path, clock: Clock) -> None:
    dead = make_inbox(tmp_path, clock, "dead")
    alive = make_inbox(tmp_path, clock, "alive")
    dead.accept(SOURCE, "7", "42", "{}")

    assert alive.claim_due(SOURCE) == []
    clock.now += 11
    [taken] = alive.claim_due(SOURCE)
    assert taken.replay and taken.update_id == "7"
    assert alive.claim_due(SOURCE) == []  # now held by "alive"
    assert not dead.renew(taken)  # the dead one's lease is gone


def test_a_failed_update_comes_back_with_back_off_then_is_set_aside(tmp_path: Path, clock: Clock) -> None:
    inbox = make_inbox(tmp_path, clock, "a")
    entry = inbox.accept(SOURCE, "7", "42", "{}")
    assert entry is not None

    assert inbox.failed(entry, "RuntimeError: down") == 2.0
    assert inbox.claim_due(SOURCE) == []
    clock.now += 2
    [again] = inbox.claim_due(SOURCE)
    assert again.attempts == 1

    last = InboxEntry(SOURCE, "7", "42", "{}", MAX_ATTEMPTS - 1)
    assert inbox.failed(last, "RuntimeError: still down") is None
    assert inbox.dead(SOURCE) == [(SOURCE, "7", "RuntimeError: still down")]
    assert inbox.pending(SOURCE) == 0 and DEAD == "dead"


def test_replies_are_recorded_so_none_is_sent_twice(tmp_path: Path, clock: Clock) -> None:
    inbox = make_inbox(tmp_path, clock, "a")

    assert inbox.begin_reply("telegram-7", 0, "d0") is None  # new: send it
    inbox.finish_reply("telegram-7", 0)
    assert inbox.begin_reply("telegram-7", 1, "d1") is None  # sent, but the crash came first
    assert inbox.begin_reply("telegram-7", 0, "d0") == SENT  # skip
    assert inbox.begin_reply("telegram-7", 1, "d1") == SENDING  # send again, counted as resent


def test_a_reply_whose_call_failed_is_sent_again_without_counting_as_resent(tmp_path: Path, clock: Clock) -> None:
    inbox = make_inbox(tmp_path, clock, "a")
    assert inbox.begin_reply("telegram-7", 0, "d0") is None
    inbox.fail_reply("telegram-7", 0)

    assert inbox.begin_reply("telegram-7", 0, "d0") == FAILED
    inbox.finish_reply("telegram-7", 0)
    assert inbox.begin_reply("telegram-7", 0, "d0") == SENT
    with inbox._engine.connect() as conn:  # noqa: SLF001 - the counter the crash test reads
        assert conn.execute(select(replies.c.resent)).scalar() == 0


def _gone_pid() -> int:
    """Return the id of a process of this machine that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_lease_of_a_process_of_this_machine_that_is_gone_is_taken_over_at_once(tmp_path: Path, clock: Clock) -> None:
    gone = make_inbox(tmp_path, clock, process_owner(_gone_pid()))
    earlier_run = make_inbox(tmp_path, clock, process_owner().rsplit(":", 1)[0] + ":000000")  # this pid, before
    living = make_inbox(tmp_path, clock, process_owner(os.getppid()))
    elsewhere = make_inbox(tmp_path, clock, "other-host/0badcafe:" + str(_gone_pid()) + ":abcdef")
    me = make_inbox(tmp_path, clock, process_owner())
    for number, holder in enumerate((gone, earlier_run, living, elsewhere), 1):
        assert holder.accept(SOURCE, str(number), f"c{number}", "{}") is not None

    # Only the leases whose process is known to have stopped; the others wait for their lease.
    assert sorted(entry.update_id for entry in me.claim_due(SOURCE)) == ["1", "2"]
    assert not gone.renew(InboxEntry(SOURCE, "1", "c1", "{}", 0))
    assert me.claim_due(SOURCE) == []
    clock.now += 11
    assert {"3", "4"} <= {entry.update_id for entry in me.claim_due(SOURCE)}


def test_only_an_owner_of_this_machine_can_be_known_gone() -> None:
    me = process_owner()
    assert owner_gone(process_owner(_gone_pid()), me)
    assert not owner_gone(process_owner(os.getpid()), me)  # this very process
    assert not owner_gone(process_owner(os.getppid()), me)
    assert not owner_gone(f"another-host/{me.split('/', 1)[1].split(':')[0]}:{_gone_pid()}:abcdef", me)
    assert not owner_gone("an-owner-of-an-older-version:42", me) and not owner_gone(None, me)


def test_the_greeting_is_claimed_by_one_update_per_customer_and_conversation(tmp_path: Path, clock: Clock) -> None:
    inbox = make_inbox(tmp_path, clock, "a")
    key = "greeting:telegram:42"

    assert inbox.claim_greeting(key, "telegram-1", 3600)
    assert inbox.claim_greeting(key, "telegram-1", 3600)  # the same update handled again: its reply record decides
    assert not inbox.claim_greeting(key, "telegram-2", 3600)  # greeted already in this conversation
    assert inbox.claim_greeting("greeting:telegram:77", "telegram-2", 3600)  # another customer
    clock.now += 3600
    assert inbox.claim_greeting(key, "telegram-9", 3600)  # a new conversation, a session later
    assert not inbox.claim_greeting(key, "telegram-1", 3600)


def test_a_reply_in_doubt_not_to_be_resent_stays_in_doubt_and_uncounted(tmp_path: Path, clock: Clock) -> None:
    inbox = make_inbox(tmp_path, clock, "a")
    assert inbox.begin_reply("telegram-7", 0, "d0") is None  # the crash came mid-call

    assert inbox.begin_reply("telegram-7", 0, "d0", resend_in_doubt=False) == SENDING
    assert inbox.begin_reply("telegram-7", 0, "d0", resend_in_doubt=False) == SENDING
    with inbox._engine.connect() as conn:  # noqa: SLF001 - the counter the crash test reads
        assert conn.execute(select(replies.c.resent)).scalar() == 0


@pytest.mark.asyncio
async def test_a_customer_s_messages_are_handled_in_the_order_they_came_also_after_a_crash(
    tmp_path: Path, clock: Clock
) -> None:
    dead = make_inbox(tmp_path, clock, "dead")
    alive = make_inbox(tmp_path, clock, "alive")
    # The first message was taken by a process that died; the customer wrote again.
    dead.accept(SOURCE, "1", "42", "first")
    clock.now += 1
    second = alive.accept(SOURCE, "2", "42", "second")
    other = alive.accept(SOURCE, "3", "77", "another customer")
    assert second is not None and other is not None
    handled: list[str] = []

    async def handle(entry: InboxEntry) -> None:
        handled.append(entry.body)

    tasks = BackgroundTasks("test")
    worker = InboxWorker(alive, SOURCE, handle, tasks)
    worker.start(second)
    worker.start(other)
    await asyncio.sleep(0.5)
    # Another customer is not held up; this one's second message waits for the first.
    assert handled == ["another customer"]

    clock.now += 10  # the dead process's lease runs out
    await asyncio.wait_for(tasks.wait(), 10)
    assert handled == ["another customer", "first", "second"]
    assert alive.pending(SOURCE) == 0


@pytest.mark.asyncio
async def test_a_burst_is_handed_to_rasa_a_few_updates_at_a_time(
    tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_HANDLING_AT_ONCE, "2")
    inbox = make_inbox(tmp_path, clock, "a")
    entries = [inbox.accept(SOURCE, str(n), str(100 + n), f"customer {n}") for n in range(6)]
    running, most, release = 0, 0, asyncio.Event()

    async def handle(entry: InboxEntry) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await release.wait()
        running -= 1

    tasks = BackgroundTasks("test")
    worker = InboxWorker(inbox, SOURCE, handle, tasks)
    for entry in entries:
        assert entry is not None
        worker.start(entry)
    try:
        await until("two handled", lambda: running == 2)
        await asyncio.sleep(0.2)  # and no third joins them
        assert running == 2  # the other four wait for a place, still leased to this process
        assert inbox.claim_due(SOURCE) == []
    finally:
        release.set()  # nothing left pending when the test's loop closes, whatever failed
        await asyncio.wait_for(tasks.wait(), 10)
    assert most == 2 and inbox.pending(SOURCE) == 0


@pytest.mark.asyncio
async def test_a_newer_message_waiting_for_an_older_one_holds_no_place(
    tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_HANDLING_AT_ONCE, "1")
    inbox = make_inbox(tmp_path, clock, "a")
    older = inbox.accept(SOURCE, "1", "42", "first")
    clock.now += 1
    newer = inbox.accept(SOURCE, "2", "42", "second")
    assert older is not None and newer is not None
    handled: list[str] = []

    async def handle(entry: InboxEntry) -> None:
        handled.append(entry.body)

    tasks = BackgroundTasks("test")
    worker = InboxWorker(inbox, SOURCE, handle, tasks)
    worker.start(newer)  # the newer one first (the older one comes back from a sweep, say)
    await asyncio.sleep(0.1)
    worker.start(older)
    await asyncio.wait_for(tasks.wait(), 10)
    assert handled == ["first", "second"]


def test_a_malformed_handling_limit_is_a_clear_error(
    tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_HANDLING_AT_ONCE, "0")
    with pytest.raises(ValueError, match="FIRSTREPLY_HANDLING_AT_ONCE must be a whole number"):
        InboxWorker(make_inbox(tmp_path, clock, "a"), SOURCE, _never_called, BackgroundTasks("test"))


async def _never_called(entry: InboxEntry) -> None:
    raise AssertionError(f"{entry.update_id} handled")


POSTGRES_URL = os.environ.get("FIRSTREPLY_TEST_POSTGRES_URL")


@pytest.mark.skipif(not POSTGRES_URL, reason="needs FIRSTREPLY_TEST_POSTGRES_URL (make test sets it)")
def test_reply_records_on_postgresql(clock: Clock) -> None:
    from tests.integration.conftest import fresh_database

    assert POSTGRES_URL is not None
    with fresh_database(POSTGRES_URL) as url:
        store = ChannelStore.from_url(url)
        inbox = Inbox(store.engine, lease_seconds=10, clock=clock, owner="a")
        try:
            assert inbox.begin_reply("telegram-7", 0, "d0") is None
            inbox.fail_reply("telegram-7", 0)
            assert inbox.begin_reply("telegram-7", 0, "d0") == FAILED
            assert inbox.begin_reply("telegram-7", 0, "d0") == SENDING  # the crash case: counted
            inbox.finish_reply("telegram-7", 0)
            assert inbox.begin_reply("telegram-7", 0, "d0") == SENT
            with store.engine.connect() as conn:
                assert conn.execute(select(replies.c.resent)).scalar() == 1
        finally:
            store.dispose()


def test_a_queued_update_is_taken_by_any_process_and_only_it_counts_as_never_tried(
    tmp_path: Path, clock: Clock
) -> None:
    accepting, other = make_inbox(tmp_path, clock, "a"), make_inbox(tmp_path, clock, "b")
    accepting.accept_many([Arrival(SOURCE, "1", "41", "held"), Arrival(SOURCE, "2", "42", "queued", held=False)])
    failed = accepting.accept(SOURCE, "3", "43", "failed once")
    assert failed is not None
    accepting.failed(failed, "ConnectionError: down")  # back-off: due in 2 s, not queued

    [taken] = other.claim_queued(SOURCE, limit=5)
    assert (taken.update_id, taken.replay) == ("2", False)  # never tried: no records to look up
    assert other.claim_queued(SOURCE, limit=5) == [] and accepting.claim_due(SOURCE) == []
    clock.now += 3
    [again] = other.claim_due(SOURCE)
    assert (again.update_id, again.replay) == ("3", True)


def test_new_updates_reach_the_disk_at_their_commit_and_the_rest_at_the_next_checkpoint(
    tmp_path: Path, clock: Clock
) -> None:
    # Telegram forgets an update once its webhook is answered: that write waits for the disk
    # (synchronous = FULL, 2). The reply records and leases, rewritten on every reply, do not
    # (NORMAL, 1): a killed process loses none of them, only a power cut could the last few.
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    seen: list[tuple[str, int]] = []

    def note(conn, cursor, statement, parameters, context, executemany) -> None:  # type: ignore[no-untyped-def]
        words = statement.split()
        if words[0] in ("INSERT", "UPDATE") and "channel_" in statement:
            table = next(word for word in words if word.startswith("channel_"))
            synchronous = conn.connection.dbapi_connection.execute("PRAGMA synchronous").fetchone()[0]
            seen.append((f"{words[0]} {table}", synchronous))

    event.listen(Engine, "before_cursor_execute", note)
    try:
        inbox = make_inbox(tmp_path, clock, "a")
        entry = inbox.accept(SOURCE, "7", "42", "{}")
        assert entry is not None
        inbox.begin_reply("telegram-7", 0, "d")
        inbox.finish_reply("telegram-7", 0)
        inbox.done(entry)
    finally:
        event.remove(Engine, "before_cursor_execute", note)

    assert seen == [("INSERT channel_inbox", 2), ("INSERT channel_replies", 1), ("UPDATE channel_replies", 1),
                    ("UPDATE channel_inbox", 1)]  # fmt: skip
