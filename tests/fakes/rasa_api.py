"""A small local Rasa HTTP API for the desk's tests: records the events it appends and the intents it triggers.

Served from its own thread by ``tests.fakes.server`` (so a desk in the test's event loop
and a desk in another process can both call it); ``url`` is what the desk takes as
``RASA_URL``. Every request must carry ``?token=TOKEN``; ``fail_next`` answers that many
requests with 503 first.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from aiohttp import web

from tests.fakes.server import FakeServer, route

__all__ = ["TOKEN", "FakeRasa"]

TOKEN = "rasa-api-token"


class FakeRasa(FakeServer):
    """Records what the desk sends to Rasa's HTTP API (tracker events, triggered intents)."""

    thread_name = "fake-rasa-api"
    method_route = None

    def __init__(self, token: str = TOKEN) -> None:
        """Serve callers that give ``token``; ``start`` serves."""
        super().__init__()
        self.token = token
        self.events: dict[str, list[dict[str, Any]]] = {}
        self.requests: list[tuple[str, str, Any]] = []
        self.fail_next = 0
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        """What the desk takes as ``RASA_URL``."""
        return f"http://127.0.0.1:{self.port}"

    async def _answer(self, request: web.Request, answer: Callable[[str, Any, web.Request], Any]) -> web.Response:
        """Check the token (and ``fail_next``), then answer with ``answer(conversation id, JSON body, request)``."""
        if request.query.get("token") != self.token:
            return web.json_response({"message": "unauthorized"}, status=401)
        with self._lock:
            if self.fail_next:
                self.fail_next -= 1
                return web.json_response({"message": "busy"}, status=503)
        body = await request.json() if request.method == "POST" else None
        with self._lock:
            return web.json_response(answer(request.match_info["cid"], body, request))

    @route("POST", "/conversations/{cid}/tracker/events")
    async def _append(self, request: web.Request) -> web.Response:
        return await self._answer(request, self._appended)

    def _appended(self, cid: str, events: Any, request: web.Request) -> dict[str, Any]:
        self.requests.append(("events", cid, events))
        self.events.setdefault(cid, []).extend(events)
        return {"sender_id": cid}

    @route("POST", "/conversations/{cid}/trigger_intent")
    async def _trigger(self, request: web.Request) -> web.Response:
        return await self._answer(request, self._triggered)

    def _triggered(self, cid: str, body: Any, request: web.Request) -> dict[str, Any]:
        self.requests.append(("trigger", cid, (body, request.query.get("output_channel"))))
        return {"tracker": {"sender_id": cid}, "messages": []}

    @route("GET", "/conversations/{cid}/tracker")
    async def _tracker(self, request: web.Request) -> web.Response:
        return await self._answer(request, lambda cid, _body, _request: {"events": list(self.events.get(cid, []))})
