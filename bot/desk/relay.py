"""Customer messages into the card's thread: the desk follows Rasa's SQL event broker.

Rasa keeps logging what a customer writes while the conversation is paused for a person,
and with ``event_broker: {type: SQL}`` in ``endpoints.yml`` it also appends every event
to the ``events`` table. The desk reads that table forward from a cursor kept in the case
store: one cheap query for all conversations, in the order Rasa saw the messages, and
neither lost nor repeated across restarts (the cursor moves in the same transaction that
queues the thread posts; each post is keyed by the event's row id). Polling each open
case's tracker over HTTP would cost a request per case per poll and re-read whole
conversations. Only the leading desk process follows the table (``bot.election``): two
readers of one cursor would read every message twice (the keys would still queue it once).
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Column, Integer, MetaData, String, Table, Text, create_engine, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError, ProgrammingError

from bot import conversation
from bot.desk import cards, messages

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from bot.cases import Case, CaseStore
    from bot.cases.records import OutboxMessage

log = logging.getLogger(__name__)

CURSOR = "rasa_events"
EXTERNAL_PREFIX = "EXTERNAL: "

# Rasa's own table (rasa.core.brokers.sql.SQLEventBroker), read only.
_rasa_events = Table(
    "events",
    MetaData(),
    Column("id", Integer, primary_key=True),
    Column("sender_id", String(255)),
    Column("data", Text),
)


class CustomerMessages:
    """Reads new customer messages from the event broker table and queues them for their case's thread."""

    def __init__(self, store: CaseStore, events_url: str, batch: int = 500) -> None:
        """Follow the event broker database at ``events_url``."""
        self.store = store
        self.events_url = events_url
        self.batch = batch
        self._engine: Engine | None = None

    def _connect(self) -> Engine | None:
        if self._engine is None:
            url = make_url(self.events_url)
            if url.get_backend_name() == "sqlite":
                if not url.database or not Path(url.database).exists():
                    return None  # Rasa has not written any event yet; do not create its file
                self._engine = create_engine(self.events_url, future=True, connect_args={"timeout": 15})
            else:
                self._engine = create_engine(self.events_url, future=True, pool_pre_ping=True)
        return self._engine

    def dispose(self) -> None:
        """Close the connections to the event database."""
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def poll_once(self, now: datetime) -> int:
        """Queue the customer messages logged since the last call; return how many.

        Blocking (database work): async callers run it in a thread.
        """
        engine = self._connect()
        if engine is None:
            return 0
        position = self.store.desk.cursor(CURSOR) or 0
        try:
            with engine.connect() as conn:
                rows = conn.execute(
                    select(_rasa_events).where(_rasa_events.c.id > position).order_by(_rasa_events.c.id).limit(self.batch)
                ).all()
                if not rows and position:
                    newest = conn.execute(select(func.max(_rasa_events.c.id))).scalar()
                    if newest is None or newest < position:
                        # A new event database (ids start again): read it from the start.
                        log.warning("desk relay: the event database restarted below %d; reading it from the start", position)
                        self.store.desk.advance_cursor(CURSOR, 0, now)
                        return 0
        except (OperationalError, ProgrammingError) as error:
            if "no such table" in str(error) or "does not exist" in str(error):
                return 0  # the broker has not created its table yet
            raise
        if not rows:
            return 0
        queued: list[OutboxMessage] = []
        cases: dict[tuple[str, str], Case | None] = {}
        for row in rows:
            message = self._message(row.id, str(row.sender_id or ""), row.data, cases)
            if message is not None:
                queued.append(message)
        self.store.desk.advance_cursor(CURSOR, int(rows[-1].id), now, outbox=queued)
        if queued:
            log.info("desk relay: %d customer message(s) queued for their threads", len(queued))
        return len(queued)

    def _message(
        self, row_id: int, sender_id: str, data: str | None, cases: dict[tuple[str, str], Case | None]
    ) -> OutboxMessage | None:
        try:
            event: dict[str, Any] = json.loads(data or "")
        except ValueError:
            log.warning("desk relay: event %d is not JSON, skipped", row_id)
            return None
        if not isinstance(event, dict) or event.get("event") != "user":
            return None
        text = str(event.get("text") or "")
        if text.startswith(EXTERNAL_PREFIX):
            return None  # an intent the desk or a reminder triggered, not the customer
        channel = str(event.get("input_channel") or "")
        key = (channel, sender_id)
        if key not in cases:
            cases[key] = self.store.lookup.open_case_for_customer(channel, sender_id)
        case = cases[key]
        if case is None:
            return None
        said_at = datetime.fromtimestamp(float(event.get("timestamp") or 0.0), tz=timezone.utc)
        if said_at <= case.created_at:
            return None  # before the hand-off: already in the card's transcript
        lines = conversation.transcript([event])
        if not lines:
            return None
        return messages.thread_message(case.id, messages.relay_in_key(row_id), cards.customer_message(case, lines[0].text))
