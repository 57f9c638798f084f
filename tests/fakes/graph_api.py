"""A local fake of Meta's Graph API for the Messenger and Instagram connectors, and the webhooks Meta sends.

It speaks the real shapes (Meta's Send API, comments and profile references): a Page's or
Instagram account's ``POST /v21.0/{id}/messages`` (text, quick replies, button
templates, ``sender_action``, ``recipient.comment_id`` private replies, ``MESSAGE_TAG``),
``POST /v21.0/{comment}/comments`` and ``/replies`` (public replies), ``GET /v21.0/{id}``
(profiles, a media's permalink), the Conversations API (``GET /v21.0/{id}/conversations
?platform=&user_id=``, then ``GET /v21.0/{conversation}/messages?fields=message,from,created_time``:
the account's messages to the customer, newest first, at most ``limit`` of them, times in
whole seconds), the bearer token, and Meta's error object
(``{"error": {"message", "type", "code", "error_subcode", "fbtrace_id"}}``).

Like Meta it refuses what a platform would: text over the account's limit, more than 13
quick replies or titles over 20 characters, more than 3 buttons, a reply outside the
policy window (code 10, subcode 2018278: 24 hours, 7 days with ``HUMAN_AGENT``), a
second private reply to a comment (10900), an unknown recipient (100/2018001), a bad
token (190). A test says when each customer last wrote (``customer_wrote``) and which
comments exist (``comment_posted``); ``fault(ERROR, error="613")`` plays any Graph code.

The webhook side: ``dm``, ``postback``, ``comment_change``, ``webhook_body`` build what
Meta POSTs, ``signed_headers`` signs it as Meta does.
"""

from __future__ import annotations

import itertools
import json
import secrets
import threading
import time
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from bot.channels.meta import signature_of
from tests.fakes.server import Call, Delivery, Fault, FakeServer, route

TOKEN = "EAAfakePageToken123"
APP_SECRET = "fake-app-secret-0123456789abcdef"
VERIFY_TOKEN = "verify-0123456789abcdef"
PAGE_ID = "1000000000001"
IG_ID = "17841400000000002"
VERSION = "v21.0"
DAY = 86_400.0
# credentials.yml enabling both channels; the variables are set to the values above.
RASA_CREDENTIALS = "".join(
    f"bot.channels.{module}:\n  {key}: ${{{account}}}\n  token: ${{{token}}}\n"
    "  app_secret: ${META_APP_SECRET}\n  verify_token: ${META_VERIFY_TOKEN}\n"
    for module, key, account, token in (
        ("messenger.MessengerInput", "page_id", "MESSENGER_PAGE_ID", "MESSENGER_PAGE_TOKEN"),
        ("instagram.InstagramInput", "account_id", "INSTAGRAM_ACCOUNT_ID", "INSTAGRAM_TOKEN"),
    )
)


def rasa_environment(base_url: str) -> dict[str, str]:
    """Return the variables ``RASA_CREDENTIALS`` reads, the Graph API at ``base_url``."""
    return {"MESSENGER_PAGE_ID": PAGE_ID, "MESSENGER_PAGE_TOKEN": TOKEN, "INSTAGRAM_ACCOUNT_ID": IG_ID,
            "INSTAGRAM_TOKEN": TOKEN, "META_APP_SECRET": APP_SECRET, "META_VERIFY_TOKEN": VERIFY_TOKEN,
            "META_GRAPH_BASE_URL": base_url}  # fmt: skip

_TEXT_LIMITS = {PAGE_ID: 2000, IG_ID: 1000}
_ERROR_TYPES = {190: "OAuthException", 10: "OAuthException", 4: "OAuthException"}
_MESSAGES = {
    4: "(#4) Application request limit reached",
    10: "(#10) This message is sent outside of allowed window.",
    100: "(#100) Invalid parameter",
    190: "Invalid OAuth access token - Cannot parse access token",
    551: "(#551) This person isn't available right now.",
    613: "(#613) Calls to this api have exceeded the rate limit.",
    10900: "Activity already replied to",
}


def graph_error(code: int, subcode: int | None = None, message: str | None = None) -> dict[str, Any]:
    """Return Meta's error object for ``code`` (and ``subcode``)."""
    error: dict[str, Any] = {
        "message": message or _MESSAGES.get(code, f"(#{code}) Error"),
        "type": _ERROR_TYPES.get(code, "OAuthException"),
        "code": code,
        "fbtrace_id": secrets.token_urlsafe(8),
    }
    if subcode is not None:
        error["error_subcode"] = subcode
    return {"error": error}


class Refused(Exception):
    """What the fake Graph API answers instead of doing a call."""

    def __init__(self, code: int, subcode: int | None = None, message: str | None = None, status: int = 400) -> None:
        super().__init__(code)
        self.status = status
        self.body = graph_error(code, subcode, message)


class FakeGraphAPI(FakeServer):
    """Meta's Graph API for one Page and one Instagram account, on 127.0.0.1."""

    thread_name = "fake-graph-api"
    method_route = None

    def __init__(self, token: str = TOKEN) -> None:
        """Serve with ``token`` as the only valid access token."""
        super().__init__()
        self.token = token
        self.profiles: dict[str, dict[str, str]] = {}
        self.permalinks: dict[str, str] = {}
        self._state = threading.Lock()
        self._last_message: dict[str, float] = {}
        self._comments: dict[str, tuple[str, float]] = {}
        self._private_replied: set[str] = set()
        self._ids = itertools.count(1)
        self._received: list[str] = []
        # Messages the accounts sent, by conversation id, oldest first (the Conversations API's).
        self._conversations: dict[str, list[dict[str, Any]]] = {}

    @property
    def base_url(self) -> str:
        """Where the connectors' ``base_url`` points (the Graph version is added by the client)."""
        return f"http://127.0.0.1:{self.port}"

    # --- what the test says about the world -------------------------------------------

    def customer_wrote(self, customer: str, *, hours_ago: float = 0.0) -> None:
        """Record that ``customer`` last wrote ``hours_ago`` hours ago (opens the policy window)."""
        with self._state:
            self._last_message[customer] = time.time() - hours_ago * 3600

    def comment_posted(self, comment_id: str, author: str, *, days_ago: float = 0.0) -> None:
        """Record a public comment by ``author`` (private replies are allowed for 7 days)."""
        with self._state:
            self._comments[comment_id] = (author, time.time() - days_ago * DAY)

    def received(self, method: str) -> int:
        """Return how many calls of ``method`` arrived, answered or not yet (a held one counts at once)."""
        with self._state:
            return self._received.count(method)

    # --- the protocol ---------------------------------------------------------------

    def _refuse_caller(self, request: web.Request, method: str, params: dict[str, Any]) -> web.Response | None:
        if request.headers.get("Authorization", "") == f"Bearer {self.token}":
            return None
        body = graph_error(190)
        self._record_refusal(method, params, 400, body)
        return web.json_response(body, status=400)

    def _record_refusal(self, method: str, params: dict[str, Any], status: int, body: dict[str, Any]) -> None:
        self._record(Call(method, params, status, body))

    def _refusal(self, fault: Fault) -> tuple[dict[str, Any], Mapping[str, str]]:
        """``error="613"`` or ``"10:2018278"``: Meta's error object with that code (and subcode)."""
        if fault.error is None:
            return {"error": {"message": "An unexpected error has occurred.", "type": "OAuthException",
                              "code": 2, "is_transient": True}}, {}  # fmt: skip
        code, _, subcode = fault.error.partition(":")
        return graph_error(int(code), int(subcode) if subcode else None), {}

    async def _call(self, request: web.Request, method: str | Any, work: Any) -> web.StreamResponse:
        """Serve one Graph call: ``method`` (or ``method(params)``) names it for faults and records."""
        params = await self._params(request)
        method = method(params) if callable(method) else method
        with self._state:
            self._received.append(method)
        refused = self._refuse_caller(request, method, params)
        if refused is not None:
            return refused

        def process() -> tuple[int, dict[str, Any], Delivery | None]:
            try:
                return work(params)
            except Refused as refusal:
                return refusal.status, refusal.body, None

        return await self._serve_call(request, method, params, process, self._refusal)

    # --- the API --------------------------------------------------------------------

    @route("POST", f"/{VERSION}/{{account}}/messages")
    async def _messages(self, request: web.Request) -> web.StreamResponse:
        account = request.match_info["account"]

        def method(body: dict[str, Any]) -> str:
            if "sender_action" in body:
                return "sender_action"
            recipient = body.get("recipient")
            return "private_reply" if isinstance(recipient, dict) and "comment_id" in recipient else "messages"

        return await self._call(request, method, lambda params: self._send(account, method(params), params))

    @route("POST", f"/{VERSION}/{{comment}}/comments")
    @route("POST", f"/{VERSION}/{{comment}}/replies")
    async def _public_reply(self, request: web.Request) -> web.StreamResponse:
        comment = request.match_info["comment"]
        method = request.path.rsplit("/", 1)[-1]

        def reply(params: dict[str, Any]) -> tuple[int, dict[str, Any], Delivery | None]:
            if comment not in self._comments:
                raise Refused(100, 33, "Unsupported post request. Object does not exist")
            text = str(params.get("message") or "")
            return 200, {"id": f"{comment}_{next(self._ids)}"}, Delivery(method, comment, text, params)

        return await self._call(request, method, reply)

    @route("GET", f"/{VERSION}/{{account}}/conversations")
    async def _conversation_list(self, request: web.Request) -> web.StreamResponse:
        account = request.match_info["account"]

        def find(params: dict[str, Any]) -> tuple[int, dict[str, Any], Delivery | None]:
            platform, user = params.get("platform"), str(params.get("user_id") or "")
            if account not in _TEXT_LIMITS or platform != ("messenger" if account == PAGE_ID else "instagram"):
                raise Refused(100, None, "(#100) Param platform must be the account's platform")
            conversation = conversation_id(account, user)
            with self._state:
                known = conversation in self._conversations or user in self._last_message
            return 200, {"data": [{"id": conversation, "updated_time": _graph_time(time.time())}] if known else []}, None

        return await self._call(request, "conversations", find)

    @route("GET", f"/{VERSION}/{{conversation}}/messages")
    async def _conversation_messages(self, request: web.Request) -> web.StreamResponse:
        conversation = request.match_info["conversation"]

        def latest(params: dict[str, Any]) -> tuple[int, dict[str, Any], Delivery | None]:
            limit = int(params.get("limit") or 25)
            fields = set(str(params.get("fields") or "").split(","))
            with self._state:
                sent = list(reversed(self._conversations.get(conversation, [])))[: min(limit, 20)]
            return 200, {"data": [{k: v for k, v in m.items() if k == "id" or k in fields} for m in sent]}, None

        return await self._call(request, "conversation_messages", latest)

    @route("GET", f"/{VERSION}/{{node}}")
    async def _node(self, request: web.Request) -> web.StreamResponse:
        node = request.match_info["node"]

        def read(params: dict[str, Any]) -> tuple[int, dict[str, Any], Delivery | None]:
            fields = str(params.get("fields") or "").split(",")
            if node in self.permalinks and fields == ["permalink"]:
                return 200, {"permalink": self.permalinks[node], "id": node}, None
            profile = self.profiles.get(node)
            if profile is None:
                raise Refused(100, 33, f"Unsupported get request. Object with ID '{node}' does not exist")
            return 200, {"id": node, **{f: profile[f] for f in fields if f in profile}}, None

        return await self._call(request, "profile" if node not in self.permalinks else "permalink", read)

    def _send(self, account: str, method: str, params: dict[str, Any]) -> tuple[int, dict[str, Any], Delivery | None]:
        if account not in _TEXT_LIMITS:
            raise Refused(100, 33, f"Unsupported post request. Object with ID '{account}' does not exist")
        recipient = params.get("recipient") or {}
        if method == "private_reply":
            return self._private_reply(account, str(recipient["comment_id"]), params)
        customer = str(recipient.get("id") or "")
        with self._state:
            wrote = self._last_message.get(customer)
        if wrote is None:
            raise Refused(100, 2018001, "(#100) No matching user found")
        if method == "sender_action":
            if params["sender_action"] not in ("mark_seen", "typing_on", "typing_off"):
                raise Refused(100, None, "(#100) Param sender_action must be one of {MARK_SEEN, TYPING_ON, TYPING_OFF}")
            return 200, {"recipient_id": customer}, None
        self._check_window(params, time.time() - wrote)
        text = self._check_message(account, params.get("message") or {})
        answer = {"recipient_id": customer, "message_id": f"m_{next(self._ids)}"}
        sent = {"id": answer["message_id"], "message": str((params.get("message") or {}).get("text") or ""),
                "from": {"id": account}, "created_time": _graph_time(time.time())}  # fmt: skip
        with self._state:
            self._conversations.setdefault(conversation_id(account, customer), []).append(sent)
        return 200, answer, Delivery("messages", customer, text, params)

    def _private_reply(
        self, account: str, comment: str, params: dict[str, Any]
    ) -> tuple[int, dict[str, Any], Delivery | None]:
        with self._state:
            found = self._comments.get(comment)
            if found is None:
                raise Refused(100, 33, "(#100) Invalid comment_id")
            if comment in self._private_replied:
                raise Refused(10900)
            author, at = found
            if time.time() - at > 7 * DAY:
                raise Refused(10, 2018278)
            text = self._check_message(account, params.get("message") or {})
            self._private_replied.add(comment)
            # The private reply opens a conversation; the window itself opens when the person answers.
        return 200, {"recipient_id": author, "message_id": f"m_{next(self._ids)}"}, Delivery(
            "private_reply", author, text, params
        )

    @staticmethod
    def _check_window(params: dict[str, Any], since: float) -> None:
        kind, tag = params.get("messaging_type"), params.get("tag")
        if kind not in ("RESPONSE", "UPDATE", "MESSAGE_TAG"):
            raise Refused(100, None, "(#100) Param messaging_type must be one of {RESPONSE, UPDATE, MESSAGE_TAG}")
        if kind == "MESSAGE_TAG":
            if tag != "HUMAN_AGENT":
                raise Refused(100, None, f"(#100) Tag {tag!r} is not supported here")
            if since > 7 * DAY:
                raise Refused(10, 2018278)
        elif since > DAY:
            raise Refused(10, 2018278)

    @staticmethod
    def _check_message(account: str, message: dict[str, Any]) -> str:
        """Refuse what Meta refuses; return the text the customer sees."""
        text = message.get("text")
        attachment = message.get("attachment")
        if (text is None) == (attachment is None):
            raise Refused(100, None, "(#100) Must send either message text or an attachment")
        limit = _TEXT_LIMITS[account]
        if text is not None and (not isinstance(text, str) or not text or len(text) > limit):
            raise Refused(100, None, f"(#100) Length of param message[text] must be less than or equal to {limit}")
        quick = message.get("quick_replies") or []
        if len(quick) > 13 or any(len(q.get("title") or "") > 20 for q in quick):
            raise Refused(100, None, "(#100) param message[quick_replies] must have at most 13 items, titles 20")
        if attachment is not None:
            payload = attachment.get("payload") or {}
            if attachment.get("type") == "template":
                buttons = payload.get("buttons") or []
                if not 1 <= len(buttons) <= 3 or len(payload.get("text") or "") > 640:
                    raise Refused(100, None, "(#100) Param message[attachment][payload][buttons] must have 1-3 items")
                if any(len(b.get("title") or "") > 20 for b in buttons):
                    raise Refused(100, None, "(#100) Button title must be at most 20 characters")
                return str(payload.get("text") or "")
            return f"[{attachment.get('type')}]"
        return str(text)


# --- what Meta POSTs to the webhook ---------------------------------------------------------


def conversation_id(account: str, customer: str) -> str:
    """Return the fake's id of the conversation between ``account`` and ``customer``."""
    return f"t_{account}_{customer}"


def _graph_time(epoch: float) -> str:
    """Return a time as the Graph API writes it: ``2026-12-07T14:00:00+0000`` (whole seconds)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S+0000", time.gmtime(epoch))


def dm(customer: str, mid: str, account: str = PAGE_ID, **message: Any) -> dict[str, Any]:
    """Return a ``messaging`` event: ``customer`` wrote ``message`` (``text=``, ``attachments=``, ...)."""
    return {"sender": {"id": customer}, "recipient": {"id": account}, "timestamp": int(time.time() * 1000),
            "message": {"mid": mid, **message}}  # fmt: skip


def postback(customer: str, mid: str, payload: str, title: str = "", account: str = PAGE_ID) -> dict[str, Any]:
    """Return a ``messaging`` event: ``customer`` pressed a postback button."""
    return {"sender": {"id": customer}, "recipient": {"id": account}, "timestamp": int(time.time() * 1000),
            "postback": {"mid": mid, "title": title or payload, "payload": payload}}  # fmt: skip


def echo(account: str, customer: str, mid: str, text: str) -> dict[str, Any]:
    """Return the echo of a message the account sent."""
    return {"sender": {"id": account}, "recipient": {"id": customer}, "timestamp": int(time.time() * 1000),
            "message": {"mid": mid, "is_echo": True, "app_id": 1234, "text": text}}  # fmt: skip


def facebook_comment(comment_id: str, author: str, name: str, text: str, *, verb: str = "add") -> dict[str, Any]:
    """Return a Page ``feed`` change: a comment under a Page post."""
    post_id = f"{PAGE_ID}_555"
    return {"field": "feed", "value": {
        "from": {"id": author, "name": name}, "item": "comment", "verb": verb, "comment_id": comment_id,
        "post_id": post_id, "parent_id": post_id, "message": text, "created_time": int(time.time()),
        "post": {"id": post_id, "status_type": "added_photos", "is_published": True,
                 "permalink_url": f"https://www.facebook.com/northwind/posts/{post_id}"},
    }}  # fmt: skip


def instagram_comment(comment_id: str, author: str, username: str, text: str, media: str = "1790001") -> dict[str, Any]:
    """Return an Instagram ``comments`` change: a comment under one of the account's posts."""
    return {"field": "comments", "value": {
        "from": {"id": author, "username": username}, "media": {"id": media, "media_product_type": "FEED"},
        "id": comment_id, "text": text,
    }}  # fmt: skip


def webhook_body(
    obj: str, account: str, messaging: list[dict[str, Any]] = (), changes: list[dict[str, Any]] = ()  # type: ignore[assignment]
) -> dict[str, Any]:
    """Return a webhook POST body: one entry for ``account`` with ``messaging`` events and ``changes``."""
    entry: dict[str, Any] = {"id": account, "time": int(time.time() * 1000)}
    if messaging:
        entry["messaging"] = list(messaging)
    if changes:
        entry["changes"] = list(changes)
    return {"object": obj, "entry": [entry]}


def encoded(body: Any) -> bytes:
    """Return ``body`` serialised as Meta does: unicode escaped, slashes escaped."""
    return json.dumps(body).replace("/", "\\/").encode()


def signed_headers(raw: bytes, secret: str = APP_SECRET) -> dict[str, str]:
    """Return the headers Meta sends with ``raw``: its JSON type and ``X-Hub-Signature-256``."""
    return {"Content-Type": "application/json", "X-Hub-Signature-256": signature_of(secret, raw)}
