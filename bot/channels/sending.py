"""The sending thread: a reply's platform call and its records, away from Rasa's event loop.

A reply is in doubt from its "sending" record to its "sent" record (``bot.channels.replies``):
a crash in between leaves the platform perhaps holding it, and Telegram cannot be asked, so it
is sent again. On Rasa's event loop that window is the call *plus however long the loop takes
to come back to the reply* once the platform has answered; under a burst the loop is running
the dialogue of every other customer, and the window grew to a second and more, so a crash
caught many replies in doubt at once.

Here each such reply (its "sending" record, the call, its "sent" record) runs as one coroutine
on an event loop of its own, in a thread that does nothing else: the "sent" record is written
as soon as the answer is read, in the thread that made the call. The loop starts at its first
use in each process (a forked Rasa worker starts its own). A sender opts in with
``RecordedOutput.sends_on_own_thread``; its platform client must then work from that loop (an
HTTP client belongs to the loop it runs on: see ``PerLoop``). The senders that do: Telegram's
(``bot.channels.telegram_output``), Messenger's and Instagram's (``bot.channels.graph_client``),
WhatsApp's (``bot.channels.whatsapp_output``), each with an HTTP client per loop, and X's
(``bot.channels.x_output``), whose synchronous client runs each call in a worker thread from
whichever loop makes it. Slack's does not: it looks a reply in doubt up instead.
``FIRSTREPLY_SENDING_THREAD=off`` keeps every call on Rasa's loop.

The other end of a webhook has a thread of its own too: ``GroupedIntake`` stores the events of
webhooks that arrive together in one transaction, off Rasa's loop and its busy thread pool.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Generic, TypeVar

from bot.channels.common import switch_from_env
from bot.threads import named_pool, show_name_to_os

log = logging.getLogger(__name__)
T = TypeVar("T")
A = TypeVar("A")
R = TypeVar("R")

ENV_SENDING_THREAD = "FIRSTREPLY_SENDING_THREAD"


def sending_thread_from_env() -> bool:
    """Return whether senders that can use the sending thread do (``$FIRSTREPLY_SENDING_THREAD``, default on).

    Raises:
        ValueError: the value is neither on nor off.
    """
    return switch_from_env(ENV_SENDING_THREAD)


class SendingThread:
    """One event loop in a daemon thread of its own, per process, started at first use."""

    def __init__(self, name: str = "firstreply-sending") -> None:
        """Name the thread (it starts at the first ``run``)."""
        self.name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pid: int | None = None

    def here(self) -> bool:
        """Return whether the caller runs on the sending thread."""
        return self._thread is not None and threading.current_thread() is self._thread

    def loop(self) -> asyncio.AbstractEventLoop:
        """Return the sending thread's loop, starting it first if this process has none running."""
        with self._lock:
            if self._loop is None or self._pid != os.getpid() or not self._thread or not self._thread.is_alive():
                # A forked process inherits the parent's objects but not its threads: start anew.
                ready = threading.Event()
                loop = asyncio.new_event_loop()

                def serve() -> None:
                    show_name_to_os()
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                thread = threading.Thread(target=serve, name=self.name, daemon=True)
                thread.start()
                ready.wait()
                self._loop, self._thread, self._pid = loop, thread, os.getpid()
                log.debug("sending thread started in process %d", self._pid)
            return self._loop

    async def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the sending thread's loop and return its result to the caller's loop.

        Cancelling the caller cancels the coroutine there too. Called from the sending thread
        itself, the coroutine is simply awaited.
        """
        if self.here():
            return await coroutine
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop())
        return await asyncio.wrap_future(future)

    async def run_later(self, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Make the coroutine (``make()``) and run it on the sending thread (``run``)."""
        return await self.run(make())


SENDING_THREAD = SendingThread()
C = TypeVar("C")


class PerLoop(Generic[C]):
    """A platform's HTTP client, one for the sending thread and one for the caller's loop.

    An HTTP client (httpx's, aiohttp's) belongs to the event loop it first ran on; a sender
    whose calls run on the sending thread (``RecordedOutput.sends_on_own_thread``) also makes
    calls from Rasa's loop (typing indicators, set-up, the desk), so it keeps one of each.
    """

    def __init__(self, build: Callable[[], C], closed: Callable[[C], bool] = lambda _client: False) -> None:
        """``build()`` makes a client; ``closed(client)`` says one was closed (it is then built again)."""
        self._build = build
        self._closed = closed
        self._clients: dict[bool, C] = {}

    def get(self) -> C:
        """Return the caller's loop's client (the sending thread's when called there)."""
        here = SENDING_THREAD.here()
        client = self._clients.get(here)
        if client is None or (here and self._closed(client)):
            client = self._clients[here] = self._build()
        return client

    async def close(self, aclose: Callable[[C], Coroutine[Any, Any, Any]]) -> None:
        """Close both clients, each on its own loop (``aclose(client)``; the sending thread's unless closed already)."""
        mine = self._clients.pop(SENDING_THREAD.here(), None)
        if mine is not None:
            await aclose(mine)
        own = self._clients.pop(True, None)
        if own is not None and not self._closed(own):
            await SENDING_THREAD.run(aclose(own))


class GroupedIntake(Generic[A, R]):
    """Stores a connector's webhook events in groups: every event waiting when a write starts goes in it.

    One transaction, so one flush to disk, for all of them (``Inbox.accept_many``): under a
    burst of 40 webhooks at once, 40 commits one after another took 2-3 ms each, and the last
    webhook (with its customer's first sign) waited for all of them. The writes run on a
    thread of their own, not in the default thread pool, where every handling's database work
    queues under a burst. An event is written only if its webhook still waits for it.
    """

    def __init__(self, write_all: Callable[[list[A]], Sequence[R]], limit: int = 200) -> None:
        """Write with ``write_all`` (one result per item, in order), at most ``limit`` items at once."""
        self._write_all = write_all
        self._limit = limit
        self._lock = threading.Lock()
        self._waiting: list[tuple[A, Future[R]]] = []
        self._writing = False
        self._pid = os.getpid()
        self._thread: ThreadPoolExecutor | None = None

    async def write(self, item: A) -> R:
        """Write ``item`` with the others waiting; return its result (or raise the group's error)."""
        future: Future[R] = Future()
        with self._lock:
            if self._pid != os.getpid():  # a forked process: the parent's thread is not here
                self._waiting, self._writing, self._thread, self._pid = [], False, None, os.getpid()
            self._waiting.append((item, future))
            start, self._writing = not self._writing, True
            if self._thread is None:
                self._thread = named_pool(1, "firstreply-intake")
            thread = self._thread
        if start:
            thread.submit(self._drain)
        return await asyncio.wrap_future(future)

    def _drain(self) -> None:
        while True:
            with self._lock:
                group, self._waiting = self._waiting[: self._limit], self._waiting[self._limit :]
                if not group:
                    self._writing = False
                    return
            wanted = [(item, future) for item, future in group if future.set_running_or_notify_cancel()]
            if not wanted:
                continue
            try:
                results = self._write_all([item for item, _ in wanted])
            except BaseException as error:  # each webhook answers that it could not store its event
                for _, future in wanted:
                    future.set_exception(error)
                continue
            for (_, future), result in zip(wanted, results):
                future.set_result(result)
