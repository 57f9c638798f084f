"""The fake Slack Web API of ``tests.fakes.slack_api``, taught what the agent desk uses.

Adds ``usergroups.users.list``, ``conversations.members``, ``conversations.list``,
``conversations.history``/``conversations.replies`` (with message metadata),
``chat.postEphemeral``, ``views.open`` and ``views.publish``; keeps the messages posted
so history reads them back; and can hold answers back (``delay_next``: the call is
taken and recorded at once, the answer comes later), to stop the desk mid-delivery.

For Socket Mode it serves ``apps.connections.open`` (with the app-level token) and the
WebSocket that URL names: it says ``hello`` to a client, sends it envelopes
(``send_envelope``) and records the client's acknowledgements (``acks``).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from tests.fakes.slack_api import TOKEN, Call, FakeSlackAPI

__all__ = ["TOKEN", "Call", "FakeDeskSlackAPI", "Posted"]


@dataclass
class Posted:
    """A message the fake holds (from ``chat.postMessage``, changed by ``chat.update``)."""

    channel: str
    ts: str
    text: str
    thread_ts: str | None = None
    blocks: list[dict[str, Any]] = field(default_factory=list)
    metadata: dict[str, Any] | None = None


class FakeDeskSlackAPI(FakeSlackAPI):
    """``FakeSlackAPI`` plus the desk's methods (see the module docstring)."""

    def __init__(self, token: str = TOKEN, app_token: str | None = None) -> None:
        """Serve the app with bot token ``token`` (and app-level token ``app_token`` for Socket Mode)."""
        super().__init__(token)
        self.app_token = app_token
        self.groups: dict[str, list[str]] = {}
        self.channel_members: dict[str, list[str]] = {}
        self.channel_names: dict[str, str] = {}
        self.messages: list[Posted] = []
        self.socket_url: str | None = None
        self._delays: list[tuple[str | None, float]] = []
        self._release: asyncio.Event | None = None
        self._sockets: list[web.WebSocketResponse] = []
        self.acks: list[dict[str, Any]] = []
        self._extra_lock = threading.Lock()

    # --- Socket Mode ----------------------------------------------------------------------

    def _serve(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        app = web.Application()
        app.router.add_route("GET", "/socket", self._socket)
        app.router.add_route("POST", "/api/{method}", self._handle)
        app.router.add_route("GET", "/api/{method}", self._handle)
        runner = web.AppRunner(app, access_log=None)
        loop.run_until_complete(runner.setup())
        assert self._sock is not None
        loop.run_until_complete(web.SockSite(runner, self._sock).start())
        self.socket_url = f"ws://127.0.0.1:{self.port}/socket"
        ready.set()
        loop.run_forever()
        for socket in list(self._sockets):
            loop.run_until_complete(socket.close())
        loop.run_until_complete(runner.cleanup())
        loop.close()

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        self._sockets.append(socket)
        await socket.send_json({"type": "hello", "num_connections": 1, "connection_info": {"app_id": "A0FIRSTREPLY"}})
        async for message in socket:
            if message.type == WSMsgType.TEXT:
                with self._extra_lock:
                    self.acks.append(json.loads(message.data))
        if socket in self._sockets:
            self._sockets.remove(socket)
        return socket

    @property
    def connected(self) -> int:
        """Return how many Socket Mode clients are connected."""
        return len(self._sockets)

    def send_envelope(self, kind: str, payload: dict[str, Any], envelope_id: str) -> None:
        """Send an envelope (``events_api``, ``interactive``, ``slash_commands``) to every connected client."""
        assert self._loop is not None
        envelope = {"envelope_id": envelope_id, "type": kind, "payload": payload, "accepts_response_payload": kind != "events_api"}

        async def send() -> None:
            for socket in list(self._sockets):
                await socket.send_json(envelope)

        asyncio.run_coroutine_threadsafe(send(), self._loop).result(5)

    def ack(self, envelope_id: str) -> dict[str, Any] | None:
        """Return the client's acknowledgement of an envelope, if it came."""
        with self._extra_lock:
            return next((ack for ack in self.acks if ack.get("envelope_id") == envelope_id), None)

    # --- what tests set up -----------------------------------------------------------

    def add_group(self, group_id: str, users: list[str]) -> None:
        """Make ``usergroups.users.list`` answer ``users`` for ``group_id``."""
        self.groups[group_id] = list(users)

    def add_channel(self, channel_id: str, name: str, members: list[str] | None = None) -> None:
        """Make a channel known to ``conversations.list`` (and ``conversations.members``)."""
        self.channel_names[channel_id] = name
        self.channel_members[channel_id] = list(members or [])

    def delay_next(self, times: int = 1, seconds: float = 5.0, method: str | None = None) -> None:
        """Take the next ``times`` calls (of ``method``) at once but answer only after ``seconds``."""
        with self._extra_lock:
            self._delays.extend((method, seconds) for _ in range(times))

    # --- what tests read ---------------------------------------------------------------

    def thread(self, channel: str, thread_ts: str) -> list[Posted]:
        """Return the replies posted in a thread, in order."""
        with self._extra_lock:
            return [m for m in self.messages if m.channel == channel and m.thread_ts == thread_ts]

    def top_level(self, channel: str) -> list[Posted]:
        """Return the messages posted in a channel outside threads, in order."""
        with self._extra_lock:
            return [m for m in self.messages if m.channel == channel and m.thread_ts is None]

    def message(self, channel: str, ts: str) -> Posted:
        """Return one message as it is now (after updates)."""
        with self._extra_lock:
            return next(m for m in self.messages if m.channel == channel and m.ts == ts)

    def ephemerals(self, user: str | None = None) -> list[dict[str, Any]]:
        """Return the parameters of successful ``chat.postEphemeral`` calls (to ``user``)."""
        return [c.params for c in self.calls("chat.postEphemeral") if user is None or c.params.get("user") == user]

    # --- the API -------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        if method == "apps.connections.open":
            return await self._connections_open(request)
        delay = None
        with self._extra_lock:
            for index, (wanted, seconds) in enumerate(self._delays):
                if wanted in (None, method):
                    delay = self._delays.pop(index)[1]
                    break
        answer = await super()._handle(request)
        if delay is not None:
            if self._release is None:
                self._release = asyncio.Event()
            try:
                await asyncio.wait_for(self._release.wait(), delay)
            except asyncio.TimeoutError:
                pass
        return answer

    def stop(self) -> None:
        """Answer the calls still held back, then stop the server and its thread."""
        if self._loop is not None and self._release is not None:
            self._loop.call_soon_threadsafe(self._release.set)
            time.sleep(0.1)
        super().stop()

    async def _connections_open(self, request: web.Request) -> web.Response:
        if self.app_token is None or request.headers.get("Authorization") != f"Bearer {self.app_token}":
            return self._answer("apps.connections.open", {}, 200, {"ok": False, "error": "invalid_auth"})
        if self.socket_url is None:
            return self._answer("apps.connections.open", {}, 200, {"ok": False, "error": "internal_error"})
        return self._answer("apps.connections.open", {}, 200, {"ok": True, "url": self.socket_url})

    def _result(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        if method == "usergroups.users.list":
            group = self.groups.get(str(params.get("usergroup")))
            return {"ok": True, "users": group} if group is not None else {"ok": False, "error": "no_such_subteam"}
        if method == "conversations.members":
            members = self.channel_members.get(str(params.get("channel")))
            if members is None:
                return {"ok": False, "error": "channel_not_found"}
            return {"ok": True, "members": members, "response_metadata": {"next_cursor": ""}}
        if method == "conversations.list":
            channels = [{"id": cid, "name": name} for cid, name in self.channel_names.items()]
            return {"ok": True, "channels": channels, "response_metadata": {"next_cursor": ""}}
        if method in ("conversations.history", "conversations.replies"):
            return self._history(method, params)
        if method == "chat.postEphemeral":
            if not params.get("channel") or not params.get("user"):
                return {"ok": False, "error": "channel_not_found"}
            return {"ok": True, "message_ts": "1700000000.000001"}
        if method in ("views.open", "views.publish"):
            view = params.get("view")
            return {"ok": True, "view": {"id": "V0DESK", **(view if isinstance(view, dict) else {})}}
        result = super()._result(method, params)
        if result.get("ok") and method == "chat.postMessage":
            posted = Posted(
                channel=str(result["channel"]), ts=str(result["ts"]), text=str(params.get("text") or ""),
                thread_ts=str(params["thread_ts"]) if params.get("thread_ts") else None,
                blocks=list(params.get("blocks") or []), metadata=params.get("metadata"),
            )  # fmt: skip
            with self._extra_lock:
                self.messages.append(posted)
        if result.get("ok") and method == "chat.update":
            with self._extra_lock:
                found = [m for m in self.messages if m.channel == result["channel"] and m.ts == result["ts"]]
                if not found:
                    return {"ok": False, "error": "message_not_found"}
                found[0].text = str(params.get("text") or "")
                found[0].blocks = list(params.get("blocks") or [])
        return result

    def _history(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        channel = str(params.get("channel"))
        if channel not in self.channel_names:
            return {"ok": False, "error": "channel_not_found"}
        with_metadata = str(params.get("include_all_metadata")).lower() in ("true", "1")
        with self._extra_lock:
            if method == "conversations.history":
                found = [m for m in self.messages if m.channel == channel and m.thread_ts is None]
            else:
                ts = str(params.get("ts"))
                found = [m for m in self.messages if m.channel == channel and (m.ts == ts or m.thread_ts == ts)]
        listed = []
        for posted in found:
            item: dict[str, Any] = {"type": "message", "ts": posted.ts, "text": posted.text}
            if posted.thread_ts:
                item["thread_ts"] = posted.thread_ts
            if with_metadata and posted.metadata:
                item["metadata"] = posted.metadata
            listed.append(item)
        if method == "conversations.history":
            listed.reverse()  # newest first, as Slack answers
        return {"ok": True, "messages": listed, "has_more": False, "response_metadata": {"next_cursor": ""}}
