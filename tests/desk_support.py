"""What the desk's tests share: a case opened as the hand-off opens it, and a desk served on a free port."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone
from typing import Any

from aiohttp import web

from bot.cases import Case, CaseStore, NewCase, TranscriptLine
from bot.desk.app import Desk
from bot.desk.server import http_app

MARIA_CHAT = "4242"


def open_case(store: CaseStore, *, sender: str = MARIA_CHAT, key: str = "k1", **overrides: Any) -> Case:
    """Open Maria's late-parcel case (a second ago, promised in 20 minutes); ``overrides`` change its fields."""
    now = datetime.now(timezone.utc)
    fields: dict[str, Any] = dict(
        channel="telegram", sender_id=sender, customer_name="Maria", case_type="order_status",
        intent_confidence=0.91, answers={"order_number": "AC-2291734", "delivery_problem": "It's late"},
        summary="Where my order is. Order number: AC-2291734; delivery problem: It's late.",
        transcript=(TranscriptLine("customer", "where is my parcel??", now - timedelta(minutes=2)),
                    TranscriptLine("bot", "What's your order number?", now - timedelta(minutes=2))),
        language="en", priority="normal", complaint_score=0.12, promised_by=now + timedelta(minutes=20),
        promise_wording="within about 20 minutes", handoff_key=key, metadata={"route": "#support-queue"},
    )  # fmt: skip
    fields.update(overrides)
    return store.lifecycle.open_case(NewCase(**fields), now - timedelta(seconds=1))


@asynccontextmanager
async def serving(desk: Desk) -> AsyncIterator[str]:
    """Serve ``desk``'s HTTP app on a free port and run its loops; yield its base URL; then stop and close it."""
    runner = web.AppRunner(http_app(desk), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    stop = asyncio.Event()
    loops = asyncio.create_task(desk.run_loops(stop))
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop.set()
        await loops
        await runner.cleanup()
        await desk.close()
