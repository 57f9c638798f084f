"""The burst benches' load generator (``bench.burst_client``) against a local aiohttp server."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any

import pytest
from aiohttp import web

from bench.burst_client import burst
from tests.processes import ROOT, base_env


class Webhook:
    """A webhook that takes a while to answer and remembers what it saw."""

    def __init__(self, refuse: str | None = None) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[str | None] = []
        self.warmed = 0
        self.now = 0
        self.most = 0
        self.refuse = refuse

    async def post(self, request: web.Request) -> web.Response:
        self.now += 1
        self.most = max(self.most, self.now)
        try:
            body = await request.json()
            self.bodies.append(body)
            self.headers.append(request.headers.get("X-Secret"))
            await asyncio.sleep(0.02)
            if body["n"] == self.refuse:
                return web.json_response({"ok": False}, status=403)
            return web.json_response({"method": "sendChatAction"} if body["n"] % 2 else {"ok": True})
        finally:
            self.now -= 1

    async def get(self, _: web.Request) -> web.Response:
        self.warmed += 1
        return web.json_response({"status": "ok"})


async def _serve(webhook: Webhook) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_post("/hook", webhook.post)
    app.router.add_get("/health", webhook.get)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


@pytest.mark.asyncio
async def test_every_update_goes_once_over_at_most_the_connections_given() -> None:
    webhook = Webhook()
    runner, base = await _serve(webhook)
    try:
        requests = [{"key": f"c{n}", "body": {"n": n}} for n in range(12)]
        timings = await burst(f"{base}/hook", f"{base}/health", 3, {"X-Secret": "s3"}, requests)
    finally:
        await runner.cleanup()
    assert sorted(body["n"] for body in webhook.bodies) == list(range(12))
    assert set(webhook.headers) == {"s3"}
    assert webhook.warmed == 3
    assert webhook.most == 3  # never more than the connections, and all of them used
    assert set(timings) == {f"c{n}" for n in range(12)}
    for n in range(12):
        started, answered, method = timings[f"c{n}"]
        assert answered - started >= 0.015
        assert method == ("sendChatAction" if n % 2 else None)


@pytest.mark.asyncio
async def test_a_refused_update_stops_the_burst_with_its_answer() -> None:
    webhook = Webhook(refuse=4)
    runner, base = await _serve(webhook)
    try:
        with pytest.raises(RuntimeError, match="update c4 refused: 403"):
            await burst(f"{base}/hook", f"{base}/health", 2, {}, [{"key": f"c{n}", "body": {"n": n}} for n in range(6)])
    finally:
        await runner.cleanup()


def test_the_command_reads_the_burst_on_stdin_and_prints_the_timings() -> None:
    async def run_server_and_command() -> tuple[subprocess.CompletedProcess[str], Webhook]:
        webhook = Webhook()
        runner, base = await _serve(webhook)
        try:
            command = [sys.executable, "-m", "bench.burst_client", "--url", f"{base}/hook", "--warm", f"{base}/health",
                       "--connections", "2", "--header", "X-Secret:a:b"]  # fmt: skip
            requests = json.dumps([{"key": n, "body": {"n": n}} for n in range(4)])
            done = await asyncio.to_thread(subprocess.run, command, input=requests, capture_output=True, text=True,
                                           env=base_env(), cwd=ROOT, timeout=120)  # fmt: skip
        finally:
            await runner.cleanup()
        return done, webhook

    done, webhook = asyncio.run(run_server_and_command())
    assert done.returncode == 0, done.stderr
    timings = json.loads(done.stdout)
    assert sorted(timings) == ["0", "1", "2", "3"]
    assert [timings[str(n)][2] for n in range(4)] == [None, "sendChatAction", None, "sendChatAction"]
    assert set(webhook.headers) == {"a:b"}
