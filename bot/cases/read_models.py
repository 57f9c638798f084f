"""The read models: the figures the estimate, the report, the metrics and the dashboard read.

The promise (``bot.services.promise_for`` and the watchdog, for ``bot.eta``) reads the queue
and the recent handle times; the report (``bot.report``) and the dashboard read the cases
of a period; the metrics (``bot.desk.metrics``) read every case's timings without its text.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import and_, func, or_, select

from bot.cases.base import StorePart
from bot.cases.lookup import select_cases
from bot.cases.records import (
    Case,
    CaseFigures,
    HandledTiming,
    TranscriptLine,
    recorded_opening_queue,
    require_aware,
)
from bot.cases.schema import cases
from bot.constants import PRIORITIES, STATUS_CLAIMED, STATUS_WAITING, priority_rank

if TYPE_CHECKING:
    from sqlalchemy.engine import Row


class ReadModels(StorePart):
    """Figures read from the cases: the queue, handle times, timings per case, the cases of a period."""

    # --- the queue, for the promise ---------------------------------------------------------

    def count_waiting_ahead(self, priority: str, now: datetime) -> int:
        """Count the waiting cases agents will serve before a new case of ``priority``.

        Those are the cases waiting at ``now`` with the same or a more urgent priority.
        """
        require_aware(now, "now")
        if priority not in PRIORITIES:
            raise ValueError(f"priority must be one of {PRIORITIES}, got {priority!r}")
        as_urgent = PRIORITIES[priority_rank(priority) :]
        query = (
            select(func.count())
            .select_from(cases)
            .where(cases.c.status == STATUS_WAITING)
            .where(cases.c.priority.in_(as_urgent))
            .where(cases.c.created_at <= now)
        )
        with self._engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def count_in_hand(self) -> int:
        """Count the cases agents are on now: claimed and not yet resolved or closed."""
        query = select(func.count()).select_from(cases).where(cases.c.status == STATUS_CLAIMED)
        with self._engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def recent_handle_minutes(self, now: datetime, window_days: int) -> tuple[float | None, int]:
        """Return the mean minutes from claim to resolve, and the sample size.

        The sample is the claimed cases resolved in the ``window_days`` days up to ``now``;
        the mean is ``None`` when the sample is empty.
        """
        require_aware(now, "now")
        query = select(cases.c.claimed_at, cases.c.resolved_at).where(
            cases.c.claimed_at.is_not(None),
            cases.c.resolved_at > now - timedelta(days=window_days),
            cases.c.resolved_at <= now,
        )
        with self._engine.connect() as conn:
            spans = [
                (resolved - claimed).total_seconds() / 60
                for claimed, resolved in conn.execute(query)
            ]
        if not spans:
            return None, 0
        return sum(spans) / len(spans), len(spans)

    def handled_timings(self, now: datetime, window_days: int) -> list[HandledTiming]:
        """Return the cases first answered by a person in the ``window_days`` days up to ``now``.

        Each comes with its queue position when it was opened, rebuilt from the stored
        timestamps (a case waits from ``created_at`` until it is claimed, answered or
        resolved, whichever comes first), so the estimate can tell a slow reply from a long
        queue, and with the staffing and expected wait recorded when it was opened
        (``records.OPENING_QUEUE_KEY``). Oldest first. Only replies up to ``now`` count: a
        promise made at ``now`` learns nothing from what happened after it. A reopened
        case's second wait is not counted: the store keeps only its latest claim.
        """
        require_aware(now, "now")
        timing = (cases.c.id, cases.c.priority, cases.c.created_at, cases.c.claimed_at, cases.c.first_human_reply_at)
        handled_query = (
            select(*timing, cases.c.case_metadata)
            .where(
                cases.c.first_human_reply_at > now - timedelta(days=window_days),
                cases.c.first_human_reply_at <= now,
            )
            .order_by(cases.c.created_at, cases.c.id)
        )
        with self._engine.connect() as conn:
            handled = conn.execute(handled_query).all()
            if not handled:
                return []
            first_opened = min(row.created_at for row in handled)
            last_opened = max(row.created_at for row in handled)
            # Every case that may have been waiting while one of those was opened.
            queue_query = select(*timing, cases.c.resolved_at).where(
                cases.c.created_at <= last_opened,
                or_(cases.c.claimed_at.is_(None), cases.c.claimed_at >= first_opened),
                or_(
                    cases.c.first_human_reply_at.is_(None),
                    cases.c.first_human_reply_at >= first_opened,
                ),
                or_(cases.c.resolved_at.is_(None), cases.c.resolved_at >= first_opened),
            )
            queued = conn.execute(queue_query).all()
        ahead = _waiting_ahead_at_opening(queued, {row.id for row in handled})
        return [_handled(row, ahead.get(row.id, 0)) for row in handled]

    # --- the report, the metrics and the dashboard ----------------------------------------

    def cases_opened_between(
        self, since: datetime | None = None, until: datetime | None = None
    ) -> list[Case]:
        """Return the cases opened at or after ``since`` and before ``until``, oldest first.

        ``None`` leaves that end open.
        """
        conditions = []
        if since is not None:
            require_aware(since, "since")
            conditions.append(cases.c.created_at >= since)
        if until is not None:
            require_aware(until, "until")
            conditions.append(cases.c.created_at < until)
        return select_cases(self._engine, and_(*conditions) if conditions else None)

    def case_figures(self) -> list[CaseFigures]:
        """Return every case's timings, promise and rating (no summary or answers), oldest first."""
        query = select(
            cases.c.id, cases.c.channel, cases.c.case_type, cases.c.priority, cases.c.status, cases.c.transcript,
            cases.c.created_at, cases.c.claimed_at, cases.c.first_human_reply_at, cases.c.resolved_at,
            cases.c.closed_at, cases.c.promised_by, cases.c.promise_updates, cases.c.escalated_promise,
            cases.c.checkin_at, cases.c.rating,
        ).order_by(cases.c.created_at, cases.c.id)  # fmt: skip
        with self._engine.connect() as conn:
            rows = conn.execute(query).all()
        return [_figures_from_row(row) for row in rows]


def _handled(row: Row, cases_ahead: int) -> HandledTiming:
    agents, busy, expected = recorded_opening_queue(row.case_metadata)
    return HandledTiming(
        case_id=row.id,
        created_at=row.created_at,
        claimed_at=row.claimed_at,
        first_human_reply_at=row.first_human_reply_at,
        cases_ahead=cases_ahead,
        priority=row.priority,
        agents_on_shift=agents,
        agents_busy=busy,
        expected_minutes=expected,
    )


def _waiting_ahead_at_opening(rows: Sequence[Row], wanted: set[int]) -> dict[int, int]:
    """Count, for each case id in ``wanted``, the cases waiting ahead of it when it opened.

    One sweep through time: a case joins the queue when opened and leaves when claimed,
    answered or resolved; at each wanted case's opening, count the waiting cases of the same or a
    more urgent priority. Leaving at the very moment another case opens counts as gone,
    and cases opened at the same moment queue by id, as ``count_waiting_ahead`` sees them.
    """
    # (time, 0 = leaves / 1 = opens, id, rank, joins the queue)
    events: list[tuple[datetime, int, int, int, bool]] = []
    for row in rows:
        rank = priority_rank(row.priority)
        ends = [
            moment
            for moment in (row.claimed_at, row.first_human_reply_at, row.resolved_at)
            if moment is not None
        ]
        left = min(ends) if ends else None
        # Taken the moment it opened (or a clock fault): it never waited.
        joins = left is None or left > row.created_at
        events.append((row.created_at, 1, row.id, rank, joins))
        if joins and left is not None:
            events.append((left, 0, row.id, rank, False))
    events.sort()
    waiting = [0] * len(PRIORITIES)
    ahead: dict[int, int] = {}
    for _moment, opens, case_id, rank, joins in events:
        if not opens:
            waiting[rank] -= 1
            continue
        if case_id in wanted:
            ahead[case_id] = sum(waiting[rank:])
        if joins:
            waiting[rank] += 1
    return ahead


def _figures_from_row(row: Row) -> CaseFigures:
    values = dict(row._mapping)
    lines = [TranscriptLine.from_dict(line) for line in values.pop("transcript") or []]
    customer = [line.at for line in lines if line.who == "customer"]
    first_customer = min(customer) if customer else None
    bot = [line.at for line in lines if line.who == "bot" and (first_customer is None or line.at >= first_customer)]
    return CaseFigures(**values, first_customer_at=first_customer, first_bot_at=min(bot) if bot and customer else None)
