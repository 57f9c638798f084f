"""The scale-out stack the production tests run: replicas sharing PostgreSQL and Redis.

``running_stack`` starts N action servers and N Rasa servers (``endpoints.prod.yml``:
``SQLTrackerStore`` on PostgreSQL, ``RedisLockStore``) on one fresh database, each kind behind
a small round-robin HTTP proxy run here in a thread (a stand-in for the load balancer; it
forwards with ``bench.stack_proxy.relay``), with the case store and the channel database on
the same PostgreSQL. Used by test_production_stack.py (REST) and test_telegram_stack.py
(Telegram, crashes).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
import subprocess
import sys
import threading
import time
from collections import Counter
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

import aiohttp
import pytest
from aiohttp import web
from sqlalchemy import create_engine, inspect

from bench.stack_proxy import REQUEST_TIMEOUT_S, backend_session, relay
from tests.integration.conftest import PROD_ENDPOINTS, fresh_database, production_env, production_services, texts
from tests.processes import ROOT, START_TIMEOUT_S, Process, base_env, free_port, http
from tests.processes import start_action_server, start_rasa_server, wait_until_up


class RoundRobinProxy:
    """A load balancer for the tests: forwards each POST to the next backend in turn.

    Runs its own event loop in a thread, so it serves while the test blocks; use it as a
    context manager. ``served`` counts the requests each backend received.
    """

    def __init__(self, name: str, backends: Sequence[str]) -> None:
        """Take the backends' base URLs (``http://127.0.0.1:PORT``); pick a free port."""
        self.name = name
        self.backends = list(backends)
        self.port = free_port()
        self.served: Counter[str] = Counter()
        self.errors: List[str] = []
        self._turn = itertools.count()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"proxy-{name}", daemon=True)
        self._runner: Optional[web.AppRunner] = None
        self._session: Optional[aiohttp.ClientSession] = None

    @property
    def url(self) -> str:
        """Return the proxy's base URL."""
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> RoundRobinProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=30)
        return self

    def __exit__(self, *_exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()

    async def _start(self) -> None:
        # Idle connections to a backend are dropped well before the backend drops them (Sanic
        # closes keep-alive connections after 5 s): a request sent on a connection the backend
        # is closing fails, and Rasa loses the events of an action call that fails.
        self._session = backend_session()
        app = web.Application(client_max_size=1 << 20)
        app.router.add_post("/{path:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, backlog=1024).start()

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _forward(self, request: web.Request) -> web.Response:
        assert self._session is not None
        backend = self.backends[next(self._turn) % len(self.backends)]
        self.served[backend] += 1
        try:
            return await relay(self._session, backend, request)
        except (aiohttp.ClientError, asyncio.TimeoutError) as error:
            self.errors.append(f"{backend}{request.path_qs}: {error!r}")
            return web.Response(status=502, text=f"{self.name} proxy: {error!r}")


@dataclass
class Stack:
    """The running scale-out stack."""

    front: RoundRobinProxy
    actions: RoundRobinProxy
    rasa_urls: List[str]
    database_url: str
    events_url: str
    redis_url: str
    env: Dict[str, str]
    rest_token: str
    api_token: str
    action_ports: List[int] = field(default_factory=list)
    rasa_ports: List[int] = field(default_factory=list)
    action_servers: List[Process] = field(default_factory=list)
    rasa_servers: List[Process] = field(default_factory=list)
    work: Optional[Path] = None
    credentials: Optional[Path] = None
    restarts: int = 0

    def start_rasa(self, index: int) -> Process:
        """(Re)start Rasa server ``index`` on its port; return it once it is up."""
        assert self.work is not None
        self.restarts += 1
        process = start_rasa_server(
            f"rasa server {index + 1}", self.rasa_ports[index], PROD_ENDPOINTS, self.env,
            self.work / f"rasa{index + 1}-{self.restarts}.log", self.api_token,
            **({"credentials": self.credentials} if self.credentials else {}),
        )  # fmt: skip
        self.rasa_servers[index] = process
        wait_until_up(process, f"http://127.0.0.1:{self.rasa_ports[index]}/status?token={self.api_token}")
        return process

    def start_actions(self, index: int) -> Process:
        """(Re)start action server ``index`` on its port; return it once it is up."""
        assert self.work is not None
        self.restarts += 1
        process = start_action_server(
            f"action server {index + 1}", self.action_ports[index], self.env,
            self.work / f"actions{index + 1}-{self.restarts}.log",
        )  # fmt: skip
        self.action_servers[index] = process
        wait_until_up(process, f"http://127.0.0.1:{self.action_ports[index]}/health")
        return process

    def tracker(self, sender: str, replica: int = 0) -> Dict[str, Any]:
        """Return a conversation as one Rasa server's HTTP API has it (token required)."""
        status, raw = http("GET", f"{self.rasa_urls[replica]}/conversations/{sender}/tracker?token={self.api_token}")
        assert status == 200, raw[:300]
        return dict(json.loads(raw))

    def cases(self) -> List[Dict[str, Any]]:
        """Return every case, as `python -m bot cases list --json --db <PostgreSQL URL>` prints it."""
        result = subprocess.run(
            [sys.executable, "-m", "bot", "cases", "list", "--json", "--db", self.database_url],
            cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=120, check=True,
        )  # fmt: skip
        return list(json.loads(result.stdout))


@contextmanager
def running_stack(
    work: Path, replicas: int, redis_db: int, *, credentials: Optional[Path] = None,
    extra_env: Optional[Dict[str, str]] = None, channel_table: str = "webchat_messages",
) -> Iterator[Stack]:  # fmt: skip
    """Start ``replicas`` action servers and Rasa servers on one fresh database, behind the proxies.

    ``channel_table`` is a table the channels of ``credentials`` create at start-up.
    """
    services = production_services()
    action_ports = [free_port() for _ in range(replicas)]
    rasa_ports = [free_port() for _ in range(replicas)]
    rest_token, api_token = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    with ExitStack() as resources:
        database_url = resources.enter_context(fresh_database(services.postgres_url))
        events_url = resources.enter_context(fresh_database(services.postgres_url))
        actions = resources.enter_context(RoundRobinProxy("actions", [f"http://127.0.0.1:{port}" for port in action_ports]))
        front = resources.enter_context(RoundRobinProxy("front", [f"http://127.0.0.1:{port}" for port in rasa_ports]))
        env = {
            **base_env(),
            **production_env(database_url, events_url, services.redis_url, redis_db, f"{actions.url}/webhook"),
            "FIRSTREPLY_REST_TOKEN": rest_token,
            # Every replica must sign web chat sessions with the same secret.
            "FIRSTREPLY_WEBCHAT_SECRET": secrets.token_urlsafe(24),
            **(extra_env or {}),
        }
        stack = Stack(
            front=front, actions=actions, rasa_urls=[f"http://127.0.0.1:{port}" for port in rasa_ports],
            database_url=database_url, events_url=events_url, redis_url=services.redis_url, env=env,
            rest_token=rest_token, api_token=api_token, action_ports=action_ports, rasa_ports=rasa_ports,
            action_servers=[], rasa_servers=[], work=work, credentials=credentials,
        )  # fmt: skip
        try:
            for number, port in enumerate(action_ports, 1):
                stack.action_servers.append(
                    start_action_server(f"action server {number}", port, env, work / f"actions{number}.log")
                )
            # On an empty database the first replica creates the tables before the others start
            # (docs/deployment.md): Rasa's event broker creates its table without a retry, so a
            # replica that races another there fails its start.
            for number, port in enumerate(rasa_ports, 1):
                stack.rasa_servers.append(
                    start_rasa_server(
                        f"rasa server {number}", port, PROD_ENDPOINTS, env, work / f"rasa{number}.log", api_token,
                        **({"credentials": credentials} if credentials else {}),
                    )  # fmt: skip
                )
                if number == 1:
                    _wait_for_tables(
                        stack.rasa_servers[-1], {database_url: {"events", channel_table}, events_url: {"events"}}
                    )
            for process, port in zip(stack.action_servers, action_ports):
                wait_until_up(process, f"http://127.0.0.1:{port}/health")
            for process, port in zip(stack.rasa_servers, rasa_ports):
                wait_until_up(process, f"http://127.0.0.1:{port}/status?token={api_token}")
            yield stack
        finally:
            for process in reversed(stack.rasa_servers + stack.action_servers):
                process.stop()


def _wait_for_tables(process: Process, wanted: Dict[str, set[str]]) -> None:
    """Wait until each database has its tables, failing with the log if ``process`` dies."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while not all(names <= tables(url) for url, names in wanted.items()):
        if process.popen.poll() is not None:
            pytest.fail(f"{process.name} exited with {process.popen.returncode}:\n{process.tail()}")
        if time.monotonic() > deadline:
            pytest.fail(f"{process.name} did not create {wanted} within {START_TIMEOUT_S} s:\n{process.tail()}")
        time.sleep(0.3)


def tables(url: str) -> set[str]:
    """Return the names of the tables in the database at ``url``."""
    engine = create_engine(url, future=True)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


# --- conversations over REST, and what the trackers show -------------------------------------------

# Two messages of one customer sent at the same moment (test_production_stack.py, test_workers.py).
PAIR = ("do you have the trail runner in size 44?", "and is it waterproof?")


async def say(session: aiohttp.ClientSession, url: str, token: str, body: Dict[str, Any]) -> List[Dict[str, Any]]:
    """POST one REST message; return the replies (the answer must be 200)."""
    async with session.post(url, json=body, headers={"Authorization": f"Bearer {token}"}) as response:
        raw = await response.read()
        assert response.status == 200, f"{url} answered {response.status}: {raw[:300]!r}"
        return list(json.loads(raw))


def user_texts(tracker: Dict[str, Any]) -> List[str]:
    """Return the customer's messages in a tracker (as the HTTP API gives it), in order."""
    return [event["text"] for event in tracker["events"] if event["event"] == "user"]


def bot_texts(tracker: Dict[str, Any]) -> List[str]:
    """Return the assistant's messages in a tracker, in order."""
    return [event.get("text") or "" for event in tracker["events"] if event["event"] == "bot"]


def turns(tracker: Dict[str, Any]) -> List[List[str]]:
    """Split the events into turns: each user message with the actions that answered it."""
    found: List[List[str]] = []
    for event in tracker["events"]:
        if event["event"] == "user":
            found.append([f"user:{event['text']}"])
        elif event["event"] == "action" and found:
            found[-1].append(event["name"])
    return found


async def two_at_once(
    senders: Sequence[str], first_url: str, urls: Sequence[str], token: str
) -> Dict[str, List[List[Dict[str, Any]]]]:
    """Greet each sender through ``first_url``, then send each the ``PAIR`` at once (one per URL of ``urls``).

    Returns each sender's two answers, in ``PAIR``'s order.
    """
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)) as session:
        await asyncio.gather(*(say(session, first_url, token, {"sender": sender, "message": "hello"}) for sender in senders))
        answers = await asyncio.gather(
            *(
                say(session, f"{url}/webhooks/rest/webhook", token, {"sender": sender, "message": text})
                for sender in senders
                for url, text in zip(itertools.cycle(urls), PAIR)
            )
        )
    return {sender: [answers[2 * index], answers[2 * index + 1]] for index, sender in enumerate(senders)}


def check_handled_in_turn(
    answered: Dict[str, List[List[Dict[str, Any]]]], tracker_of: Callable[[str], Dict[str, Any]]
) -> None:
    """Assert each sender's ``PAIR`` was handled one message after the other, each answered with its own turn."""
    for sender, answers in answered.items():
        assert all(answers), f"{sender}: a message got no reply: {answers}"
        tracker = tracker_of(sender)
        users = user_texts(tracker)
        assert users[0] == "hello" and sorted(users[1:]) == sorted(PAIR), f"{sender}: {users}"
        # Not interleaved: each message's turn ends with action_listen before the next begins.
        assert all(turn[-1] == "action_listen" for turn in turns(tracker)), f"{sender}: {turns(tracker)}"
        # The replies each request got are the bot events of its own turn, in the order handled.
        first, second = (0, 1) if users[1] == PAIR[0] else (1, 0)
        bot = bot_texts(tracker)
        assert bot[-len(texts(answers[0])) - len(texts(answers[1])):] == (
            texts(answers[first]) + texts(answers[second])
        ), sender
