"""Rasa's HTTP API, as far as the desk uses it: append tracker events, trigger an intent, read a tracker."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

import aiohttp

log = logging.getLogger(__name__)


class RasaError(RuntimeError):
    """Rasa answered with an error or could not be reached.

    Attributes:
        status: The HTTP status, or None when Rasa could not be reached.
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    @property
    def permanent(self) -> bool:
        """Return whether trying again cannot help (a 4xx other than 408/409/429)."""
        return self.status is not None and 400 <= self.status < 500 and self.status not in (408, 409, 429)


class RasaClient:
    """A small client for Rasa's HTTP API (``rasa run --enable-api``)."""

    def __init__(self, base_url: str, token: str | None = None, timeout_seconds: float = 30.0) -> None:
        """Talk to the Rasa server at ``base_url``; ``token`` is its ``--auth-token``, if any."""
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        """Close the HTTP connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _url(self, conversation_id: str, path: str) -> str:
        return f"{self.base_url}/conversations/{quote(conversation_id, safe='')}/{path}"

    def _params(self, **extra: str) -> dict[str, str]:
        params = dict(extra)
        if self._token:
            params["token"] = self._token
        return params

    async def _request(self, method: str, url: str, params: Mapping[str, str], body: Any = None) -> Any:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        try:
            async with self._session.request(method, url, params=params, json=body) as answer:
                text = await answer.text()
                if answer.status >= 400:
                    raise RasaError(f"Rasa answered {answer.status} to {method} {answer.url.path}: {text[:300]}", answer.status)
                return await answer.json(content_type=None) if text else None
        except aiohttp.ClientError as error:
            raise RasaError(f"Rasa not reachable at {self.base_url}: {error}") from error
        except asyncio.TimeoutError as error:
            raise RasaError(f"Rasa did not answer {method} in time") from error

    async def append_events(self, conversation_id: str, events: Sequence[Mapping[str, Any]]) -> None:
        """Append ``events`` (Rasa event dicts, e.g. ``{"event": "resume"}``) to the conversation."""
        url = self._url(conversation_id, "tracker/events")
        await self._request("POST", url, self._params(include_events="NONE"), [dict(event) for event in events])

    async def trigger_intent(self, conversation_id: str, intent: str) -> None:
        """Trigger ``intent``; the bot's answers go out on the customer's latest channel."""
        url = self._url(conversation_id, "trigger_intent")
        params = self._params(output_channel="latest", include_events="NONE")
        await self._request("POST", url, params, {"name": intent, "entities": []})

    async def events(self, conversation_id: str) -> list[dict[str, Any]]:
        """Return every event of the conversation."""
        url = self._url(conversation_id, "tracker")
        found = await self._request("GET", url, self._params(include_events="ALL"))
        return list((found or {}).get("events") or [])
