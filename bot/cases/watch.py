"""What the watchdog records on a case: escalations, new promises, check-ins, closing a silent case.

Each change is one conditional UPDATE that holds only while the case is as the watchdog
saw it, and queues its messages (``outbox``) in the same transaction, only if it went through.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import exists, or_, select

from bot.cases.base import StorePart, key_starts
from bot.cases.records import OutboxMessage, require_aware
from bot.cases.schema import cases, outbox as outbox_table
from bot.constants import STATUS_CLAIMED, STATUS_CLOSED, STATUS_WAITING

log = logging.getLogger(__name__)


class CaseWatch(StorePart):
    """The watchdog's changes to waiting and claimed cases."""

    def mark_escalated(
        self, case_id: int, promise_number: int, now: datetime, *, outbox: Sequence[OutboxMessage] = ()
    ) -> bool:
        """Record that promise ``promise_number`` of a waiting case was escalated (once per promise).

        ``outbox`` is queued in the same transaction, only if this call recorded it.

        Returns:
            True the first time for that promise; False if already escalated, or the case moved on.
        """
        conditions = [
            cases.c.status == STATUS_WAITING,
            cases.c.promise_updates == promise_number,
            or_(cases.c.escalated_promise.is_(None), cases.c.escalated_promise < promise_number),
        ]
        done = self._change_case(case_id, now, conditions, {"escalated_promise": promise_number}, outbox)
        if done:
            log.info("case %s escalated (promise %d)", case_id, promise_number)
        return done

    def update_promise(
        self,
        case_id: int,
        promise_number: int,
        promised_by: datetime,
        wording: str,
        reason: str,
        now: datetime,
        *,
        outbox: Sequence[OutboxMessage] = (),
    ) -> bool:
        """Replace promise ``promise_number`` of a waiting, unanswered case with a new one.

        ``outbox`` (the message that tells the customer) is queued in the same transaction,
        only if the promise was replaced.

        Returns:
            True if replaced; False if the case was claimed, answered or updated meanwhile.
        """
        require_aware(now, "now")
        require_aware(promised_by, "promised_by")
        conditions = [
            cases.c.status == STATUS_WAITING,
            cases.c.first_human_reply_at.is_(None),
            cases.c.promise_updates == promise_number,
        ]
        values = {
            "promised_by": promised_by,
            "promise_wording": wording,
            "promise_made_at": now,
            "promise_updates": cases.c.promise_updates + 1,
            "delay_reason": reason,
        }
        done = self._change_case(case_id, now, conditions, values, outbox)
        if done:
            log.info("case %s: promise %d replaced (%s)", case_id, promise_number, reason)
        return done

    def record_checkin(
        self,
        case_id: int,
        agent_reply_at: datetime,
        now: datetime,
        *,
        customer_key_prefix: str,
        outbox: Sequence[OutboxMessage] = (),
    ) -> bool:
        """Record that the customer of a claimed case was asked whether they need anything else.

        Only when the agent's last reply is still ``agent_reply_at``, the customer was not
        asked since it, and no customer message (keys starting ``customer_key_prefix``) was
        queued after it. ``outbox`` is queued in the same transaction, only if recorded.
        """
        conditions = [
            cases.c.status == STATUS_CLAIMED,
            cases.c.last_agent_reply_at == agent_reply_at,
            or_(cases.c.checkin_at.is_(None), cases.c.checkin_at < agent_reply_at),
            ~_customer_wrote_since(customer_key_prefix, agent_reply_at),
        ]
        done = self._change_case(case_id, now, conditions, {"checkin_at": now}, outbox)
        if done:
            log.info("case %s: the silent customer was asked whether they need anything else", case_id)
        return done

    def close_stale(
        self,
        case_id: int,
        checkin_at: datetime,
        now: datetime,
        *,
        customer_key_prefix: str,
        outbox: Sequence[OutboxMessage] = (),
    ) -> bool:
        """Close a claimed case whose customer said nothing since the check-in at ``checkin_at``.

        Only when no agent reply reached the customer after the check-in and no customer
        message (keys starting ``customer_key_prefix``) was queued after it. ``outbox`` is
        queued in the same transaction, only if closed.
        """
        conditions = [
            cases.c.status == STATUS_CLAIMED,
            cases.c.checkin_at == checkin_at,
            or_(cases.c.last_agent_reply_at.is_(None), cases.c.last_agent_reply_at <= checkin_at),
            ~_customer_wrote_since(customer_key_prefix, checkin_at),
        ]
        done = self._change_case(case_id, now, conditions, {"status": STATUS_CLOSED, "closed_at": now}, outbox)
        if done:
            log.info("case %s closed: no answer to the check-in", case_id)
        return done


def _customer_wrote_since(key_prefix: str, since: Any) -> Any:
    """Return a condition on ``cases``: a customer message of the case was queued after ``since``."""
    return exists(
        select(outbox_table.c.id).where(
            outbox_table.c.case_id == cases.c.id,
            key_starts(key_prefix),
            outbox_table.c.created_at > since,
        )
    )
