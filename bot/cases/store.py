"""The case store: cases handed from the assistant to the human team, and what the desk shares.

SQLite (a file under ``var/`` by default) on one machine, PostgreSQL in production; the
same code runs on both. ``CaseStore`` builds the engine once and hands out one part per
concern; callers reach the part they use (``store.lifecycle.claim(...)``,
``store.outbox.enqueue(...)``) or take only that part:

- ``lookup`` (``bot.cases.lookup``): finding cases.
- ``lifecycle`` (``bot.cases.lifecycle``): opening cases and moving them through the queue.
- ``watch`` (``bot.cases.watch``): the watchdog's escalations, new promises, check-ins, closing.
- ``outbox`` (``bot.cases.deliveries``): the messages the desk sends, and their delivery.
- ``desk`` (``bot.cases.desk_state``): agent shifts, leases and read cursors.
- ``figures`` (``bot.cases.read_models``): what the estimate, report, metrics and dashboard read.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from bot.cases.base import ENV_CASE_DB, default_url
from bot.cases.deliveries import Outbox
from bot.cases.desk_state import DeskState
from bot.cases.lifecycle import CaseLifecycle
from bot.cases.lookup import CaseLookup
from bot.cases.read_models import ReadModels
from bot.cases.schema import create_case_engine, migrate
from bot.cases.watch import CaseWatch

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

log = logging.getLogger(__name__)


class CaseStore:
    """The parts of the case store over one engine. Build it with ``CaseStore.from_url``.

    Attributes:
        lookup: Finds cases.
        lifecycle: Opens cases and moves them through the queue.
        watch: The watchdog's changes to waiting and claimed cases.
        outbox: Queues messages and records their delivery.
        desk: Agent shifts, leases and read cursors.
        figures: The read models of the estimate, the report, the metrics and the dashboard.
    """

    def __init__(self, engine: Engine) -> None:
        """Wrap an engine whose database is already migrated (use ``from_url``)."""
        self._engine = engine
        self.lookup = CaseLookup(engine)
        self.lifecycle = CaseLifecycle(engine)
        self.watch = CaseWatch(engine)
        self.outbox = Outbox(engine)
        self.desk = DeskState(engine)
        self.figures = ReadModels(engine)

    @classmethod
    def from_url(cls, url: str | None = None) -> CaseStore:
        """Connect to ``url`` and bring its schema up to date.

        Args:
            url: SQLAlchemy URL. ``None`` takes ``$FIRSTREPLY_CASE_DB``, else the SQLite file
                ``var/cases.db`` under the repository root (its directory is created).
        """
        url = url or os.environ.get(ENV_CASE_DB) or default_url()
        engine = create_case_engine(url)
        applied = migrate(engine)
        if applied:
            # %r: the URL's repr hides the password.
            log.info("case store at %r: applied %d schema migration(s)", engine.url, applied)
        return cls(engine)

    def dispose(self) -> None:
        """Close every pooled connection."""
        self._engine.dispose()
