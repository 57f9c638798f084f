"""A sender whose platform calls go through a retry loop of its own, each reply made once.

Telegram's and WhatsApp's senders both retry a call a bounded number of times (``_call``:
flood control, throughput limits, network failures) and, bound to an inbound event, record
each reply so that handling the event again sends none twice (``RecordedOutput.recorded``).
``RetriedOutput._once`` puts the two together, so each sender writes only its ``_call``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from bot.channels.base import RecordedOutput

T = TypeVar("T")


class RetriedOutput(RecordedOutput):
    """A ``RecordedOutput`` whose platform calls are retried by ``_call``."""

    async def _call(self, what: str, request: Callable[[], Awaitable[T]]) -> T:
        """Run one platform call (``what`` names it in the log), retrying what the platform allows."""
        raise NotImplementedError

    async def _once(
        self, what: str, fingerprint: tuple[Any, ...], request: Callable[[], Awaitable[T]], seq: int | None = None
    ) -> T | None:
        """Make one reply call: retried by ``_call``, at most once per place in the event's replies.

        Not bound to an event (Rasa's own messages, the desk's): simply made. ``seq`` places it
        among the event's recorded replies (default: the next place).
        """
        if not self.bound:
            return await self._call(what, request)
        place = self.next_seq() if seq is None else seq
        return await self.recorded(what, place, fingerprint, lambda _state: self._call(what, request))
