"""A small local Slack Web API for tests: the real slack_sdk ``AsyncWebClient`` talks to it.

An aiohttp server in its own thread on 127.0.0.1 (a port the OS picks), so async tests,
sync tests and other processes (``rasa run``) can all use it. It records every request
and answers the next calls with an error when told to (429 with Retry-After, or 500).
Shaped after bolt-python's ``tests/mock_web_api_server``.

Run it alone (for ``rasa run`` by hand)::

    python -m tests.fakes.slack_api
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

TOKEN = "xoxb-1000-2000-fakeBotTokenForTests"
TEAM_ID = "T0BRAND"
BOT_USER_ID = "U0FIRSTREPLY"
BOT_ID = "B0FIRSTREPLY"
APP_ID = "A0FIRSTREPLY"
# Parameters slack_sdk may send JSON-encoded inside a form.
_JSON_PARAMS = frozenset({"blocks", "attachments"})
# ``fail_next(status=DROP_CONNECTION)``: close the connection without answering.
DROP_CONNECTION = 0
_ERRORS = {429: "ratelimited", 500: "internal_error", 503: "service_unavailable"}


@dataclass(frozen=True)
class Call:
    """One request the fake received, and the HTTP status and body it answered with."""

    method: str
    params: dict[str, Any]
    status: int
    answer: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass
class _Failure:
    method: str | None
    status: int
    retry_after: int
    error: str | None


@dataclass
class _State:
    calls: list[Call] = field(default_factory=list)
    failures: list[_Failure] = field(default_factory=list)
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def dm_channel_of(user_id: str) -> str:
    """Return the DM channel id the fake gives the app's DM with ``user_id``."""
    return "D" + user_id[1:]


class FakeSlackAPI:
    """The Web API methods FirstReply uses, answered locally and recorded.

    ``auth.test`` ``chat.postMessage`` ``chat.update`` ``users.info`` ``conversations.open``.
    Any other method gets ``unknown_method``; a wrong token gets ``invalid_auth`` (both
    HTTP 200 with ``ok: false``, as Slack answers).
    """

    def __init__(self, token: str = TOKEN) -> None:
        """Serve the app with bot token ``token``."""
        self.token = token
        self._state = _State()
        self._ts = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self.port = 0

    # --- lifecycle -----------------------------------------------------------------

    def start(self, sock: socket.socket | None = None) -> FakeSlackAPI:
        """Start serving in a thread (on ``sock``, else a free port); return once it accepts."""
        if sock is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
        self._sock = sock
        self.port = int(sock.getsockname()[1])
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), name="fake-slack-api", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the fake Slack API did not start")
        return self

    def _serve(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        app = web.Application()
        app.router.add_route("POST", "/api/{method}", self._handle)
        app.router.add_route("GET", "/api/{method}", self._handle)
        runner = web.AppRunner(app, access_log=None)
        loop.run_until_complete(runner.setup())
        assert self._sock is not None
        loop.run_until_complete(web.SockSite(runner, self._sock).start())
        ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    def stop(self) -> None:
        """Stop the server and its thread."""
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop = self._thread = None

    def __enter__(self) -> FakeSlackAPI:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """What to give slack_sdk as ``base_url``."""
        return f"http://127.0.0.1:{self.port}/api/"

    # --- what tests set up ---------------------------------------------------------

    def add_user(self, user_id: str, real_name: str, display_name: str = "", locale: str | None = None) -> None:
        """Make ``users.info`` know ``user_id``."""
        user: dict[str, Any] = {
            "id": user_id,
            "team_id": TEAM_ID,
            "name": real_name.split(" ")[0].lower(),
            "real_name": real_name,
            "is_bot": False,
            "profile": {"real_name": real_name, "display_name": display_name},
        }
        if locale is not None:
            user["locale"] = locale
        with self._state.lock:
            self._state.users[user_id] = user

    def fail_next(
        self, times: int = 1, *, status: int = 429, retry_after: int = 1, method: str | None = None,
        error: str | None = None,
    ) -> None:  # fmt: skip
        """Answer the next ``times`` calls (of ``method``, or any) with HTTP ``status``.

        ``error`` names the Slack error in the body (``ok: false``); with ``status=200``
        that is how Slack refuses a call (``cannot_dm_bot``, ``channel_not_found``).
        """
        with self._state.lock:
            self._state.failures.extend(_Failure(method, status, retry_after, error) for _ in range(times))

    # --- what tests read -----------------------------------------------------------

    def calls(self, method: str | None = None, *, answered: int | None = 200) -> list[Call]:
        """Return the recorded calls (of ``method``), by default only those answered 200."""
        with self._state.lock:
            return [
                call
                for call in self._state.calls
                if (method is None or call.method == method) and (answered is None or call.status == answered)
            ]

    def posted(self, channel: str | None = None) -> list[dict[str, Any]]:
        """Return the parameters of successful ``chat.postMessage`` calls (to ``channel``), in order."""
        return [
            call.params
            for call in self.calls("chat.postMessage")
            if channel is None or call.params.get("channel") == channel
        ]

    def posted_texts(self, channel: str | None = None) -> list[str]:
        """Return the ``text`` of each successful ``chat.postMessage`` (to ``channel``)."""
        return [str(params["text"]) for params in self.posted(channel)]

    def wait_for(self, method: str, count: int, timeout: float = 10.0) -> list[Call]:
        """Block until ``count`` successful calls of ``method`` arrived; return them."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.calls(method)
            if len(found) >= count:
                return found
            time.sleep(0.02)
        raise AssertionError(f"{len(self.calls(method))} {method} call(s) after {timeout}s, expected {count}")

    # --- the API -------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params = await _params(request)
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return self._answer(method, params, 200, {"ok": False, "error": "invalid_auth"})
        failure = self._take_failure(method)
        if failure is not None and failure.status == DROP_CONNECTION:
            with self._state.lock:
                self._state.calls.append(Call(method, params, DROP_CONNECTION))
            assert request.transport is not None
            request.transport.close()  # no answer at all: the client sees the server disconnect
            return web.Response()
        if failure is not None:
            headers = {"Retry-After": str(failure.retry_after)} if failure.status == 429 else {}
            body = {"ok": False, "error": failure.error or _ERRORS.get(failure.status, "fatal_error")}
            return self._answer(method, params, failure.status, body, headers)
        return self._answer(method, params, 200, self._result(method, params))

    def _answer(
        self, method: str, params: dict[str, Any], status: int, body: dict[str, Any],
        headers: Mapping[str, str] | None = None,
    ) -> web.Response:  # fmt: skip
        with self._state.lock:
            self._state.calls.append(Call(method, params, status, body))
        return web.json_response(body, status=status, headers=headers)

    def _take_failure(self, method: str) -> _Failure | None:
        with self._state.lock:
            for index, failure in enumerate(self._state.failures):
                if failure.method in (None, method):
                    return self._state.failures.pop(index)
        return None

    def _result(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        if method == "auth.test":
            return {"ok": True, "url": "https://brand.slack.com/", "team": "Brand", "user": "firstreply",
                    "team_id": TEAM_ID, "user_id": BOT_USER_ID, "bot_id": BOT_ID}  # fmt: skip
        if method in ("chat.postMessage", "chat.update"):
            channel = params.get("channel")
            if not channel:
                return {"ok": False, "error": "channel_not_found"}
            if not params.get("text") and not params.get("blocks"):
                return {"ok": False, "error": "no_text"}
            ts = str(params["ts"]) if method == "chat.update" else f"{int(time.time())}.{next(self._ts):06d}"
            message = {"type": "message", "user": BOT_USER_ID, "bot_id": BOT_ID, "text": params.get("text", ""),
                       "ts": ts}  # fmt: skip
            if params.get("blocks"):
                message["blocks"] = params["blocks"]
            return {"ok": True, "channel": channel, "ts": ts, "message": message}
        if method == "users.info":
            with self._state.lock:
                user = self._state.users.get(str(params.get("user")))
            return {"ok": True, "user": user} if user else {"ok": False, "error": "user_not_found"}
        if method == "conversations.open":
            users = str(params.get("users") or "")
            if not users or "," in users:
                return {"ok": False, "error": "not_allowed" if users else "users_list_not_supplied"}
            return {"ok": True, "channel": {"id": dm_channel_of(users)}}
        return {"ok": False, "error": "unknown_method"}


async def _params(request: web.Request) -> dict[str, Any]:
    params: dict[str, Any] = dict(request.query)
    if request.content_type == "application/json":
        body = await request.json()
        if isinstance(body, dict):
            params.update(body)
        return params
    form = await request.post()
    for key, value in form.items():
        text = str(value)
        params[key] = json.loads(text) if key in _JSON_PARAMS else text
    return params


def main() -> None:
    """Serve the fake API until interrupted (for ``rasa run`` by hand)."""
    api = FakeSlackAPI().start()
    print(f"fake Slack Web API at {api.base_url}, token {api.token}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        api.stop()


if __name__ == "__main__":
    main()
