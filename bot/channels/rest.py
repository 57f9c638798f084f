"""The REST channel, checked: a bearer token and a well-formed request, or a clear error.

Rasa's own REST channel accepts anything: a request with no ``sender`` is filed under
the conversation "default" (mixing strangers' messages), a non-text ``message`` fails
silently, and there is no authentication. This channel keeps Rasa's URL
(``/webhooks/rest/webhook``) and responses, and before a message reaches Rasa:

- requires ``Authorization: Bearer <token>`` when ``FIRSTREPLY_REST_TOKEN`` is set
  (compared in constant time; 401 otherwise);
- answers 400 with ``{"error": "..."}`` naming what is wrong with the body, and 413 for
  a message longer than ``MAX_MESSAGE_CHARS``.
"""

from __future__ import annotations

import json
import os
from contextvars import ContextVar
from typing import Any, Awaitable, Callable, Dict, Mapping, Optional, Text

from rasa.core.channels.channel import UserMessage
from rasa.core.channels.rest import RestInput as RasaRestInput
from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse

from bot.channels.common import same_secret

TOKEN_ENV = "FIRSTREPLY_REST_TOKEN"
MAX_MESSAGE_CHARS = 20_000
MAX_SENDER_CHARS = 128
REST_CHANNEL = "rest"


def request_problem(body: bytes) -> Optional[tuple[int, str]]:
    """Return (status, error) for a webhook body that must not reach Rasa, else ``None``."""
    try:
        # Decoded here: from bytes json.loads also takes UTF-16/32, which request.json (ujson) refuses.
        payload = json.loads((body or b"").decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nested too deep
        return 400, "the body must be JSON: {\"sender\": \"...\", \"message\": \"...\"}"
    if not isinstance(payload, dict):
        return 400, "the body must be a JSON object"
    try:
        # JSON escapes can carry unpaired surrogates ("\ud800"), which no database can store.
        json.dumps(payload, ensure_ascii=False).encode("utf-8")
    except (UnicodeEncodeError, RecursionError):
        return 400, "the body must be valid Unicode text (an unpaired \\ud800-\\udfff escape is not)"
    sender = payload.get("sender")
    if not isinstance(sender, str) or not sender.strip():
        return 400, "'sender' must be a non-empty string identifying the customer"
    if problem := too_long("sender", sender, MAX_SENDER_CHARS):
        return problem
    message = payload.get("message")
    if not isinstance(message, str):
        return 400, "'message' must be a string (it may be empty)"
    if problem := too_long("message", message, MAX_MESSAGE_CHARS, status=413):
        return problem
    metadata = payload.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        return 400, "'metadata' must be a JSON object when given"
    # Rasa's REST channel would pass it on as it is, so a caller could file a message (and
    # its case) under another channel's customer.
    input_channel = payload.get("input_channel")
    if input_channel is not None and input_channel != REST_CHANNEL:
        return 400, f"'input_channel' may only be {REST_CHANNEL!r} here"
    return None


def too_long(field_name: str, value: str, limit: int, status: int = 400) -> tuple[int, str] | None:
    """Return (status, error) when the request's ``field_name`` is longer than ``limit``, else ``None``."""
    return (status, f"'{field_name}' must be at most {limit} characters") if len(value) > limit else None


def authorized(request: Request, token: str) -> bool:
    """Return whether the request carries ``Authorization: Bearer <token>``."""
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and same_secret(given.strip(), token)


class RestInput(RasaRestInput):
    """Rasa's REST channel with authentication and request checks (name ``rest``)."""

    def __init__(self, token: Optional[str] = None) -> None:
        """Keep the bearer token required of every request (``None``: no token required)."""
        self._token = token or None

    @classmethod
    def name(cls) -> Text:
        """Return ``rest``, so the URL stays ``/webhooks/rest/webhook``."""
        return REST_CHANNEL

    @classmethod
    def from_credentials(
        cls, credentials: Optional[Dict[Text, Any]], environ: Optional[Mapping[str, str]] = None
    ) -> "RestInput":
        """Build the channel; the token comes from ``FIRSTREPLY_REST_TOKEN`` (never from a file)."""
        env = os.environ if environ is None else environ
        return cls(token=(env.get(TOKEN_ENV) or "").strip() or None)

    def blueprint(self, on_new_message: Callable[[UserMessage], Awaitable[None]]) -> Blueprint:
        """Return Rasa's REST routes behind the token and body checks."""
        failed: ContextVar[bool] = ContextVar("firstreply_rest_failed", default=False)

        async def handle(message: UserMessage) -> None:
            # Rasa's REST handler logs a failure and answers 200 with no replies, which a
            # caller cannot tell from "no reply"; the response middleware below says 503.
            try:
                await on_new_message(message)
            except Exception:
                failed.set(True)
                raise

        blueprint = super().blueprint(handle)
        token = self._token

        @blueprint.middleware("response")
        async def report_failure(request: Request, _response: HTTPResponse) -> Optional[HTTPResponse]:
            if not failed.get():
                return None
            failed.set(False)
            return response.json(
                {"error": "the message could not be handled now and was not kept: send it again"}, status=503
            )

        @blueprint.middleware("request")
        async def check(request: Request) -> Optional[HTTPResponse]:
            if request.method != "POST":
                return None
            if token and not authorized(request, token):
                return response.json({"error": "missing or wrong bearer token"}, status=401)
            problem = request_problem(request.body)
            if problem:
                status, error = problem
                return response.json({"error": error}, status=status)
            return None

        return blueprint
