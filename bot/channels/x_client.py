"""X's API side: the connector's settings, webhook signatures, and the tweepy client.

The client is tweepy's ``Client`` (API v2: ``create_direct_message``, ``create_tweet``),
signed with OAuth 1.0a user context: the brand's account sends the DMs and the public
replies. tweepy builds every URL from ``https://api.twitter.com``; to reach another
server (the tests' fake X API: ``X_API_BASE_URL``) it is handed a session (tweepy's
documented ``session`` attribute, a ``requests.Session``) that sends each request to that
server instead, path and query unchanged, signed for the URL it goes to.

Webhook signatures (Account Activity API): the challenge-response check answers a
``crc_token`` with ``sha256=<base64 HMAC-SHA256 of the token>``, and every POST carries
``x-twitter-webhooks-signature`` with the same HMAC over the raw body; both keyed with
the app's consumer secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import requests
from tweepy import Client

from bot.channels.base import ConnectorSettings
from bot.channels.common import ChannelCredentialsError, credential

CHANNEL_NAME = "x"
WEBHOOK_PATH = "/webhooks/x/webhook"
SIGNATURE_HEADER = "x-twitter-webhooks-signature"
SIGNATURE_PREFIX = "sha256="
ENV_CONSUMER_KEY = "X_CONSUMER_KEY"
ENV_CONSUMER_SECRET = "X_CONSUMER_SECRET"
ENV_ACCESS_TOKEN = "X_ACCESS_TOKEN"
ENV_ACCESS_TOKEN_SECRET = "X_ACCESS_TOKEN_SECRET"
ENV_BRAND_USER_ID = "X_BRAND_USER_ID"
ENV_BRAND_HANDLE = "X_BRAND_HANDLE"
ENV_BASE_URL = "X_API_BASE_URL"
# The link that opens a DM to the brand, for the public reply.
DM_LINK = "https://x.com/messages/compose?recipient_id={brand_id}"
POST_LINK = "https://x.com/{handle}/status/{post_id}"
# Where tweepy sends every call.
X_API = "https://api.twitter.com"
# Time-outs of one API call, seconds: X answers within a few seconds or not at all.
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 15.0

_USER_ID = re.compile(r"[0-9]{1,20}")
_HANDLE = re.compile(r"@?[A-Za-z0-9_]{1,15}")
_KEY_FORMAT = re.compile(r"[A-Za-z0-9_-]{8,200}")
_TOKEN_FORMAT = re.compile(r"[0-9]{1,20}-[A-Za-z0-9_-]{8,200}")


def challenge_response(crc_token: str, consumer_secret: str) -> str:
    """Return the ``response_token`` that answers X's challenge-response check of the webhook."""
    return signature(crc_token.encode("utf-8", "surrogateescape"), consumer_secret)


def signature(body: bytes, consumer_secret: str) -> str:
    """Return ``sha256=`` and the base64 HMAC-SHA256 of ``body`` keyed with the consumer secret."""
    digest = hmac.new(consumer_secret.encode("utf-8"), body, hashlib.sha256).digest()
    return SIGNATURE_PREFIX + base64.b64encode(digest).decode("ascii")


def signed_by_x(body: bytes, given: str, consumer_secret: str) -> bool:
    """Return whether ``given`` (the signature header) is X's signature of ``body`` (constant time)."""
    expected = signature(body, consumer_secret).encode("ascii")
    return bool(given) and hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected)


@dataclass(frozen=True)
class XSettings(ConnectorSettings):
    """Validated connector settings. ``token``: the brand's access token; ``secret``: the app's consumer secret."""

    consumer_key: str = field(default="", repr=False)
    access_token_secret: str = field(default="", repr=False)
    brand_id: str = ""
    brand_handle: str = ""

    @property
    def consumer_secret(self) -> str:
        """Return the app's consumer secret: it signs the webhooks and the API calls."""
        return self.secret

    @classmethod
    def read(cls, credentials: Mapping[str, Any], environ: Mapping[str, str]) -> XSettings:
        """Build the settings: the app's keys, the brand's access token pair, the brand's id and handle."""
        creds, env = credentials, environ

        def key(name: str, env_name: str, pattern: re.Pattern[str], what: str) -> str:
            return credential(creds, name, env_name, CHANNEL_NAME, env, pattern=pattern,
                              malformed=f"{env_name} does not look like {what}.")  # fmt: skip

        consumer_key = key("consumer_key", ENV_CONSUMER_KEY, _KEY_FORMAT, "an X app's API key (consumer key)")
        secret = key("consumer_secret", ENV_CONSUMER_SECRET, _KEY_FORMAT, "an X app's API key secret")
        token = key("access_token", ENV_ACCESS_TOKEN, _TOKEN_FORMAT, "an X access token (<user id>-<letters>)")
        token_secret = key("access_token_secret", ENV_ACCESS_TOKEN_SECRET, _KEY_FORMAT, "an X access token secret")
        brand_id = key("brand_user_id", ENV_BRAND_USER_ID, _USER_ID, "an X user id (digits only)")
        handle = key("brand_handle", ENV_BRAND_HANDLE, _HANDLE, "an X handle (letters, digits and _, at most 15)")
        if token.split("-", 1)[0] != brand_id:
            # An access token starts with the id of the account it acts for: a token of another
            # account would send the brand's replies from that account.
            raise ChannelCredentialsError(
                f"{ENV_ACCESS_TOKEN} belongs to another account than {ENV_BRAND_USER_ID}: generate the access "
                "token while signed in as the brand's account."
            )
        base_url = str(creds.get("base_url") or env.get(ENV_BASE_URL) or "").strip()
        return cls(token, secret, base_url, consumer_key, token_secret, brand_id, handle.lstrip("@"))

    @property
    def source(self) -> str:
        """Dedupe namespace: event ids count per subscribed account."""
        return f"{CHANNEL_NAME}:{self.brand_id}"

    @property
    def dm_link(self) -> str:
        """Return the link that opens a DM to the brand."""
        return DM_LINK.format(brand_id=self.brand_id)


class RedirectedSession(requests.Session):
    """What tweepy is given as its ``session``: sends every request to ``base_url`` instead of X.

    Only the scheme, host and port change; the path and query stay as tweepy made them,
    and the request is signed (OAuth 1.0a) for the URL it is sent to. Every request gets
    time-outs, which tweepy leaves out.
    """

    def __init__(self, base_url: str | None) -> None:
        """Redirect to ``base_url`` (``None``: send to X itself)."""
        super().__init__()
        self.base = base_url.rstrip("/") if base_url else None

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        """Send ``method`` ``url`` to the redirected host."""
        target = url.decode() if isinstance(url, bytes) else url
        if self.base is not None and target.startswith(X_API):
            target = self.base + target[len(X_API):]
        kwargs.setdefault("timeout", (CONNECT_TIMEOUT_S, READ_TIMEOUT_S))
        return super().request(method, target, *args, **kwargs)


def build_client(settings: XSettings) -> Client:
    """Return tweepy's v2 client for the brand's account (no network call); close with ``close_client``.

    tweepy's client is synchronous (its asynchronous one needs ``async_lru``, which the
    project does not pin): the sender runs each call in a thread.
    """
    client = Client(
        consumer_key=settings.consumer_key,
        consumer_secret=settings.consumer_secret,
        access_token=settings.token,
        access_token_secret=settings.access_token_secret,
        return_type=dict,
        wait_on_rate_limit=False,  # the sender decides how long a rate limit is worth waiting
    )
    client.session = RedirectedSession(settings.base_url or None)
    return client


def close_client(client: Client) -> None:
    """Close the client's connections."""
    client.session.close()
