"""What the lock stores' tests share: holding a conversation's turn, and three holders in turn."""

from __future__ import annotations

import asyncio
from typing import Any


async def hold(store: Any, conversation: str, name: str, log: list[str], seconds: float, **lock: Any) -> None:
    """Take ``conversation``'s turn from ``store``, note it in ``log``, keep it ``seconds``, give it up."""
    async with store.lock(conversation, **lock):
        log.append(f"{name} in")
        await asyncio.sleep(seconds)
        log.append(f"{name} out")


def three_in_turn(one: Any, other: Any, first_holds: float, **lock: Any) -> list[str]:
    """Return the log of three holders of one conversation: one's (``first_holds`` s), other's, one's again.

    Each asks for the turn while the one before holds it; two stores stand for two processes.
    """
    log: list[str] = []

    async def run() -> None:
        first = asyncio.create_task(hold(one, "maria", "a", log, first_holds, **lock))
        await asyncio.sleep(0.05)
        second = asyncio.create_task(hold(other, "maria", "b", log, 0.05, **lock))
        await asyncio.sleep(0.01)
        third = asyncio.create_task(hold(one, "maria", "c", log, 0.05, **lock))
        await asyncio.gather(first, second, third)

    asyncio.run(run())
    return log
