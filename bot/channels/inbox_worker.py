"""The inbox's worker: each stored update handled in the background, in the customer's order, until done.

One ``InboxWorker`` per inbox source (``bot.channels.base``). It handles an update at once
when it is stored with room (``reserve``), keeps its lease while it works, gives it back with
back-off when the handling fails, takes queued updates when it has room (``pull``; every
process does, so a burst is shared), and takes over (``sweep``) what a process that died left
behind. The store
itself, its tables and what a lease is: ``bot.channels.inbox``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from sqlalchemy.exc import SQLAlchemyError

from bot.channels.common import count_from_env
from bot.channels.inbox import Inbox, InboxEntry
from bot.channels.leases import owner_gone
from bot.clock import seconds_from_env

if TYPE_CHECKING:
    from bot.channels.common import BackgroundTasks

# The worker logs as the inbox does: one logger for what happens to stored updates (ops filter on it).
log = logging.getLogger("bot.channels.inbox")

# How often an update waiting behind an older one of the same customer looks again.
ORDER_POLL_SECONDS = 0.2
# How often a process with room looks for queued updates between sweeps (``InboxWorker.pull``):
# one indexed read when there are none (``$FIRSTREPLY_PULL_SECONDS``; behind the front process,
# ``bot.front``, every update is queued, so ``make run`` then looks every 0.05 s).
ENV_PULL_SECONDS = "FIRSTREPLY_PULL_SECONDS"
PULL_SECONDS = 0.25

# How many stored updates of one source a process hands to Rasa at once
# (``$FIRSTREPLY_HANDLING_AT_ONCE``). NLU runs on one thread, so a few at a time keep it busy;
# hundreds at once (a burst) only crowd Rasa's event loop, where the webhooks are answered and
# new customers greeted, and the thread pool every database write waits in.
ENV_HANDLING_AT_ONCE = "FIRSTREPLY_HANDLING_AT_ONCE"
DEFAULT_HANDLING_AT_ONCE = 4


def pull_seconds_from_env() -> float:
    """Return how often a process with room looks for queued updates (``$FIRSTREPLY_PULL_SECONDS``, default 0.25 s)."""
    return seconds_from_env(ENV_PULL_SECONDS, PULL_SECONDS)


Handler = Callable[[InboxEntry], Awaitable[None]]
OnFailure = Callable[[InboxEntry, BaseException], Awaitable[None]]


class InboxWorker:
    """Handles inbox entries of one source: at once when they arrive, later when they fail.

    ``sweep`` takes over the entries that are due (the connector's sweeper loop calls it,
    ``bot.channels.base``). ``handle`` is called with each entry, with the lease renewed while it runs; it raising
    gives the entry back with back-off, and ``on_failure`` (the connector's "we're on it"
    line) is awaited for the entry's first failure.
    """

    def __init__(
        self,
        store: Inbox,
        source: str,
        handle: Handler,
        tasks: BackgroundTasks,
        *,
        on_failure: OnFailure | None = None,
    ) -> None:
        """Work on ``source``'s entries of ``store``, starting tasks through ``tasks``."""
        self.store = store
        self.source = source
        self._handle = handle
        self._tasks = tasks
        self._on_failure = on_failure
        self._running: set[str] = set()
        # Updates being stored that will be handled here (``reserve``): they count as running.
        self._reserved: set[str] = set()
        self._at_once = count_from_env(ENV_HANDLING_AT_ONCE, DEFAULT_HANDLING_AT_ONCE)
        # Bound to the loop of its first wait (Python 3.10's asyncio), so made here.
        self._places = asyncio.Semaphore(self._at_once)
        self._claiming = False
        self._claim_again = False
        self._stopped = False

    def room(self) -> int:
        """Return how many more updates this process would start now (``$FIRSTREPLY_HANDLING_AT_ONCE`` at most)."""
        if self._stopped:
            return 0
        return max(0, self._at_once - len(self._running) - len(self._reserved))

    def stop(self) -> None:
        """Take no more updates (at shutdown): what is running ends; what is queued waits for another process."""
        self._stopped = True

    def reserve(self, update_id: str) -> bool:
        """Keep a place for an update about to be stored; return False when there is no room (store it queued).

        A reserved update is then started (``start``) or, if it was not stored, given up (``release``).
        """
        if not self.room():
            return False
        self._reserved.add(update_id)
        return True

    def release(self, update_id: str) -> None:
        """Give up the place reserved for ``update_id``."""
        self._reserved.discard(update_id)

    def start(self, entry: InboxEntry) -> None:
        """Handle ``entry`` in the background (it is leased to this process)."""
        self._reserved.discard(entry.update_id)
        if entry.update_id in self._running:
            return
        self._running.add(entry.update_id)
        self._tasks.start(self._run(entry), label=f"{self.source} update {entry.update_id}")

    async def pull(self) -> int:
        """Take queued updates (stored by any process, held by none) while this process has room; return how many.

        The connector's sweeper calls it often between sweeps: a burst accepted by one process
        is shared by every process with room, and none holds more than it handles at once.
        """
        return await self._claim(self.store.claim_queued)

    async def sweep(self) -> int:
        """Take over the due entries once, as many as there is room for; return how many were started.

        Due: queued, failed earlier and due again, or left by a process that died. What finds
        no room here stays in the inbox for a process with room; every handling that ends
        sweeps again, so a backlog flows as fast as it is handled.
        """
        return await self._claim(self.store.claim_due)

    async def _claim(self, claim: Callable[[str, int], list[InboxEntry]]) -> int:
        """Claim with ``claim(source, room)`` and start what it leased; one claim at a time, again if room was made."""
        if self._claiming:
            self._claim_again = True
            return 0
        started = 0
        self._claiming = True
        try:
            while room := self.room():
                self._claim_again = False
                entries = await asyncio.to_thread(claim, self.source, room)
                for entry in entries:
                    self._log_claimed(entry)
                    self.start(entry)
                started += len(entries)
                if not self._claim_again:
                    break
        finally:
            self._claiming = False
        return started

    def _log_claimed(self, entry: InboxEntry) -> None:
        if not entry.replay:
            log.debug("%s update %s: taken from the queue", self.source, entry.update_id)
        elif entry.attempts:
            log.info("%s update %s: handling again (attempt %d)", self.source, entry.update_id, entry.attempts + 1)
        elif entry.lease_owner and owner_gone(entry.lease_owner, self.store.owner):
            log.warning("%s update %s: taken over at once from %s, handling again (that process is gone)",
                        self.source, entry.update_id, entry.lease_owner)  # fmt: skip
        else:  # nobody failed it: the process that took it died before finishing
            log.warning("%s update %s: taken over, handling again (its process stopped before finishing)",
                        self.source, entry.update_id)  # fmt: skip

    async def _run(self, entry: InboxEntry) -> None:
        """Handle ``entry`` with its lease kept: after the customer's older updates, once a place is free."""
        heartbeat = asyncio.get_running_loop().create_task(self._keep_lease(entry))
        try:
            await self._after_older(entry)  # holding no place: an older update may need one
            async with self._places:  # the lease is kept while it waits
                await self._handle(entry)
        except Exception as error:  # every failure is retried: logged here, given back below
            delay = await self._give_back(entry, error)
            if delay is None:
                log.error(
                    "%s update %s: given up after %d attempts; it stays in the inbox as dead",
                    self.source, entry.update_id, entry.attempts + 1, exc_info=error,
                )  # fmt: skip
            else:
                log.warning(
                    "%s update %s: attempt %d failed; retrying in %.0fs",
                    self.source, entry.update_id, entry.attempts + 1, delay, exc_info=error,
                )  # fmt: skip
            if entry.attempts == 0 and self._on_failure is not None:
                try:
                    await self._on_failure(entry, error)
                except Exception as notice_error:  # the retry above still stands
                    log.warning("%s update %s: holding reply failed too: %s", self.source, entry.update_id, notice_error)
        else:
            try:
                await asyncio.to_thread(self.store.done, entry)
            except SQLAlchemyError as error:  # handled again later; its replies are not resent
                log.warning("%s update %s handled but not marked done: %s", self.source, entry.update_id, error)
        finally:
            heartbeat.cancel()
            self._running.discard(entry.update_id)
            self._tasks.start(self._sweep_after(), label=f"{self.source} next")

    async def _sweep_after(self) -> None:
        """Fill the place a handling left (``sweep``)."""
        try:
            await self.sweep()
        except SQLAlchemyError as error:  # the sweeper tries again shortly
            log.warning("%s inbox not read: %s", self.source, error)

    async def _after_older(self, entry: InboxEntry) -> None:
        """Keep one customer's messages in the order they came, also across crashes.

        An older update of the same customer may still be pending: its process died before
        the lease ran out, or it failed and waits for its retry. Handling this one first would
        put the customer's messages out of order, so it waits, and takes the older one over
        (handling it here, first) as soon as nobody holds it.
        """
        if not entry.conversation:
            return
        while older := await asyncio.to_thread(self.store.older_pending, entry):
            for candidate in older:
                if candidate.update_id in self._running:
                    continue
                taken = await asyncio.to_thread(self.store.take_over, candidate)
                if taken is not None:
                    # A queued one is the customer's order kept; one taken back from elsewhere is worth a warning.
                    log.log(logging.WARNING if taken.replay else logging.DEBUG,
                            "%s update %s: handling the older update %s of the same customer first",
                            self.source, entry.update_id, taken.update_id)  # fmt: skip
                    self._running.add(taken.update_id)
                    await self._run(taken)
            await asyncio.sleep(ORDER_POLL_SECONDS)

    async def _give_back(self, entry: InboxEntry, error: BaseException) -> float | None:
        try:
            return await asyncio.to_thread(self.store.failed, entry, f"{type(error).__name__}: {error}")
        except SQLAlchemyError as db_error:  # the lease runs out on its own
            log.warning("%s update %s: could not record the failure: %s", self.source, entry.update_id, db_error)
            return self.store.lease_seconds

    async def _keep_lease(self, entry: InboxEntry) -> None:
        while True:
            await asyncio.sleep(self.store.lease_seconds / 3)
            try:
                if not await asyncio.to_thread(self.store.renew, entry):
                    log.warning("%s update %s: lease lost while handling it", self.source, entry.update_id)
                    return
            except SQLAlchemyError as error:
                log.warning("%s update %s: lease not renewed: %s", self.source, entry.update_id, error)
