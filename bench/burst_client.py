"""``python -m bench.burst_client``: POST a burst of webhooks over N keep-alive connections, from a process of its own.

The burst benches (``bench.first_message --burst``) time the first thing a customer sees
from the moment the platform POSTs their message. The platform's side must cost less than
the server under test, or it measures itself: 40 client threads in the benchmark's own
process (which also runs the fake platforms) put a server that does nothing at p99 110-270 ms
on 2 cores. Here one asyncio loop (aiohttp) in a process of its own holds the connections,
as Telegram's delivery does: each connection carries one update at a time, the next as soon
as the last was answered.

Reads a JSON list of ``{"key": ..., "body": ...}`` on stdin (the bodies are sent as JSON, in
order, each by the first connection free) and writes, on stdout, one line of JSON: per key
``[started, answered, method]``, ``time.perf_counter()`` values (``CLOCK_MONOTONIC`` on Linux,
the same clock in every process of the machine) and the ``method`` the webhook's answer asked
the platform to run (Telegram's typing indicator), or ``null``. Before the burst it opens the
connections with GETs of ``--warm`` (the webhook's health route), as a platform's connections
are already open when a burst begins. A refused update (an answer that is not 2xx) stops the
run with an error: a platform would retry it, and the timing would not be one delivery's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

import aiohttp


async def burst(url: str, warm: str, connections: int, headers: dict[str, str],
                requests: list[dict[str, Any]]) -> dict[str, list[Any]]:  # fmt: skip
    """POST every request's body to ``url`` over ``connections`` connections; return the timings per key."""
    timings: dict[str, list[Any]] = {}
    connector = aiohttp.TCPConnector(limit=connections, limit_per_host=connections)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, headers=headers) as session:

        async def open_connection() -> None:
            async with session.get(warm) as answer:
                await answer.read()

        await asyncio.gather(*(open_connection() for _ in range(connections)))
        pending = iter(requests)

        async def carry() -> None:
            for request in pending:
                started = time.perf_counter()
                async with session.post(url, json=request["body"]) as answer:
                    raw = await answer.read()
                    answered = time.perf_counter()
                    if not 200 <= answer.status < 300:
                        raise RuntimeError(f"update {request['key']} refused: {answer.status} {raw[:200]!r}")
                try:
                    method = json.loads(raw).get("method") if raw else None
                except (ValueError, AttributeError):
                    method = None
                timings[str(request["key"])] = [started, answered, method]

        await asyncio.gather(*(carry() for _ in range(connections)))
    return timings


def main(argv: list[str] | None = None) -> int:
    """Run one burst as the command line says; print its timings."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="the webhook to POST to")
    parser.add_argument("--warm", required=True, help="a URL to GET on every connection before the burst")
    parser.add_argument("--connections", type=int, default=40, help="connections at once (default 40)")
    parser.add_argument("--header", action="append", default=[], metavar="NAME:VALUE", help="a header of every POST")
    args = parser.parse_args(argv)
    headers = dict(item.split(":", 1) for item in args.header)
    requests = json.load(sys.stdin)
    timings = asyncio.run(burst(args.url, args.warm, args.connections, headers, requests))
    print(json.dumps(timings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
