"""Rasa 3.6, kept from losing a customer's message when the action server is briefly away.

Rasa 3.6 answers an action server it cannot reach by logging the error and carrying on
*without the action's events*: the customer gets no greeting, no question, no hand-off,
and the conversation is saved as if all went well. A restarted or redeployed action server
is away for seconds, so ``install`` changes two things in the Rasa process:

1. A custom action whose server cannot be reached (connection refused or dropped), or
   fails on its side (any 5xx: a load balancer with no server behind it, or the action's own
   database away), is tried again with back-off for up to ``$FIRSTREPLY_ACTION_RETRY_SECONDS``
   (default 20 s). Actions are safe to repeat: the hand-off is idempotent and the others only
   read. A 4xx (an unknown action, a rejected form slot) is Rasa's to handle, as before.
2. If it still cannot be reached, handling the message fails with ``ActionServerUnavailable``
   instead of carrying on, so the conversation is not saved half done: the connector keeps
   the message and it is handled again later (``bot.channels.inbox``), or the REST caller
   gets an error and sends it again.
3. Rasa wraps the tracker store in a ``FailSafeTrackerStore``: when the database fails it
   *reads an empty conversation* (the customer is greeted as new, and the history is then
   written twice) and *saves to memory* (the message is gone at the next restart, and other
   replicas never see it). Here a failing read or save fails the message instead, which is
   then handled again once the database is back.
4. The NLU runs on a thread of its own, not on the event loop. Rasa 3.6 runs the NLU graph
   inside its event loop; the sentence encoder takes tens of milliseconds of CPU per message,
   and a burst of them starved everything else the process does meanwhile: above all the
   inbox's lease renewals, so another replica took over updates still being handled (seen
   as messages handled out of order under a burst). One thread, so the components see one
   message at a time as before; NumPy releases the interpreter while it computes.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from rasa.shared.exceptions import RasaException

from bot.clock import seconds_from_env

log = logging.getLogger(__name__)

ENV_RETRY_SECONDS = "FIRSTREPLY_ACTION_RETRY_SECONDS"
DEFAULT_RETRY_SECONDS = 20.0
FIRST_DELAY_SECONDS = 0.25
MAX_DELAY_SECONDS = 2.0
# 5xx: the action server (or the load balancer in front of it) failed, not the request.
FIRST_SERVER_ERROR = 500

_installed = False


class ActionServerUnavailable(RasaException):
    """The action server could not be reached, or failed, for the whole retry budget."""


def retry_seconds_from_env() -> float:
    """Return the retry budget (``$FIRSTREPLY_ACTION_RETRY_SECONDS``; 0 turns retrying off)."""
    return seconds_from_env(ENV_RETRY_SECONDS, DEFAULT_RETRY_SECONDS, allow_zero=True)


def unreachable(error: BaseException) -> bool:
    """Return whether ``error`` (as Rasa's ``RemoteAction`` raises it) means "server away or failing"."""
    import aiohttp

    seen: set[int] = set()
    current: BaseException | None = error
    from rasa.utils.endpoints import ClientResponseError as EndpointResponseError

    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (aiohttp.ClientResponseError, EndpointResponseError)):
            return bool(current.status and current.status >= FIRST_SERVER_ERROR)
        if isinstance(current, (aiohttp.ClientConnectionError, asyncio.TimeoutError)):
            return True
        current = current.__cause__ or current.__context__
    return False


def _retrying_run(original: Any) -> Any:
    async def run(self: Any, *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + retry_seconds_from_env()
        delay = FIRST_DELAY_SECONDS
        attempt = 1
        while True:
            try:
                return await original(self, *args, **kwargs)
            except RasaException as error:
                if not unreachable(error):
                    raise
                if loop.time() + delay > deadline:
                    raise ActionServerUnavailable(
                        f"action server unreachable for {attempt} attempt(s) at {self.name()!r}: {error}"
                    ) from error
                log.warning("action %s: action server unreachable, attempt %d; retrying in %.2fs",
                            self.name(), attempt, delay)  # fmt: skip
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_DELAY_SECONDS)
            attempt += 1

    return run


def _aborting_run_action(original: Any) -> Any:
    # Rasa's _run_action catches every exception of an action and carries on; this lets
    # ActionServerUnavailable through, once Rasa's own handling of it has run.
    async def _run_action(self: Any, action: Any, *args: Any, **kwargs: Any) -> Any:
        failure: list[ActionServerUnavailable] = []
        run = action.run

        async def guarded(*run_args: Any, **run_kwargs: Any) -> Any:
            try:
                return await run(*run_args, **run_kwargs)
            except ActionServerUnavailable as error:
                failure.append(error)
                raise

        action.run = guarded
        try:
            proceed = await original(self, action, *args, **kwargs)
        finally:
            del action.run
        if failure:
            raise failure[0]
        return proceed

    return _run_action


def _no_fallback(name: str) -> Any:
    async def call(self: Any, *args: Any) -> Any:
        try:
            return await getattr(self._tracker_store, name)(*args)
        except Exception as error:
            log.error("tracker store %s failed (%s: %s); the message is not handled now",
                      name, type(error).__name__, error)  # fmt: skip
            raise

    call.__name__ = name
    return call


_NLU_THREAD: Any = None


async def _parse_message_off_the_loop(
    self: Any, message: Any, tracker: Any = None, only_output_properties: bool = True
) -> Any:
    """Rasa's ``MessageProcessor.parse_message``, with the NLU graph run on the NLU thread."""
    from rasa.shared.core.trackers import DialogueStateTracker

    from bot.threads import named_pool

    global _NLU_THREAD
    if self.http_interpreter:
        parse_data = await self.http_interpreter.parse(message)
    else:
        if tracker is None:
            tracker = DialogueStateTracker.from_events(message.sender_id, [])
        if _NLU_THREAD is None:
            _NLU_THREAD = named_pool(1, "firstreply-nlu")
        parse_data = await asyncio.get_running_loop().run_in_executor(
            _NLU_THREAD, self._parse_message_with_graph, message, tracker, only_output_properties
        )
    self._update_full_retrieval_intent(parse_data)
    self._check_for_unseen_features(parse_data)
    return parse_data


def install() -> None:
    """Apply the four changes to this process (idempotent)."""
    global _installed
    if _installed:
        return
    retry_seconds_from_env()  # a malformed value fails at start-up, not at the first action
    from rasa.core.actions.action import RemoteAction
    from rasa.core.processor import MessageProcessor
    from rasa.core.tracker_store import FailSafeTrackerStore

    RemoteAction.run = _retrying_run(RemoteAction.run)  # type: ignore[method-assign]
    MessageProcessor._run_action = _aborting_run_action(MessageProcessor._run_action)  # type: ignore[method-assign]
    MessageProcessor.parse_message = _parse_message_off_the_loop  # type: ignore[method-assign]
    for name in ("retrieve", "retrieve_full_tracker", "save"):
        setattr(FailSafeTrackerStore, name, _no_fallback(name))
    _installed = True
