"""The outbox: everything the desk sends, queued first, then delivered by the desk's worker.

Messages are queued in the same transaction as the change that causes them (see
``bot.cases.base.enqueue_in``); the worker (``bot.desk.outbox``) takes them from here one
per target at a time and records each attempt, so a crash or an outage loses nothing and
the unique idempotency key means nothing is queued twice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, update

from bot.cases.base import StorePart, enqueue_in, key_starts
from bot.cases.records import CardPlacement, OutboxItem, OutboxMessage, require_aware
from bot.cases.schema import as_utc, cases, outbox

if TYPE_CHECKING:
    from sqlalchemy.engine import Row


class Outbox(StorePart):
    """Queues messages, hands the worker what is due, and records how each delivery went."""

    def enqueue(self, messages: Sequence[OutboxMessage], now: datetime) -> int:
        """Queue ``messages`` (those whose key is already queued are left out).

        Returns:
            How many were newly queued.
        """
        require_aware(now, "now")
        with self._write() as conn:
            return enqueue_in(conn, messages, now)

    def ready(
        self, now: datetime, limit: int = 50, *, first_kinds: Sequence[str] = (), scan: int = 5000
    ) -> list[OutboxItem]:
        """Return the messages to try now: per target, the oldest undelivered one, if due.

        Args:
            first_kinds: Kinds that go before the other messages of their target (a case's
                card before the replies in its thread, whatever was queued first).
            scan: How many undelivered messages to look at, oldest first.

        Messages given up on do not hold up the ones behind them. Oldest first.
        """
        require_aware(now, "now")
        live = select(outbox.c.id, outbox.c.target, outbox.c.kind, outbox.c.next_attempt_at, outbox.c.started_at)
        live = live.where(outbox.c.delivered_at.is_(None), outbox.c.next_attempt_at.is_not(None))
        with self._engine.connect() as conn:
            rows = conn.execute(live.order_by(outbox.c.id).limit(scan)).all()
            heads: dict[str, Row] = {}
            for row in rows:
                current = heads.get(row.target)
                if current is None or (row.kind in first_kinds and current.kind not in first_kinds):
                    heads[row.target] = row
            due = sorted(
                row.id for row in heads.values() if row.started_at is None and row.next_attempt_at <= now
            )[:limit]
            if not due:
                return []
            found = conn.execute(select(outbox).where(outbox.c.id.in_(due)).order_by(outbox.c.id))
            return [_outbox_item(row) for row in found]

    def start_delivery(self, item_id: int, now: datetime) -> OutboxItem | None:
        """Mark an attempt at ``item_id`` as under way; ``None`` if it is delivered or already under way."""
        require_aware(now, "now")
        start = (
            update(outbox)
            .where(outbox.c.id == item_id, outbox.c.delivered_at.is_(None), outbox.c.started_at.is_(None))
            .values(started_at=now, attempts=outbox.c.attempts + 1)
        )
        with self._write() as conn:
            if conn.execute(start).rowcount != 1:
                return None
            row = conn.execute(select(outbox).where(outbox.c.id == item_id)).one()
        return _outbox_item(row)

    def finish_delivery(
        self,
        item_id: int,
        now: datetime,
        result: Mapping[str, Any] | None = None,
        *,
        then: Sequence[OutboxMessage] = (),
        card: CardPlacement | None = None,
        human_reply: bool = False,
    ) -> None:
        """Mark ``item_id`` delivered and, in the same transaction, record what follows from it.

        Args:
            result: What the delivery returned (e.g. a Slack message ts).
            then: Messages that may only go once this one went.
            card: Where the message's case card now is (channel and ts are kept when None).
            human_reply: A person's reply reached the customer of the message's case.
        """
        require_aware(now, "now")
        with self._write() as conn:
            item = conn.execute(select(outbox.c.case_id).where(outbox.c.id == item_id)).one()
            conn.execute(
                update(outbox)
                .where(outbox.c.id == item_id)
                .values(delivered_at=now, started_at=None, last_error=None, result=dict(result or {}))
            )
            enqueue_in(conn, then, now)
            if card is not None and item.case_id is not None:
                values: dict[str, Any] = {"card_digest": card.digest}
                if card.channel is not None and card.ts is not None:
                    values.update(card_channel=card.channel, card_ts=card.ts)
                conn.execute(update(cases).where(cases.c.id == item.case_id).values(**values))
            if human_reply and item.case_id is not None:
                conn.execute(
                    update(cases)
                    .where(cases.c.id == item.case_id, cases.c.first_human_reply_at.is_(None))
                    .values(first_human_reply_at=now, updated_at=now)
                )
                conn.execute(update(cases).where(cases.c.id == item.case_id).values(last_agent_reply_at=now))

    def fail_delivery(self, item_id: int, error: str, retry_at: datetime | None) -> None:
        """Record a failed attempt: try again at ``retry_at``, or give up when it is ``None``."""
        if retry_at is not None:
            require_aware(retry_at, "retry_at")
        self._put_back(item_id, last_error=error[:2000], next_attempt_at=retry_at)

    def postpone_delivery(self, item_id: int, retry_at: datetime, reason: str) -> None:
        """Put an attempt back without counting it (what it needs is not there yet)."""
        require_aware(retry_at, "retry_at")
        self._put_back(item_id, attempts=outbox.c.attempts - 1, last_error=reason, next_attempt_at=retry_at)

    def _put_back(self, item_id: int, **values: Any) -> None:
        """End the attempt under way at an undelivered ``item_id``, setting ``values``."""
        with self._write() as conn:
            conn.execute(
                update(outbox)
                .where(outbox.c.id == item_id, outbox.c.delivered_at.is_(None))
                .values(started_at=None, **values)
            )

    def recover_interrupted(self) -> int:
        """Mark every attempt left under way as in doubt and due again; return how many.

        For the elected desk leader when it takes over (bot/election.py): an attempt still under
        way then was cut off by a crash of the previous leader, so it may or may not have gone through.
        """
        with self._write() as conn:
            return int(
                conn.execute(
                    update(outbox)
                    .where(outbox.c.delivered_at.is_(None), outbox.c.started_at.is_not(None))
                    .values(
                        started_at=None,
                        result={"in_doubt": True},
                        last_error="interrupted: the desk stopped during delivery",
                    )
                ).rowcount
            )

    # --- reading the outbox -----------------------------------------------------------------

    def items(self, *, case_id: int | None = None, kind: str | None = None) -> list[OutboxItem]:
        """Return queued messages (of a case, of a kind), oldest first, delivered or not."""
        query = select(outbox).order_by(outbox.c.id)
        if case_id is not None:
            query = query.where(outbox.c.case_id == case_id)
        if kind is not None:
            query = query.where(outbox.c.kind == kind)
        with self._engine.connect() as conn:
            return [_outbox_item(row) for row in conn.execute(query)]

    def has_undelivered(self, case_id: int, kind: str) -> bool:
        """Return whether a message of ``kind`` for the case is still waiting to go."""
        query = (
            select(func.count())
            .select_from(outbox)
            .where(
                outbox.c.case_id == case_id,
                outbox.c.kind == kind,
                outbox.c.delivered_at.is_(None),
                outbox.c.next_attempt_at.is_not(None),
            )
        )
        with self._engine.connect() as conn:
            return int(conn.execute(query).scalar_one()) > 0

    def count(self, *, kind: str | None = None, key_prefix: str | None = None, given_up: bool = False) -> int:
        """Return how many messages were ever queued (of ``kind``, with keys starting ``key_prefix``).

        ``given_up``: only those given up on (never delivered: a permanent error, a closed window).
        """
        query = select(func.count()).select_from(outbox)
        if given_up:
            query = query.where(outbox.c.delivered_at.is_(None), outbox.c.next_attempt_at.is_(None))
        if kind is not None:
            query = query.where(outbox.c.kind == kind)
        if key_prefix is not None:
            query = query.where(key_starts(key_prefix))
        with self._engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def backlog(self) -> tuple[int, int]:
        """Return how many messages wait to be delivered, and how many were given up on."""
        query = select(
            func.count().filter(outbox.c.next_attempt_at.is_not(None)),
            func.count().filter(outbox.c.next_attempt_at.is_(None)),
        ).where(outbox.c.delivered_at.is_(None))
        with self._engine.connect() as conn:
            pending, failed = conn.execute(query).one()
        return int(pending or 0), int(failed or 0)

    def last_queued(self, case_ids: Sequence[int], key_prefix: str) -> dict[int, datetime]:
        """Return, per case, when a message with a key starting ``key_prefix`` was last queued.

        The desk relays each customer message to its case's thread under a key of its own
        (``bot.desk.messages.RELAY_IN_PREFIX``), so this is when the customer last wrote.
        """
        if not case_ids:
            return {}
        query = (
            select(outbox.c.case_id, func.max(outbox.c.created_at))
            .where(outbox.c.case_id.in_(list(case_ids)))
            .where(key_starts(key_prefix))
            .group_by(outbox.c.case_id)
        )
        with self._engine.connect() as conn:
            rows = conn.execute(query).all()
        # func.max loses the column type: read the stored value back as UTCDateTime does.
        return {int(case_id): as_utc(latest) for case_id, latest in rows if latest is not None}


def _outbox_item(row: Row) -> OutboxItem:
    values = dict(row._mapping)
    values["key"] = values.pop("idempotency_key")
    return OutboxItem(**values)
