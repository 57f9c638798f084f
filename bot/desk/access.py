"""Who may act at the desk: members of the agents' user group or channel, and the leads."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from slack_sdk.errors import SlackApiError

if TYPE_CHECKING:
    from slack_sdk.web.async_client import AsyncWebClient

log = logging.getLogger(__name__)


class AccessUnknown(RuntimeError):
    """Slack could not say who the agents are right now."""


class AgentDirectory:
    """Answers "is this user an agent?" from Slack, remembering the answer for ``ttl_seconds``.

    ``agents`` is a user group id (``S...``: ``usergroups.users.list``) or a channel id
    (``C...``/``G...``: ``conversations.members``). Leads always count as agents.
    """

    def __init__(
        self, client: AsyncWebClient, agents: str, leads: frozenset[str], ttl_seconds: float = 60.0
    ) -> None:
        """Look members up with ``client``."""
        self._client = client
        self._agents = agents
        self.leads = leads
        self._ttl = ttl_seconds
        self._members: frozenset[str] = frozenset()
        self._fetched_at = float("-inf")
        self._lock = asyncio.Lock()

    def is_lead(self, user_id: str) -> bool:
        """Return whether ``user_id`` is a lead."""
        return user_id in self.leads

    async def is_agent(self, user_id: str) -> bool:
        """Return whether ``user_id`` may act at the desk.

        Raises:
            AccessUnknown: the member list could not be fetched (and none is remembered).
        """
        if user_id in self.leads:
            return True
        return user_id in await self.members()

    async def members(self) -> frozenset[str]:
        """Return the agents (fetched at most once per ``ttl_seconds``; concurrent callers share one fetch)."""
        async with self._lock:
            if time.monotonic() - self._fetched_at < self._ttl:
                return self._members
            try:
                self._members = await self._fetch()
            except SlackApiError as error:
                log.warning("desk: cannot list the agents in %s: %s", self._agents, error.response.get("error"))
                raise AccessUnknown(str(error.response.get("error"))) from error
            self._fetched_at = time.monotonic()
            return self._members

    async def _fetch(self) -> frozenset[str]:
        if self._agents.startswith("S"):
            answer = await self._client.usergroups_users_list(usergroup=self._agents)
            return frozenset(str(user) for user in answer.get("users") or [])
        found: set[str] = set()
        cursor = None
        while True:
            answer = await self._client.conversations_members(channel=self._agents, cursor=cursor, limit=1000)
            found.update(str(user) for user in answer.get("members") or [])
            cursor = (answer.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                return frozenset(found)
