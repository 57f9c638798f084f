"""Leader election (``bot.election``): one process leads, a dead or cut-off leader is replaced.

The contenders are real processes (``contend``, below, run with ``python -c``) on a SQLite
lock file and, when ``FIRSTREPLY_TEST_POSTGRES_URL`` is set, on PostgreSQL. Each reports on
its stdout every try to take the lead and when its work starts and ends; while its work
runs it holds a *witness*, a second exclusive ``flock`` taken without waiting, so that two
works running at the same moment would be seen (``overlap``) whatever the timing. The tests
wait for events (each wait fails after a generous deadline); nothing is judged by time.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import TypeVar

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bot.cases import CaseStore
from bot.desk.settings import DeskSettings
from bot.desk.watchdog import LEASE, Watchdog
from bot.election import Election, FileLock, LeaderLock, PostgresLock, SoloLock, lock_for_database, lock_key
from bot.ops import load_support_config
from tests.processes import wait_until

ROOT = Path(__file__).resolve().parent.parent
POSTGRES_URL = os.environ.get("FIRSTREPLY_TEST_POSTGRES_URL")
# As in tests/test_cases.py: PostgreSQL is a parameter only when there is one.
DATABASES = ["sqlite"] + (["postgresql"] if POSTGRES_URL else [])
needs_postgres = pytest.mark.skipif(POSTGRES_URL is None, reason="needs FIRSTREPLY_TEST_POSTGRES_URL")
DEADLINE = 60.0
T = TypeVar("T")

# --- the contender process ---------------------------------------------------------------------


class _Reporting:
    """A lock that says on stdout what each try to take it gave."""

    def __init__(self, lock: LeaderLock) -> None:
        self.lock = lock
        self.description = lock.description
        self.settle_seconds = lock.settle_seconds

    def acquire(self) -> bool:
        taken = self.lock.acquire()
        _say("taken" if taken else "refused")
        return taken

    def holds(self) -> bool:
        return self.lock.holds()

    def release(self) -> None:
        self.lock.release()


def _say(event: str) -> None:
    print(event, flush=True)


async def _contend(url: str, name: str, period: float, witness: Path) -> None:
    async def work(ended: asyncio.Event) -> None:
        fd = os.open(witness, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                _say("overlap")  # another leader's work is running right now
            _say("lead")
            await ended.wait()
        finally:
            os.close(fd)
            _say("end")

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    election = Election(_Reporting(lock_for_database(url, name, period_seconds=period)), name, period_seconds=period)
    await election.run(stop, work, on_lost=lambda: _say("lost"))


def contend() -> None:
    """Run one contender process (see ``Contender``): arguments URL NAME PERIOD WITNESS."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    url, name, period, witness = sys.argv[1], sys.argv[2], float(sys.argv[3]), Path(sys.argv[4])
    asyncio.run(_contend(url, name, period, witness))


# --- driving contenders from the test ------------------------------------------------------------


class Contender:
    """A contender process and the events it reported so far."""

    def __init__(self, url: str, name: str, period: float, witness: Path, log: Path) -> None:
        self.url = url
        self.log = log
        self.events: list[str] = []
        self._lock = threading.Lock()
        code = "from tests.test_election import contend; contend()"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        with log.open("wb") as errors:
            self.process = subprocess.Popen(
                [sys.executable, "-c", code, url, name, str(period), str(witness)],
                cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=errors, start_new_session=True,
            )  # fmt: skip
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._lock:
                self.events.append(line.decode().strip())

    def seen(self) -> list[str]:
        with self._lock:
            return list(self.events)

    def count(self, event: str) -> int:
        return self.seen().count(event)

    @property
    def working(self) -> bool:
        """Whether its work runs now (its last ``lead`` has no ``end`` after it)."""
        work = [event for event in self.seen() if event in ("lead", "end")]
        return bool(work) and work[-1] == "lead"

    def kill(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
        self._reader.join(10)
        if self.process.stdout is not None:
            self.process.stdout.close()


def wait_for(what: str, probe: Callable[[], T | None], contenders: list[Contender]) -> T:
    """Return ``probe()``'s first truthy value; fail if a contender dies or the deadline passes."""
    return wait_until(what, probe, DEADLINE, [contender.process for contender in contenders])


@pytest.fixture
def contenders(tmp_path: Path) -> Iterator[Callable[..., Contender]]:
    started: list[Contender] = []

    def start(url: str, name: str, period: float = 0.2) -> Contender:
        contender = Contender(url, name, period, tmp_path / "witness", tmp_path / f"contender-{len(started)}.log")
        started.append(contender)
        return contender

    yield start
    for contender in started:
        contender.stop()
        print(f"--- {contender.log.name}: {contender.seen()}", contender.log.read_text(errors="replace")[-2000:], sep="\n")


def database_url(backend: str, tmp_path: Path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'cases.db'}"
    assert POSTGRES_URL is not None
    return POSTGRES_URL


def unique_name() -> str:
    """Return an election name of its own, so runs sharing a PostgreSQL server never meet."""
    return f"firstreply-test:{uuid.uuid4().hex}"


def after(events: list[str], first: str) -> list[str]:
    """Return the events after the first ``first`` (none if there is no ``first``)."""
    return events[events.index(first) + 1 :] if first in events else []


def refused_again(contender: Contender, times: int = 2) -> Callable[[], bool]:
    """Return a probe: ``contender`` was refused the lead ``times`` more times from now on."""
    before = contender.count("refused")
    return lambda: contender.count("refused") >= before + times


# --- keys and locks -----------------------------------------------------------------------------


def test_the_lock_key_of_a_name_is_stable_and_a_signed_64_bit_integer() -> None:
    # Replicas of different versions must compute the same key: this value must never change.
    assert lock_key("firstreply:desk-workers") == -3805987636737153322
    assert lock_key("firstreply:other") != lock_key("firstreply:desk-workers")
    assert all(-(2**63) <= lock_key(f"name {n}") < 2**63 for n in range(100))


def test_the_lock_follows_the_database(tmp_path: Path) -> None:
    postgres = lock_for_database("postgresql://desk:s3cret-pw@db.internal:5433/firstreply", "firstreply:desk-workers")
    assert isinstance(postgres, PostgresLock) and postgres.key == lock_key("firstreply:desk-workers")
    assert postgres.description == f"PostgreSQL advisory lock {postgres.key} on db.internal:5433/firstreply"
    sqlite = lock_for_database(f"sqlite:///{tmp_path / 'cases.db'}", "firstreply:desk-workers")
    assert isinstance(sqlite, FileLock) and sqlite.path == tmp_path / "cases.db.firstreply-desk-workers.lock"
    assert isinstance(lock_for_database("sqlite://", "x"), SoloLock)
    with pytest.raises(ValueError, match="'mysql'"):
        lock_for_database("mysql://u:p@host/db", "x")


@contextmanager
def closed_port() -> Iterator[int]:
    """Yield a port nothing listens on (bound, never listening) for as long as the ``with`` lasts."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


def test_the_desk_tries_every_five_seconds_unless_told_otherwise() -> None:
    needed = {"SLACK_DESK_BOT_TOKEN": "xoxb-1-2", "SLACK_DESK_SIGNING_SECRET": "s", "FIRSTREPLY_DESK_AGENTS": "S0AGENTS"}
    assert DeskSettings.from_env(needed).leader_seconds == 5.0
    assert DeskSettings.from_env({**needed, "FIRSTREPLY_DESK_LEADER_SECONDS": "0.2"}).leader_seconds == 0.2


@pytest.mark.asyncio
async def test_an_unreachable_database_is_logged_without_its_password(caplog: pytest.LogCaptureFixture) -> None:
    with closed_port() as port:
        election = Election.for_database(f"postgresql://desk:s3cret-pw@127.0.0.1:{port}/firstreply", "x", period_seconds=1)
        with caplog.at_level(logging.DEBUG, logger="bot.election"):
            assert await election.try_lead() is False
            assert await election.try_lead() is False
    assert not election.leading
    assert "cannot reach PostgreSQL advisory lock" in caplog.text and f"127.0.0.1:{port}/firstreply" in caplog.text
    assert "s3cret" not in caplog.text and "desk:" not in caplog.text
    # The second failure in a row is not logged again at WARNING.
    assert [r.levelno for r in caplog.records if "cannot reach" in r.getMessage()] == [logging.WARNING, logging.DEBUG]


def test_of_two_file_locks_one_holds_and_a_deleted_lock_file_makes_its_holder_step_down(tmp_path: Path) -> None:
    path = tmp_path / "cases.db.firstreply-desk-workers.lock"
    first, second = FileLock(path), FileLock(path)
    assert first.acquire() and first.holds()
    assert not second.acquire() and not second.holds()
    assert path.read_text().split()[1] == str(os.getpid())
    path.unlink()
    assert not first.holds()  # a process that opens the path now locks another file
    assert second.acquire()
    assert not first.acquire()
    second.release()
    assert first.acquire()
    first.release()


@needs_postgres
def test_of_two_postgres_sessions_one_holds_and_taking_the_lock_twice_needs_one_release() -> None:
    assert POSTGRES_URL is not None
    key = lock_key(unique_name())
    first, second = PostgresLock(POSTGRES_URL, key), PostgresLock(POSTGRES_URL, key)
    try:
        assert first.acquire() and first.holds()
        assert not second.acquire() and not second.holds()
        # Taken again by its holder (session locks count): one release must still free it.
        assert first.acquire()
        first.release()
        assert not first.holds()
        assert second.acquire() and second.holds()
    finally:
        first.release()
        second.release()


def test_a_new_leader_takes_the_watchdog_lease_over_from_the_dead_one(tmp_path: Path) -> None:
    store = CaseStore.from_url(f"sqlite:///{tmp_path / 'cases.db'}")
    now = datetime.now(timezone.utc)
    try:
        assert store.desk.take_lease(LEASE, "desk-that-died", now, 600)
        elected = Watchdog(store, load_support_config(ROOT / "support.yml"), holder="desk-elected", lease_seconds=600)
        elected.tick(now)
        assert store.desk.lease_holder(LEASE, now) == "desk-that-died"  # without the election, it would wait 10 minutes
        elected.take_over(now)
        elected.tick(now)
        assert store.desk.lease_holder(LEASE, now) == "desk-elected"
        elected.take_over(now)  # its own lease stays
        assert store.desk.lease_holder(LEASE, now) == "desk-elected"
    finally:
        store.dispose()


# --- the election loop ----------------------------------------------------------------------------


class _Switch:
    """A lock the test takes away and gives back."""

    description = "a switch"
    settle_seconds = 0.0

    def __init__(self) -> None:
        self.free = True
        self.held = False
        self.released = 0

    def acquire(self) -> bool:
        self.held = self.held or self.free
        return self.held

    def holds(self) -> bool:
        return self.held

    def release(self) -> None:
        self.held = False
        self.released += 1


async def _until(what: str, probe: Callable[[], bool]) -> None:
    deadline = time.monotonic() + DEADLINE
    while not probe():
        assert time.monotonic() < deadline, f"{what}: not within {DEADLINE}s"
        await asyncio.sleep(0.01)


@pytest.mark.asyncio
async def test_the_work_stops_when_the_lead_is_lost_and_runs_again_when_it_is_regained(
    caplog: pytest.LogCaptureFixture,
) -> None:
    switch = _Switch()
    election = Election(switch, "firstreply:test", period_seconds=0.01)
    journal: list[str] = []

    async def work(ended: asyncio.Event) -> None:
        journal.append("start")
        await ended.wait()
        journal.append("end")

    stop = asyncio.Event()
    with caplog.at_level(logging.INFO, logger="bot.election"):
        running = asyncio.create_task(election.run(stop, work, on_lost=lambda: journal.append("lost")))
        await _until("leading", lambda: journal == ["start"] and election.leading)
        switch.free, switch.held = False, False  # the session died and someone else took the lock
        await _until("stopped", lambda: journal == ["start", "lost", "end"])
        assert not election.leading
        switch.free = True
        await _until("leading again", lambda: journal == ["start", "lost", "end", "start"] and election.leading)
        stop.set()
        await running
    assert journal == ["start", "lost", "end", "start", "end"]  # a stop is no loss
    assert not election.leading and not switch.held
    me = f"election firstreply:test: this process (pid {os.getpid()})"
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.INFO] == [
        f"{me} leads (a switch)", f"{me} lost the lead (a switch)", f"{me} leads (a switch)", f"{me} stepped down",
    ]


@pytest.mark.asyncio
async def test_an_error_of_the_work_gives_the_lead_up_and_is_raised() -> None:
    switch = _Switch()

    async def work(ended: asyncio.Event) -> None:
        raise RuntimeError("broken")

    with pytest.raises(RuntimeError, match="broken"):
        await Election(switch, "firstreply:test", period_seconds=0.01).run(asyncio.Event(), work)
    assert not switch.held


# --- real processes ------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", DATABASES)
def test_of_three_processes_exactly_one_leads_and_a_killed_leader_is_replaced(
    backend: str, tmp_path: Path, contenders: Callable[..., Contender]
) -> None:
    url, name = database_url(backend, tmp_path), unique_name()
    everyone = [contenders(url, name) for _ in range(3)]

    leader = wait_for("a leader", lambda: next((c for c in everyone if c.working), None), everyone)
    others = [c for c in everyone if c is not leader]
    for other in others:
        wait_for("the others refused while it leads", refused_again(other), everyone)
    assert [c for c in everyone if c.count("lead")] == [leader]

    leader.kill()  # kill -9: no goodbye, the system releases the lock
    successor = wait_for("a new leader", lambda: next((c for c in others if c.working), None), others)
    [other] = [c for c in others if c is not successor]
    wait_for("the other refused while the successor leads", refused_again(other), others)
    assert [c for c in others if c.count("lead")] == [successor] and successor.count("lead") == 1
    assert not any("overlap" in c.seen() for c in everyone)


@needs_postgres
def test_a_leader_whose_session_is_terminated_stops_its_work_and_the_lead_is_taken_again(
    tmp_path: Path, contenders: Callable[..., Contender]
) -> None:
    assert POSTGRES_URL is not None
    name = unique_name()
    # A name per contender, to tell from the server's side whose session holds the lock.
    urls = [make_url(POSTGRES_URL).update_query_dict({"application_name": f"contender-{n}"}) for n in range(2)]
    everyone = [contenders(url.render_as_string(hide_password=False), name, period=1.0) for url in urls]
    admin = create_engine(POSTGRES_URL, future=True, isolation_level="AUTOCOMMIT")
    key = lock_key(name)

    def holders() -> list[tuple[str, int]]:
        query = text(
            "SELECT a.application_name, l.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE l.locktype = 'advisory' AND l.granted AND l.classid = CAST(:high AS oid)"
            " AND l.objid = CAST(:low AS oid) AND l.objsubid = 1"
        )
        halves = {"high": (key >> 32) & 0xFFFFFFFF, "low": key & 0xFFFFFFFF}
        with admin.connect() as conn:
            return [(str(row[0]), int(row[1])) for row in conn.execute(query, halves)]

    try:
        leader = wait_for("a leader", lambda: next((c for c in everyone if c.working), None), everyone)
        [(holder, pid)] = holders()
        assert holder == f"contender-{everyone.index(leader)}"

        with admin.connect() as conn:
            assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar()

        wait_for("the leader noticed", lambda: "end" in after(leader.seen(), "lost"), everyone)
        # The lead is taken a second time, by either of them (the old leader tries again at once).
        successor = wait_for(
            "the lead taken again",
            lambda: next((c for c in everyone if c.working), None) if sum(c.count("lead") for c in everyone) == 2 else None,
            everyone,
        )
        [other] = [c for c in everyone if c is not successor]
        wait_for("the other refused while the successor leads", refused_again(other), everyone)
        [(holder, new_pid)] = holders()
        assert holder == f"contender-{everyone.index(successor)}" and new_pid != pid
        assert [c for c in everyone if c.working] == [successor]
        assert not any("overlap" in c.seen() for c in everyone)
    finally:
        admin.dispose()
