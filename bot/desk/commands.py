"""The desk's slash commands (``/queue``, ``/shift``) and its Home tab, for agents only."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from slack_sdk.errors import SlackApiError

from bot.desk import cards
from bot.desk.listener import Listener, refusal

if TYPE_CHECKING:
    from slack_bolt.context.ack.async_ack import AsyncAck

log = logging.getLogger(__name__)

SHIFT_USAGE = "Use `/shift on` when you start and `/shift off` when you stop taking cases."


class Commands(Listener):
    """``/queue`` and the Home tab show the open cases; ``/shift`` records who is working."""

    async def queue_view(self) -> list[dict[str, Any]]:
        """Return the open cases as blocks, the earliest promise first."""
        open_cases = await self._run(self.store.lookup.open_cases)
        return cards.queue_blocks(open_cases, self.clock())

    async def on_queue(self, ack: AsyncAck, command: dict[str, Any]) -> None:
        """``/queue``: the open cases, oldest promise first (for agents only)."""
        allowed = await self._agent(str(command["user_id"]))
        if not allowed:
            await ack(text=refusal(allowed), response_type="ephemeral")
            return
        blocks = await self.queue_view()
        await ack(text=f"{len(blocks) - 1} open case(s)", blocks=blocks, response_type="ephemeral")

    async def on_shift(self, ack: AsyncAck, command: dict[str, Any]) -> None:
        """``/shift on|off``: tell the response-time estimate who is working."""
        user = str(command["user_id"])
        allowed = await self._agent(user)
        if not allowed:
            await ack(text=refusal(allowed), response_type="ephemeral")
            return
        word = str(command.get("text") or "").strip().lower()
        if word not in ("on", "off"):
            await ack(text=SHIFT_USAGE, response_type="ephemeral")
            return
        await self._run(self.store.desk.set_agent_shift, user, word == "on", self.clock())
        working = await self._run(self.store.desk.agents_on_shift)
        state = "on shift" if word == "on" else "off shift"
        await ack(text=f"You are {state}. Agents on shift now: {working}.", response_type="ephemeral")

    async def publish_home(self, user: str) -> None:
        """Show the queue on the user's Home tab of the desk app."""
        allowed = await self._agent(user)
        if allowed:
            blocks = await self.queue_view()
        else:
            blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": refusal(allowed)}}]
        try:
            await self.client.views_publish(user_id=user, view={"type": "home", "blocks": blocks})
        except SlackApiError as error:
            log.warning("desk: could not publish the Home tab for %s: %s", user, error.response.get("error"))
