"""What the channel tests share: Rasa's real Sanic app serving channels, an agent that
records, a channel store in a file, and credentials checks.

Each connector's test module (``tests/test_*_channel.py``) and the webhook fuzz tests
(``tests/fuzz_support.py``) serve their channels through ``served_app``: Rasa's app as
``rasa run`` builds it (``configure_app``), the agent replaced by the test's, on a free
port, with an HTTP client pointed at it.
"""

from __future__ import annotations

import asyncio
import logging
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from rasa.core.channels.channel import InputChannel, UserMessage
from rasa.core.run import configure_app, create_http_input_channels
from sanic import Sanic

from bot.channels.common import ChannelCredentialsError
from bot.channels.dedupe import ChannelStore
from tests.fakes.server import free_port


@contextmanager
def channel_store(folder: Path) -> Iterator[ChannelStore]:
    """Open the channels' database in a SQLite file in ``folder``; dispose of it afterwards."""
    opened = ChannelStore.from_url(f"sqlite:///{folder / 'channels.db'}")
    try:
        yield opened
    finally:
        opened.dispose()


@asynccontextmanager
async def served_app(
    channels: Sequence[InputChannel],
    agent: Any,
    *,
    timeout: float = 10,
    prepare: Callable[[Sanic], None] | None = None,
) -> AsyncIterator[tuple[Sanic, httpx.AsyncClient]]:
    """Serve Rasa's Sanic app with ``channels`` registered and ``agent`` as its agent.

    ``prepare`` sees the app before the server starts (to add a middleware, say). On the
    way out the server stops as Rasa's does, which runs the channels' ``after_server_stop``
    listeners (closing them).
    """
    Sanic.test_mode = True  # Rasa names every app the same
    app = configure_app(input_channels=list(channels), enable_api=False)
    app.ctx.agent = agent
    if prepare is not None:
        prepare(app)
    async with serving(app, timeout) as client:
        yield app, client


@asynccontextmanager
async def serving(app: Sanic, timeout: float = 10) -> AsyncIterator[httpx.AsyncClient]:
    """Serve ``app`` on a free port with its listeners run as Sanic runs them; yield a client pointed at it."""
    sock = free_port()
    port = sock.getsockname()[1]
    server = await app.create_server(sock=sock, return_asyncio_server=True, access_log=False)
    assert server is not None
    await server.startup()
    await server.before_start()
    await server.after_start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=timeout) as client:
            yield client
    finally:
        await server.before_stop()
        server.close()
        await server.wait_closed()
        await server.after_stop()
        sock.close()


def rasa_channels(
    credentials_yml: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, environ: Mapping[str, str]
) -> list[Any]:
    """Return the channels Rasa builds from ``credentials_yml``, with ``environ`` set."""
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    credentials = tmp_path / "credentials.yml"
    credentials.write_text(credentials_yml)
    with warnings.catch_warnings():
        # Rasa 3.6 imports a channel class with the deprecated load_module(); not ours to fix.
        warnings.filterwarnings("ignore", "the load_module", DeprecationWarning)
        return list(create_http_input_channels(None, str(credentials)))


async def logged_failure(
    caplog: pytest.LogCaptureFixture, delivery: Awaitable[httpx.Response]
) -> tuple[httpx.Response, logging.LogRecord]:
    """Await ``delivery`` of a message the agent fails on; return the answer and the inbox's log of the failure."""
    with caplog.at_level(logging.WARNING, logger="bot.channels.inbox"):
        answer = await delivery
    [record] = [r for r in caplog.records if r.name == "bot.channels.inbox"]
    return answer, record


def credentials_refusal(build: Callable[[], object]) -> str:
    """Return the message of the ``ChannelCredentialsError`` that ``build`` must raise."""
    with pytest.raises(ChannelCredentialsError) as raised:
        build()
    return str(raised.value)


@dataclass
class RecordingAgent:
    """Stands in for ``rasa.core.agent.Agent``: records messages, answers like Rasa does.

    It answers with ``replies`` through the message's output channel; ``gate`` holds it
    before answering (Rasa being slow), ``error`` makes it fail instead (an action server
    down). A channel's tests override ``answer`` or ``fail`` where they need more.
    """

    messages: list[UserMessage] = field(default_factory=list)
    replies: list[dict[str, Any]] = field(default_factory=list)
    gate: asyncio.Event | None = None
    error: Exception | None = None

    async def handle_message(self, message: UserMessage) -> None:
        self.messages.append(message)
        if self.gate is not None:
            await self.gate.wait()
        if self.error is not None:
            await self.fail(message, self.error)
        await self.answer(message)

    async def answer(self, message: UserMessage) -> None:
        for reply in self.replies:
            await message.output_channel.send_response(message.sender_id, dict(reply))

    async def fail(self, message: UserMessage, error: Exception) -> None:
        raise error

    def seen(self) -> list[tuple[str | None, str, dict[str, Any] | None]]:
        return [(m.text, m.sender_id, m.metadata) for m in self.messages]
