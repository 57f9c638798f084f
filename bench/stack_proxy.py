"""A minimal round-robin HTTP load balancer for ``bench.stack``: ``python -m bench.stack_proxy``.

It runs as a process of its own, so its CPU time and memory are measured apart from the load
generator's, as a real load balancer's would be. Each POST goes to the next backend in turn;
``GET /__proxy__`` answers 200 (the benchmark's health check). The forwarding itself
(``backend_session``, ``relay``) is shared with the proxy the production-stack tests run in a
thread (tests/integration/stack_support.py).
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
from typing import List, Optional, Sequence

import aiohttp
from aiohttp import web

HEALTH_PATH = "/__proxy__"
# Headers a backend needs; hop-by-hop ones (Connection, Content-Length, ...) are aiohttp's job.
FORWARDED_HEADERS = (
    "Authorization", "Content-Type", "X-Telegram-Bot-Api-Secret-Token", "X-Slack-Request-Timestamp", "X-Slack-Signature",
    "X-Slack-Retry-Num", "X-Slack-Retry-Reason", "X-Hub-Signature-256", "X-Twitter-Webhooks-Signature",
)
# Idle connections to a backend are dropped before the backend drops them (Sanic closes
# keep-alive connections after 5 s): a request sent on a connection being closed would fail.
BACKEND_KEEPALIVE_S = 2.0
REQUEST_TIMEOUT_S = 600.0


def backend_session() -> aiohttp.ClientSession:
    """Return a client session for forwarding to backends: no connection limit, short keep-alive."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=BACKEND_KEEPALIVE_S),
        timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
    )


async def relay(session: aiohttp.ClientSession, backend: str, request: web.Request) -> web.Response:
    """POST ``request`` (body and ``FORWARDED_HEADERS``) to the same path on ``backend``; return its answer.

    Raises:
        aiohttp.ClientError: The backend could not be reached.
        asyncio.TimeoutError: It did not answer in ``REQUEST_TIMEOUT_S``.
    """
    headers = {name: request.headers[name] for name in FORWARDED_HEADERS if name in request.headers}
    body = await request.read()
    async with session.post(backend + request.path_qs, data=body, headers=headers) as answer:
        return web.Response(status=answer.status, body=await answer.read(), content_type=answer.content_type)


class RoundRobin:
    """Forwards each POST to the next of ``backends`` (base URLs, ``http://127.0.0.1:PORT``)."""

    def __init__(self, backends: Sequence[str]) -> None:
        """Take the backends; ``start`` opens the client session."""
        if not backends:
            raise ValueError("at least one --backend is needed")
        self.backends = [url.rstrip("/") for url in backends]
        self._turn = itertools.count()
        self._session: Optional[aiohttp.ClientSession] = None

    async def start(self, _app: web.Application) -> None:
        """Open the pooled client session (an aiohttp ``on_startup`` hook)."""
        self._session = backend_session()

    async def stop(self, _app: web.Application) -> None:
        """Close the client session (an aiohttp ``on_cleanup`` hook)."""
        if self._session is not None:
            await self._session.close()

    async def forward(self, request: web.Request) -> web.Response:
        """Send the request to the next backend and relay its answer (502 if it cannot be reached)."""
        assert self._session is not None
        backend = self.backends[next(self._turn) % len(self.backends)]
        try:
            return await relay(self._session, backend, request)
        except (aiohttp.ClientError, asyncio.TimeoutError) as error:
            return web.Response(status=502, text=f"proxy: {backend}: {error!r}")


async def _health(_request: web.Request) -> web.Response:
    return web.Response(text="ok")


def app(backends: Sequence[str]) -> web.Application:
    """Return the proxy's aiohttp application."""
    balancer = RoundRobin(backends)
    application = web.Application(client_max_size=1 << 20)
    application.on_startup.append(balancer.start)
    application.on_cleanup.append(balancer.stop)
    application.router.add_get(HEALTH_PATH, _health)
    application.router.add_post("/{path:.*}", balancer.forward)
    return application


def main(argv: Optional[List[str]] = None) -> None:
    """Serve on 127.0.0.1 until terminated."""
    parser = argparse.ArgumentParser(prog="python -m bench.stack_proxy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--backend", action="append", required=True, help="a backend's base URL (repeat for more)")
    args = parser.parse_args(argv)
    web.run_app(app(args.backend), host="127.0.0.1", port=args.port, access_log=None, print=None, backlog=1024)


if __name__ == "__main__":
    main()
