"""A small local WhatsApp Cloud API for tests: the real pywa client talks to it.

It serves ``POST /v{version}/{phone_number_id}/messages`` as Meta does: a message (text,
interactive reply buttons or list, template, image) is answered with its ``wamid``, a read
receipt (``{"status": "read", ...}``, with or without a typing indicator) with
``{"success": true}``. The caller must send ``Authorization: Bearer <TOKEN>`` (otherwise
401, code 190) and the phone number id it serves. Calls are recorded under the method
``messages`` (sends) or ``read`` (receipts), so faults can aim at one of them.

Meta's errors, in Meta's shape (``{"error": {"message", "type", "code", "error_data",
"fbtrace_id"}}``), with ``fail_with(code)``: 131047 (the 24-hour window is closed), 130429
(throughput limit, retried), 131026 (undeliverable), 190 (bad token), 100 (bad parameter)
or any other; and every fault of ``tests.fakes.server``.

It also builds what Meta POSTs to the webhook (``text_message``, ``notification``...) and
signs it with the app secret (``signed``), so tests send exactly what Meta would.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterable, Mapping
from typing import Any

from aiohttp import web

from bot.channels.meta import SIGNATURE_HEADER, signature_of
from tests.fakes.server import ERROR, UNKNOWN_METHOD, Call, Delivery, FakeServer, Fault, answers

__all__ = ["APP_SECRET", "PHONE_NUMBER_ID", "TOKEN", "VERIFY_TOKEN", "FakeWhatsAppAPI"]

TOKEN = "EAAGtestWhatsAppAccessToken0123456789"
APP_SECRET = "0123456789abcdef0123456789abcdef"
VERIFY_TOKEN = "verify-me-please"
PHONE_NUMBER_ID = "106540352242922"
WABA_ID = "102290129340398"
DISPLAY_NUMBER = "15550783881"

# What Meta answers with, per code (titles as the Cloud API's error reference gives them).
_ERRORS: Mapping[int, tuple[int, str, str]] = {
    131047: (400, "Re-engagement message", "More than 24 hours have passed since the recipient last replied."),
    130429: (400, "Rate limit hit", "Cloud API message throughput has been reached."),
    131056: (400, "(Business Account, Consumer Account) pair rate limit hit", "Too many messages to one number."),
    131026: (400, "Message Undeliverable", "Unable to deliver message."),
    190: (401, "Invalid OAuth access token", "Error validating access token: Session has expired."),
    100: (400, "Invalid parameter", "Invalid parameter."),
    132001: (404, "Template name does not exist in the translation", "template name does not exist"),
}


def rasa_credentials() -> str:
    """Return what a Rasa credentials.yml holds to run the WhatsApp connector against this fake."""
    return (
        "bot.channels.whatsapp.WhatsAppInput:\n  access_token: ${WHATSAPP_ACCESS_TOKEN}\n"
        "  app_secret: ${WHATSAPP_APP_SECRET}\n  verify_token: ${WHATSAPP_VERIFY_TOKEN}\n"
        "  phone_number_id: ${WHATSAPP_PHONE_NUMBER_ID}\n  base_url: ${WHATSAPP_API_BASE_URL}\n"
    )


def connector_env(base_url: str) -> dict[str, str]:
    """Return the environment that switches the WhatsApp connector on against the fake at ``base_url``."""
    return {"WHATSAPP_ACCESS_TOKEN": TOKEN, "WHATSAPP_APP_SECRET": APP_SECRET, "WHATSAPP_VERIFY_TOKEN": VERIFY_TOKEN,
            "WHATSAPP_PHONE_NUMBER_ID": PHONE_NUMBER_ID, "WHATSAPP_API_BASE_URL": base_url}  # fmt: skip


def meta_error(code: int, status: int | None = None) -> tuple[int, dict[str, Any]]:
    """Return the HTTP status and body Meta answers a failed call with, for ``code``."""
    default_status, title, details = _ERRORS.get(code, (400, "Error", "An error occurred."))
    body = {
        "error": {
            "message": f"({code}) {title}", "type": "OAuthException", "code": code,
            "error_data": {"messaging_product": "whatsapp", "details": details},
            "error_subcode": 2494010 if code == 131047 else None, "fbtrace_id": "AbCdEfGhIjK",
        }
    }  # fmt: skip
    if body["error"]["error_subcode"] is None:
        del body["error"]["error_subcode"]
    return status or default_status, body


class FakeWhatsAppAPI(FakeServer):
    """The Cloud API calls FirstReply makes, answered locally and recorded (see the module doc)."""

    thread_name = "fake-whatsapp-api"
    method_route = None

    def __init__(self, token: str = TOKEN, phone_number_id: str = PHONE_NUMBER_ID) -> None:
        """Serve the number ``phone_number_id`` to callers with ``token``."""
        super().__init__()
        self.token = token
        self.phone_number_id = phone_number_id
        self._ids = itertools.count(1)

    @property
    def base_url(self) -> str:
        """What the connector takes as ``WHATSAPP_API_BASE_URL``."""
        return f"http://127.0.0.1:{self.port}"

    def _routes(self, app: web.Application) -> None:
        super()._routes(app)
        app.router.add_route("POST", "/v{version}/{phone_id}/messages", self._messages)

    def fail_with(self, code: int, *, method: str | None = "messages", times: int | None = 1,
                  seconds: float | None = None) -> Fault:  # fmt: skip
        """Answer the next ``times`` calls (of ``method``) with Meta's error ``code``."""
        status, _ = meta_error(code)
        return self.fault(ERROR, method=method, times=times, seconds=seconds, status=status, error=str(code))

    def sent(self, to: str | None = None) -> list[dict[str, Any]]:
        """Return the message objects sent (to ``to``) and accepted, in order."""
        return [call.params for call in self.calls("messages") if to is None or call.params.get("to") == to]

    # --- the protocol --------------------------------------------------------------

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        try:
            params = await request.json()
        except ValueError:
            params = None
        if not isinstance(params, dict):
            status, body = meta_error(100)
            self._record(Call("messages", {}, status, body))
            return web.json_response(body, status=status)
        method = "read" if params.get("status") == "read" else "messages"
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            status, body = meta_error(190)
            self._record(Call(method, params, status, body))
            return web.json_response(body, status=status)
        return await self._serve_call(request, method, params, lambda: self._process(method, params), self._refusal)

    def _process(self, method: str, params: dict[str, Any]) -> tuple[int, dict[str, Any], Delivery | None]:
        handler = self.handler_for(method)
        if handler is UNKNOWN_METHOD:
            return 404, {"error": {"message": "Unknown path", "code": 803}}, None
        problem = self._invalid(method, params)
        if problem is not None:
            status, body = meta_error(100)
            body["error"]["error_data"]["details"] = problem
            return status, body, None
        delivery = None
        if method == "messages":
            delivery = Delivery(str(params.get("type")), str(params.get("to")), _shown_text(params), params)
        return 200, handler(params), delivery

    def _invalid(self, method: str, params: Mapping[str, Any]) -> str | None:
        """Return what Meta would refuse in a call (its limits), or None."""
        if params.get("messaging_product") != "whatsapp":
            return "messaging_product must be whatsapp"
        if method == "read":
            return None if isinstance(params.get("message_id"), str) else "message_id is required"
        kind = params.get("type")
        if kind == "text" and len(str((params.get("text") or {}).get("body") or "")) > 4096:
            return "text body too long (over 4096 characters)"
        if kind == "interactive":
            interactive = params.get("interactive") or {}
            action = interactive.get("action") or {}
            if len(str((interactive.get("body") or {}).get("text") or "")) > 1024:
                return "interactive body too long (over 1024 characters)"
            if interactive.get("type") == "button":
                buttons = action.get("buttons") or []
                if not 1 <= len(buttons) <= 3 or any(len(b["reply"]["title"]) > 20 for b in buttons):
                    return "reply buttons: 1 to 3, titles up to 20 characters"
            if interactive.get("type") == "list":
                rows = [row for section in action.get("sections") or [] for row in section.get("rows") or []]
                if not 1 <= len(rows) <= 10 or any(len(row["title"]) > 24 for row in rows):
                    return "list rows: 1 to 10, titles up to 24 characters"
        return None

    def _refusal(self, fault: Fault) -> tuple[dict[str, Any], Mapping[str, str]]:
        if fault.error and fault.error.isdigit():
            _, body = meta_error(int(fault.error), fault.status)
            return body, {}
        return {"error": {"message": "Service temporarily unavailable", "code": 2, "type": "OAuthException"}}, {}

    # --- the API -------------------------------------------------------------------

    @answers("messages")
    def _send(self, params: dict[str, Any]) -> dict[str, Any]:
        to = str(params.get("to") or params.get("recipient") or "")
        return {"messaging_product": "whatsapp", "contacts": [{"input": to, "wa_id": to}],
                "messages": [{"id": f"wamid.OUT{next(self._ids):08d}"}]}  # fmt: skip

    @answers("read")
    def _read(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"success": True}


def _shown_text(params: Mapping[str, Any]) -> str:
    """Return what the customer reads of a sent message (the template's name for a template)."""
    kind = params.get("type")
    if kind == "text":
        return str((params.get("text") or {}).get("body") or "")
    if kind == "interactive":
        return str(((params.get("interactive") or {}).get("body") or {}).get("text") or "")
    if kind == "template":
        return f"[template {(params.get('template') or {}).get('name')}]"
    return f"[{kind}]"


def choices_of(params: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Return the (title, id) of the reply buttons or list rows of a sent interactive message."""
    interactive = params.get("interactive") or {}
    action = interactive.get("action") or {}
    if interactive.get("type") == "button":
        return [(b["reply"]["title"], b["reply"]["id"]) for b in action.get("buttons") or []]
    return [(row["title"], row["id"]) for section in action.get("sections") or [] for row in section.get("rows") or []]


# --- what Meta POSTs to the webhook ------------------------------------------------------------


_inbound_ids = itertools.count(1)


def wamid() -> str:
    """Return a new inbound message id, shaped like Meta's."""
    return f"wamid.HBgLMTU1NTAxMjM0NTYVAgASGBQzQTg{next(_inbound_ids):06d}AA=="


def inbound(sender: str, kind: str, content: Any, *, message_id: str | None = None) -> dict[str, Any]:
    """Return one message object as Meta sends it (``kind``: text, interactive, image, sticker...)."""
    sent_at = str(int(time.time()))
    return {"from": sender, "id": message_id or wamid(), "timestamp": sent_at, "type": kind, kind: content}


def text_message(sender: str, text: str, *, message_id: str | None = None) -> dict[str, Any]:
    """Return a text message from ``sender``."""
    return inbound(sender, "text", {"body": text}, message_id=message_id)


def button_reply(sender: str, key: str, title: str) -> dict[str, Any]:
    """Return a press on one of the reply buttons (``key``: the button's id)."""
    return inbound(sender, "interactive", {"type": "button_reply", "button_reply": {"id": key, "title": title}})


def list_reply(sender: str, key: str, title: str) -> dict[str, Any]:
    """Return a choice of one row of a list message."""
    return inbound(sender, "interactive", {"type": "list_reply", "list_reply": {"id": key, "title": title}})


def status(
    message_id: str, recipient: str, state: str = "delivered", errors: Iterable[Mapping[str, Any]] = ()
) -> dict[str, Any]:
    """Return a status of one of the business's messages (sent, delivered, read, failed)."""
    found: dict[str, Any] = {"id": message_id, "status": state, "timestamp": str(int(time.time())),
                             "recipient_id": recipient}  # fmt: skip
    if errors:
        found["errors"] = list(errors)
    return found


def notification(
    messages: Iterable[Mapping[str, Any]] = (),
    *,
    names: Mapping[str, str] | None = None,
    statuses: Iterable[Mapping[str, Any]] = (),
    phone_number_id: str = PHONE_NUMBER_ID,
) -> dict[str, Any]:
    """Return one webhook body carrying ``messages`` (one change) with the senders' profile ``names``."""
    messages = list(messages)
    value: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": DISPLAY_NUMBER, "phone_number_id": phone_number_id},
    }
    senders = list(dict.fromkeys(m["from"] for m in messages))
    if messages:
        value["contacts"] = [{"profile": {"name": (names or {}).get(s, "")}, "wa_id": s} for s in senders]
        value["messages"] = messages
    statuses = list(statuses)
    if statuses:
        value["statuses"] = statuses
    change = {"value": value, "field": "messages"}
    return {"object": "whatsapp_business_account", "entry": [{"id": WABA_ID, "changes": [change]}]}


def batched(*bodies: Mapping[str, Any]) -> dict[str, Any]:
    """Return one body carrying the entries of several (Meta batches notifications this way)."""
    return {"object": "whatsapp_business_account", "entry": [entry for body in bodies for entry in body["entry"]]}


def signed(body: Mapping[str, Any] | bytes, app_secret: str = APP_SECRET) -> tuple[bytes, dict[str, str]]:
    """Return the raw body as Meta serialises it (unicode escaped) and its headers, signed."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode("ascii")
    return raw, {"Content-Type": "application/json", SIGNATURE_HEADER: signature_of(app_secret, raw)}
