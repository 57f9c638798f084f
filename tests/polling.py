"""Waiting in tests: poll a condition until it holds or a deadline passes (never a sleep as a check)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any


async def until(
    what: str, probe: Callable[[], Any], timeout: float = 15.0, *, interval: float = 0.02,
    context: Callable[[], str] | None = None,
) -> Any:  # fmt: skip
    """Return ``probe()``'s first truthy value; fail naming ``what`` (and ``context()``) after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        await asyncio.sleep(interval)
    detail = f"; {context()}" if context is not None else ""
    raise AssertionError(f"{what}: not within {timeout}s{detail}")
