"""What every listener of the desk needs: who may act, and telling a user something alone.

Listeners acknowledge first, then check everything against the store and the acting user:
the user must be an agent (``bot.desk.access``), and only the owner of a case (or a lead)
may answer, reassign or resolve it. Refusals are shown to the user alone (ephemeral) and
change nothing.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bot.constants import STATUS_CLAIMED
from bot.desk import messages
from bot.desk.access import AccessUnknown

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime

    from slack_sdk.web.async_client import AsyncWebClient

    from bot.cases import Case, CaseStore
    from bot.desk.access import AgentDirectory
    from bot.desk.outbox import OutboxWorker

log = logging.getLogger(__name__)

NOT_AGENT = "Only the support team can use the desk. Ask a lead to add you to the agents group."
CANNOT_CHECK = "The desk cannot check who is on the support team right now (Slack did not answer). Try again in a minute."


@dataclass
class Listener:
    """The base of the desk's listeners: the store, Slack, the agent directory and the outbox worker.

    Attributes:
        poke: Tells the desk's loops that something changed.
    """

    store: CaseStore
    client: AsyncWebClient
    directory: AgentDirectory
    worker: OutboxWorker
    clock: Callable[[], datetime]
    poke: Callable[[], None]

    async def _run(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a blocking store method in a thread."""
        return await asyncio.to_thread(method, *args, **kwargs)

    async def tell(self, user: str, channel: str, text: str, thread_ts: str | None = None) -> None:
        """Show ``text`` to ``user`` alone (through the outbox)."""
        message = messages.ephemeral(f"ephemeral:{uuid.uuid4()}", channel, user, text, thread_ts)
        await self._run(self.store.outbox.enqueue, [message], self.clock())
        self.worker.wake()

    async def _agent(self, user: str) -> bool | None:
        """Return whether ``user`` is an agent; None when Slack cannot say right now."""
        try:
            return await self.directory.is_agent(user)
        except AccessUnknown:
            return None

    async def _check_agent(self, user: str, channel: str, thread_ts: str | None = None) -> bool:
        """Return whether ``user`` is an agent; if not (or Slack cannot say), tell them why not."""
        allowed = await self._agent(user)
        if allowed is None:
            await self.tell(user, channel, CANNOT_CHECK, thread_ts)
            return False
        if not allowed:
            log.info("desk: %s is not an agent; refused", user)
            await self.tell(user, channel, NOT_AGENT, thread_ts)
            return False
        return True

    def _may_handle(self, case: Case, user: str) -> bool:
        return self.directory.is_lead(user) or (case.status == STATUS_CLAIMED and case.claimed_by == user)


def refusal(allowed: bool | None) -> str:
    """Return why a user who is not known as an agent (``allowed`` False, or None: unknown) is refused."""
    return NOT_AGENT if allowed is False else CANNOT_CHECK
