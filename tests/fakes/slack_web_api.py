"""The fake Slack Web API of ``tests.fakes.slack_api``, taught what the agent desk uses.

Adds ``usergroups.users.list``, ``conversations.members``, ``conversations.list``,
``chat.postEphemeral``, ``views.open`` and ``views.publish``; reads history only of the
channels it was told about (``add_channel``) and DMs; and can hold answers back
(``delay_next``: the call is taken and recorded at once, the answer comes later), to
stop the desk mid-delivery.

For Socket Mode it serves ``apps.connections.open`` (with the app-level token) and the
WebSocket that URL names: it says ``hello`` to a client, sends it envelopes
(``send_envelope``) and records the client's acknowledgements (``acks``).
"""

from __future__ import annotations

import json
import threading
from typing import Any

from aiohttp import WSMsgType, web

from tests.fakes.server import ACCEPT_HOLD, Call, answers, route
from tests.fakes.slack_api import TOKEN, FakeSlackAPI, Posted

__all__ = ["TOKEN", "Call", "FakeDeskSlackAPI", "Posted"]


class FakeDeskSlackAPI(FakeSlackAPI):
    """``FakeSlackAPI`` plus the desk's methods (see the module docstring)."""

    thread_name = "fake-slack-desk-api"
    posted_metadata = True

    def __init__(self, token: str = TOKEN, app_token: str | None = None) -> None:
        """Serve the app with bot token ``token`` (and app-level token ``app_token`` for Socket Mode)."""
        super().__init__(token)
        self.app_token = app_token
        self.groups: dict[str, list[str]] = {}
        self.channel_members: dict[str, list[str]] = {}
        self.channel_names: dict[str, str] = {}
        self.socket_url: str | None = None
        self._sockets: list[web.WebSocketResponse] = []
        self.acks: list[dict[str, Any]] = []
        self._extra_lock = threading.Lock()

    # --- Socket Mode ----------------------------------------------------------------------

    def _started(self) -> None:
        self.socket_url = f"ws://127.0.0.1:{self.port}/socket"

    async def _stopping(self) -> None:
        for socket in list(self._sockets):
            await socket.close()

    @route("GET", "/socket")
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
        envelope = {"envelope_id": envelope_id, "type": kind, "payload": payload, "accepts_response_payload": kind != "events_api"}

        async def send() -> None:
            for socket in list(self._sockets):
                await socket.send_json(envelope)

        self.run(send)

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
        self.faults.add(ACCEPT_HOLD, method=method, times=times, hold=seconds)

    # --- what tests read ---------------------------------------------------------------

    def ephemerals(self, user: str | None = None) -> list[dict[str, Any]]:
        """Return the parameters of successful ``chat.postEphemeral`` calls (to ``user``)."""
        return [c.params for c in self.calls("chat.postEphemeral") if user is None or c.params.get("user") == user]

    # --- the API -------------------------------------------------------------------------

    @route("POST", "/api/apps.connections.open")
    @route("GET", "/api/apps.connections.open")
    async def _connections_open(self, request: web.Request) -> web.Response:
        if self.app_token is None or request.headers.get("Authorization") != f"Bearer {self.app_token}":
            body = {"ok": False, "error": "invalid_auth"}
        elif self.socket_url is None:
            body = {"ok": False, "error": "internal_error"}
        else:
            body = {"ok": True, "url": self.socket_url}
        self._record(Call("apps.connections.open", {}, 200, body))
        return web.json_response(body)

    def _knows(self, channel: str) -> bool:
        return channel in self.channel_names or channel.startswith("D")

    @answers("usergroups.users.list")
    def _usergroup_users(self, params: dict[str, Any]) -> dict[str, Any]:
        group = self.groups.get(str(params.get("usergroup")))
        return {"ok": True, "users": group} if group is not None else {"ok": False, "error": "no_such_subteam"}

    @answers("conversations.members")
    def _conversation_members(self, params: dict[str, Any]) -> dict[str, Any]:
        members = self.channel_members.get(str(params.get("channel")))
        if members is None:
            return {"ok": False, "error": "channel_not_found"}
        return {"ok": True, "members": members, "response_metadata": {"next_cursor": ""}}

    @answers("conversations.list")
    def _conversations_list(self, params: dict[str, Any]) -> dict[str, Any]:
        channels = [{"id": cid, "name": name} for cid, name in self.channel_names.items()]
        return {"ok": True, "channels": channels, "response_metadata": {"next_cursor": ""}}

    @answers("chat.postEphemeral")
    def _post_ephemeral(self, params: dict[str, Any]) -> dict[str, Any]:
        if not params.get("channel") or not params.get("user"):
            return {"ok": False, "error": "channel_not_found"}
        return {"ok": True, "message_ts": "1700000000.000001"}

    @answers("views.open", "views.publish")
    def _view(self, params: dict[str, Any]) -> dict[str, Any]:
        view = params.get("view")
        return {"ok": True, "view": {"id": "V0DESK", **(view if isinstance(view, dict) else {})}}

    def _update(self, params: dict[str, Any]) -> dict[str, Any]:
        # Unlike the customer-facing fake, the desk's says when the message to change is not there.
        with self._lock:
            found = any(m.channel == params.get("channel") and m.ts == str(params.get("ts")) for m in self.messages)
        if not found:
            return {"ok": False, "error": "message_not_found"}
        return super()._update(params)
