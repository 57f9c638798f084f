"""Buttons as numbered choices, for platforms whose messages carry none (X's v2 DMs).

The choices are written under the text ("1. Yes, that's right"); the customer answers
with the number or the title. The last choices offered to each customer are kept in the
channel database, so the answer is understood by any replica, also after a restart.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import BigInteger, Column, MetaData, String, Table, Text, select

from bot.channels.dedupe import PAYLOAD_TTL_SECONDS, UPSERTS, create_tables

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

metadata = MetaData()

offered_choices = Table(
    "channel_offered_choices",
    metadata,
    Column("source", String(64), primary_key=True),
    Column("conversation", String(255), primary_key=True),
    # JSON: [[title, payload], ...], in the order they were numbered.
    Column("choices", Text, nullable=False),
    Column("offered_at", BigInteger, nullable=False),
)


def titles_and_payloads(buttons: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """Return each Rasa button's title and payload (a link button shows its link; choosing it sends the title)."""
    pairs = []
    for button in buttons:
        title = str(button.get("title") or button.get("payload") or button.get("url") or "?")
        if button.get("url"):
            pairs.append((f"{title}: {button['url']}", title))
        else:
            pairs.append((title, str(button.get("payload") or title)))
    return pairs


def numbered(text: str, buttons: Sequence[Mapping[str, Any]]) -> str:
    """Return ``text`` with the buttons written under it as numbered choices."""
    lines = [f"{number}. {title}" for number, (title, _) in enumerate(titles_and_payloads(buttons), start=1)]
    return f"{text}\n\n" + "\n".join(lines) + "\n\n(Reply with a number.)"


class OfferedChoices:
    """The choices last offered to each customer. Blocking; async callers run it in a thread."""

    def __init__(self, engine: Engine, clock: Callable[[], float] = time.time) -> None:
        """Keep the table in ``engine``'s database (the channel store's), creating it if needed."""
        create_tables(metadata, engine)
        self._engine = engine
        self._clock = clock
        self._upsert = UPSERTS[engine.dialect.name]

    def offer(self, source: str, conversation: str, buttons: Sequence[Mapping[str, Any]]) -> None:
        """Record ``buttons`` as the choices now open to the customer (replacing earlier ones)."""
        row = {"source": source, "conversation": conversation, "offered_at": int(self._clock()),
               "choices": json.dumps(titles_and_payloads(buttons))}  # fmt: skip
        statement = self._upsert(offered_choices).values(**row)
        statement = statement.on_conflict_do_update(
            index_elements=["source", "conversation"],
            set_={"choices": statement.excluded.choices, "offered_at": statement.excluded.offered_at},
        )
        with self._engine.begin() as conn:
            conn.execute(statement)

    def chosen(self, source: str, conversation: str, text: str) -> str | None:
        """Return the payload ``text`` picks ("2", "2.", or a title), or ``None`` when it picks none."""
        answer = text.strip().rstrip(".)").strip().casefold()
        if not answer or len(answer) > 200:
            return None
        query = select(offered_choices.c.choices, offered_choices.c.offered_at).where(
            offered_choices.c.source == source, offered_choices.c.conversation == conversation
        )
        with self._engine.connect() as conn:
            row = conn.execute(query).first()
        if row is None or row.offered_at < self._clock() - PAYLOAD_TTL_SECONDS:
            return None
        pairs = [(str(title), str(payload)) for title, payload in json.loads(row.choices)]
        if answer.isascii() and answer.isdigit() and 1 <= int(answer) <= len(pairs):
            return pairs[int(answer) - 1][1]
        for title, payload in pairs:
            if title.strip().casefold() == answer:
                return payload
        return None
