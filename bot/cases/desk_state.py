"""The desk's shared state: which agents are on shift, who holds a lease, how far a reader got.

Several desk processes may share one case store; what they must agree on lives here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, or_, select, update

from bot.cases.base import UPSERTS, StorePart, enqueue_in
from bot.cases.records import OutboxMessage, require_aware
from bot.cases.schema import agent_shifts, desk_cursors, desk_leases

if TYPE_CHECKING:
    from sqlalchemy import Table
    from sqlalchemy.engine import Connection


class DeskState(StorePart):
    """Agent shifts, leases and read cursors."""

    # --- agent shifts -------------------------------------------------------------------

    def set_agent_shift(self, agent: str, on: bool, now: datetime) -> None:
        """Record that ``agent`` went on (``on=True``) or off shift."""
        require_aware(now, "now")
        with self._write() as conn:
            _put(conn, agent_shifts, "agent", agent, {"on_shift": on, "changed_at": now})

    def agents_on_shift(self) -> int:
        """Return how many agents are on shift."""
        query = select(func.count()).select_from(agent_shifts).where(agent_shifts.c.on_shift.is_(True))
        with self._engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    # --- leases -----------------------------------------------------------------------------

    def take_lease(self, name: str, holder: str, now: datetime, seconds: float) -> bool:
        """Take or renew the lease ``name`` for ``holder`` until ``seconds`` after ``now``.

        One conditional UPDATE: it succeeds when ``holder`` already holds the lease or the
        lease has expired; the first holder ever inserts the row. Of several processes
        asking at once, one gets it. Expiry is judged by the callers' clocks, so replicas'
        clocks must agree to well within ``seconds``.

        Returns:
            True if ``holder`` holds the lease now.
        """
        require_aware(now, "now")
        values = {"holder": holder, "expires_at": now + timedelta(seconds=seconds), "updated_at": now}
        renew = (
            update(desk_leases)
            .where(desk_leases.c.name == name, or_(desk_leases.c.holder == holder, desk_leases.c.expires_at <= now))
            .values(**values)
        )
        with self._write() as conn:
            if conn.execute(renew).rowcount == 1:
                return True
            first = UPSERTS[conn.dialect.name](desk_leases).values(name=name, **values)
            return bool(conn.execute(first.on_conflict_do_nothing(index_elements=["name"])).rowcount == 1)

    def release_lease(self, name: str, holder: str, now: datetime) -> None:
        """Give the lease ``name`` up at ``now`` if ``holder`` holds it (another process may take it at once)."""
        require_aware(now, "now")
        with self._write() as conn:
            conn.execute(
                update(desk_leases)
                .where(desk_leases.c.name == name, desk_leases.c.holder == holder)
                .values(expires_at=now, updated_at=now)
            )

    def lease_holder(self, name: str, now: datetime) -> str | None:
        """Return who holds the lease ``name`` at ``now``, or None if nobody does."""
        require_aware(now, "now")
        query = select(desk_leases.c.holder).where(desk_leases.c.name == name, desk_leases.c.expires_at > now)
        with self._engine.connect() as conn:
            found = conn.execute(query).scalar()
        return None if found is None else str(found)

    # --- read positions ---------------------------------------------------------------------

    def cursor(self, name: str) -> int | None:
        """Return how far the reader ``name`` got, or ``None`` if it never read."""
        with self._engine.connect() as conn:
            found = conn.execute(select(desk_cursors.c.position).where(desk_cursors.c.name == name)).scalar()
        return None if found is None else int(found)

    def advance_cursor(
        self, name: str, position: int, now: datetime, *, outbox: Sequence[OutboxMessage] = ()
    ) -> None:
        """Move the reader ``name`` to ``position`` and queue what it read, in one transaction."""
        require_aware(now, "now")
        with self._write() as conn:
            enqueue_in(conn, outbox, now)
            _put(conn, desk_cursors, "name", name, {"position": position, "updated_at": now})


def _put(conn: Connection, table: Table, key: str, value: str, values: Mapping[str, Any]) -> None:
    """Insert the row of ``table`` whose primary key ``key`` is ``value``, or update it to ``values``."""
    upsert = UPSERTS[conn.dialect.name](table).values({key: value, **values})
    conn.execute(upsert.on_conflict_do_update(index_elements=[key], set_=dict(values)))
