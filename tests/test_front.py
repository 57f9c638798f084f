"""The front process (``bot.front``): the inbox channels' webhooks served there, everything else passed to Rasa.

The front's real Sanic app on a free port; the Telegram connector with python-telegram-bot
against the fake Bot API; "Rasa" behind it is a small HTTP server that records what reaches
it, then, for the hand-over, the Telegram connector in Rasa's real Sanic app on the same
inbox file (its agent replaced by one that answers as the dialogue does).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from sanic import Sanic
from sqlalchemy import select

from bot.channels.inbox import PENDING
from bot.channels.inbox import inbox as inbox_table
from bot.channels.telegram import TelegramInput
from bot.channels.telegram_output import SECRET_HEADER, TelegramSettings
from bot.constants import GREETED_AT_EDGE
from bot.front import create_app, inbox_channels
from tests.channel_support import serving
from tests.fakes.server import free_port
from tests.fakes.telegram_api import FakeTelegramAPI, run_webhook_answer
from tests.polling import until
from tests.test_edge_greeting import ACK, PARCEL, DialogueAgent
from tests.test_telegram_channel import SECRET, WEBHOOK, message_update, serve
from tests.test_telegram_channel import api, settings  # noqa: F401  (the fake Bot API and the connector's settings)

pytestmark = pytest.mark.edge_greeting  # the channel's greeting on, as in production

GREETING = "Hi Maria! I'm Northwind's assistant."


@pytest.fixture(autouse=True)
def channel_db(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    path = tmp_path / "channels.db"
    monkeypatch.setenv("FIRSTREPLY_CHANNEL_DB", str(path))
    monkeypatch.setenv("FIRSTREPLY_PULL_SECONDS", "0.05")
    return path


@dataclass
class Upstream:
    """Stands in for Rasa's port: records each request and answers 201 with a header of its own."""

    url: str = ""
    seen: list[dict[str, Any]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append({"method": request.method, "path_qs": request.path_qs, "headers": {k.lower(): v for k, v in request.headers.items()},
                          "body": await request.read()})  # fmt: skip
        if request.path == "/missing":
            return web.json_response({"error": "not found"}, status=404)
        answer = web.json_response({"recipient_id": "maria", "text": "Hi"}, status=201, headers={"X-Rasa": "yes"})
        answer.headers.add("Set-Cookie", "a=1")
        answer.headers.add("Set-Cookie", "b=2")
        return answer


@asynccontextmanager
async def upstream() -> AsyncIterator[Upstream]:
    recorder = Upstream()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", recorder.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = free_port()
    site = web.SockSite(runner, sock)
    await site.start()
    recorder.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        yield recorder
    finally:
        await runner.cleanup()


def front(channels: list[Any], rasa_url: str) -> Sanic:
    Sanic.test_mode = True
    return create_app(channels, rasa_url)


@pytest.mark.asyncio
async def test_everything_but_the_inbox_webhooks_reaches_rasa_unchanged() -> None:
    async with upstream() as rasa, serving(front([], rasa.url)) as client:
        body = json.dumps({"sender": "maria", "message": "where is my parcel??"}).encode()
        answer = await client.post("/webhooks/rest/webhook?token=t0k&x=1", content=body,
                                   headers={"Content-Type": "application/json", "X-Custom": "kept"})  # fmt: skip
        missing = await client.get("/missing")
        root = await client.get("/")

    assert (answer.status_code, answer.json(), answer.headers["x-rasa"]) == (201, {"recipient_id": "maria", "text": "Hi"}, "yes")
    assert answer.headers["content-type"].startswith("application/json")
    assert answer.headers.get_list("set-cookie") == ["a=1", "b=2"]  # repeated headers stay repeated
    assert missing.status_code == 404 and root.status_code == 201
    first = rasa.seen[0]
    assert (first["method"], first["path_qs"], first["body"]) == ("POST", "/webhooks/rest/webhook?token=t0k&x=1", body)
    assert first["headers"]["x-custom"] == "kept" and first["headers"]["x-forwarded-for"] == "127.0.0.1"
    assert [(r["method"], r["path_qs"]) for r in rasa.seen[1:]] == [("GET", "/missing"), ("GET", "/")]


@pytest.mark.asyncio
async def test_rasa_away_is_a_clear_answer_the_caller_can_retry() -> None:
    closed = free_port()  # bound, never listening
    async with serving(front([], f"http://127.0.0.1:{closed.getsockname()[1]}")) as client:
        answer = await client.post("/webhooks/rest/webhook", json={"sender": "maria", "message": "hi"})
    closed.close()

    assert answer.status_code == 503
    assert "try again" in answer.json()["error"]


@pytest.mark.asyncio
async def test_a_telegram_update_is_stored_queued_and_the_new_customer_greeted_at_the_front(
    settings: TelegramSettings, api: FakeTelegramAPI, channel_db: Path
) -> None:
    channel = TelegramInput(settings)
    channel.serve_intake_only()
    async with upstream() as rasa, serving(front([channel], rasa.url)) as client:
        health = [(await client.get(path)).json() for path in ("/webhooks/telegram", "/webhooks/telegram/")]
        refused = await client.post(WEBHOOK, json=message_update(1, text=PARCEL), headers={SECRET_HEADER: "wrong"})
        answer = await client.post(WEBHOOK, json=message_update(2, text=PARCEL), headers={SECRET_HEADER: SECRET})
        run_webhook_answer(settings.base_url, settings.token, answer.json())
        await until("the greeting", lambda: api.sent_texts(4242) == [GREETING])
        await channel.tasks.wait()

    assert health == [{"status": "ok"}, {"status": "ok"}]  # the front's own, with or without the slash
    assert refused.status_code == 401
    # The first sign rides on the webhook's answer, as in Rasa's own process.
    assert (answer.status_code, answer.json()) == (200, {"method": "sendChatAction", "chat_id": 4242, "action": "typing"})
    assert rasa.seen == []  # the webhook never went on to Rasa
    with channel.inbox._engine.connect() as conn:
        rows = conn.execute(select(inbox_table.c.update_id, inbox_table.c.state, inbox_table.c.lease_owner)).all()
    assert [tuple(row) for row in rows] == [("2", PENDING, None)]  # queued: for a Rasa process to take


@pytest.mark.asyncio
async def test_a_rasa_process_takes_the_queued_update_and_answers_without_greeting_again(
    settings: TelegramSettings, api: FakeTelegramAPI
) -> None:
    at_front = TelegramInput(settings)
    at_front.serve_intake_only()
    in_rasa = TelegramInput(settings)
    agent = DialogueAgent(replies=[ACK])
    async with upstream() as rasa, serving(front([at_front], rasa.url)) as client:
        answer = await client.post(WEBHOOK, json=message_update(1, text=PARCEL), headers={SECRET_HEADER: SECRET})
        assert answer.status_code == 200
        await until("the greeting", lambda: api.sent_texts(4242) == [GREETING])
        async with serve(in_rasa, agent):
            await until("the answer", lambda: api.sent_texts(4242) == [GREETING, ACK["text"]])
            await in_rasa.tasks.wait()

    [(text, sender, metadata)] = agent.seen()
    assert (text, sender) == (PARCEL, "4242")
    assert metadata[GREETED_AT_EDGE]["text"] == GREETING  # recorded in the conversation, not sent twice
    with in_rasa.inbox._engine.connect() as conn:
        assert conn.execute(select(inbox_table.c.state)).scalars().all() == ["done"]


def test_the_front_serves_only_the_channels_that_keep_an_inbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              settings: TelegramSettings) -> None:  # fmt: skip
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", settings.token)
    monkeypatch.setenv("TELEGRAM_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("TELEGRAM_API_BASE_URL", settings.base_url)
    credentials = tmp_path / "credentials.yml"
    credentials.write_text("rest:\nbot.channels.webchat.WebChatInput:\nbot.channels.telegram.TelegramInput:\n"
                           "  token: ${TELEGRAM_BOT_TOKEN}\n  webhook_secret: ${TELEGRAM_WEBHOOK_SECRET}\n")  # fmt: skip

    channels = inbox_channels(str(credentials))

    assert [(c.name(), c.intake_only) for c in channels] == [("telegram", True)]
    assert channels[0].worker(settings.source).reserve("1") is False  # never room: every update is queued
