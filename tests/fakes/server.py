"""What the fake platform APIs share: a threaded aiohttp server, call records and platform faults.

Each fake (``telegram_api``, ``slack_api``) runs an aiohttp app in its own thread on
127.0.0.1, so async tests, sync tests and other processes can all use it. This module
holds that scaffolding, the record of every call, the record of every *delivery* (a
message the customer can now see, whatever the client heard back) and the faults a
test can switch on, per method, for a number of calls or for a while:

- ``ERROR``: answer an HTTP error (500/502/503, or 429 with a retry-after); nothing delivered.
- ``DROP``: close the connection without answering; nothing delivered.
- ``HOLD``: keep the request without answering for ``hold`` seconds (longer than the
  client waits), then drop it; nothing delivered. The client times out.
- ``ACCEPT_HOLD``: deliver the message, then hold the answer for ``hold`` seconds: the
  client times out although the customer has the message.
- ``ACCEPT_DROP``: deliver the message, then close the connection without answering.

``refuse_connections()`` closes the listening socket (and the idle kept-alive
connections) so clients get "connection refused" until ``accept_connections()``.

A fake is declared, not written: a platform's protocol (how a call's parameters are
read, how a caller is authenticated, how an answer and a refusal look) is a few hooks of
a ``FakeServer`` subclass, and each API method it serves is a handler marked with
``@answers("method.name")``; an HTTP route outside the method scheme (a webhook, a
WebSocket, a REST resource) is a handler marked with ``@route("GET", "/path/{id}")``::

    class FakeGraphAPI(FakeServer):
        method_route = "/v19.0/{method}"

        @answers("me")
        def _me(self, params):
            return {"id": "1", "name": "FirstReply"}

        def _delivery(self, method, params):  # which calls reach the customer
            ...

``tests/test_fakes.py`` declares one such fake and checks what every fake gets for free.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from aiohttp import web

ERROR = "error"
DROP = "drop"
HOLD = "hold"
ACCEPT_HOLD = "accept_hold"
ACCEPT_DROP = "accept_drop"
MODES = frozenset({ERROR, DROP, HOLD, ACCEPT_HOLD, ACCEPT_DROP})
# What a call answered with when no answer went back (the connection was closed).
NO_ANSWER = 0
# How long HOLD and ACCEPT_HOLD keep a request unless told otherwise: beyond any test client's timeout.
DEFAULT_HOLD_SECONDS = 30.0

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])
# What ``FakeServer.handler_for`` returns for an API method the fake does not serve.
UNKNOWN_METHOD: Any = object()


def answers(*methods: str) -> Callable[[F], F]:
    """Declare the decorated method the fake's answer to the API methods ``methods``.

    The handler takes the call's parameters and returns what the platform's envelope
    carries (see ``FakeServer._process``); a subclass overrides it by defining a method
    of the same name.
    """

    def mark(handler: F) -> F:
        handler.__fake_api_methods__ = methods  # type: ignore[attr-defined]
        return handler

    return mark


def route(verb: str, path: str) -> Callable[[F], F]:
    """Declare the decorated coroutine method the handler of HTTP ``verb`` ``path`` (aiohttp syntax)."""

    def mark(handler: F) -> F:
        routes = getattr(handler, "__fake_routes__", ())
        handler.__fake_routes__ = (*routes, (verb, path))  # type: ignore[attr-defined]
        return handler

    return mark


def free_port(host: str = "127.0.0.1") -> socket.socket:
    """Return a socket bound to a port the system chose as free (not yet listening)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    return sock


@dataclass(frozen=True)
class Call:
    """One request the fake received: the HTTP status it answered with (``NO_ANSWER``: none).

    ``delivered`` says whether the call put a message in front of the customer, ``fault``
    which fault mode (if any) it met.
    """

    method: str
    params: dict[str, Any]
    status: int
    answer: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    delivered: bool = field(default=False, compare=False)
    fault: str | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Delivery:
    """A message the customer (or the channel) can see, in the order the fake accepted them."""

    method: str
    chat: str
    text: str
    params: dict[str, Any] = field(compare=False, repr=False)
    call_fault: str | None = field(default=None, compare=False)


@dataclass
class Fault:
    """A fault rule: applies to calls of ``method`` (any when None) while it has calls or time left."""

    mode: str
    method: str | None = None
    status: int = 503
    retry_after: int = 1
    error: str | None = None
    hold: float = DEFAULT_HOLD_SECONDS
    calls_left: int | None = 1
    until: float | None = None

    def active(self, now: float) -> bool:
        """Return whether the rule still applies at monotonic time ``now``."""
        return (self.calls_left is None or self.calls_left > 0) and (self.until is None or now < self.until)


class Faults:
    """The fault rules of one fake, oldest first; the first active rule matching a call applies."""

    def __init__(self) -> None:
        """Start with no faults."""
        self._rules: list[Fault] = []
        self._lock = threading.Lock()

    def add(
        self,
        mode: str,
        *,
        method: str | None = None,
        times: int | None = None,
        seconds: float | None = None,
        status: int = 503,
        retry_after: int = 1,
        error: str | None = None,
        hold: float = DEFAULT_HOLD_SECONDS,
    ) -> Fault:
        """Add a rule for the next ``times`` calls, or for ``seconds``, or both (whichever ends first).

        With neither, the rule applies to the next call only.
        """
        if mode not in MODES:
            raise ValueError(f"unknown fault mode {mode!r}; one of {sorted(MODES)}")
        if times is None and seconds is None:
            times = 1
        until = None if seconds is None else time.monotonic() + seconds
        rule = Fault(mode, method, status, retry_after, error, hold, times, until)
        with self._lock:
            self._rules.append(rule)
        return rule

    def take(self, method: str) -> Fault | None:
        """Return the rule that applies to a call of ``method`` now (counting the call), if any."""
        now = time.monotonic()
        with self._lock:
            self._rules = [rule for rule in self._rules if rule.active(now)]
            for rule in self._rules:
                if rule.method in (None, method):
                    if rule.calls_left is not None:
                        rule.calls_left -= 1
                    return rule
        return None

    def clear(self) -> None:
        """Drop every rule: the platform is healthy again."""
        with self._lock:
            self._rules.clear()


class FakeServer:
    """An aiohttp app served from its own thread, with call and delivery records and faults.

    Subclasses declare the API methods they answer (``@answers``) and any other HTTP
    routes (``@route``); the protocol hooks (``_params``, ``_refuse_caller``,
    ``_process``, ``_refusal``) say how their platform reads and answers a call.
    """

    thread_name = "fake-api"
    # API method -> the name of the handler that answers it (``@answers``), inherited and extended.
    api_methods: ClassVar[dict[str, str]] = {}
    # (verb, path, handler name) of each ``@route``, inherited and extended.
    extra_routes: ClassVar[tuple[tuple[str, str, str], ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Collect the handlers the subclass declares with ``@answers`` and ``@route``."""
        super().__init_subclass__(**kwargs)
        methods = dict(cls.api_methods)
        routes = list(cls.extra_routes)
        for name, attribute in vars(cls).items():
            for method in getattr(attribute, "__fake_api_methods__", ()):
                methods[method] = name
            routes.extend((verb, path, name) for verb, path in getattr(attribute, "__fake_routes__", ()))
        cls.api_methods = methods
        cls.extra_routes = tuple(routes)

    def __init__(self) -> None:
        """Set up the records; ``start`` serves."""
        self.faults = Faults()
        self._calls: list[Call] = []
        self._deliveries: list[Delivery] = []
        self._records = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self._runner: web.AppRunner | None = None
        self._site: web.BaseSite | None = None
        self._release: asyncio.Event | None = None
        self._odd_answers: dict[str, list[dict[str, Any]]] = {}
        # Seconds between taking a call (its delivery made) and answering it: a platform across a network.
        self.answer_latency = 0.0
        self.port = 0

    # --- lifecycle -----------------------------------------------------------------

    def start(self, sock: socket.socket | None = None) -> Any:
        """Start serving in a thread (on ``sock``, else a free port); return once it accepts connections."""
        self._sock = sock or free_port()
        self.port = int(self._sock.getsockname()[1])
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), name=self.thread_name, daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError(f"{type(self).__name__} did not start")
        return self

    def _serve(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._release = asyncio.Event()
        app = web.Application()
        self._routes(app)
        self._runner = web.AppRunner(app, access_log=None)
        loop.run_until_complete(self._runner.setup())
        assert self._sock is not None
        self._site = web.SockSite(self._runner, self._sock)
        loop.run_until_complete(self._site.start())
        self._started()
        ready.set()
        loop.run_forever()
        loop.run_until_complete(self._stopping())
        loop.run_until_complete(self._runner.cleanup())
        loop.close()

    # The API's path, with ``{method}`` in it; GET and POST are both routed to ``_handle``
    # (None: the fake has only its ``@route`` handlers).
    method_route: str | None = "/api/{method}"

    def _routes(self, app: web.Application) -> None:
        for verb, path, name in self.extra_routes:
            app.router.add_route(verb, path, getattr(self, name))
        if self.method_route is not None:
            for verb in ("POST", "GET"):
                app.router.add_route(verb, self.method_route, self._handle)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        """Serve one API call: read it, check the caller, answer it (faults applied)."""
        method = request.match_info["method"]
        params = await self._params(request)
        refused = self._refuse_caller(request, method, params)
        if refused is not None:
            return refused
        await self._before(method, params)
        return await self._serve_call(request, method, params, lambda: self._process(method, params), self._refusal)

    # --- the protocol: what a platform's subclass says ---------------------------------

    async def _params(self, request: web.Request) -> dict[str, Any]:
        """Return the call's parameters (by default: the query, then a JSON object body)."""
        params: dict[str, Any] = dict(request.query)
        if request.can_read_body and request.content_type == "application/json":
            body = await request.json()
            if isinstance(body, dict):
                params.update(body)
        return params

    def _refuse_caller(self, request: web.Request, method: str, params: dict[str, Any]) -> web.Response | None:
        """Return the answer to a caller the platform would turn away (recorded), or None to serve it."""
        return None

    async def _before(self, method: str, params: dict[str, Any]) -> None:
        """Wait, before the call meets its fault (long polling, for one)."""

    def _process(self, method: str, params: dict[str, Any]) -> tuple[int, dict[str, Any], Delivery | None]:
        """Answer a call no fault stopped: the HTTP status, the body and the delivery it made, if any.

        By default: the handler's answer with 200 (404 for a method the fake does not
        serve), and the delivery ``_delivery`` says the call made.
        """
        handler = self.handler_for(method)
        if handler is UNKNOWN_METHOD:
            return 404, {"error": f"unknown method {method}"}, None
        return 200, handler(params), self._delivery(method, params)

    def _delivery(self, method: str, params: dict[str, Any]) -> Delivery | None:
        """Return the message a served call put in front of the customer, if any (by default: none)."""
        return None

    def _refusal(self, fault: Fault) -> tuple[dict[str, Any], Mapping[str, str]]:
        """Return the body and headers of an ``ERROR`` answer for ``fault``."""
        return {"error": fault.error or "error"}, {}

    def handler_for(self, method: str) -> Callable[[dict[str, Any]], Any] | Any:
        """Return the bound handler declared for ``method``, or ``UNKNOWN_METHOD``."""
        name = self.api_methods.get(method)
        return UNKNOWN_METHOD if name is None else getattr(self, name)

    def _started(self) -> None:
        """Called in the server's thread once it listens."""

    async def _stopping(self) -> None:
        """Called in the server's loop before it shuts down."""

    def stop(self) -> None:
        """Answer the requests still held back, then stop the server and its thread."""
        if self._loop is not None and self._thread is not None:
            if self._release is not None:
                self._loop.call_soon_threadsafe(self._release.set)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop = self._thread = None

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def run(self, make: Callable[[], Awaitable[T]], timeout: float = 5.0) -> T:
        """Run a coroutine in the server's loop and return its result (from any other thread)."""
        assert self._loop is not None, "the fake is not running"

        async def call() -> T:
            return await make()

        return asyncio.run_coroutine_threadsafe(call(), self._loop).result(timeout)

    # --- faults and outages ---------------------------------------------------------

    def fault(
        self, mode: str, *, method: str | None = None, times: int | None = None, seconds: float | None = None,
        status: int = 503, retry_after: int = 1, error: str | None = None, hold: float = DEFAULT_HOLD_SECONDS,
    ) -> Fault:  # fmt: skip
        """Play fault ``mode`` on calls of ``method`` (any) for the next ``times`` calls or for ``seconds``.

        ``status``, ``retry_after`` and ``error`` shape an ``ERROR`` answer, ``hold`` how
        long ``HOLD`` and ``ACCEPT_HOLD`` keep the request. See ``Faults.add``.
        """
        return self.faults.add(
            mode, method=method, times=times, seconds=seconds, status=status, retry_after=retry_after, error=error,
            hold=hold,
        )  # fmt: skip

    def answer_oddly(self, method: str, body: dict[str, Any], times: int = 1) -> None:
        """Answer the next ``times`` calls of ``method`` with ``body`` (HTTP 200) instead of the real answer.

        For an upstream answering in a shape its documentation does not give (Slack's
        ``users.info`` with ``ok: true`` and no ``user``): the fail-soft tests. A fault
        queued for the same call comes first; an odd answer delivers nothing.
        """
        with self._records:
            self._odd_answers.setdefault(method, []).extend([body] * times)

    def _odd_answer(self, method: str) -> dict[str, Any] | None:
        """Return the next odd answer queued for ``method`` (``answer_oddly``), if any."""
        with self._records:
            queued = self._odd_answers.get(method)
            return queued.pop(0) if queued else None

    def refuse_connections(self) -> None:
        """Stop listening and close idle connections: clients get "connection refused"."""

        async def close() -> None:
            assert self._site is not None and self._runner is not None
            await self._site.stop()
            server = self._runner.server
            for handler in server.connections if server is not None else []:
                handler.close()

        self.run(close)

    def accept_connections(self) -> None:
        """Listen again on the same port, after ``refuse_connections``."""

        async def reopen() -> None:
            assert self._runner is not None
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", self.port))
            self._sock = sock
            self._site = web.SockSite(self._runner, sock)
            await self._site.start()

        self.run(reopen)

    # --- records -------------------------------------------------------------------

    def calls(self, method: str | None = None, *, answered: int | None = 200) -> list[Call]:
        """Return the recorded calls (of ``method``), by default only those answered 200."""
        with self._records:
            return [
                call
                for call in self._calls
                if (method is None or call.method == method) and (answered is None or call.status == answered)
            ]

    def deliveries(self, chat: str | int | None = None) -> list[Delivery]:
        """Return what reached the customer (in ``chat``), in order, however the client fared."""
        with self._records:
            return [d for d in self._deliveries if chat is None or d.chat == str(chat)]

    def delivered_texts(self, chat: str | int | None = None) -> list[str]:
        """Return the texts of ``deliveries(chat)``."""
        return [delivery.text for delivery in self.deliveries(chat)]

    def _record(self, call: Call) -> None:
        with self._records:
            self._calls.append(call)

    def _deliver(self, delivery: Delivery) -> None:
        with self._records:
            self._deliveries.append(delivery)

    def wait_for(self, method: str, count: int, timeout: float = 10.0) -> list[Call]:
        """Block until ``count`` successful calls of ``method`` arrived; return them."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.calls(method)
            if len(found) >= count:
                return found
            time.sleep(0.02)
        raise AssertionError(f"{len(self.calls(method))} {method} call(s) after {timeout}s, expected {count}")

    async def wait_for_async(self, method: str, count: int, timeout: float = 10.0) -> list[Call]:
        """``wait_for`` for async tests (does not block the event loop)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.calls(method)
            if len(found) >= count:
                return found
            await asyncio.sleep(0.02)
        raise AssertionError(f"{len(self.calls(method))} {method} call(s) after {timeout}s, expected {count}")

    # --- serving one call ----------------------------------------------------------

    async def _serve_call(
        self,
        request: web.Request,
        method: str,
        params: dict[str, Any],
        process: Callable[[], tuple[int, dict[str, Any], Delivery | None]],
        refuse: Callable[[Fault], tuple[dict[str, Any], Mapping[str, str]]],
    ) -> web.StreamResponse:
        """Answer a call, applying the fault that applies to it.

        Args:
            process: Does the call (records a delivery's effects) and returns the HTTP
                status, the body and the delivery it made, if any.
            refuse: The body and headers of an ``ERROR`` answer for a fault.
        """
        fault = self.faults.take(method)
        mode = fault.mode if fault is not None else None
        if fault is not None and fault.mode == ERROR:
            body, headers = refuse(fault)
            self._record(Call(method, params, fault.status, body, False, ERROR))
            return web.json_response(body, status=fault.status, headers=headers)
        if fault is not None and fault.mode in (DROP, HOLD):
            if fault.mode == HOLD:
                await self._hold(fault.hold)
            self._record(Call(method, params, NO_ANSWER, {}, False, mode))
            return self._hang_up(request)
        odd = self._odd_answer(method)
        status, body, delivery = (200, odd, None) if odd is not None else process()
        if delivery is not None:
            self._deliver(Delivery(delivery.method, delivery.chat, delivery.text, delivery.params, mode))
        if fault is not None and fault.mode == ACCEPT_DROP:
            self._record(Call(method, params, NO_ANSWER, body, delivery is not None, mode))
            return self._hang_up(request)
        self._record(Call(method, params, status, body, delivery is not None, mode))
        if fault is not None:  # ACCEPT_HOLD: the answer comes after the client gave up
            await self._hold(fault.hold)
        elif self.answer_latency:
            await asyncio.sleep(self.answer_latency)
        return web.json_response(body, status=status)

    async def _hold(self, seconds: float) -> None:
        assert self._release is not None
        try:
            await asyncio.wait_for(self._release.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    @staticmethod
    def _hang_up(request: web.Request) -> web.Response:
        if request.transport is not None:
            request.transport.close()  # no answer at all: the client sees the server disconnect
        return web.Response()


def serve_from_command_line(make: Callable[[], FakeServer], what: str, description: str | None) -> None:
    """Serve the fake ``make`` builds on ``--port`` until Ctrl-C (a fake's ``main``, for ``rasa run`` by hand)."""
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", args.port))
    serve_until_interrupted(make().start(sock), what)


def serve_until_interrupted(api: FakeServer, what: str) -> None:
    """Print where ``api`` (started) serves and with which token, then serve until Ctrl-C."""
    print(f"{what} at {api.base_url}, token {api.token}", flush=True)  # type: ignore[attr-defined]
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        api.stop()
