"""A case's life in the queue: opened, claimed, answered, reassigned, resolved, reopened, rated.

The races that matter (two agents claiming one case, a handoff retried while the first
attempt is still in flight) are settled by the database, not by reading first and writing
after. Methods that take ``outbox`` queue those messages in the same transaction, only if
the change went through.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError

from bot.cases.base import StorePart
from bot.cases.lookup import CaseLookup
from bot.cases.records import Case, NewCase, OutboxMessage, require_aware
from bot.cases.schema import cases
from bot.constants import OPEN_STATUSES, STATUS_CLAIMED, STATUS_RESOLVED, STATUS_WAITING

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

log = logging.getLogger(__name__)


class CaseLifecycle(StorePart):
    """Opens cases and moves them through the queue."""

    def __init__(self, engine: Engine) -> None:
        """Wrap an engine whose database is already migrated."""
        super().__init__(engine)
        self._lookup = CaseLookup(engine)

    def open_case(self, new: NewCase, now: datetime) -> Case:
        """Open a waiting case, or return the one already opened for ``new.handoff_key``."""
        require_aware(now, "now")
        existing = self._lookup.get_by_key(new.handoff_key)
        if existing is not None:
            return existing
        row = {
            "handoff_key": new.handoff_key,
            "channel": new.channel,
            "sender_id": new.sender_id,
            "customer_name": new.customer_name,
            "case_type": new.case_type,
            "intent_confidence": new.intent_confidence,
            "answers": dict(new.answers),
            "summary": new.summary,
            "transcript": [line.to_dict() for line in new.transcript],
            "language": new.language,
            "priority": new.priority,
            "complaint_score": new.complaint_score,
            "promised_by": new.promised_by,
            "promise_wording": new.promise_wording,
            "status": STATUS_WAITING,
            "created_at": now,
            "updated_at": now,
            "case_metadata": dict(new.metadata),
        }
        try:
            with self._write() as conn:
                case_id = conn.execute(insert(cases).values(**row)).inserted_primary_key[0]
        except IntegrityError:
            # Another process opened the same handoff between our check and our insert.
            existing = self._lookup.get_by_key(new.handoff_key)
            if existing is None:
                raise
            return existing
        log.info("case %s opened (%s, %s)", case_id, new.case_type, new.priority)
        opened = self._lookup.get(case_id)
        assert opened is not None  # committed above; cases are never deleted
        return opened

    def claim(self, case_id: int, agent: str, now: datetime, *, outbox: Sequence[OutboxMessage] = ()) -> bool:
        """Give a waiting case to ``agent``. Of agents racing for one case, exactly one wins.

        Args:
            outbox: Messages queued in the same transaction, only if this call wins.

        Returns:
            True if this call claimed the case; False if it was not waiting (or unknown).
        """
        won = self._change_case(
            case_id, now, [cases.c.status == STATUS_WAITING],
            {"status": STATUS_CLAIMED, "claimed_by": agent, "claimed_at": now}, outbox,
        )  # fmt: skip
        if won:
            log.info("case %s claimed by %s", case_id, agent)
        return won

    def record_human_reply(self, case_id: int, now: datetime) -> None:
        """Note when a person first answered the customer (later replies change nothing)."""
        self._change_case(case_id, now, [cases.c.first_human_reply_at.is_(None)], {"first_human_reply_at": now})

    def resolve(
        self,
        case_id: int,
        now: datetime,
        *,
        by: str | None = None,
        only_if_claimed_by: str | None = None,
        outbox: Sequence[OutboxMessage] = (),
    ) -> bool:
        """Mark an open (waiting or claimed) case resolved.

        Args:
            by: Who resolved it.
            only_if_claimed_by: Resolve only a case this agent holds (so an owner who lost
                the case to a reassignment a moment ago cannot resolve it).
            outbox: Messages queued in the same transaction, only if this call resolves it.

        Returns:
            True if this call resolved it; False if it was not open (or unknown).
        """
        conditions = [cases.c.status.in_(OPEN_STATUSES)]
        if only_if_claimed_by is not None:
            conditions += [cases.c.status == STATUS_CLAIMED, cases.c.claimed_by == only_if_claimed_by]
        values = {"status": STATUS_RESOLVED, "resolved_at": now, "resolved_by": by}
        done = self._change_case(case_id, now, conditions, values, outbox)
        if done:
            log.info("case %s resolved", case_id)
        return done

    def reassign(
        self,
        case_id: int,
        from_agent: str,
        to_agent: str,
        now: datetime,
        *,
        outbox: Sequence[OutboxMessage] = (),
    ) -> bool:
        """Hand a claimed case from ``from_agent`` to ``to_agent``.

        Returns:
            True if this call moved it; False if ``from_agent`` no longer held it.
        """
        moved = self._change_case(
            case_id, now, [cases.c.status == STATUS_CLAIMED, cases.c.claimed_by == from_agent],
            {"claimed_by": to_agent, "claimed_at": now}, outbox,
        )  # fmt: skip
        if moved:
            log.info("case %s reassigned from %s to %s", case_id, from_agent, to_agent)
        return moved

    def reopen(self, case_id: int, now: datetime, *, outbox: Sequence[OutboxMessage] = ()) -> bool:
        """Put a resolved case back in the queue: the customer says it is not solved.

        The case waits again for anyone to claim; ``reopened_count`` goes up by one and
        ``solved`` records the customer's answer.

        Returns:
            True if this call reopened it; False if it was not resolved (or unknown).
        """
        values = {
            "status": STATUS_WAITING,
            "claimed_by": None,
            "claimed_at": None,
            "resolved_at": None,
            "resolved_by": None,
            "followup_asked_at": None,
            "solved": False,
            "reopened_count": cases.c.reopened_count + 1,
        }
        done = self._change_case(case_id, now, [cases.c.status == STATUS_RESOLVED], values, outbox)
        if done:
            log.info("case %s reopened", case_id)
        return done

    def mark_followup_asked(self, case_id: int, now: datetime) -> bool:
        """Note that the customer was asked the follow-up questions of a resolved case.

        Returns:
            True the first time for a resolution; False if already asked (or not resolved).
        """
        return self._change_case(
            case_id, now, [cases.c.status == STATUS_RESOLVED, cases.c.followup_asked_at.is_(None)],
            {"followup_asked_at": now},
        )  # fmt: skip

    def record_followup(
        self,
        case_id: int,
        now: datetime,
        *,
        solved: bool | None = None,
        rating: int | None = None,
        outbox: Sequence[OutboxMessage] = (),
    ) -> bool:
        """Store the customer's follow-up answers on a resolved case (``None`` leaves one as it is).

        ``outbox`` messages are queued in the same transaction, only if the answers were stored.

        Returns:
            True if stored; False if the case is not resolved (or unknown).
        """
        require_aware(now, "now")
        if rating is not None and not 1 <= rating <= 5:
            raise ValueError(f"rating must be 1 to 5, got {rating!r}")
        values: dict[str, Any] = {}
        if solved is not None:
            values["solved"] = solved
        if rating is not None:
            values["rating"] = rating
        return self._change_case(case_id, now, [cases.c.status == STATUS_RESOLVED], values, outbox)
