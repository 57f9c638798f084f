"""Finding cases: by id, by customer, by card, by status; each with the customer's earlier cases."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, or_, select

from bot.cases.base import StorePart
from bot.cases.records import Case, TranscriptLine, require_aware
from bot.cases.schema import cases
from bot.constants import OPEN_STATUSES

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine, Row


class CaseLookup(StorePart):
    """Reads whole cases (``Case``), oldest first unless a method says otherwise."""

    def get(self, case_id: int) -> Case | None:
        """Return the case with this id, or ``None``."""
        return _first(select_cases(self._engine, cases.c.id == case_id))

    def get_by_key(self, handoff_key: str) -> Case | None:
        """Return the case opened for ``handoff_key``, or ``None``."""
        return _first(select_cases(self._engine, cases.c.handoff_key == handoff_key))

    def list_cases(self, status: str | None = None) -> list[Case]:
        """Return all cases, or those with ``status``, oldest first."""
        return select_cases(self._engine, cases.c.status == status if status is not None else None)

    def cases_for_customer(self, channel: str, sender_id: str) -> list[Case]:
        """Return every case of one customer on one channel, oldest first."""
        return select_cases(self._engine, and_(cases.c.channel == channel, cases.c.sender_id == sender_id))

    def case_by_card(self, channel: str, ts: str) -> Case | None:
        """Return the case whose card is the Slack message ``ts`` in ``channel``, or ``None``."""
        return _first(select_cases(self._engine, and_(cases.c.card_channel == channel, cases.c.card_ts == ts)))

    def open_case_for_customer(self, channel: str, sender_id: str) -> Case | None:
        """Return the customer's newest open (waiting or claimed) case on ``channel``, or ``None``."""
        found = select_cases(
            self._engine,
            and_(cases.c.channel == channel, cases.c.sender_id == sender_id, cases.c.status.in_(OPEN_STATUSES)),
        )
        return found[-1] if found else None

    def open_cases(self) -> list[Case]:
        """Return the open (waiting or claimed) cases, the earliest promise first."""
        found = select_cases(self._engine, cases.c.status.in_(OPEN_STATUSES))
        return sorted(found, key=lambda case: (case.promised_by, case.id))

    def cases_without_card(self) -> list[Case]:
        """Return the open cases whose card is not in Slack yet, oldest first."""
        return select_cases(self._engine, and_(cases.c.status.in_(OPEN_STATUSES), cases.c.card_ts.is_(None)))

    def cases_with_cards(self, changed_since: datetime) -> list[Case]:
        """Return the cases with a card that are open or changed since ``changed_since``."""
        require_aware(changed_since, "changed_since")
        return select_cases(
            self._engine,
            and_(
                cases.c.card_ts.is_not(None),
                or_(cases.c.status.in_(OPEN_STATUSES), cases.c.updated_at >= changed_since),
            ),
        )


def select_cases(engine: Engine, where: Any) -> list[Case]:
    """Return the cases matching ``where`` (all when ``None``), oldest first, with their earlier cases."""
    query = select(cases).order_by(cases.c.created_at, cases.c.id)
    earlier = cases.alias("earlier")
    history = (
        select(cases.c.id, earlier.c.id)
        .join(
            earlier,
            and_(
                earlier.c.channel == cases.c.channel,
                earlier.c.sender_id == cases.c.sender_id,
                earlier.c.id < cases.c.id,
            ),
        )
        .order_by(earlier.c.id)
    )
    if where is not None:
        query = query.where(where)
        history = history.where(where)
    with engine.connect() as conn:
        rows = conn.execute(query).all()
        previous: dict[int, list[int]] = {}
        for case_id, earlier_id in conn.execute(history):
            previous.setdefault(case_id, []).append(earlier_id)
    return [_case_from_row(row, tuple(previous.get(row.id, ()))) for row in rows]


def _first(found: list[Case]) -> Case | None:
    return found[0] if found else None


def _case_from_row(row: Row, previous_cases: tuple[int, ...]) -> Case:
    values = dict(row._mapping)
    values["metadata"] = values.pop("case_metadata")
    values["transcript"] = tuple(TranscriptLine.from_dict(line) for line in values["transcript"])
    return Case(**values, previous_cases=previous_cases)
