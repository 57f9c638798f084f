"""bot/resilience.py on a real Rasa agent (the trained model) and a local action server.

The action server is a small aiohttp app speaking Rasa's action protocol; it refuses,
drops or answers 502 as told, like a restarting server or a load balancer in front of none.
The tracker store that fails is Rasa's in-memory store with its writes or reads failing, as
a database that went away does.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from rasa.core.agent import Agent
from rasa.core.channels.channel import CollectingOutputChannel, UserMessage
from rasa.core.tracker_store import InMemoryTrackerStore
from rasa.shared.core.events import UserUttered
from rasa.shared.exceptions import RasaException
from rasa.utils.endpoints import ClientResponseError as EndpointResponseError
from rasa.utils.endpoints import EndpointConfig

from bot import resilience
from tests.fakes.telegram_api import free_port

MODEL = Path(__file__).resolve().parents[1] / "models" / "firstreply.tar.gz"
FROM_ACTIONS = "hello from the action server"


class ActionServer:
    """Answers every action with one line, after failing the first ``failures`` requests."""

    def __init__(self, failures: int = 0, how: str = "drop") -> None:
        self.failures = failures
        self.how = how
        self.requests = 0
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        await request.read()
        if self.requests <= self.failures:
            if self.how in ("500", "502"):
                return web.Response(status=int(self.how), text="no backend, or its database is away")
            assert request.transport is not None
            request.transport.close()  # a server killed mid-request
            return web.Response()
        return web.json_response({"events": [], "responses": [{"text": FROM_ACTIONS}]})

    async def start(self) -> ActionServer:
        app = web.Application()
        app.router.add_post("/webhook", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        sock = free_port()
        await web.SockSite(self.runner, sock).start()
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}/webhook"
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


class FailingStore(InMemoryTrackerStore):
    """An in-memory tracker store whose reads or writes fail, as when the database is down."""

    def __init__(self, *args: Any, fail: str = "save", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fail = fail

    async def save(self, tracker: Any) -> None:
        if self.fail == "save":
            raise OSError("database went away")
        await super().save(tracker)

    async def retrieve(self, sender_id: str) -> Any:
        if self.fail == "retrieve":
            raise OSError("database went away")
        return await super().retrieve(sender_id)


@pytest.fixture(autouse=True)
def installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(resilience.ENV_RETRY_SECONDS, "5")
    resilience.install()


@pytest_asyncio.fixture
async def agent_factory() -> AsyncIterator[Any]:
    if not MODEL.exists():
        pytest.fail(f"{MODEL} is missing: run `make train` (or `make test`, which trains first)")
    servers: list[ActionServer] = []

    async def make(server: ActionServer | None, tracker_store: Any = None) -> Agent:
        url = "http://127.0.0.1:9/webhook"  # discard port: nothing listens
        if server is not None:
            servers.append(await server.start())
            url = server.url
        return Agent.load(str(MODEL), action_endpoint=EndpointConfig(url), tracker_store=tracker_store)

    yield make
    for server in servers:
        await server.stop()


async def say(agent: Agent, sender: str, text: str) -> list[str]:
    channel = CollectingOutputChannel()
    await agent.handle_message(UserMessage(text, channel, sender))
    return [message.get("text", "") for message in channel.messages]


@pytest.mark.asyncio
@pytest.mark.parametrize("how", ["drop", "502", "500"])
async def test_an_action_server_that_is_briefly_away_is_tried_again(agent_factory: Any, how: str) -> None:
    server = ActionServer(failures=3, how=how)
    agent = await agent_factory(server)

    replies = await say(agent, "maria", "hi")

    assert FROM_ACTIONS in replies
    assert server.requests >= 4


@pytest.mark.asyncio
async def test_an_action_server_away_for_the_whole_budget_fails_the_message_and_saves_nothing(
    agent_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(resilience.ENV_RETRY_SECONDS, "0.6")
    store = InMemoryTrackerStore(domain=None)
    agent = await agent_factory(None, tracker_store=store)

    with pytest.raises(resilience.ActionServerUnavailable):
        await say(agent, "maria", "hi")

    # Rasa alone would have saved the message, without the action's reply. (Rasa saves an
    # empty conversation when it first meets a customer; the message is not in it.)
    saved = await store.retrieve("maria")
    assert saved is None or [event.text for event in saved.events if isinstance(event, UserUttered)] == []


@pytest.mark.asyncio
async def test_an_action_unknown_to_the_action_server_is_not_retried(agent_factory: Any) -> None:
    server = ActionServer()

    asked: list[str] = []

    async def unknown(request: web.Request) -> web.StreamResponse:
        server.requests += 1
        asked.append((await request.json()).get("next_action"))
        return web.json_response({"error": "No registered action found", "action_name": "x"}, status=404)

    server.handle = unknown  # type: ignore[method-assign]
    agent = await agent_factory(server)

    await say(agent, "maria", "hi")

    # A 4xx is not a server away: each custom action is asked once, Rasa's own handling stands.
    assert asked and len(asked) == len(set(asked)), asked


@pytest.mark.asyncio
@pytest.mark.parametrize("fail", ["save", "retrieve"])
async def test_a_failing_tracker_store_fails_the_message_instead_of_falling_back_to_memory(
    agent_factory: Any, fail: str
) -> None:
    store = FailingStore(domain=None, fail=fail)
    agent = await agent_factory(ActionServer(), tracker_store=store)

    with pytest.raises(OSError, match="database went away"):
        await say(agent, "maria", "hi")
    # Nothing went to Rasa's in-memory fallback, which other replicas never see.
    fallback = agent.tracker_store._fallback_tracker_store  # type: ignore[union-attr]
    assert fallback is None or await fallback.retrieve("maria") is None


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (aiohttp.ClientConnectionError("refused"), True),
        (aiohttp.ServerDisconnectedError(), True),
        (asyncio.TimeoutError(), True),
        (EndpointResponseError(502, "Bad Gateway", "x"), True),
        (EndpointResponseError(504, "Gateway Timeout", "x"), True),
        (EndpointResponseError(500, "Internal Server Error", "x"), True),
        (EndpointResponseError(404, "Not Found", "x"), False),
        (RasaException("no such action"), False),
    ],
)
def test_what_counts_as_the_action_server_being_away(error: BaseException, expected: bool) -> None:
    wrapped = RasaException("Failed to execute custom action")
    wrapped.__cause__ = error
    assert resilience.unreachable(wrapped) is expected


def test_a_malformed_retry_budget_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(resilience.ENV_RETRY_SECONDS, "soon")
    with pytest.raises(ValueError, match="FIRSTREPLY_ACTION_RETRY_SECONDS"):
        resilience.retry_seconds_from_env()


@pytest.mark.asyncio
async def test_the_nlu_runs_off_the_event_loop(agent_factory: Any) -> None:
    """While messages are parsed, the event loop keeps running other work (lease renewals)."""
    import threading

    agent = await agent_factory(None)
    ticks = 0
    threads: set[str] = set()
    parse_with_graph = agent.processor._parse_message_with_graph

    def recording(*args: Any, **kwargs: Any) -> Any:
        threads.add(threading.current_thread().name)
        return parse_with_graph(*args, **kwargs)

    agent.processor._parse_message_with_graph = recording  # type: ignore[method-assign]

    async def ticking() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    ticker = asyncio.create_task(ticking())
    parsed = [await agent.processor.parse_message(UserMessage(f"my parcel number {n} never arrived")) for n in range(5)]
    ticker.cancel()

    assert [p["intent"]["name"] for p in parsed] == ["order_status"] * 5
    assert threads == {"firstreply-nlu_0"}
    # The loop ran in between: many more ticks than the five awaits alone would give.
    assert ticks > 20
