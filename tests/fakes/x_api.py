"""A small local X API for tests: the real tweepy client talks to it; it also makes X's webhook calls.

The API side serves the v2 calls FirstReply makes, with X's shapes: ``POST
/2/dm_conversations/with/{participant_id}/messages`` (a DM; 201 ``{"data":
{"dm_conversation_id", "dm_event_id"}}``), ``GET
/2/dm_conversations/with/{participant_id}/dm_events`` (the brand's DMs to that user, newest
first, ``id``, ``event_type``, ``text``, ``sender_id``, ``created_at``, pages of
``max_results`` with ``meta.next_token``) and ``POST /2/tweets`` (a post; 201 ``{"data":
{"id", "text"}}``). Every call must carry a valid OAuth 1.0a signature (HMAC-SHA1) by
the app's consumer key for the brand's access token, else 401, as X answers. Refusals
have X's problem shape (``title``, ``detail``, ``type``, ``status``): a customer who does
not accept DMs from the brand gets a 403 (``refuse_dms``); a rate limit is a 429 with
``x-rate-limit-*`` headers (``fault(ERROR, status=429, retry_after=...)``); any fault of
``tests.fakes.server`` can be played.

The webhook side builds what X's Account Activity API POSTs (``dm_event``,
``mention_event``, ``activity``) and signs it (``signed_headers``) with the consumer secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import threading
import time
from collections.abc import Mapping
from typing import Any

from aiohttp import web
from oauthlib.oauth1.rfc5849 import signature as oauth
from oauthlib.oauth1.rfc5849 import utils as oauth_utils

from tests.fakes.server import Call, Delivery, FakeServer, Fault, route, serve_from_command_line

CONSUMER_KEY = "fakeConsumerKey0123"
CONSUMER_SECRET = "fakeConsumerSecret_0123456789abcdef"
BRAND_ID = "1500000000000000001"
BRAND_HANDLE = "NorthwindHelp"
ACCESS_TOKEN = f"{BRAND_ID}-fakeAccessToken0123"
ACCESS_TOKEN_SECRET = "fakeAccessTokenSecret_0123456789"
DM_METHOD = "dm_conversations.messages"
DM_EVENTS_METHOD = "dm_conversations.dm_events"
POST_METHOD = "tweets.create"
# Where a public reply to post N is delivered, in ``deliveries``.
PUBLIC = "public:"
CREDENTIALS = (
    "bot.channels.x.XInput:\n  consumer_key: ${X_CONSUMER_KEY}\n  consumer_secret: ${X_CONSUMER_SECRET}\n"
    "  access_token: ${X_ACCESS_TOKEN}\n  access_token_secret: ${X_ACCESS_TOKEN_SECRET}\n"
    "  brand_user_id: ${X_BRAND_USER_ID}\n  brand_handle: ${X_BRAND_HANDLE}\n  base_url: ${X_API_BASE_URL}\n"
)
_PROBLEMS = {
    400: ("Invalid Request", "One or more parameters to your request was invalid."),
    403: ("Forbidden", "You are not permitted to perform this action."),
    429: ("Too Many Requests", "Too Many Requests"),
    500: ("Internal Server Error", "Internal Server Error"),
    503: ("Service Unavailable", "Service Unavailable"),
}


def problem(status: int, detail: str | None = None) -> dict[str, Any]:
    """Return X's v2 error body for ``status``."""
    title, default = _PROBLEMS.get(status, ("Error", "Error"))
    return {"title": title, "detail": detail or default, "type": "about:blank", "status": status}


class FakeXAPI(FakeServer):
    """The X API v2 calls FirstReply makes, answered locally and recorded (see the module doc)."""

    thread_name = "fake-x-api"
    method_route = None

    def __init__(self) -> None:
        """Serve the brand's account (``ACCESS_TOKEN``) for the app ``CONSUMER_KEY``."""
        super().__init__()
        self._ids = itertools.count(1_800_000_000_000_000_000)
        self._refusing: set[str] = set()
        # The DM events made, oldest first (what ``dm_events`` lists).
        self._dm_events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        # What ``serve_until_interrupted`` shows: the token calls must be signed for.
        self.token = ACCESS_TOKEN

    @property
    def base_url(self) -> str:
        """What to give the connector as ``X_API_BASE_URL``."""
        return f"http://127.0.0.1:{self.port}"

    def refuse_dms(self, user_id: str) -> None:
        """Answer DMs to ``user_id`` with 403: they do not accept DMs from the brand."""
        with self._lock:
            self._refusing.add(user_id)

    def dms(self, user_id: str | None = None) -> list[str]:
        """Return the texts of the DMs delivered (to ``user_id``), in order."""
        return [d.text for d in self.deliveries() if d.method == DM_METHOD and (user_id is None or d.chat == user_id)]

    def public_replies(self, post_id: str | None = None) -> list[str]:
        """Return the texts of the public replies delivered (to ``post_id``), in order."""
        return [d.text for d in self.deliveries() if d.method == POST_METHOD
                and (post_id is None or d.chat == PUBLIC + post_id)]  # fmt: skip

    # --- the protocol ----------------------------------------------------------------

    def _authentic(self, request: web.Request) -> bool:
        """Return whether the call carries a valid OAuth 1.0a signature by the app for the brand's token."""
        header = request.headers.get("Authorization", "")
        if not header.startswith("OAuth "):
            return False
        given = dict(oauth_utils.parse_authorization_header(header))
        if given.get("oauth_consumer_key") != CONSUMER_KEY or given.get("oauth_token") != ACCESS_TOKEN:
            return False
        params = oauth.collect_parameters(uri_query=request.query_string, headers={"Authorization": header})
        url = f"http://{request.host}{request.raw_path.partition('?')[0]}"  # the URL the client signed
        normalized = oauth.normalize_parameters(params)
        base = oauth.signature_base_string(request.method, oauth.base_string_uri(url), normalized)
        key = f"{oauth_utils.escape(CONSUMER_SECRET)}&{oauth_utils.escape(ACCESS_TOKEN_SECRET)}".encode()
        expected = base64.b64encode(hmac.new(key, base.encode(), hashlib.sha1).digest()).decode()
        return hmac.compare_digest(expected, oauth_utils.unescape(given.get("oauth_signature", "")))

    async def _call(self, request: web.Request, method: str, params: dict[str, Any],
                    make: Any) -> web.StreamResponse:  # fmt: skip
        if not self._authentic(request):
            body = {"title": "Unauthorized", "type": "about:blank", "status": 401, "detail": "Unauthorized"}
            self._record(Call(method, params, 401, body))
            return web.json_response(body, status=401)
        return await self._serve_call(request, method, params, lambda: make(params), self._refusal)

    def _refusal(self, fault: Fault) -> tuple[dict[str, Any], Mapping[str, str]]:
        headers: dict[str, str] = {}
        if fault.status == 429:
            headers = {"x-rate-limit-limit": "15", "x-rate-limit-remaining": "0",
                       "x-rate-limit-reset": str(int(time.time()) + fault.retry_after)}  # fmt: skip
        return problem(fault.status, fault.error), headers

    async def _json(self, request: web.Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except ValueError:
            return {}
        return dict(body) if isinstance(body, dict) else {}

    # --- the API ---------------------------------------------------------------------

    @route("POST", "/2/dm_conversations/with/{participant_id}/messages")
    async def _dm_route(self, request: web.Request) -> web.StreamResponse:
        params = {**await self._json(request), "participant_id": request.match_info["participant_id"]}
        return await self._call(request, DM_METHOD, params, self._dm)

    def _dm(self, params: dict[str, Any]) -> tuple[int, dict[str, Any], Delivery | None]:
        to, text = str(params["participant_id"]), params.get("text")
        if not isinstance(text, str) or not text or len(text) > 10_000:
            return 400, problem(400, "text must be 1 to 10000 characters"), None
        with self._lock:
            refusing = to in self._refusing
        if refusing:
            return 403, problem(403, "You are not permitted to send this message."), None
        data = {"dm_conversation_id": f"{min(to, BRAND_ID)}-{max(to, BRAND_ID)}", "dm_event_id": str(next(self._ids))}
        created = time.time()
        created_at = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(created * 1000) % 1000:03d}Z"
        with self._lock:
            self._dm_events.append({"id": data["dm_event_id"], "event_type": "MessageCreate", "text": text,
                                    "sender_id": BRAND_ID, "created_at": created_at, "to": to})  # fmt: skip
        return 201, {"data": data}, Delivery(DM_METHOD, to, text, params)

    @route("GET", "/2/dm_conversations/with/{participant_id}/dm_events")
    async def _dm_events_route(self, request: web.Request) -> web.StreamResponse:
        params = {**request.query, "participant_id": request.match_info["participant_id"]}
        return await self._call(request, DM_EVENTS_METHOD, params, self._dm_events_page)

    def _dm_events_page(self, params: dict[str, Any]) -> tuple[int, dict[str, Any], Delivery | None]:
        try:
            size, start = int(params.get("max_results") or 100), int(params.get("pagination_token") or 0)
        except ValueError:
            return 400, problem(400, "max_results and pagination_token must be numbers here"), None
        if not 1 <= size <= 100:
            return 400, problem(400, "max_results must be between 1 and 100"), None
        fields = set(str(params.get("dm_event.fields") or "").split(","))
        with self._lock:
            events = [e for e in reversed(self._dm_events) if e["to"] == params["participant_id"]]
        page = [{key: value for key, value in event.items() if key in {"id", "event_type"} | fields}
                for event in events[start:start + size]]  # fmt: skip
        meta: dict[str, Any] = {"result_count": len(page)}
        if start + size < len(events):
            meta["next_token"] = str(start + size)
        return 200, {"data": page, "meta": meta} if page else {"meta": meta}, None

    @route("POST", "/2/tweets")
    async def _post_route(self, request: web.Request) -> web.StreamResponse:
        return await self._call(request, POST_METHOD, await self._json(request), self._post)

    def _post(self, params: dict[str, Any]) -> tuple[int, dict[str, Any], Delivery | None]:
        text = params.get("text")
        if not isinstance(text, str) or not text or len(text) > 280 + 200:  # links count shorter than they are
            return 400, problem(400, "text is too long or missing"), None
        post_id = str(next(self._ids))
        reply_to = str((params.get("reply") or {}).get("in_reply_to_tweet_id") or "")
        return 201, {"data": {"id": post_id, "text": text}}, Delivery(POST_METHOD, PUBLIC + reply_to, text, params)


# --- what X's Account Activity API sends --------------------------------------------------


def signed_headers(body: bytes, secret: str = CONSUMER_SECRET) -> dict[str, str]:
    """Return the headers X sends with ``body``: JSON, signed with the consumer secret."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    return {"Content-Type": "application/json",
            "x-twitter-webhooks-signature": "sha256=" + base64.b64encode(digest).decode()}  # fmt: skip


def user(user_id: str, name: str, handle: str) -> dict[str, Any]:
    """Return a user object as the webhook carries it."""
    return {"id": user_id, "id_str": user_id, "name": name, "screen_name": handle, "protected": False}


def dm_event(event_id: str, sender: dict[str, Any], text: str, *, media: dict[str, Any] | None = None,
             to: str = BRAND_ID) -> dict[str, Any]:  # fmt: skip
    """Return one ``direct_message_events`` item: ``sender`` wrote ``text`` (with ``media`` attached)."""
    data: dict[str, Any] = {"text": text, "entities": {"hashtags": [], "symbols": [], "user_mentions": [], "urls": []}}
    if media is not None:
        data["attachment"] = {"type": "media", "media": media}
    return {"type": "message_create", "id": event_id, "created_timestamp": str(int(time.time() * 1000)),
            "message_create": {"target": {"recipient_id": to}, "sender_id": sender["id_str"],
                               "message_data": data}}  # fmt: skip


def photo(media_id: str = "1600000000000000001") -> dict[str, Any]:
    """Return a photo attachment's ``media`` object (its t.co link is also in the DM's text)."""
    return {"id_str": media_id, "type": "photo", "url": "https://t.co/ph0t0Link",
            "media_url_https": f"https://ton.x.com/1.1/ton/data/dm/{media_id}/photo.jpg"}  # fmt: skip


def post(
    post_id: str, author: dict[str, Any], text: str, *, reply_to: str | None = None,
    reply_to_user: str | None = None, mentions_brand: bool = True, repost: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """Return one ``tweet_create_events`` item: ``author`` posted ``text``."""
    mentions = [{"id_str": BRAND_ID, "id": int(BRAND_ID), "screen_name": BRAND_HANDLE, "indices": [0, 14]}]
    found: dict[str, Any] = {
        "created_at": time.strftime("%a %b %d %H:%M:%S +0000 %Y", time.gmtime()),
        "id": int(post_id), "id_str": post_id, "text": text, "truncated": False, "user": author,
        "in_reply_to_status_id_str": reply_to, "in_reply_to_user_id_str": reply_to_user,
        "entities": {"hashtags": [], "urls": [], "user_mentions": mentions if mentions_brand else []},
    }  # fmt: skip
    if repost:
        found["retweeted_status"] = {"id_str": "1", "text": text, "user": user(BRAND_ID, "Northwind", BRAND_HANDLE)}
    return found


def activity(*, dms: list[dict[str, Any]] = (), posts: list[dict[str, Any]] = (),  # type: ignore[assignment]
             users: list[dict[str, Any]] = ()) -> bytes:  # type: ignore[assignment]  # fmt: skip
    """Return one webhook body for the brand's account, as X serializes it."""
    body: dict[str, Any] = {"for_user_id": BRAND_ID}
    if dms:
        body["direct_message_events"] = list(dms)
        body["users"] = {u["id_str"]: u for u in users}
    if posts:
        body["tweet_create_events"] = list(posts)
    return json.dumps(body).encode()


def main() -> None:
    """Serve the fake API until interrupted (for ``rasa run`` by hand)."""
    serve_from_command_line(FakeXAPI, "fake X API", __doc__)


if __name__ == "__main__":
    main()
