"""A small local Telegram Bot API for tests: the real python-telegram-bot talks to it.

It runs an aiohttp server in its own thread on 127.0.0.1 (on a port the system
chooses as free), so async tests, sync tests and other processes (``rasa run``) can all
use it. It records every request, serves queued updates to ``getUpdates``, and answers
the next calls with an error when told to (429 flood control or 500).

Run it alone (for ``rasa run`` by hand)::

    python -m tests.fakes.telegram_api --port 6390
"""

from __future__ import annotations

import argparse
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

TOKEN = "123456:TEST-token_for-the-fake-api"
BOT_USER = {"id": 123456, "is_bot": True, "first_name": "FirstReply", "username": "firstreply_test_bot"}
_DESCRIPTIONS = {400: "Bad Request: chat not found", 403: "Forbidden: bot was blocked by the user"}
# Parameters PTB sends JSON-encoded inside the form.
_JSON_PARAMS = frozenset({"reply_markup", "allowed_updates", "reply_parameters", "link_preview_options"})


@dataclass(frozen=True)
class Call:
    """One request the fake received, and the status it answered with."""

    method: str
    params: dict[str, Any]
    status: int


@dataclass
class _Failure:
    method: str | None
    status: int
    retry_after: int


@dataclass
class _State:
    calls: list[Call] = field(default_factory=list)
    failures: list[_Failure] = field(default_factory=list)
    updates: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def free_port(host: str = "127.0.0.1") -> socket.socket:
    """Return a socket bound to a port the system chose as free (not yet listening)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((host, 0))
    return sock


class FakeTelegramAPI:
    """The Bot API methods FirstReply uses, answered locally and recorded.

    ``sendMessage`` ``sendPhoto`` ``sendDocument`` ``sendLocation`` ``answerCallbackQuery``
    ``setWebhook`` ``deleteWebhook`` ``getUpdates`` ``getMe``. Any other method gets 404.
    """

    def __init__(self, token: str = TOKEN) -> None:
        """Serve the bot with ``token``; requests with another token get 401."""
        self.token = token
        self._state = _State()
        self._message_ids = itertools.count(1000)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._sock: socket.socket | None = None
        self.port = 0

    # --- lifecycle -----------------------------------------------------------------

    def start(self, sock: socket.socket | None = None) -> FakeTelegramAPI:
        """Start serving in a thread; return once the port accepts connections."""
        self._sock = sock or free_port()
        self.port = self._sock.getsockname()[1]
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), name="fake-telegram-api", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the fake Telegram API did not start")
        return self

    def _serve(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        app = web.Application()
        app.router.add_route("POST", "/bot{token}/{method}", self._handle)
        app.router.add_route("GET", "/bot{token}/{method}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        loop.run_until_complete(self._runner.setup())
        assert self._sock is not None
        loop.run_until_complete(web.SockSite(self._runner, self._sock).start())
        ready.set()
        loop.run_forever()
        loop.run_until_complete(self._runner.cleanup())
        loop.close()

    def stop(self) -> None:
        """Stop the server and its thread."""
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop = self._thread = None

    def __enter__(self) -> FakeTelegramAPI:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """What to give python-telegram-bot as ``base_url``."""
        return f"http://127.0.0.1:{self.port}/bot"

    # --- what tests set up ---------------------------------------------------------

    def fail_next(self, times: int = 1, *, status: int = 429, retry_after: int = 1, method: str | None = None) -> None:
        """Answer the next ``times`` calls (of ``method``, or any) with an error."""
        with self._state.lock:
            self._state.failures.extend(_Failure(method, status, retry_after) for _ in range(times))

    def queue_update(self, update: Mapping[str, Any]) -> None:
        """Hand ``update`` out on the next ``getUpdates``."""
        with self._state.lock:
            self._state.updates.append(dict(update))

    # --- what tests read -----------------------------------------------------------

    def calls(self, method: str | None = None, *, answered: int | None = 200) -> list[Call]:
        """Return the recorded calls (of ``method``), by default only those answered 200."""
        with self._state.lock:
            return [
                call
                for call in self._state.calls
                if (method is None or call.method == method) and (answered is None or call.status == answered)
            ]

    def sent_texts(self, chat_id: int | str | None = None) -> list[str]:
        """Return the texts of successful ``sendMessage`` calls (to ``chat_id``), in order."""
        return [
            str(call.params["text"])
            for call in self.calls("sendMessage")
            if chat_id is None or str(call.params["chat_id"]) == str(chat_id)
        ]

    def wait_for(self, method: str, count: int, timeout: float = 10.0) -> list[Call]:
        """Block until ``count`` successful calls of ``method`` arrived; return them."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.calls(method)
            if len(found) >= count:
                return found
            time.sleep(0.02)
        raise AssertionError(f"{len(self.calls(method))} {method} call(s) after {timeout}s, expected {count}")

    async def wait_for_async(self, method: str, count: int, timeout: float = 10.0) -> list[Call]:
        """``wait_for`` for async tests (does not block the event loop)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.calls(method)
            if len(found) >= count:
                return found
            await asyncio.sleep(0.02)
        raise AssertionError(f"{len(self.calls(method))} {method} call(s) after {timeout}s, expected {count}")

    # --- the API -------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params = await _params(request)
        if request.match_info["token"] != self.token:
            return self._answer(method, params, 401, {"ok": False, "error_code": 401, "description": "Unauthorized"})
        failure = self._take_failure(method)
        if failure is not None:
            body: dict[str, Any] = {"ok": False, "error_code": failure.status}
            if failure.status == 429:
                body["description"] = f"Too Many Requests: retry after {failure.retry_after}"
                body["parameters"] = {"retry_after": failure.retry_after}
            else:
                body["description"] = _DESCRIPTIONS.get(failure.status, "Internal Server Error")
            return self._answer(method, params, failure.status, body)
        if method == "getUpdates":
            return self._answer(method, params, 200, {"ok": True, "result": await self._updates(params)})
        result = self._result(method, params)
        if result is None:
            body = {"ok": False, "error_code": 404, "description": "Not Found: method not found"}
            return self._answer(method, params, 404, body)
        return self._answer(method, params, 200, {"ok": True, "result": result})

    def _answer(self, method: str, params: dict[str, Any], status: int, body: dict[str, Any]) -> web.Response:
        with self._state.lock:
            self._state.calls.append(Call(method, params, status))
        return web.json_response(body, status=status)

    def _take_failure(self, method: str) -> _Failure | None:
        with self._state.lock:
            for index, failure in enumerate(self._state.failures):
                if failure.method in (None, method):
                    return self._state.failures.pop(index)
        return None

    def _result(self, method: str, params: dict[str, Any]) -> Any:
        if method == "getMe":
            return BOT_USER
        if method in ("answerCallbackQuery", "setWebhook", "deleteWebhook"):
            return True
        if method in ("sendMessage", "sendPhoto", "sendDocument", "sendLocation"):
            chat_id = int(params["chat_id"])
            message: dict[str, Any] = {
                "message_id": next(self._message_ids),
                "date": int(time.time()),
                "from": BOT_USER,
                "chat": {"id": chat_id, "type": "private" if chat_id > 0 else "supergroup"},
            }
            if "text" in params:
                message["text"] = params["text"]
            return message
        return None

    async def _updates(self, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        offset = int(params.get("offset") or 0)
        # Long polling, kept short: a test waits for at most half a second of nothing.
        deadline = time.monotonic() + min(float(params.get("timeout") or 0), 0.5)
        while True:
            with self._state.lock:
                # As Telegram does: asking for a later offset confirms (drops) earlier updates.
                self._state.updates = [u for u in self._state.updates if u["update_id"] >= offset]
                pending = list(self._state.updates)
            if pending or time.monotonic() >= deadline:
                return pending
            await asyncio.sleep(0.02)


async def _params(request: web.Request) -> dict[str, Any]:
    if request.content_type == "application/json":
        body = await request.json()
        return dict(body) if isinstance(body, dict) else {}
    form = await request.post()
    params: dict[str, Any] = {}
    for key, value in form.items():
        text = str(value)
        params[key] = json.loads(text) if key in _JSON_PARAMS else text
    params.update((key, value) for key, value in request.query.items() if key not in params)
    return params


def main() -> None:
    """Serve the fake API until interrupted (for ``rasa run`` by hand)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", args.port))
    api = FakeTelegramAPI().start(sock)
    print(f"fake Telegram Bot API at {api.base_url}, token {api.token}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        api.stop()


if __name__ == "__main__":
    main()
