"""Public posts (X mentions; Facebook and Instagram comments): the case's side of them and the threads answered.

A connector hands a public post to Rasa as a message of the customer's own conversation
(sender id: the customer's platform id, the one their DMs use) with the metadata key
``public_post`` (``public_post_metadata``). The case side (``bot.casefile``,
``bot.priority``, the desk's card) reads it from there, whatever the platform.

``PublicThreads`` remembers, in the channel database, which public posts the brand
answered and the thread each belongs to, so a reply further down a thread the brand
already answered is not answered in public again (by any replica, after any restart).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import BigInteger, Column, MetaData, String, Table, select

from bot.channels.dedupe import UPSERTS, create_tables
from bot.constants import PUBLIC_POST_KEY

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

metadata = MetaData()

public_threads = Table(
    "channel_public_threads",
    metadata,
    # The connector and account (as an inbox source) and a post in a thread it knows.
    Column("source", String(64), primary_key=True),
    Column("post_id", String(128), primary_key=True),
    # The first post of the thread the brand answered: every post of it points there.
    Column("thread_id", String(128), nullable=False),
    Column("seen_at", BigInteger, nullable=False),
)


def public_post_metadata(
    platform: str, post_id: str, text: str, url: str, author: str, hostile: bool
) -> dict[str, Any]:
    """Return the ``UserMessage`` metadata that marks a message as a public post (the agreed contract)."""
    return {
        PUBLIC_POST_KEY: {
            "platform": platform, "id": post_id, "text": text, "url": url, "author": author, "hostile": hostile,
        }
    }  # fmt: skip


class PublicThreads:
    """The threads of public posts the brand answered, per inbox source.

    Every method is one short transaction and blocking; async callers run it in a thread.
    """

    def __init__(self, engine: Engine, clock: Callable[[], float] = time.time) -> None:
        """Keep the table in ``engine``'s database (the channel store's), creating it if needed."""
        create_tables(metadata, engine)
        self._engine = engine
        self._clock = clock
        self._upsert = UPSERTS[engine.dialect.name]

    def thread_of(self, source: str, post_id: str | None) -> str | None:
        """Return the answered thread ``post_id`` belongs to, or ``None`` (unknown: not answered)."""
        if not post_id:
            return None
        query = select(public_threads.c.thread_id).where(
            public_threads.c.source == source, public_threads.c.post_id == post_id
        )
        with self._engine.connect() as conn:
            found = conn.execute(query).scalar()
        return str(found) if found is not None else None

    def add(self, source: str, thread_id: str, *post_ids: str) -> None:
        """Record ``post_ids`` (a customer's post, the brand's reply) as posts of the answered ``thread_id``."""
        rows = [{"source": source, "post_id": post, "thread_id": thread_id, "seen_at": int(self._clock())}
                for post in post_ids if post]  # fmt: skip
        if rows:
            statement = self._upsert(public_threads).on_conflict_do_nothing(index_elements=["source", "post_id"])
            with self._engine.begin() as conn:
                conn.execute(statement, rows)
