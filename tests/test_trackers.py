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
