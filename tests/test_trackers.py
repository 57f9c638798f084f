"""Rasa's SQL tracker store on SQLite in WAL mode: conversations survive a restart."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from rasa.shared.core.events import ActionExecuted, BotUttered, UserUttered
from rasa.shared.core.trackers import DialogueStateTracker

from bot.trackers import SQLiteTrackerStore


def test_a_conversation_survives_a_restart_of_the_store(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "trackers.db"
    first = SQLiteTrackerStore(db=str(path))
    tracker = DialogueStateTracker("maria", [])
    for event in (UserUttered("where is my parcel"), ActionExecuted("action_acknowledge"), BotUttered("Hi Maria!")):
        tracker.update(event)
    asyncio.run(first.save(tracker))
    tracker.update(UserUttered("AC-2291734"))
    asyncio.run(first.save(tracker))
    first.engine.dispose()

    restarted = SQLiteTrackerStore(db=str(path))
    loaded = asyncio.run(restarted.retrieve("maria"))

    assert loaded is not None
    assert [(type(event).__name__, getattr(event, "text", None)) for event in loaded.events] == [
        ("UserUttered", "where is my parcel"),
        ("ActionExecuted", None),
        ("BotUttered", "Hi Maria!"),
        ("UserUttered", "AC-2291734"),
    ]
    assert list(asyncio.run(restarted.keys())) == ["maria"]


def test_the_file_is_in_write_ahead_log_mode(tmp_path: Path) -> None:
    path = tmp_path / "trackers.db"
    store = SQLiteTrackerStore(db=str(path))
    asyncio.run(store.save(DialogueStateTracker("x", [])))

    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone() == ("wal",)
    with store.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA synchronous").fetchone() == (1,)  # NORMAL


# --- conversations kept in memory between messages ------------------------------------------

import gc  # noqa: E402
import json  # noqa: E402
from collections.abc import Iterator  # noqa: E402

import pytest  # noqa: E402
from rasa.core.brokers.broker import EventBroker  # noqa: E402
from rasa.core.tracker_store import SQLTrackerStore  # noqa: E402
from rasa.shared.core.domain import Domain  # noqa: E402
from rasa.shared.core.events import Event, SessionStarted, SlotSet  # noqa: E402
from sqlalchemy import event as sqlalchemy_event  # noqa: E402

from bot.trackers import CACHE_READS, cache_size_from_env  # noqa: E402

DOMAIN = Domain.from_yaml(
    "version: '3.1'\nintents: [order_status]\nslots:\n  order_id:\n    type: text\n    mappings: [{type: custom}]\n"
)


class ListBroker(EventBroker):
    """An event broker that keeps what it is given, in order."""

    def __init__(self) -> None:
        self.published: list[dict] = []

    def publish(self, event: dict) -> None:
        self.published.append(event)


def _turn(number: int) -> list[Event]:
    parse = {"intent": {"name": "order_status", "confidence": 0.9}, "entities": [], "text": f"order {number}"}
    return [
        UserUttered(f"order {number}", parse["intent"], [], parse),
        SlotSet("order_id", f"AC-{number}"),
        ActionExecuted("utter_ask_order"),
        BotUttered(f"Which order? ({number})"),
        ActionExecuted("action_listen"),
    ]


def _session_start() -> list[Event]:
    return [ActionExecuted("action_session_start"), SessionStarted(), ActionExecuted("action_listen")]


def _conversation() -> Iterator[list[Event]]:
    """What Rasa adds message by message: a new conversation, turns, a new session, more turns."""
    yield _session_start() + _turn(0)
    for number in range(1, 4):
        yield _turn(number)
    yield _session_start() + _turn(4)
    for number in range(5, 8):
        yield _turn(number)


async def _play(store: SQLTrackerStore, sender: str = "maria") -> None:
    for added in _conversation():
        tracker = await store.retrieve(sender) or DialogueStateTracker.from_events(sender, [], DOMAIN.slots)
        for one in added:
            tracker.update(one)
        await store.save(tracker)


def _timeless(data: dict) -> dict:
    return {key: value for key, value in data.items() if key != "timestamp"}


def _rows(store: SQLTrackerStore) -> list[tuple[str, str, dict]]:
    """The stored events, in order (their timestamps left out: two runs differ only there)."""
    with store.session_scope() as session:
        rows = session.query(store.SQLEvent).order_by(store.SQLEvent.id)
        return [(row.sender_id, row.type_name, _timeless(json.loads(row.data))) for row in rows]


def _plain(path: Path, broker: EventBroker | None = None) -> SQLTrackerStore:
    return SQLTrackerStore(domain=DOMAIN, dialect="sqlite", db=str(path), event_broker=broker)


def test_kept_conversations_store_and_publish_exactly_what_rasa_does(tmp_path: Path) -> None:
    cached_broker, plain_broker = ListBroker(), ListBroker()
    cached = SQLiteTrackerStore(domain=DOMAIN, db=str(tmp_path / "cached.db"), event_broker=cached_broker, cache_size=100)
    plain = _plain(tmp_path / "plain.db", plain_broker)
    hits = CACHE_READS.labels("hit")._value.get()

    asyncio.run(_play(cached))
    asyncio.run(_play(plain))

    assert CACHE_READS.labels("hit")._value.get() > hits  # messages were served from memory
    assert _rows(cached) == _rows(plain)
    assert len(_rows(cached)) == sum(len(added) for added in _conversation())
    assert [_timeless(event) for event in cached_broker.published] == [
        _timeless(event) for event in plain_broker.published
    ]
    fresh = SQLiteTrackerStore(domain=DOMAIN, db=str(tmp_path / "cached.db"), cache_size=0)
    read_back, plain_read = asyncio.run(fresh.retrieve("maria")), asyncio.run(plain.retrieve("maria"))
    assert [_timeless(e.as_dict()) for e in read_back.events] == [_timeless(e.as_dict()) for e in plain_read.events]


def test_a_saved_conversation_is_handed_out_from_memory_once(tmp_path: Path) -> None:
    store = SQLiteTrackerStore(domain=DOMAIN, db=str(tmp_path / "t.db"), cache_size=100)
    asyncio.run(_play(store))
    first = asyncio.run(store.retrieve("maria"))
    second = asyncio.run(store.retrieve("maria"))

    assert first is not None and second is not None
    assert first is not second  # the second reader got the database's copy, not the one being changed
    assert [e.as_dict() for e in first.events] == [e.as_dict() for e in second.events]


def test_what_another_replica_added_is_never_missed(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    one = SQLiteTrackerStore(domain=DOMAIN, db=str(path), cache_size=100)
    other = SQLiteTrackerStore(domain=DOMAIN, db=str(path), cache_size=100)
    asyncio.run(_play(one))
    moved_on = asyncio.run(other.retrieve("maria"))
    moved_on.update(UserUttered("it came, thanks"))
    asyncio.run(other.save(moved_on))

    back = asyncio.run(one.retrieve("maria"))

    assert back.latest_message.text == "it came, thanks"
    assert _rows(one) == _rows(other)


@pytest.mark.parametrize("cache_size", [0, 100])
def test_what_another_replica_wrote_while_a_conversation_was_lent_is_never_missed(tmp_path: Path, cache_size: int) -> None:
    # Replica one hands out the conversation (from memory, or as read); before its save, replica
    # two writes to the same conversation (a lock that outlived a stuck platform call, an event
    # appended over the HTTP API). Nothing either wrote goes missing, nor is written twice.
    path = tmp_path / "shared.db"
    one = SQLiteTrackerStore(domain=DOMAIN, db=str(path), cache_size=cache_size)
    other = SQLiteTrackerStore(domain=DOMAIN, db=str(path), cache_size=cache_size)
    asyncio.run(_play(one))
    lent = asyncio.run(one.retrieve("maria"))
    meanwhile = asyncio.run(other.retrieve("maria"))
    meanwhile.update(UserUttered("written by the other replica"))
    asyncio.run(other.save(meanwhile))
    lent.update(UserUttered("written by this replica"))
    asyncio.run(one.save(lent))

    back = asyncio.run(one.retrieve("maria"))

    texts = [getattr(e, "text", None) for e in back.events]
    assert "written by the other replica" in texts and "written by this replica" in texts
    assert texts.count("written by this replica") == 1 and texts.count("order 7") == 1


def test_a_message_whose_handling_failed_before_its_save_leaves_nothing_behind(tmp_path: Path) -> None:
    store = SQLiteTrackerStore(domain=DOMAIN, db=str(tmp_path / "t.db"), cache_size=100)
    asyncio.run(_play(store))
    handled = asyncio.run(store.retrieve("maria"))
    handled.update(UserUttered("never saved"))  # the handler fails here: no save

    again = asyncio.run(store.retrieve("maria"))

    assert again.latest_message.text == "order 7"
    assert "never saved" not in [getattr(e, "text", None) for e in again.events]


def test_the_cache_keeps_at_most_its_size(tmp_path: Path) -> None:
    store = SQLiteTrackerStore(domain=DOMAIN, db=str(tmp_path / "t.db"), cache_size=2)
    for sender in ("a", "b", "c"):
        asyncio.run(_play(store, sender))

    assert list(store._kept) == ["b", "c"]
    off = SQLiteTrackerStore(domain=DOMAIN, db=str(tmp_path / "t.db"), cache_size=0)
    asyncio.run(_play(off, "d"))
    assert not off._kept


@pytest.mark.parametrize(("raw", "size"), [("", 0), ("0", 0), (" 50 ", 50)])
def test_cache_size_from_the_environment(raw: str, size: int) -> None:
    assert cache_size_from_env({"FIRSTREPLY_TRACKER_CACHE": raw}) == size


@pytest.mark.parametrize("raw", ["-1", "many", "1.5"])
def test_a_malformed_cache_size_is_named(raw: str) -> None:
    with pytest.raises(ValueError, match="FIRSTREPLY_TRACKER_CACHE"):
        cache_size_from_env({"FIRSTREPLY_TRACKER_CACHE": raw})


# --- the store's queries run off the event loop ----------------------------------------------

from typing import Any  # noqa: E402

from bot.trackers import _finished  # noqa: E402


def _call(store: SQLiteTrackerStore, step: str, tracker: DialogueStateTracker) -> Any:
    return {
        "save": lambda: store.save(tracker),
        "retrieve": lambda: store.retrieve("maria"),
        "retrieve_full_tracker": lambda: store.retrieve_full_tracker("maria"),
        "keys": lambda: store.keys(),
    }[step]()


async def _ticks_while(call: Any, release: Any) -> tuple[int, bool, Any]:
    """Count the loop's 10 ms ticks (30 of them) while ``call`` is pending; then ``release()`` it and await it."""
    task = asyncio.ensure_future(call)
    ticks = 0
    for _ in range(30):
        await asyncio.sleep(0.01)
        ticks += not task.done()
    pending = not task.done()
    release()
    return ticks, pending, await task


def _saved_texts(store: SQLiteTrackerStore) -> list[str]:
    stored = asyncio.run(store.retrieve("maria"))
    assert stored is not None
    return [e.text for e in stored.events if isinstance(e, UserUttered)]


@pytest.mark.parametrize("step", ["save", "retrieve", "retrieve_full_tracker", "keys"])
def test_a_slow_database_does_not_hold_the_loop(tmp_path: Path, step: str) -> None:
    import threading

    from sqlalchemy import event as sqlalchemy_event

    store = SQLiteTrackerStore(domain=DOMAIN, db=str(tmp_path / "trackers.db"), cache_size=0)
    tracker = DialogueStateTracker.from_events("maria", [UserUttered("where is my parcel")], DOMAIN.slots)
    asyncio.run(store.save(tracker))
    tracker.update(UserUttered("AC-2291734"))
    # Every query now waits, as one to a distant or busy database does, until released.
    gate = threading.Event()
    sqlalchemy_event.listen(store.engine, "before_cursor_execute", lambda *_: gate.wait(10))

    ticks, pending, result = asyncio.run(_ticks_while(_call(store, step, tracker), gate.set))

    assert pending, "the store did not wait for the database: the test proves nothing"
    assert ticks == 30
    if step in ("retrieve", "retrieve_full_tracker"):
        assert [e.text for e in result.events if isinstance(e, UserUttered)] == ["where is my parcel"]
    elif step == "keys":
        assert list(result) == ["maria"]
    else:
        assert _saved_texts(store) == ["where is my parcel", "AC-2291734"]


def test_a_save_waiting_for_another_workers_write_does_not_hold_the_loop(tmp_path: Path) -> None:
    path = tmp_path / "trackers.db"
    store = SQLiteTrackerStore(domain=DOMAIN, db=str(path), cache_size=0)
    tracker = DialogueStateTracker.from_events("maria", [UserUttered("where is my parcel")], DOMAIN.slots)
    asyncio.run(store.save(tracker))
    tracker.update(UserUttered("AC-2291734"))
    other = sqlite3.connect(path, isolation_level=None, timeout=30)  # another worker of the machine
    other.execute("BEGIN IMMEDIATE")

    ticks, pending, _ = asyncio.run(_ticks_while(store.save(tracker), lambda: other.execute("COMMIT")))

    assert pending and ticks == 30
    assert _saved_texts(store) == ["where is my parcel", "AC-2291734"]


def test_a_coroutine_that_waits_is_refused_off_the_loop() -> None:
    async def waits() -> int:
        await asyncio.sleep(0)
        return 1

    async def never_waits(x: int) -> int:
        return x + 1

    assert _finished(never_waits, 1) == 2
    with pytest.raises(RuntimeError, match="cannot run off the loop"):
        _finished(waits)


def test_the_latest_session_is_counted_as_rasas_query_counts_it(tmp_path: Path) -> None:
    store = SQLiteTrackerStore(db=str(tmp_path / "trackers.db"))
    conversations = {
        "none": [],
        "no session start": [UserUttered("hi"), ActionExecuted("action_listen")],
        "one session": [ActionExecuted("action_session_start"), SessionStarted(), *_turn(1)],
        "two sessions": [ActionExecuted("action_session_start"), SessionStarted(), *_turn(1), *_turn(2),
                         ActionExecuted("action_session_start"), SessionStarted(), *_turn(3)],  # fmt: skip
    }
    for sender, events in conversations.items():
        tracker = DialogueStateTracker(sender, [])
        for event_ in events:
            tracker.update(event_)
        asyncio.run(store.save(tracker))

    with store.session_scope() as session:
        ours = {sender: store._in_session(session, sender) for sender in conversations}
        rasas = {sender: store._event_query(session, sender, fetch_events_from_all_sessions=False).count()
                 for sender in conversations}  # fmt: skip
    assert ours == rasas
    assert ours["two sessions"] == 1 + len(_turn(3)) and ours["one session"] == 1 + len(_turn(1))
    assert ours["no session start"] == 2 and ours["none"] == 0


async def _play_as_rasa(store: SQLTrackerStore, sender: str = "sam") -> None:
    """What Rasa's processor does per message: get or create the conversation, add, save once."""
    for added in _conversation():
        tracker = await store.get_or_create_tracker(sender)
        for one in added:
            tracker.update(one)
        await store.save(tracker)


def _statements(store: SQLTrackerStore, kind: str = "INSERT") -> list[str]:
    """Collect the statements of ``kind`` the store's engine runs from now on."""
    seen: list[str] = []
    sqlalchemy_event.listen(store.engine, "before_cursor_execute",
                            lambda _c, _cur, statement, *_: seen.append(statement) if statement.startswith(kind) else None)
    return seen


@pytest.mark.parametrize("cache_size", [0, 100])
def test_a_new_conversation_is_written_once_with_what_rasa_writes_and_publishes(tmp_path: Path, cache_size: int) -> None:
    ours_broker, plain_broker = ListBroker(), ListBroker()
    ours = SQLiteTrackerStore(domain=DOMAIN, db=str(tmp_path / "ours.db"), event_broker=ours_broker, cache_size=cache_size)
    plain = _plain(tmp_path / "plain.db", plain_broker)
    inserts, reads = _statements(ours), _statements(ours, "SELECT")

    asyncio.run(_play_as_rasa(ours))
    asyncio.run(_play_as_rasa(plain))

    assert len(inserts) == len(list(_conversation()))  # one write per message: none when created
    if not cache_size:  # one read per message (the conversation), and no count of what it holds before a save
        assert len(reads) == len(list(_conversation())) and not any("count(" in read for read in reads)
    assert _rows(ours) == _rows(plain)
    assert _rows(ours)[0][1] == "action"  # the created conversation's action_listen, first as in Rasa
    assert [_timeless(event) for event in ours_broker.published] == [_timeless(event) for event in plain_broker.published]


def test_a_new_conversation_whose_handling_failed_before_its_save_leaves_nothing_and_starts_again(tmp_path: Path) -> None:
    store = SQLiteTrackerStore(domain=DOMAIN, db=str(tmp_path / "t.db"))
    created = asyncio.run(store.get_or_create_tracker("sam"))
    created.update(UserUttered("never saved"))  # the handler fails here: no save
    del created
    gc.collect()

    assert _rows(store) == [] and all(ref() is None for ref, _ in store._fresh.values())
    asyncio.run(_play_as_rasa(store))
    plain = _plain(tmp_path / "plain.db")
    asyncio.run(_play_as_rasa(plain))
    assert _rows(store) == _rows(plain)


def test_a_created_conversation_someone_else_saved_first_is_counted_not_assumed_empty(tmp_path: Path) -> None:
    # Only the tracker object that was created skips the count: another one for the same sender,
    # saved here after another replica wrote the conversation, is saved after what the database holds.
    path = tmp_path / "shared.db"
    one, two = SQLiteTrackerStore(domain=DOMAIN, db=str(path)), SQLiteTrackerStore(domain=DOMAIN, db=str(path))
    created = asyncio.run(one.get_or_create_tracker("sam"))
    asyncio.run(two.save(DialogueStateTracker.from_events("sam", [ActionExecuted("action_listen"), UserUttered("first")],
                                                         DOMAIN.slots)))  # fmt: skip
    read = asyncio.run(two.retrieve("sam"))
    read.update(UserUttered("second"))
    asyncio.run(one.save(read))

    assert [row[2].get("text") for row in _rows(one)] == [None, "first", "second"]
    assert created is not read
