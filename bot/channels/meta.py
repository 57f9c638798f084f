"""What Meta's three platforms (Messenger, Instagram Direct, WhatsApp Cloud API) share.

Each of the three connectors is a ``bot.channels.base.WebhookConnector``; this module holds
only what Meta does the same way for all of them:

- **The verification handshake** (``handshake``): Meta's ``GET`` with ``hub.mode=subscribe``,
  ``hub.verify_token`` and ``hub.challenge``, answered with the challenge when the token
  matches (compared in constant time) and 403 otherwise.
- **The signature** (``signed_by``): ``X-Hub-Signature-256: sha256=<hex>``, the HMAC-SHA256
  of the raw request body with the app secret. It is computed over the bytes as they came:
  Meta signs its own serialisation (unicode escaped), so JSON parsed and serialised again
  would not match. The older SHA-1 ``X-Hub-Signature`` is not accepted.
- **Reading a body** (``read_body``): JSON whose top level is an object with an ``entry``
  list, or ``None`` (the caller answers 400 and nothing is stored).
- **Graph API errors** (``GraphError``): the ``{"error": {"code", "error_subcode", ...}}``
  object every Graph call answers with when it fails, read into the codes that decide what
  to do (rate limited: back off; outside the window: tell the agent; bad token: alert).
- **Policy windows** (``window_for``): what may be sent to a customer whose last message is
  some time ago (Messenger and Instagram: a normal reply within 24 hours, a human agent's
  reply with the ``HUMAN_AGENT`` tag up to 7 days; WhatsApp: 24 hours, then a template).

Anchors: Meta's webhook and Send API references; ``pywa``'s framework-independent
verification helpers; Rasa's ``facebook`` channel (read as an anchor, not built on: see
docs/channels/messenger.md).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum
from typing import TYPE_CHECKING, Any

from sanic import response

from bot.channels.common import same_secret

if TYPE_CHECKING:
    from sanic.response import HTTPResponse

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Hub-Signature-256"
SIGNATURE_PREFIX = "sha256="

# Rasa channel names (and the case's channel) of the three platforms.
MESSENGER = "messenger"
INSTAGRAM = "instagram"
WHATSAPP = "whatsapp"

# Policy windows, counted from the customer's last message.
STANDARD_WINDOW = timedelta(hours=24)
HUMAN_AGENT_WINDOW = timedelta(days=7)
# A private reply to a public comment: one, within this long of the comment.
PRIVATE_REPLY_WINDOW = timedelta(days=7)

# Graph API error codes worth telling apart (Meta's Send API and WhatsApp Cloud API references).
RATE_LIMIT_CODES = frozenset({4, 613, 130429, 131056})
OUTSIDE_WINDOW_CODES = frozenset({10, 131047})
UNAVAILABLE_CODES = frozenset({551, 131026})
BAD_TOKEN_CODE = 190
ALREADY_REPLIED_CODE = 10900


# --- receiving ----------------------------------------------------------------------------


def signature_of(app_secret: str, raw_body: bytes) -> str:
    """Return the ``X-Hub-Signature-256`` value Meta sends with ``raw_body`` (tests and fakes sign with it)."""
    return SIGNATURE_PREFIX + hmac.new(app_secret.encode("utf-8"), raw_body, hashlib.sha256).hexdigest()


def signed_by(app_secret: str, raw_body: bytes, header: str | None) -> bool:
    """Return whether ``header`` (``X-Hub-Signature-256``) signs ``raw_body`` with ``app_secret``.

    Constant-time; a missing, empty or malformed header is simply not a match.
    """
    if not header or not header.startswith(SIGNATURE_PREFIX):
        return False
    return same_secret(header.strip(), signature_of(app_secret, raw_body))


def handshake(args: Mapping[str, Any], verify_token: str, channel: str) -> HTTPResponse:
    """Answer Meta's subscription check: the challenge when the token matches, else 403.

    ``args`` are the request's query arguments (Sanic's ``request.args``: a value may be a list).
    """
    mode, token, challenge = (_first(args.get(key)) for key in ("hub.mode", "hub.verify_token", "hub.challenge"))
    if mode == "subscribe" and token and challenge is not None and same_secret(token, verify_token):
        log.info("%s webhook: subscription verified", channel)
        return response.text(challenge)
    log.warning("%s webhook: verification refused (wrong mode or verify token)", channel)
    return response.text("verification failed", status=403)


def read_body(raw_body: bytes, channel: str) -> dict[str, Any] | None:
    """Return a webhook body as JSON with an ``entry`` list, or ``None`` if it is not one."""
    try:
        data = json.loads(raw_body)
    except (ValueError, RecursionError):  # RecursionError: nested too deep
        log.warning("%s webhook: body is not JSON", channel)
        return None
    if not isinstance(data, dict) or not isinstance(data.get("entry"), list):
        log.warning("%s webhook: JSON without an entry list", channel)
        return None
    return data


def _first(value: Any) -> str | None:
    if isinstance(value, list):
        value = value[0] if value else None
    return value if isinstance(value, str) else None


# --- sending ------------------------------------------------------------------------------


@dataclass(frozen=True)
class GraphError(Exception):
    """A Graph API call that failed: the HTTP status and Meta's error object, read."""

    status: int
    code: int | None = None
    subcode: int | None = None
    message: str = ""
    # No answer came, though the request may have reached Meta (a time-out or a connection lost
    # after it was sent): a message may have been delivered.
    unsure: bool = False

    def __str__(self) -> str:
        return f"HTTP {self.status}, code {self.code}" + (f"/{self.subcode}" if self.subcode else "") + (
            f": {self.message}" if self.message else ""
        )

    @classmethod
    def from_answer(cls, status: int, body: Any) -> GraphError:
        """Read Meta's ``{"error": {...}}`` answer (any shape: what cannot be read stays ``None``)."""
        error = body.get("error") if isinstance(body, dict) else None
        if not isinstance(error, dict):
            return cls(status)
        code, subcode = error.get("code"), error.get("error_subcode")
        return cls(
            status,
            code if isinstance(code, int) else None,
            subcode if isinstance(subcode, int) else None,
            str(error.get("message") or "")[:300],
        )

    @property
    def rate_limited(self) -> bool:
        """Meta asks to slow down: try again later."""
        return self.code in RATE_LIMIT_CODES or self.status == 429

    @property
    def outside_window(self) -> bool:
        """The policy window is closed: no retry will deliver this message."""
        return self.code in OUTSIDE_WINDOW_CODES

    @property
    def refused_for_good(self) -> bool:
        """No retry will mend it: outside the window, person unavailable, already replied, bad request."""
        return (
            self.outside_window
            or self.code in UNAVAILABLE_CODES
            or self.code == ALREADY_REPLIED_CODE
            or (400 <= self.status < 500 and not self.rate_limited and self.code != BAD_TOKEN_CODE)
        )


class Window(Enum):
    """What may be sent to a customer, by the time since their last message."""

    OPEN = "open"  # any reply (the bot's or a person's)
    HUMAN_AGENT = "human_agent"  # Messenger/Instagram: a person's reply, tagged HUMAN_AGENT
    TEMPLATE_ONLY = "template_only"  # WhatsApp: only an approved template
    CLOSED = "closed"  # nothing until the customer writes again


def window_for(channel: str, since_last_message: timedelta, *, human: bool) -> Window:
    """Return what may be sent on ``channel`` this long after the customer's last message.

    ``human``: the message was written by a person (an agent's reply), not by the bot; only
    a person's reply may carry the ``HUMAN_AGENT`` tag. Other channels have no window.
    """
    if channel not in (MESSENGER, INSTAGRAM, WHATSAPP) or since_last_message <= STANDARD_WINDOW:
        return Window.OPEN
    if channel == WHATSAPP:
        return Window.TEMPLATE_ONLY
    if human and since_last_message <= HUMAN_AGENT_WINDOW:
        return Window.HUMAN_AGENT
    return Window.CLOSED
