"""What one message costs the tracker store, by conversation length and stored conversations.

``python -m bench.trackers`` (part of ``make bench``): for each store, Rasa's own
``SQLTrackerStore`` and FirstReply's ``CachedSQLTrackerStore`` (as ``SQLiteTrackerStore``:
the store ``make run`` uses), side by side on SQLite files in one run, with an event broker
(as in production, where Rasa's store reads the conversation a second time on every save):

- a database already holding ``--stored`` other conversations (1,000 and 100,000 by default,
  ten events each, written straight into Rasa's ``events`` table);
- one customer's conversation grown to the 1st, 10th and 50th message, then the store's work
  for one more message timed: ``retrieve``, the message's events added, ``save`` (what Rasa's
  ``MessageProcessor`` asks of it per message);
- ``--trials`` rounds, stores interleaved within each round; medians with the spread
  (min-max of the per-trial medians).

Writes bench/results/trackers-latest.json and .md and prints the table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from rasa.core.brokers.broker import EventBroker
from rasa.core.tracker_store import SQLTrackerStore
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import ActionExecuted, BotUttered, Event, SessionStarted, SlotSet, UserUttered
from rasa.shared.core.trackers import DialogueStateTracker

from bench.procs import ROOT, publish
from bot.trackers import SQLiteTrackerStore

LENGTHS = (1, 10, 50)
CUSTOMER = "customer-under-test"


class CountingBroker(EventBroker):
    """An event broker that only counts (publishing is not what is measured)."""

    def __init__(self) -> None:
        self.count = 0

    def publish(self, event: dict[str, Any]) -> None:
        self.count += 1


def message_events(number: int) -> list[Event]:
    """The events one customer message adds, about as many and as large as a real turn's."""
    ranking = [{"name": f"intent_{k}", "confidence": round(0.5 / (k + 1), 4)} for k in range(10)]
    parse = {"intent": ranking[0], "entities": [], "intent_ranking": ranking, "text": f"my order {number} is late"}
    return [
        UserUttered(f"my order {number} is late", ranking[0], [], parse),
        ActionExecuted("action_acknowledge"),
        BotUttered("Thanks, I'm on it. " * 4),
        SlotSet("order_id", f"AC-{number:07d}"),
        ActionExecuted("case_form"),
        SlotSet("requested_slot", "delivery_address"),
        BotUttered("What is the delivery address?", {"buttons": [{"title": "I don't have it", "payload": "/deny"}]}),
        ActionExecuted("action_listen"),
    ]


def fill(path: Path, stored: int) -> None:
    """Write ``stored`` other conversations (ten events each) into Rasa's ``events`` table."""
    import sqlite3

    store = SQLTrackerStore(dialect="sqlite", db=str(path))  # creates the table as Rasa does
    store.engine.dispose()
    rows = []
    for number in range(stored):
        sender = f"stored-{number}"
        events = [SessionStarted(), *message_events(number)[:9]]
        rows.extend((sender, e.type_name, e.timestamp, None, None, json.dumps(e.as_dict())) for e in events)
    with sqlite3.connect(path) as connection:
        connection.executemany(
            "INSERT INTO events (sender_id, type_name, timestamp, intent_name, action_name, data) VALUES (?,?,?,?,?,?)",
            rows,
        )


async def one_message(store: SQLTrackerStore, domain: Domain, number: int) -> float:
    """Return the seconds the store takes for one message: retrieve, events added, save."""
    started = time.perf_counter()
    tracker = await store.retrieve(CUSTOMER)
    if tracker is None:
        tracker = DialogueStateTracker.from_events(CUSTOMER, [], domain.slots)
        for event in (ActionExecuted("action_session_start"), SessionStarted(), ActionExecuted("action_listen")):
            tracker.update(event)
    for event in message_events(number):
        tracker.update(event)
    await store.save(tracker)
    return time.perf_counter() - started


async def measure(stored: int, trials: int, repeats: int) -> dict[str, Any]:
    """Per store and conversation length: the per-trial median milliseconds of one message."""
    domain = Domain.load(str(ROOT / "domain"))
    per: dict[str, dict[int, list[float]]] = {"rasa": {n: [] for n in LENGTHS}, "firstreply": {n: [] for n in LENGTHS}}
    with tempfile.TemporaryDirectory() as work:
        template = Path(work) / "template.db"
        fill(template, stored)
        for trial in range(trials):
            for name in ("rasa", "firstreply") if trial % 2 == 0 else ("firstreply", "rasa"):
                path = Path(work) / f"{name}-{trial}.db"
                path.write_bytes(template.read_bytes())
                store: SQLTrackerStore
                if name == "rasa":
                    store = SQLTrackerStore(domain=domain, dialect="sqlite", db=str(path), event_broker=CountingBroker())
                else:
                    store = SQLiteTrackerStore(domain=domain, db=str(path), event_broker=CountingBroker(), cache_size=2_000)
                done = 0
                for length in LENGTHS:
                    while done < length - 1:  # grow the conversation to length - 1 messages
                        await one_message(store, domain, done)
                        done += 1
                    times = [await one_message(store, domain, done + k) for k in range(repeats)]
                    per[name][length].append(statistics.median(times) * 1000)
                    done += repeats
                store.engine.dispose()
    return {
        name: {
            str(length): {"median_ms": statistics.median(values), "min_ms": min(values), "max_ms": max(values)}
            for length, values in lengths.items()
        }
        for name, lengths in per.items()
    }


def markdown(results: dict[str, Any], trials: int) -> str:
    """Return the results as the table docs/benchmarks.md shows."""
    lines = [
        f"Tracker store work per message (retrieve + save, with an event broker), SQLite, {trials} trials: "
        "median ms (min-max of the per-trial medians)",
        "",
        "| stored conversations | store | 1st message | 10th | 50th |",
        "|---|---|---|---|---|",
    ]
    for stored, by_store in results.items():
        for name in ("rasa", "firstreply"):
            cells = [
                f"{v['median_ms']:.1f} ({v['min_ms']:.1f}-{v['max_ms']:.1f})"
                for v in (by_store[name][str(n)] for n in LENGTHS)
            ]
            label = "Rasa SQLTrackerStore" if name == "rasa" else "FirstReply (kept in memory)"
            lines.append(f"| {int(stored):,} | {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    """Run the measurement and write the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stored", type=int, nargs="+", default=[1_000, 100_000])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5, help="messages timed at each length, per trial")
    args = parser.parse_args()
    results = {str(stored): asyncio.run(measure(stored, args.trials, args.repeats)) for stored in args.stored}
    publish("trackers", results, markdown(results, args.trials))


if __name__ == "__main__":
    main()
