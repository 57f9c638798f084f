"""A small local Telegram Bot API for tests: the real python-telegram-bot talks to it.

It runs an aiohttp server in its own thread on 127.0.0.1 (on a port the system
chooses as free), so async tests, sync tests and other processes (``rasa run``) can all
use it. It records every request and every message a chat received (``deliveries``),
serves queued updates to ``getUpdates``, and plays platform faults when told to: the
next calls answered with an error (``fail_next``: 429 flood control, 5xx, 403), or any
fault of ``tests.fakes.server`` for some calls or for a while (``fault``).

Run it alone (for ``rasa run`` by hand)::

    python -m tests.fakes.telegram_api --port 6390
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from tests.fakes.server import ERROR, UNKNOWN_METHOD, Call, Delivery, FakeServer, Fault, answers, free_port
from tests.fakes.server import serve_from_command_line

__all__ = ["BOT_USER", "TOKEN", "Call", "Delivery", "FakeTelegramAPI", "free_port"]

TOKEN = "123456:TEST-token_for-the-fake-api"


def rasa_credentials(bot_username: str | None = "firstreply_test_bot") -> str:
    """Return what a Rasa credentials.yml holds to run the Telegram connector against this fake.

    The variables are set to TOKEN, a webhook secret and ``FakeTelegramAPI.base_url``.
    """
    username = f"  bot_username: {bot_username}\n" if bot_username else ""
    return (
        "bot.channels.telegram.TelegramInput:\n  token: ${TELEGRAM_BOT_TOKEN}\n"
        "  webhook_secret: ${TELEGRAM_WEBHOOK_SECRET}\n  base_url: ${TELEGRAM_API_BASE_URL}\n" + username
    )


def run_webhook_answer(base_url: str, token: str, answer: Any) -> None:
    """Do what Telegram does with a webhook's answer: a ``method`` in it is run as a Bot API call.

    ``base_url`` and ``token`` name the Bot API the connector was given. The call's own answer
    goes nowhere (Telegram does not report it either). Anything else (``{"ok": true}``) is
    left alone.
    """
    if not isinstance(answer, Mapping) or not isinstance(answer.get("method"), str):
        return
    # As a form, the way python-telegram-bot sends its own calls (so the fake records the same strings).
    form = {key: value if isinstance(value, str) else json.dumps(value) for key, value in answer.items()}
    del form["method"]
    # urllib: a client of httpx's would load its certificates first on every call, in a burst's every poster.
    request = urllib.request.Request(f"{base_url}{token}/{answer['method']}", urllib.parse.urlencode(form).encode())
    with urllib.request.urlopen(request, timeout=10) as reply:
        reply.read()


RASA_CREDENTIALS = rasa_credentials()
BOT_USER = {"id": 123456, "is_bot": True, "first_name": "FirstReply", "username": "firstreply_test_bot"}
_DESCRIPTIONS = {
    400: "Bad Request: chat not found", 403: "Forbidden: bot was blocked by the user", 502: "Bad Gateway",
    503: "Service Unavailable",
}  # fmt: skip
# Parameters PTB sends JSON-encoded inside the form.
_JSON_PARAMS = frozenset({"reply_markup", "allowed_updates", "reply_parameters", "link_preview_options"})
_SENDING = ("sendMessage", "sendPhoto", "sendDocument", "sendLocation")


class FakeTelegramAPI(FakeServer):
    """The Bot API methods FirstReply uses, answered locally and recorded.

    ``sendMessage`` ``sendPhoto`` ``sendDocument`` ``sendLocation`` ``answerCallbackQuery``
    ``setWebhook`` ``deleteWebhook`` ``sendChatAction`` ``getUpdates`` ``getMe``. Any other method gets 404.
    """

    thread_name = "fake-telegram-api"
    method_route = "/bot{token}/{method}"

    def __init__(self, token: str = TOKEN) -> None:
        """Serve the bot with ``token``; requests with another token get 401."""
        super().__init__()
        self.token = token
        self._updates: list[dict[str, Any]] = []
        self._updates_lock = threading.Lock()
        self._message_ids = itertools.count(1000)

    @property
    def base_url(self) -> str:
        """What to give python-telegram-bot as ``base_url``."""
        return f"http://127.0.0.1:{self.port}/bot"

    # --- what tests set up ---------------------------------------------------------

    def fail_next(self, times: int = 1, *, status: int = 429, retry_after: int = 1, method: str | None = None) -> None:
        """Answer the next ``times`` calls (of ``method``, or any) with an error."""
        self.faults.add(ERROR, method=method, times=times, status=status, retry_after=retry_after)

    def queue_update(self, update: Mapping[str, Any]) -> None:
        """Hand ``update`` out on the next ``getUpdates``."""
        with self._updates_lock:
            self._updates.append(dict(update))

    def run_webhook_answer(self, answer: Any) -> None:
        """Do what Telegram does with a webhook's answer (``run_webhook_answer``), on this fake."""
        run_webhook_answer(self.base_url, self.token, answer)

    # --- what tests read -----------------------------------------------------------

    def sent_texts(self, chat_id: int | str | None = None) -> list[str]:
        """Return the texts of successful ``sendMessage`` calls (to ``chat_id``), in order."""
        return [
            str(call.params["text"])
            for call in self.calls("sendMessage")
            if chat_id is None or str(call.params["chat_id"]) == str(chat_id)
        ]

    # --- the protocol --------------------------------------------------------------

    async def _params(self, request: web.Request) -> dict[str, Any]:
        if request.content_type == "application/json":
            body = await request.json()
            return dict(body) if isinstance(body, dict) else {}
        form = await request.post()
        params: dict[str, Any] = {}
        for key, value in form.items():
            if isinstance(value, web.FileField):  # an upload: its name stands for it, its temp file is closed
                params[key] = value.filename
                value.file.close()
                continue
            text = str(value)
            params[key] = json.loads(text) if key in _JSON_PARAMS else text
        params.update((key, value) for key, value in request.query.items() if key not in params)
        return params

    def _refuse_caller(self, request: web.Request, method: str, params: dict[str, Any]) -> web.Response | None:
        if request.match_info["token"] == self.token:
            return None
        body = {"ok": False, "error_code": 401, "description": "Unauthorized"}
        self._record(Call(method, params, 401, body))
        return web.json_response(body, status=401)

    async def _before(self, method: str, params: dict[str, Any]) -> None:
        if method != "getUpdates":
            return
        # Long polling, kept short: a test waits for at most half a second of nothing.
        deadline = time.monotonic() + min(float(params.get("timeout") or 0), 0.5)
        while not self._pending(params) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    def _process(self, method: str, params: dict[str, Any]) -> tuple[int, dict[str, Any], Delivery | None]:
        handler = self.handler_for(method)
        if handler is UNKNOWN_METHOD:
            return 404, {"ok": False, "error_code": 404, "description": "Not Found: method not found"}, None
        delivery = None
        if method in _SENDING:
            delivery = Delivery(method, str(params["chat_id"]), str(params.get("text") or ""), params)
        return 200, {"ok": True, "result": handler(params)}, delivery

    def _refusal(self, fault: Fault) -> tuple[dict[str, Any], dict[str, str]]:
        body: dict[str, Any] = {"ok": False, "error_code": fault.status}
        if fault.status == 429:
            body["description"] = f"Too Many Requests: retry after {fault.retry_after}"
            body["parameters"] = {"retry_after": fault.retry_after}
        else:
            body["description"] = _DESCRIPTIONS.get(fault.status, "Internal Server Error")
        return body, {}

    # --- the API -------------------------------------------------------------------

    @answers("getMe")
    def _get_me(self, params: dict[str, Any]) -> Any:
        return BOT_USER

    @answers("answerCallbackQuery", "setWebhook", "deleteWebhook", "sendChatAction")
    def _done(self, params: dict[str, Any]) -> Any:
        return True

    @answers(*_SENDING)
    def _send(self, params: dict[str, Any]) -> Any:
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

    @answers("getUpdates")
    def _get_updates(self, params: dict[str, Any]) -> Any:
        return self._pending(params)

    def _pending(self, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        offset = int(params.get("offset") or 0)
        with self._updates_lock:
            # As Telegram does: asking for a later offset confirms (drops) earlier updates.
            self._updates = [u for u in self._updates if u["update_id"] >= offset]
            return list(self._updates)


def main() -> None:
    """Serve the fake API until interrupted (for ``rasa run`` by hand)."""
    serve_from_command_line(FakeTelegramAPI, "fake Telegram Bot API", __doc__)


if __name__ == "__main__":
    main()
