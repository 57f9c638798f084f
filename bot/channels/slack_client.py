"""Slack's Web API side of the Slack DM connector: settings and the client that retries safely.

The client (``build_client``) retries what is safe to repeat: 429s after their Retry-After,
connections never made, and 5xx or lost connections of calls that change nothing. A post
is not retried blindly (``NOT_IDEMPOTENT``): ``bot.channels.slack_output.SlackDMOutput``
looks it up in the DM's history first (``may_have_posted`` says when it must).
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.http_retry.interval_calculator import RetryIntervalCalculator
from slack_sdk.web.async_client import AsyncWebClient

from bot.channels.base import ConnectorSettings
from bot.channels.common import ChannelCredentialsError, credential

if TYPE_CHECKING:
    from slack_sdk.http_retry.request import HttpRequest
    from slack_sdk.http_retry.response import HttpResponse
    from slack_sdk.http_retry.state import RetryState

log = logging.getLogger(__name__)

CHANNEL_NAME = "slack_dm"
DEFAULT_BASE_URL = "https://slack.com/api/"
ENV_TOKEN = "SLACK_BOT_TOKEN"
ENV_SIGNING_SECRET = "SLACK_SIGNING_SECRET"
ENV_BASE_URL = "SLACK_API_BASE_URL"
ENV_OAUTH_CLIENT_ID = "SLACK_CLIENT_ID"
ENV_OAUTH_CLIENT_SECRET = "SLACK_CLIENT_SECRET"
# Message metadata that marks a post with its idempotency key (``SlackDMOutput.post_once``).
DELIVERY_EVENT = "firstreply_message"
# Web API methods that post something new: sending them again after a lost answer may post twice.
NOT_IDEMPOTENT = frozenset({"chat.postMessage", "chat.postEphemeral", "chat.meMessage", "chat.scheduleMessage"})
# Slack refusals (``ok: false``) that may mend if tried later: the token or scopes being fixed,
# Slack itself. Any other refusal of a reply (the DM gone, a message Slack will never take)
# drops that reply, logged: handling the event again would not change the answer.
RETRYABLE_ERRORS = frozenset({
    "ratelimited", "invalid_auth", "not_authed", "token_revoked", "token_expired",
    "missing_scope", "no_permission", "fatal_error", "internal_error", "service_unavailable", "request_timeout",
})  # fmt: skip
_BOT_TOKEN_FORMAT = re.compile(r"xoxb-[A-Za-z0-9-]+")


# --- settings and the Web API client ----------------------------------------------------


@dataclass(frozen=True)
class SlackSettings(ConnectorSettings):
    """Validated connector settings: the app's bot token, its signing secret, the Web API."""

    base_url: str = DEFAULT_BASE_URL

    @property
    def signing_secret(self) -> str:
        """Return the secret Slack signs every request with."""
        return self.secret

    @classmethod
    def read(cls, credentials: Mapping[str, Any], environ: Mapping[str, str]) -> SlackSettings:
        """Build the settings: the app's bot token, its signing secret, no OAuth variables in the way."""
        creds, env = credentials, environ
        token = credential(
            creds, "token", ENV_TOKEN, CHANNEL_NAME, env, pattern=_BOT_TOKEN_FORMAT,
            malformed=f"{ENV_TOKEN} must be the app's bot token (xoxb-...), from OAuth & Permissions in the app "
            "settings.",
        )  # fmt: skip
        secret = credential(creds, "signing_secret", ENV_SIGNING_SECRET, CHANNEL_NAME, env)
        if env.get(ENV_OAUTH_CLIENT_ID) and env.get(ENV_OAUTH_CLIENT_SECRET):
            # slack-bolt reads these itself and would ignore the bot token for OAuth installs.
            raise ChannelCredentialsError(
                f"{ENV_OAUTH_CLIENT_ID} and {ENV_OAUTH_CLIENT_SECRET} are set: slack-bolt would switch the "
                f"{CHANNEL_NAME} channel to OAuth installs and ignore {ENV_TOKEN}. Unset them for Rasa."
            )
        base_url = str(creds.get("base_url") or env.get(ENV_BASE_URL) or DEFAULT_BASE_URL).strip()
        return cls(token, secret, base_url.rstrip("/") + "/")


class _Backoff(RetryIntervalCalculator):
    """Exponential backoff with up to a quarter more at random, so replicas do not retry in step."""

    def __init__(self, first_seconds: float) -> None:
        self.first_seconds = first_seconds

    def calculate_sleep_duration(self, current_attempt: int) -> float:
        return self.first_seconds * 2**current_attempt * (1 + random.random() / 4)


def _method(request: HttpRequest) -> str:
    return request.url.rsplit("/", 1)[-1]


def _retry_after(response: HttpResponse) -> float:
    values = {key.lower(): value for key, value in response.headers.items()}.get("retry-after") or ["1"]
    try:
        return max(0.0, float(values[0]))
    except ValueError:
        return 1.0


class _Judged:
    """slack_sdk asks its retry handlers with four keyword arguments; ours read them here, once.

    Put before the SDK's handler class: ``judge`` says whether to retry.
    """

    async def _can_retry_async(
        self, *, state: RetryState, request: HttpRequest,
        response: HttpResponse | None = None, error: Exception | None = None,
    ) -> bool:  # fmt: skip
        return await self.judge(state, request, response, error)

    async def judge(
        self, state: RetryState, request: HttpRequest, response: HttpResponse | None, error: Exception | None
    ) -> bool:
        raise NotImplementedError


class _RateLimitRetry(_Judged, AsyncRateLimitErrorRetryHandler):
    """Waits out a 429 for as long as its Retry-After says, unless that is beyond the cap."""

    def __init__(self, max_retry_count: int, max_wait_seconds: float) -> None:
        super().__init__(max_retry_count)
        self.max_wait_seconds = max_wait_seconds

    async def judge(
        self, state: RetryState, request: HttpRequest, response: HttpResponse | None, error: Exception | None
    ) -> bool:
        if response is None or response.status_code != 429:
            return False
        wait = _retry_after(response)
        if wait > self.max_wait_seconds:
            log.warning("slack %s: rate limited for %.0fs, more than we wait; giving up", _method(request), wait)
            return False
        log.warning("slack %s: rate limited, retry %d in %.0fs", _method(request), state.current_attempt + 1, wait)
        return True

    async def prepare_for_next_attempt_async(
        self, *, state: RetryState, request: HttpRequest,
        response: HttpResponse | None = None, error: Exception | None = None,
    ) -> None:  # fmt: skip
        # The SDK's own version reads Retry-After with int() and adds up to a second.
        assert response is not None  # judge said yes to a 429 answer
        state.next_attempt_requested = True
        await asyncio.sleep(_retry_after(response) * (1 + random.random() / 10))
        state.increment_current_attempt()


class _ServerErrorRetry(_Judged, AsyncServerErrorRetryHandler):
    """Retries any 5xx answer (the SDK's own handler knows only 500 and 503) of a call safe to repeat.

    A post answered 5xx may have been posted: ``SlackDMOutput.post_once`` checks before it
    posts again, which a retry handler cannot (it can only say "try again", not "done").
    """

    async def judge(
        self, state: RetryState, request: HttpRequest, response: HttpResponse | None, error: Exception | None
    ) -> bool:
        if response is None or response.status_code < 500 or _method(request) in NOT_IDEMPOTENT:
            return False
        log.warning(
            "slack %s: server error %d, retry %d", _method(request), response.status_code, state.current_attempt + 1
        )
        return True


class _ConnectionRetry(_Judged, AsyncConnectionErrorRetryHandler):
    """Retries lost connections; for a post, only a connection that was never made (nothing sent)."""

    async def judge(
        self, state: RetryState, request: HttpRequest, response: HttpResponse | None, error: Exception | None
    ) -> bool:
        if _method(request) in NOT_IDEMPOTENT and not isinstance(error, aiohttp.ClientConnectorError):
            return False
        return await AsyncConnectionErrorRetryHandler._can_retry_async(
            self, state=state, request=request, response=response, error=error
        )


def may_have_posted(error: BaseException) -> bool:
    """Return whether a post that failed with ``error`` may still have reached Slack.

    True for the answers lost after sending: a time-out, a connection dropped or reset, a
    5xx. False for a connection never made and for Slack's own refusals (4xx, ``ok: false``).
    """
    if isinstance(error, SlackApiError):
        return error.response is not None and error.response.status_code >= 500
    if isinstance(error, aiohttp.ClientConnectorError):
        return False
    return isinstance(
        error,
        (asyncio.TimeoutError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError, aiohttp.ClientPayloadError),
    )


def refused_for_good(error: SlackApiError) -> bool:
    """Return whether Slack refused a call in a way that trying again later will not mend."""
    status = error.response.status_code if error.response is not None else 0
    return 200 <= status < 500 and status != 429 and error.response.get("error") not in RETRYABLE_ERRORS


def delivery_metadata(key: str) -> dict[str, Any]:
    """Return the message metadata that marks a post with its idempotency ``key``."""
    return {"event_type": DELIVERY_EVENT, "event_payload": {"key": key}}


def build_client(
    settings: SlackSettings,
    *,
    max_attempts: int = 4,
    backoff_seconds: float = 0.5,
    max_retry_after: float = 60.0,
    timeout: int = 15,
) -> AsyncWebClient:
    """Return a Web API client (no network call) that retries 429s, 5xx and lost connections.

    Every call is tried at most ``max_attempts`` times; a Retry-After beyond
    ``max_retry_after`` seconds is not waited for; an answer is waited for ``timeout``
    seconds. Posts are retried here only where nothing was sent (429, no connection);
    ``SlackDMOutput`` retries the rest after checking. The client opens a connection per
    call, so there is nothing to close.
    """
    retries = max_attempts - 1
    backoff = _Backoff(backoff_seconds)
    handlers: list[AsyncRetryHandler] = [
        _RateLimitRetry(retries, max_retry_after),
        _ServerErrorRetry(retries, backoff),
        _ConnectionRetry(retries, backoff),
    ]
    return AsyncWebClient(token=settings.token, base_url=settings.base_url, timeout=timeout, retry_handlers=handlers)


def slack_error(error: BaseException) -> str:
    """Return what the log says of a failed call: Slack's error code where it gave one."""
    if isinstance(error, SlackApiError) and error.response is not None:
        return str(error.response.get("error"))
    return repr(error)


def server_error_retries(client: AsyncWebClient) -> tuple[int, RetryIntervalCalculator | None]:
    """Return how many times ``client`` retries a 5xx answer, and its back-off between tries."""
    handler = next((h for h in client.retry_handlers or [] if isinstance(h, _ServerErrorRetry)), None)
    if handler is None:
        return 0, None
    return handler.max_retry_count, handler.interval_calculator
