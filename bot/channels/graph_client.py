"""A small async client of Meta's Graph API for the Messenger and Instagram connectors.

No maintained, typed, async Messenger/Instagram client exists (``fbmessenger``, which
Rasa's ``facebook`` channel uses, has had no release since 2020 and is synchronous), so
this is a thin layer over ``httpx``, the HTTP library the project already uses:

- the token goes in the ``Authorization`` header, never in a URL (httpx logs URLs);
- every failure is a ``bot.channels.meta.GraphError`` carrying Meta's code and subcode,
  whatever shape the answer had (a body that is not JSON keeps only the HTTP status);
- rate limits (codes 4, 613, HTTP 429) and network failures are retried with back-off,
  up to ``max_attempts``; everything else is raised at once for the caller to judge;
- one HTTP client for the sending thread and one for the caller's loop
  (``bot.channels.sending.PerLoop``): the replies go out on the sending thread.

Anchors: Meta's Send API and Graph API error-handling references.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import httpx

from bot.channels.meta import GraphError
from bot.channels.sending import PerLoop

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://graph.facebook.com"
GRAPH_VERSION = "v21.0"
# Sending is quick; a slow Graph answer is better retried from the inbox than waited for.
TIMEOUT = httpx.Timeout(10.0, connect=5.0)
# Failures before a request was sent: it cannot have reached Meta.
_NOTHING_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


class GraphClient:
    """Calls one Graph API account (a Page, an Instagram account) with its access token."""

    def __init__(
        self,
        token: str,
        base_url: str = DEFAULT_BASE_URL,
        *,
        max_attempts: int = 3,
        backoff_seconds: float = 0.5,
        timeout: httpx.Timeout = TIMEOUT,
    ) -> None:
        """Build the client (no network call); ``close`` releases its connections."""
        self.max_attempts = max_attempts
        self.backoff_seconds = backoff_seconds
        self._clients: PerLoop[httpx.AsyncClient] = PerLoop(
            lambda: httpx.AsyncClient(
                base_url=f"{base_url.rstrip('/')}/{GRAPH_VERSION}/",
                headers={"Authorization": f"Bearer {token}"},
                timeout=timeout,
            ),
            lambda client: client.is_closed,
        )

    @property
    def _http(self) -> httpx.AsyncClient:
        return self._clients.get()

    async def close(self) -> None:
        """Close the HTTP connections (the sending thread's on its own loop)."""
        await self._clients.close(lambda client: client.aclose())

    async def post(self, path: str, payload: Mapping[str, Any], *, again_if_unsure: bool = True) -> dict[str, Any]:
        """POST ``payload`` (JSON) to ``path``; return Meta's answer.

        ``again_if_unsure=False``: a request that may have reached Meta without its answer
        coming back is not sent again here but raised (``GraphError.unsure``), for a caller
        that can look first whether it went through.

        Raises:
            GraphError: Meta refused, or answered oddly, or could not be reached after the retries.
        """
        return await self._call("POST", path, again_if_unsure=again_if_unsure, json=dict(payload))

    async def get(self, path: str, params: Mapping[str, str]) -> dict[str, Any]:
        """GET ``path`` with query ``params``; return Meta's answer (``GraphError`` as ``post``)."""
        return await self._call("GET", path, params=dict(params))

    async def _call(self, verb: str, path: str, *, again_if_unsure: bool = True, **request: Any) -> dict[str, Any]:
        for attempt in range(1, self.max_attempts + 1):
            try:
                return await self._once(verb, path, **request)
            except GraphError as error:
                if not error.rate_limited or attempt == self.max_attempts:
                    raise
                reason = str(error)
            except httpx.TransportError as error:
                unsure = not isinstance(error, _NOTHING_SENT)
                if attempt == self.max_attempts or (unsure and not again_if_unsure):
                    # No answer at all: status 0, so no Graph code says "refused for good".
                    raise GraphError(0, message=f"{type(error).__name__}: {error}", unsure=unsure) from error
                reason = type(error).__name__
            wait = self.backoff_seconds * 2 ** (attempt - 1)
            log.warning("graph %s %s: %s, retry %d in %.1fs", verb, path, reason, attempt, wait)
            await asyncio.sleep(wait)
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _once(self, verb: str, path: str, **request: Any) -> dict[str, Any]:
        answer = await self._http.request(verb, path.lstrip("/"), **request)
        try:
            body = answer.json()
        except ValueError:
            body = None
        if answer.is_success and isinstance(body, dict) and "error" not in body:
            return body
        raise GraphError.from_answer(answer.status_code, body)

