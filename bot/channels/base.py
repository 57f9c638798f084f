"""The shared base of the customer-channel connectors: what every platform does the same way.

A webhook connector (Telegram, Slack DMs, X, Messenger, Instagram and WhatsApp) is an input
channel built on ``WebhookConnector`` (here) and a sender built on ``RecordedOutput``
(``bot.channels.replies``: the reply records, splitting, the holding line). The platform
module holds only what its platform does differently: settings and webhook authentication,
parsing, the platform calls and their limits.

What the base does, for every connector alike:

- **Store before ack.** ``WebhookConnector.accept`` writes each inbound event (an
  ``InboundEvent``: the platform's id of it, the customer, the body to read back) to the
  inbox (``bot.channels.inbox``) before the platform gets its answer; ``accept_all`` does so
  for a webhook call that carries several. If the database is down the platform is asked to
  send the call again (``Intake.UNAVAILABLE``: answer 503 or the like).
- **Dedupe.** The inbox row is the duplicate filter: a copy of an event already stored (a
  platform retry, also after a restart, also in another replica) is ``Intake.COPY``.
- **Lease and replay.** One ``InboxWorker`` per inbox source handles each event in the
  background, its lease renewed, failures given back with back-off; an event beyond the
  worker's room is stored queued, for any process with room; the sweeper loop
  (``start_sweeping``) takes queued events and what a process that died left behind. An event handled
  again goes to Rasa through ``unless_saved``: if Rasa saved it already, only the replies
  not yet sent are sent.
- **Reply records.** The sender bound to one event (``RecordedOutput.for_message``)
  records every reply under (message id, position) (``RecordedOutput.recorded``), so
  handling the event again sends no reply twice. Both records of a reply are written on
  the event loop's thread, just before the platform call and right after its answer, so a
  crash leaves in doubt only the replies whose call was in flight (the window is measured:
  ``bot.channels.reply_windows``, ``GET /webhooks/<name>/replies``). One in doubt is sent
  again and counted, or looked up where the platform can be asked; a greeting
  in doubt is not sent again, and a customer is greeted once per conversation
  (``Inbox.claim_greeting``).
- **Holding line.** After an event's first failure the customer is told once that their
  message is kept (``HOLDING_REPLY``, recorded after any real reply: ``HOLDING_SEQ``).
- **Splitting** long text at the platform's ``text_limit``, buttons under the last part.
- **Non-text messages** (stickers, photos, files, locations): ``non_text_notice`` tells the
  customer clearly what happened; ``pass_on`` sends it and then, even if that failed, hands
  the message to Rasa, whose metadata notes the item in the case (``bot.conversation``).
- **Optional lookups** (names, profiles, locales, history) fail soft (``optional_lookup``):
  logged, counted in ``LOOKUP_FAILURES``, and the conversation goes on without them.
- **The channel's greeting of a new customer** (``bot.channels.edge``): the typing indicator as
  soon as the message is stored, the greeting before Rasa reads it.
- The health route, the server start/stop listeners, shutdown with a grace period.

What a connector supplies (a new one is this much)::

    class MessengerInput(WebhookConnector):
        @classmethod
        def name(cls) -> str: ...                 # Rasa's name, the URL prefix
        def __init__(self, settings, store=None, inbox=None):   # validated settings; then
            self.start_connector(MessengerOutput(client, inbox=self.open_inbox(store, inbox)))
        async def sources(self) -> list[str]: ... # its inbox source(s): ids count per source
        def blueprint(self, on_new_message):      # connector_blueprint() + its webhook route,
            ...                                   # which authenticates, parses the raw body into
                                                  # InboundEvents and answers what accept_all says
        def output_for(self, entry): ...          # the sender bound to a stored event
        async def handle(self, entry, on_new_message): ...
            # a stored event -> UserMessage(s), message_id = "<name>-<platform message id>"

    class MessengerOutput(RecordedOutput):
        text_limit = 2000                         # and ``escape`` if its markup needs it
        def for_message(self, message_id): return self.bound_to(message_id)
        async def _send_part(self, recipient_id, text, *, seq=None, **options): ...
            # one platform call sending one text, through ``self._once`` (recorded when bound)
        async def _call(self, what, request): ...   # that call's retries (default: none)
        async def _button_options(self, text, buttons): ...   # how buttons ride with a text
        def refused_for_good(self, error): ...    # failures no retry will mend (reply dropped)

Anchors: Rasa's ``rasa/core/channels/channel.py`` (``InputChannel``/``OutputChannel``) and
bolt-python's ``slack_bolt/adapter/``: many thin platform layers over one core.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from prometheus_client import Counter
from rasa.core.channels.channel import InputChannel, OutputChannel
from sanic import Blueprint, response
from sqlalchemy.exc import SQLAlchemyError

from bot.channels.common import BackgroundTasks, OnNewMessage, unless_saved
from bot.channels.dedupe import ChannelStore
from bot.channels.edge import EarlyGreetings, GreetingWords, edge_greeting_on, greet_at_edge, greeting_first
from bot.channels.inbox import (
    Arrival,
    Inbox,
    InboxEntry,
    greeting_memory_from_env,
    lease_seconds_from_env,
    sweep_seconds_from_env,
)
from bot.channels.inbox_worker import InboxWorker, pull_seconds_from_env
from bot.channels.replies import RecordedOutput
from bot.channels.reply_windows import REPLY_WINDOWS
from bot.channels.sending import SENDING_THREAD, GroupedIntake

if TYPE_CHECKING:
    from rasa.core.channels.channel import UserMessage
    from sanic.request import Request
    from sanic.response import HTTPResponse

log = logging.getLogger(__name__)
T = TypeVar("T")
Settings = TypeVar("Settings", bound="ConnectorSettings")

# What the customer reads, on every platform. Plain text (a platform escapes it if it must).
NON_TEXT_REPLY = "I can only read text, but I've attached your {noun} to your case for the person who picks it up."
NON_TEXT_ASK = " Could you also tell me in a few words what it's about?"

# What an answer in an unexpected shape raises when read (a key missing, ``None`` where an
# object was expected, a string where a list was).
SHAPE_ERRORS: tuple[type[Exception], ...] = (KeyError, IndexError, TypeError, AttributeError, ValueError)

LOOKUP_FAILURES = Counter(
    "firstreply_channel_lookup_failures",
    "Optional upstream lookups (names, profiles, locales, history) that failed or answered in an "
    "unexpected shape; the conversation went on without what they would have told.",
    ("channel", "lookup"),
)


def non_text_notice(noun: str, with_text: bool) -> str:
    """Return what the customer reads after sending a ``noun`` the assistant cannot read.

    ``with_text``: the item came with a caption or text, so no need to ask what it is about.
    """
    return NON_TEXT_REPLY.format(noun=noun) + ("" if with_text else NON_TEXT_ASK)


async def pass_on(first: Awaitable[Any], on_new_message: OnNewMessage, message: UserMessage) -> None:
    """Await ``first`` (a notice to the customer), then hand ``message`` to Rasa, even if it failed.

    The message (and so the case) must never depend on a courtesy line reaching the customer.
    """
    try:
        await first
    finally:
        await on_new_message(message)


async def optional_lookup(
    channel: str,
    lookup: str,
    subject: str,
    call: Callable[[], Awaitable[Any]],
    read: Callable[[Any], T],
    upstream_errors: tuple[type[BaseException], ...],
    describe: Callable[[BaseException], str] = repr,
) -> T | None:
    """Return ``read(await call())``, or ``None`` when the upstream fails or answers oddly.

    For lookups the conversation can go on without (a name, a profile, a locale, a history):
    a failure (one of ``upstream_errors``) or an answer in an unexpected shape (``read``
    raising one of ``SHAPE_ERRORS``) is logged at WARNING and counted in ``LOOKUP_FAILURES``
    under (``channel``, ``lookup``); ``subject`` names what was looked up, in the log.
    """
    try:
        return read(await call())
    except upstream_errors as error:
        problem = f"failed ({describe(error)})"
    except SHAPE_ERRORS as error:
        problem = f"answered in an unexpected shape ({type(error).__name__}: {error})"
    log.warning("%s %s for %s %s: going on without it", channel, lookup, subject, problem)
    LOOKUP_FAILURES.labels(channel, lookup).inc()
    return None


# --- receiving ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ConnectorSettings:
    """What every webhook connector is configured with. Neither secret ever appears in ``repr``.

    A platform's settings class adds its own fields and implements ``read``: its values,
    validated (see ``bot.channels.common.credential``).
    """

    # Calls the platform's API.
    token: str = field(repr=False)
    # Authenticates the platform's webhooks (Telegram's secret token, Slack's signing secret).
    secret: str = field(repr=False)
    # Where the platform's API is (another server in tests).
    base_url: str = ""

    @classmethod
    def from_credentials(
        cls: type[Settings], credentials: Mapping[str, Any] | None, environ: Mapping[str, str] | None = None
    ) -> Settings:
        """Read ``credentials.yml`` values, falling back to the environment (default: the process's).

        Raises:
            ChannelCredentialsError: a value is missing or malformed; names the variable, never a value.
        """
        return cls.read(credentials or {}, os.environ if environ is None else environ)

    @classmethod
    def read(cls: type[Settings], credentials: Mapping[str, Any], environ: Mapping[str, str]) -> Settings:
        """Build the settings from ``credentials.yml`` values and the environment variables."""
        raise NotImplementedError


@dataclass(frozen=True)
class InboundEvent:
    """One event from a platform, normalized: what the inbox stores and ``handle`` reads back."""

    # The inbox's namespace: the connector and its bot or app (platform ids count per source).
    source: str
    # The platform's id of the event (update id, event id, message id): a copy has the same one.
    platform_id: str
    # The customer: their events are handled one at a time, in order ("" for none).
    conversation: str
    # What ``handle`` reads back: JSON text (ASCII, so lone surrogates and NULs survive any database).
    body: str


class Intake(Enum):
    """What came of storing inbound events (``WebhookConnector.accept``)."""

    STORED = "stored"  # new: stored and started; answer the platform "ok"
    COPY = "copy"  # stored before: answer "ok" so the platform stops sending it
    UNAVAILABLE = "unavailable"  # not stored: answer so that the platform sends it again


class WebhookConnector(InputChannel):
    """An input channel whose events are stored before the platform's answer (see module doc).

    A subclass calls ``open_inbox`` and ``start_connector`` in its ``__init__`` and implements ``sources``,
    ``output_for`` and ``handle``; its ``blueprint`` starts from ``connector_blueprint``.
    """

    store: ChannelStore
    inbox: Inbox
    output: RecordedOutput
    tasks: BackgroundTasks
    # Whether the platform runs a call given in the webhook's answer (Telegram does): the
    # typing indicator for a customer's text message the channel greets ahead (new customers
    # greeted, returning ones not) then rides on that answer, the first sign they see, instead
    # of a call of its own after it.
    typing_in_answer: ClassVar[bool] = False

    def open_inbox(self, store: ChannelStore | None = None, inbox: Inbox | None = None) -> Inbox:
        """Open the channel store and the inbox in its database (default: ``$FIRSTREPLY_CHANNEL_DB``)."""
        self.store = store if store is not None else ChannelStore.from_url()
        self.inbox = inbox if inbox is not None else Inbox(self.store.engine, lease_seconds=lease_seconds_from_env())
        # Webhooks arriving together are stored together: one transaction for all that wait.
        self._intake: GroupedIntake[Arrival, InboxEntry | None] = GroupedIntake(
            lambda updates: self.inbox.accept_many(updates)
        )
        return self.inbox

    def start_connector(self, output: RecordedOutput) -> None:
        """Set up the shared parts after ``open_inbox``: the sender, background work, sweeping."""
        self.output = output
        self.tasks = BackgroundTasks(self.name())
        self.sweep_seconds = sweep_seconds_from_env()
        self.pull_seconds = pull_seconds_from_env()
        # One worker per inbox source, made when first needed.
        self.workers: dict[str, InboxWorker] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._on_new_message: OnNewMessage | None = None
        self._app: Any = None
        # A new customer is greeted before Rasa reads their message (``bot.channels.edge``).
        self.edge_greeting = edge_greeting_on()
        self._greeting_words: GreetingWords | None = None
        self.early_greetings = EarlyGreetings()
        # In the front process (``bot.front``): store, greet and answer the platform, never hand to Rasa.
        self.intake_only = False

    def serve_intake_only(self) -> None:
        """Only store (queued, for the Rasa processes to take), greet new customers and answer the platform.

        What the front process (``bot.front``) does with every inbox channel: no update is
        handled here and nothing is swept; the Rasa processes take the queued updates.
        """
        self.intake_only = True
        for worker in self.workers.values():
            worker.stop()

    # --- what the platform module supplies --------------------------------------------------

    async def sources(self) -> list[str]:
        """Return the inbox sources this process sweeps."""
        raise NotImplementedError

    def output_for(self, entry: InboxEntry) -> RecordedOutput:
        """Return the sender bound to the stored event ``entry`` (its replies recorded)."""
        raise NotImplementedError

    async def handle(self, entry: InboxEntry, on_new_message: OnNewMessage) -> None:
        """Turn one stored event into what Rasa reads (``on_new_message``); raise to retry it."""
        raise NotImplementedError

    def first_message(self, entry: InboxEntry) -> UserMessage | None:
        """Return what Rasa will read of a stored customer text, read without any call or reply; else ``None``.

        A connector that can (Telegram) greets a new customer as soon as their message is
        stored (``bot.channels.edge``); the default, ``None``, greets when ``handle`` runs.
        """
        return None

    async def close_clients(self) -> None:
        """Close the platform client's connections (at shutdown, after running work ended)."""

    # --- the shared work ------------------------------------------------------------------

    def get_output_channel(self) -> OutputChannel:
        """Return the sender, for messages Rasa starts itself (reminders, triggered intents)."""
        return self.output

    def connector_blueprint(self, blueprint_name: str) -> Blueprint:
        """Return a blueprint with ``GET /`` (health) and the start/stop listeners."""
        blueprint = Blueprint(blueprint_name, type(self).__module__)

        @blueprint.route("/", methods=["GET"])
        async def health(_: Request) -> HTTPResponse:
            return response.json({"status": "ok"})

        @blueprint.route("/replies", methods=["GET"])
        async def reply_windows(_: Request) -> HTTPResponse:
            # Timings and counts of this process's replies (no customer data): the in-doubt window.
            return response.json(REPLY_WINDOWS.summary())

        @blueprint.listener("after_server_start")
        async def start_sweeping(app: Any, *_: Any) -> None:
            self._app = app
            if not self.intake_only:
                self.start_sweeping()

        @blueprint.listener("after_server_stop")
        async def close(*_: Any) -> None:
            await self.close()

        return blueprint

    async def accept(self, event: InboundEvent) -> Intake:
        """Store one inbound event and start handling it, or queue it; say what to answer the platform.

        With room (``InboxWorker.reserve``) the event is stored leased to this process and
        handled at once; without, it is stored queued, for this process or any other to take
        when it has room (a burst is shared by every worker, whichever accepted it).
        """
        worker = self.worker(event.source)
        held = worker.reserve(event.platform_id)
        try:
            entry = await self._intake.write(Arrival(event.source, event.platform_id, event.conversation, event.body, held))
        except SQLAlchemyError as error:
            worker.release(event.platform_id)
            log.error("%s %s not stored (%s); the platform will send it again", self.name(), event.platform_id, error)
            return Intake.UNAVAILABLE
        if entry is None:
            worker.release(event.platform_id)
            log.info("%s %s already taken, copy dropped", self.name(), event.platform_id)
            return Intake.COPY
        if self.edge_greeting and entry.conversation:
            self._greet_early(entry, held)
        if held:
            worker.start(entry)
        return Intake.STORED

    def _greet_early(self, entry: InboxEntry, held: bool) -> None:
        """Start greeting the customer of the just stored ``entry`` in a task of its own, if it is their first."""
        try:
            message = self.first_message(entry)
        except SHAPE_ERRORS as error:  # read again, and reported, by ``handle``
            log.info("%s %s: not read ahead (%r); greeted when handled", self.name(), entry.update_id, error)
            return
        if message is not None:
            greet = partial(greet_at_edge, message, entry, self.inbox, self.greeting_words, greeting_memory_from_env())
            output = message.output_channel
            if isinstance(output, RecordedOutput):
                # The connector puts the typing indicator in the webhook's answer (``typing_in_answer``).
                output.typing_shown = self.typing_in_answer
                if output.on_sending_thread():
                    greet = partial(SENDING_THREAD.run_later, greet)
            # A queued message may be handled by another process: its outcome is then read from the records.
            self.early_greetings.start(entry.update_id, greet, self.tasks, keep=held)

    async def accept_all(self, events: Iterable[InboundEvent]) -> Intake:
        """Store the events of one webhook call (platforms that batch them); say what to answer.

        ``UNAVAILABLE`` if any could not be stored (the platform sends the whole call again,
        and the ones stored are then copies), else ``STORED`` if any was new, else ``COPY``.
        """
        outcomes = {await self.accept(event) for event in events}
        for worst in (Intake.UNAVAILABLE, Intake.STORED):
            if worst in outcomes:
                return worst
        return Intake.COPY

    def worker(self, source: str) -> InboxWorker:
        """Return the inbox worker of ``source``, made on first use."""
        found = self.workers.get(source)
        if found is None:
            found = InboxWorker(self.inbox, source, self._handle_entry, self.tasks, on_failure=self._hold)
            if self.intake_only:
                found.stop()  # no room, ever: every update is stored queued
            self.workers[source] = found
        return found

    async def _handle_entry(self, entry: InboxEntry) -> None:
        """Handle one stored event (first time or again); raise to have it tried again."""
        on_new_message = self._on_new_message
        if on_new_message is None:
            raise RuntimeError(f"the {self.name()} channel is not registered with Rasa yet")
        if entry.replay:
            on_new_message = unless_saved(on_new_message, self._app, self.name())
        if self.edge_greeting:
            on_new_message = greeting_first(on_new_message, entry, self.inbox, self.greeting_words,
                                            greeting_memory_from_env(), self.early_greetings)  # fmt: skip
        try:
            await self.handle(entry, on_new_message)
        finally:
            self.early_greetings.forget(entry.update_id)

    def greeting_words(self) -> GreetingWords:
        """Return the greeting's wording (the served model's responses, support.yml's brand), read on first use."""
        if self._greeting_words is None:
            self._greeting_words = GreetingWords.for_app(self._app)
        return self._greeting_words

    async def _hold(self, entry: InboxEntry, _error: BaseException) -> None:
        """After a first failure, tell the customer their message is kept (once)."""
        if entry.conversation:
            await self.output_for(entry).send_holding(entry.conversation)

    async def sweep(self) -> int:
        """Take over the due entries of every source once; return how many were started."""
        started = 0
        for source in await self.sources():
            started += await self.worker(source).sweep()
        return started

    def start_sweeping(self) -> None:
        """Start the loop that takes over due entries (call from the server's event loop)."""
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever(), name=f"{self.name()}:sweeper")

    async def stop_sweeping(self) -> None:
        """Stop that loop."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
            self._sweeper = None

    async def _sweep_forever(self) -> None:
        """Sweep every ``sweep_seconds``; in between, take queued events every ``pull_seconds`` when there is room."""
        while True:
            try:
                await self.sweep()
            except SQLAlchemyError as error:
                log.warning("%s inbox sweep failed: %s", self.name(), error)
            next_sweep = time.monotonic() + self.sweep_seconds
            while (left := next_sweep - time.monotonic()) > 0:
                await asyncio.sleep(min(self.pull_seconds, left))
                await self._pull()

    async def _pull(self) -> None:
        """Take queued events of every source this process has a worker for (``InboxWorker.pull``)."""
        for worker in list(self.workers.values()):
            try:
                await worker.pull()
            except SQLAlchemyError as error:
                log.warning("%s queue of %s not read: %s", self.name(), worker.source, error)

    async def close(self, grace_seconds: float = 10.0) -> None:
        """Stop sweeping and taking work, give running work ``grace_seconds`` to finish, close the client."""
        await self.stop_sweeping()
        for worker in self.workers.values():
            worker.stop()
        try:
            await asyncio.wait_for(self.tasks.wait(), grace_seconds)
        except asyncio.TimeoutError:
            log.warning("%s: %d event(s) still being handled at shutdown were cancelled", self.name(), len(self.tasks))
        await self.close_clients()
