"""A small local Slack Web API for tests: the real slack_sdk ``AsyncWebClient`` talks to it.

An aiohttp server in its own thread on 127.0.0.1 (a port the OS picks), so async tests,
sync tests and other processes (``rasa run``) can all use it. It records every request,
keeps the messages posted (with their ``metadata``) so ``conversations.history`` and
``conversations.replies`` read them back (``include_all_metadata``), records what reached
the customer (``deliveries``), and plays platform faults when told to: the next calls
answered with an error (``fail_next``: 429 with Retry-After, 5xx, a Slack error such as
``channel_not_found``, or ``DROP_CONNECTION``), or any fault of ``tests.fakes.server``
for some calls or for a while (``fault``). Shaped after bolt-python's
``tests/mock_web_api_server``.

Run it alone (for ``rasa run`` by hand)::

    python -m tests.fakes.slack_api
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.server import DROP, ERROR, NO_ANSWER, UNKNOWN_METHOD, Call, Delivery, FakeServer, Fault, answers
from tests.fakes.server import serve_until_interrupted

__all__ = ["DROP_CONNECTION", "TOKEN", "Call", "Delivery", "FakeSlackAPI", "Posted", "dm_channel_of", "signed_headers"]

TOKEN = "xoxb-1000-2000-fakeBotTokenForTests"
TEAM_ID = "T0BRAND"
BOT_USER_ID = "U0FIRSTREPLY"
BOT_ID = "B0FIRSTREPLY"
APP_ID = "A0FIRSTREPLY"
# What a Rasa credentials.yml holds to run the Slack DM connector against this fake (values from the environment).
RASA_CREDENTIALS = """\
bot.channels.slack.SlackDMInput:
  token: ${SLACK_BOT_TOKEN}
  signing_secret: ${SLACK_SIGNING_SECRET}
  base_url: ${SLACK_API_BASE_URL}
"""
# Parameters slack_sdk may send JSON-encoded inside a form.
_JSON_PARAMS = frozenset({"blocks", "attachments", "metadata"})
# ``fail_next(status=DROP_CONNECTION)``: close the connection without answering.
DROP_CONNECTION = NO_ANSWER
_ERRORS = {429: "ratelimited", 500: "internal_error", 502: "bad_gateway", 503: "service_unavailable"}
_TRUE = ("true", "1")


@dataclass
class Posted:
    """A message the fake holds (from ``chat.postMessage``, changed by ``chat.update``)."""

    channel: str
    ts: str
    text: str
    thread_ts: str | None = None
    blocks: list[dict[str, Any]] = field(default_factory=list)
    metadata: dict[str, Any] | None = None


def signed_headers(secret: str, body: bytes, content_type: str) -> dict[str, str]:
    """Return the headers Slack sends with ``body``: ``X-Slack-Signature: v0=HMAC-SHA256(v0:{ts}:{body})``."""
    stamp = str(int(time.time()))
    digest = hmac.new(secret.encode(), f"v0:{stamp}:".encode() + body, hashlib.sha256).hexdigest()
    return {"Content-Type": content_type, "X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": f"v0={digest}"}


def dm_channel_of(user_id: str) -> str:
    """Return the DM channel id the fake gives the app's DM with ``user_id``."""
    return "D" + user_id[1:]


class FakeSlackAPI(FakeServer):
    """The Web API methods FirstReply uses, answered locally and recorded.

    ``auth.test`` ``chat.postMessage`` ``chat.update`` ``users.info`` ``conversations.open``
    ``conversations.history`` ``conversations.replies``. Any other method gets
    ``unknown_method``; a wrong token gets ``invalid_auth`` (both HTTP 200 with
    ``ok: false``, as Slack answers).
    """

    thread_name = "fake-slack-api"
    # Whether ``posted()`` shows the (invisible) message metadata of each post.
    posted_metadata = False

    def __init__(self, token: str = TOKEN) -> None:
        """Serve the app with bot token ``token``."""
        super().__init__()
        self.token = token
        self.messages: list[Posted] = []
        self._users: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._ts = itertools.count(1)

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
        with self._lock:
            self._users[user_id] = user

    def fail_next(
        self, times: int = 1, *, status: int = 429, retry_after: int = 1, method: str | None = None,
        error: str | None = None,
    ) -> None:  # fmt: skip
        """Answer the next ``times`` calls (of ``method``, or any) with HTTP ``status``.

        ``error`` names the Slack error in the body (``ok: false``); with ``status=200``
        that is how Slack refuses a call (``cannot_dm_bot``, ``channel_not_found``).
        ``DROP_CONNECTION`` closes the connection without answering.
        """
        mode = DROP if status == DROP_CONNECTION else ERROR
        self.faults.add(mode, method=method, times=times, status=status, retry_after=retry_after, error=error)

    # --- what tests read -----------------------------------------------------------

    def posted(self, channel: str | None = None) -> list[dict[str, Any]]:
        """Return the parameters of successful ``chat.postMessage`` calls (to ``channel``), in order.

        Message metadata, which no one sees in Slack, is left out unless the class says
        ``posted_metadata`` (the desk's fake does: its tests read the idempotency keys).
        """
        return [
            {key: value for key, value in call.params.items() if self.posted_metadata or key != "metadata"}
            for call in self.calls("chat.postMessage")
            if channel is None or call.params.get("channel") == channel
        ]

    def posted_texts(self, channel: str | None = None) -> list[str]:
        """Return the ``text`` of each successful ``chat.postMessage`` (to ``channel``)."""
        return [str(params["text"]) for params in self.posted(channel)]

    def thread(self, channel: str, thread_ts: str) -> list[Posted]:
        """Return the replies posted in a thread, in order."""
        with self._lock:
            return [m for m in self.messages if m.channel == channel and m.thread_ts == thread_ts]

    def top_level(self, channel: str) -> list[Posted]:
        """Return the messages posted in a channel outside threads, in order."""
        with self._lock:
            return [m for m in self.messages if m.channel == channel and m.thread_ts is None]

    def message(self, channel: str, ts: str) -> Posted:
        """Return one message as it is now (after updates)."""
        with self._lock:
            return next(m for m in self.messages if m.channel == channel and m.ts == ts)

    # --- the protocol --------------------------------------------------------------

    async def _params(self, request: web.Request) -> dict[str, Any]:
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

    def _refuse_caller(self, request: web.Request, method: str, params: dict[str, Any]) -> web.Response | None:
        if request.headers.get("Authorization") == f"Bearer {self.token}":
            return None
        body = {"ok": False, "error": "invalid_auth"}
        self._record(Call(method, params, 200, body))
        return web.json_response(body)

    def _process(self, method: str, params: dict[str, Any]) -> tuple[int, dict[str, Any], Delivery | None]:
        result = self._result(method, params)
        delivery = None
        if result.get("ok") and method == "chat.postMessage":
            delivery = Delivery(method, str(result["channel"]), str(params.get("text") or ""), params)
        return 200, result, delivery

    def _refusal(self, fault: Fault) -> tuple[dict[str, Any], dict[str, str]]:
        headers = {"Retry-After": str(fault.retry_after)} if fault.status == 429 else {}
        return {"ok": False, "error": fault.error or _ERRORS.get(fault.status, "fatal_error")}, headers

    def _result(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """Return the body Slack answers a call with (``ok`` and the method's fields)."""
        handler = self.handler_for(method)
        return {"ok": False, "error": "unknown_method"} if handler is UNKNOWN_METHOD else handler(params)

    def _knows(self, channel: str) -> bool:
        """Return whether the app can read ``channel``'s history (its DMs, or a channel it posted in)."""
        return channel.startswith("D") or any(m.channel == channel for m in self.messages)

    # --- the API -------------------------------------------------------------------

    @answers("auth.test")
    def _auth_test(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "url": "https://brand.slack.com/", "team": "Brand", "user": "firstreply",
                "team_id": TEAM_ID, "user_id": BOT_USER_ID, "bot_id": BOT_ID}  # fmt: skip

    @answers("chat.postMessage")
    def _post_message(self, params: dict[str, Any]) -> dict[str, Any]:
        return self._post("chat.postMessage", params)

    @answers("chat.update")
    def _update(self, params: dict[str, Any]) -> dict[str, Any]:
        return self._post("chat.update", params)

    @answers("conversations.history")
    def _conversation_history(self, params: dict[str, Any]) -> dict[str, Any]:
        return self._history("conversations.history", params)

    @answers("conversations.replies")
    def _conversation_replies(self, params: dict[str, Any]) -> dict[str, Any]:
        return self._history("conversations.replies", params)

    @answers("users.info")
    def _users_info(self, params: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            user = self._users.get(str(params.get("user")))
        return {"ok": True, "user": user} if user else {"ok": False, "error": "user_not_found"}

    @answers("conversations.open")
    def _conversations_open(self, params: dict[str, Any]) -> dict[str, Any]:
        users = str(params.get("users") or "")
        if not users or "," in users:
            return {"ok": False, "error": "not_allowed" if users else "users_list_not_supplied"}
        return {"ok": True, "channel": {"id": dm_channel_of(users)}}

    def _post(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        channel = params.get("channel")
        if not channel:
            return {"ok": False, "error": "channel_not_found"}
        if not params.get("text") and not params.get("blocks"):
            return {"ok": False, "error": "no_text"}
        metadata = params.get("metadata")
        if metadata is not None and (not isinstance(metadata, dict) or not metadata.get("event_type")):
            return {"ok": False, "error": "invalid_metadata_format"}
        ts = str(params["ts"]) if method == "chat.update" else f"{int(time.time())}.{next(self._ts):06d}"
        message = {"type": "message", "user": BOT_USER_ID, "bot_id": BOT_ID, "text": params.get("text", ""), "ts": ts}
        if params.get("blocks"):
            message["blocks"] = params["blocks"]
        with self._lock:
            if method == "chat.update":
                found = [m for m in self.messages if m.channel == channel and m.ts == ts]
                if found:
                    found[0].text = str(params.get("text") or "")
                    found[0].blocks = list(params.get("blocks") or [])
            else:
                self.messages.append(
                    Posted(
                        channel=str(channel), ts=ts, text=str(params.get("text") or ""),
                        thread_ts=str(params["thread_ts"]) if params.get("thread_ts") else None,
                        blocks=list(params.get("blocks") or []), metadata=metadata,
                    )  # fmt: skip
                )
        return {"ok": True, "channel": channel, "ts": ts, "message": message}

    def _history(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        channel = str(params.get("channel"))
        with self._lock:
            if not self._knows(channel):
                return {"ok": False, "error": "channel_not_found"}
            if method == "conversations.history":
                found = [m for m in self.messages if m.channel == channel and m.thread_ts is None]
            else:
                ts = str(params.get("ts"))
                found = [m for m in self.messages if m.channel == channel and (m.ts == ts or m.thread_ts == ts)]
        oldest = float(params.get("oldest") or 0)
        with_metadata = str(params.get("include_all_metadata")).lower() in _TRUE
        listed = []
        for posted in found:
            if float(posted.ts) < oldest:
                continue
            item: dict[str, Any] = {"type": "message", "user": BOT_USER_ID, "bot_id": BOT_ID, "ts": posted.ts,
                                    "text": posted.text}  # fmt: skip
            if posted.thread_ts:
                item["thread_ts"] = posted.thread_ts
            if with_metadata and posted.metadata:
                item["metadata"] = posted.metadata
            listed.append(item)
        if method == "conversations.history":
            listed.reverse()  # newest first, as Slack answers
        # Pages as Slack does: ``limit`` at a time, ``next_cursor`` to go on.
        limit = int(params.get("limit") or 100)
        start = int(params.get("cursor") or 0)
        page = listed[start : start + limit]
        cursor = str(start + limit) if start + limit < len(listed) else ""
        return {"ok": True, "messages": page, "has_more": bool(cursor), "response_metadata": {"next_cursor": cursor}}


def main() -> None:
    """Serve the fake API until interrupted (for ``rasa run`` by hand)."""
    serve_until_interrupted(FakeSlackAPI().start(), "fake Slack Web API")


if __name__ == "__main__":
    main()
