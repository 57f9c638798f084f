"""The shared base of the customer-channel connectors: what every platform does the same way.

A webhook connector (Telegram, Slack DMs and X today; Messenger, Instagram and WhatsApp
next) is an input channel built on ``WebhookConnector`` and a sender built on
``RecordedOutput``. The platform module holds only what its platform does differently:
settings and webhook authentication, parsing, the platform calls and their limits.

What the base does, for every connector alike:

- **Store before ack.** ``WebhookConnector.accept`` writes each inbound event (an
  ``InboundEvent``: the platform's id of it, the customer, the body to read back) to the
  inbox (``bot.channels.inbox``) before the platform gets its answer; ``accept_all`` does so
  for a webhook call that carries several. If the database is down the platform is asked to
  send the call again (``Intake.UNAVAILABLE``: answer 503 or the like).
- **Dedupe.** The inbox row is the duplicate filter: a copy of an event already stored (a
  platform retry, also after a restart, also in another replica) is ``Intake.COPY``.
- **Lease and replay.** One ``InboxWorker`` per inbox source handles each event in the
  background, its lease renewed, failures given back with back-off; the sweeper loop
  (``start_sweeping``) takes over what a process that died left behind. An event handled
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
import copy
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from prometheus_client import Counter
from rasa.core.channels.channel import InputChannel, OutputChannel
from sanic import Blueprint, response
from sqlalchemy.exc import SQLAlchemyError

from bot.channels.common import BackgroundTasks, OnNewMessage, split_text, unless_saved
from bot.channels.dedupe import ChannelStore
from bot.channels.edge import EDGE_GREETING_SEQ, GreetingWords, edge_greeting_on, greeting_first
from bot.channels.inbox import (
    GREETING_KEY,
    SENDING,
    SENT,
    Inbox,
    InboxEntry,
    greeting_memory_from_env,
    lease_seconds_from_env,
    reply_digest,
    sweep_seconds_from_env,
)
from bot.channels.inbox_worker import InboxWorker
from bot.channels.reply_windows import REPLY_WINDOWS
from bot.constants import GREETED_AT_EDGE, GREETING_RESPONSES

if TYPE_CHECKING:
    from rasa.core.channels.channel import UserMessage
    from sanic.request import Request
    from sanic.response import HTTPResponse

log = logging.getLogger(__name__)
T = TypeVar("T")
Bound = TypeVar("Bound", bound="RecordedOutput")
Settings = TypeVar("Settings", bound="ConnectorSettings")

# What the customer reads, on every platform. Plain text (a platform escapes it if it must).
HOLDING_REPLY = (
    "Sorry, I'm having a technical problem and can't answer right away. Your message is safe with us: "
    "I'll reply here as soon as I can."
)
NON_TEXT_REPLY = "I can only read text, but I've attached your {noun} to your case for the person who picks it up."
NON_TEXT_ASK = " Could you also tell me in a few words what it's about?"
BUTTONS_PROMPT = "Please choose:"
# Where the holding line sits among an event's recorded replies: after any real one.
HOLDING_SEQ = 1_000_000
# How many recorded replies one sender has in flight at once (``$FIRSTREPLY_REPLY_CALLS``).
# A reply is recorded "sending" only once it holds one of these places, so under a burst the
# replies waiting for the platform client (its connection pool, the event loop) are not yet
# in doubt: a crash catches at most this many replies in flight, not every customer's.
ENV_REPLY_CALLS = "FIRSTREPLY_REPLY_CALLS"
DEFAULT_REPLY_CALLS = 4

# What an answer in an unexpected shape raises when read (a key missing, ``None`` where an
# object was expected, a string where a list was).
SHAPE_ERRORS: tuple[type[Exception], ...] = (KeyError, IndexError, TypeError, AttributeError, ValueError)

LOOKUP_FAILURES = Counter(
    "firstreply_channel_lookup_failures",
    "Optional upstream lookups (names, profiles, locales, history) that failed or answered in an "
    "unexpected shape; the conversation went on without what they would have told.",
    ("channel", "lookup"),
)


def reply_calls_from_env() -> int:
    """Return how many recorded replies a sender has in flight at once (``$FIRSTREPLY_REPLY_CALLS``, default 4).

    Raises:
        ValueError: the value is not a whole number of at least 1.
    """
    raw = os.environ.get(ENV_REPLY_CALLS, "").strip()
    if not raw:
        return DEFAULT_REPLY_CALLS
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{ENV_REPLY_CALLS} must be a whole number of at least 1, not {raw!r}")
    return int(raw)


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

    def open_inbox(self, store: ChannelStore | None = None, inbox: Inbox | None = None) -> Inbox:
        """Open the channel store and the inbox in its database (default: ``$FIRSTREPLY_CHANNEL_DB``)."""
        self.store = store if store is not None else ChannelStore.from_url()
        self.inbox = inbox if inbox is not None else Inbox(self.store.engine, lease_seconds=lease_seconds_from_env())
        return self.inbox

    def start_connector(self, output: RecordedOutput) -> None:
        """Set up the shared parts after ``open_inbox``: the sender, background work, sweeping."""
        self.output = output
        self.tasks = BackgroundTasks(self.name())
        self.sweep_seconds = sweep_seconds_from_env()
        # One worker per inbox source, made when first needed.
        self.workers: dict[str, InboxWorker] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._on_new_message: OnNewMessage | None = None
        self._app: Any = None
        # A new customer is greeted before Rasa reads their message (``bot.channels.edge``).
        self.edge_greeting = edge_greeting_on()
        self._greeting_words: GreetingWords | None = None

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
            self.start_sweeping()

        @blueprint.listener("after_server_stop")
        async def close(*_: Any) -> None:
            await self.close()

        return blueprint

    async def accept(self, event: InboundEvent) -> Intake:
        """Store one inbound event and start handling it; say what to answer the platform."""
        try:
            entry = await asyncio.to_thread(
                self.inbox.accept, event.source, event.platform_id, event.conversation, event.body
            )
        except SQLAlchemyError as error:
            log.error("%s %s not stored (%s); the platform will send it again", self.name(), event.platform_id, error)
            return Intake.UNAVAILABLE
        if entry is None:
            log.info("%s %s already taken, copy dropped", self.name(), event.platform_id)
            return Intake.COPY
        self.worker(event.source).start(entry)
        return Intake.STORED

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
                                            greeting_memory_from_env())  # fmt: skip
        await self.handle(entry, on_new_message)

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
        while True:
            try:
                await self.sweep()
            except SQLAlchemyError as error:
                log.warning("%s inbox sweep failed: %s", self.name(), error)
            await asyncio.sleep(self.sweep_seconds)

    async def close(self, grace_seconds: float = 10.0) -> None:
        """Stop sweeping, give running work ``grace_seconds`` to finish, close the client."""
        await self.stop_sweeping()
        try:
            await asyncio.wait_for(self.tasks.wait(), grace_seconds)
        except asyncio.TimeoutError:
            log.warning("%s: %d event(s) still being handled at shutdown were cancelled", self.name(), len(self.tasks))
        await self.close_clients()


# --- sending ------------------------------------------------------------------------------


class RecordedOutput(OutputChannel):
    """A sender whose copy bound to one inbound event sends each reply at most once per place.

    Not bound (``inbox`` or ``origin`` unset: Rasa's own messages, the desk's replies), it
    sends directly. Bound (``bound_to``), every reply is recorded in the inbox under
    (``origin``, position) before and after its platform call (``recorded``).
    """

    # The platform's longest text; longer ones are split (``parts``).
    text_limit: ClassVar[int]
    # Whether the platform can be asked if a send whose answer was lost arrived (Slack's
    # history): then a failed call stays "in doubt" and is looked up before it is sent again.
    can_look_up_sent: ClassVar[bool] = False
    # The customer a greeting is being sent to (``send_response``), else ``None``.
    _greeting_to: str | None = None

    def __init__(self, inbox: Inbox | None = None) -> None:
        """Record the replies to an event in ``inbox`` (none: nothing recorded)."""
        self.inbox = inbox
        self.origin: str | None = None
        self._seq = 0
        self._calls = asyncio.Semaphore(reply_calls_from_env())

    def bound_to(self: Bound, message_id: str) -> Bound:
        """Return a copy for the replies to the event ``message_id`` (recorded, sent once)."""
        bound = copy.copy(self)
        bound.origin, bound._seq = message_id, 0
        return bound

    @property
    def bound(self) -> bool:
        """Return whether this copy records its replies (``bound_to`` an event, with an inbox)."""
        return self.inbox is not None and self.origin is not None

    def next_seq(self) -> int:
        """Return the position of the next reply to the bound event."""
        seq, self._seq = self._seq, self._seq + 1
        return seq

    # --- what the platform module supplies --------------------------------------------------

    def escape(self, text: str) -> str:
        """Return plain ``text`` as the platform must receive it (default: as it is)."""
        return text

    def parts(self, text: str) -> list[str]:
        """Return ``text`` split (and escaped) for the platform's length limit."""
        return [self.escape(part) for part in split_text(text, self.text_limit)]

    async def _send_part(self, recipient_id: str, text: str, *, seq: int | None = None, **options: Any) -> Any:
        """Send one already split and escaped text; ``seq`` places it among the recorded replies."""
        raise NotImplementedError

    async def _button_options(self, text: str, buttons: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Return the ``_send_part`` options that put ``buttons`` under ``text``."""
        raise NotImplementedError

    def refused_for_good(self, error: BaseException) -> bool:
        """Return whether a failed call will fail again however often it is tried."""
        return False

    def describe(self, error: BaseException) -> str:
        """Return ``error`` as the log shows it."""
        return str(error)

    # --- the shared work ------------------------------------------------------------------

    async def recorded(
        self, what: str, seq: int, fingerprint: tuple[Any, ...], send: Callable[[str | None], Awaitable[T]]
    ) -> T | None:
        """Make reply ``seq`` of the bound event (``send``) at most once; return what it returned.

        ``send`` gets the reply's recorded state (``SENDING``: an attempt was cut off
        mid-call, so the platform may have it). Returns ``None`` when the reply had been
        sent before, was refused for good (the customer blocked the bot, the chat is gone),
        or is a greeting not to be sent again: none is worth handling the event again. Any
        other failure raises.

        Both records are written here on the event loop's thread, not handed to a thread
        pool: "sending" just before the call, "sent" as soon as the platform answered. Under
        a burst the pool's queue is long, and every reply whose "sent" record waits in it is
        one a crash would leave in doubt. Each is one short write. And a reply is recorded
        "sending" only once it holds one of the sender's places for calls in flight
        (``DEFAULT_REPLY_CALLS``): one waiting for a place has not started, and is sent after a
        crash like any new reply.
        """
        assert self.inbox is not None and self.origin is not None
        greeting = self._greeting_to is not None
        if greeting and not self._may_greet():
            return None
        # A greeting in doubt is sent again only where the platform is asked first.
        at_most_once = greeting and not self.can_look_up_sent
        async with self._calls_in_flight():
            return await self._recorded_call(what, seq, reply_digest(*fingerprint), send, at_most_once)

    def _calls_in_flight(self) -> asyncio.Semaphore:
        """Return the places for replies in flight, shared by every copy of this sender."""
        calls: asyncio.Semaphore | None = getattr(self, "_calls", None)
        if calls is None:  # a subclass that did not call ``__init__``: places of its own
            calls = self._calls = asyncio.Semaphore(reply_calls_from_env())
        return calls

    async def _recorded_call(
        self, what: str, seq: int, digest: str, send: Callable[[str | None], Awaitable[T]], at_most_once: bool
    ) -> T | None:
        """Record reply ``seq`` "sending", make the call, record it "sent" (see ``recorded``)."""
        assert self.inbox is not None and self.origin is not None
        state = self.inbox.begin_reply(self.origin, seq, digest, resend_in_doubt=not at_most_once)
        began = time.perf_counter()
        if state == SENT:
            log.info("%s %s: reply %d to %s went out before, not sent again", self.name(), what, seq, self.origin)
            return None
        if state == SENDING and at_most_once:
            REPLY_WINDOWS.found_in_doubt(self.name(), "greeting not resent")
            log.warning("%s %s: the greeting (reply %d to %s) was cut off mid-send by a crash; not sent again "
                        "(the customer may have it, and reads a greeting once at most)", self.name(), what, seq,
                        self.origin)  # fmt: skip
            return None
        if state == SENDING and self.can_look_up_sent:
            REPLY_WINDOWS.found_in_doubt(self.name(), "looked up")
            log.info("%s %s: reply %d to %s was cut off mid-send; looking for it first", self.name(), what, seq,
                     self.origin)  # fmt: skip
        elif state == SENDING:
            REPLY_WINDOWS.found_in_doubt(self.name(), "resent")
            log.warning(
                "%s %s: reply %d to %s was cut off mid-send by a crash; sending it again "
                "(the platform may have had it: the customer may see it twice)", self.name(), what, seq, self.origin,
            )  # fmt: skip
        try:
            result: T | None = await send(state)
        except Exception as error:
            if not self.refused_for_good(error):
                if not self.can_look_up_sent:
                    # A failure seen here (after the client's own retries) is not a crash: the
                    # reply goes out again when the event is handled again, not counted as resent.
                    await asyncio.to_thread(self.inbox.fail_reply, self.origin, seq)
                raise
            log.error("%s %s: refused for good (%s); reply %d to %s dropped", self.name(), what, self.describe(error),
                      seq, self.origin)  # fmt: skip
            result = None
        answered = time.perf_counter()
        self.inbox.finish_reply(self.origin, seq)
        REPLY_WINDOWS.add(self.name(), time.perf_counter() - answered, time.perf_counter() - began)
        return result

    def _may_greet(self) -> bool:
        """Return whether the bound event may greet its customer (once per conversation, see ``Inbox.claim_greeting``)."""
        assert self.inbox is not None and self.origin is not None and self._greeting_to is not None
        key = GREETING_KEY.format(channel=self.name(), recipient=self._greeting_to)
        if self.inbox.claim_greeting(key, self.origin, greeting_memory_from_env()):
            return True
        log.warning("%s: %s was greeted in this conversation already (by another message than %s); not greeted again",
                    self.name(), self._greeting_to, self.origin)  # fmt: skip
        return False

    async def send_edge_greeting(self, recipient_id: str, text: str) -> bool:
        """Send a new customer's greeting ahead of the dialogue, with the typing indicator (``bot.channels.edge``).

        Returns whether the customer has it (or may: cut off by a crash before), ``False`` when
        it may not go (greeted in this conversation already; too long for one message). A
        failed call raises, as any reply.
        """
        parts = self.parts(text)
        if not self.bound or len(parts) != 1:
            return False
        assert self.inbox is not None and self.origin is not None
        self._greeting_to = str(recipient_id)
        try:
            await asyncio.gather(self._send_part(recipient_id, parts[0], seq=EDGE_GREETING_SEQ),
                                 self._typing_quietly(recipient_id))  # fmt: skip
        finally:
            self._greeting_to = None
        return self.inbox.reply_states(self.origin).get(EDGE_GREETING_SEQ) in (SENDING, SENT)

    async def show_typing(self, recipient_id: str) -> None:
        """Show the customer the assistant is writing, where the platform can (default: nothing to do)."""

    async def _typing_quietly(self, recipient_id: str) -> None:
        try:
            await self.show_typing(recipient_id)
        except Exception as error:  # a courtesy: the greeting and the answer still go
            log.warning("%s typing indicator to %s failed: %s", self.name(), recipient_id, self.describe(error))

    async def send_response(self, recipient_id: str, message: dict[str, Any]) -> None:
        """Send one of Rasa's responses; a greeting goes out once per customer and conversation."""
        if message.get(GREETED_AT_EDGE):
            return  # recorded by the dialogue, sent ahead of it by the channel (``bot.channels.edge``)
        if not self.bound or message.get("utter_action") not in GREETING_RESPONSES:
            await super().send_response(recipient_id, message)
            return
        self._greeting_to = str(recipient_id)
        try:
            await super().send_response(recipient_id, message)
        finally:
            self._greeting_to = None

    async def _call(self, what: str, request: Callable[[], Awaitable[T]]) -> T:
        """Run one platform call (``what`` names it in the log); a platform's sender adds its retries."""
        return await request()

    async def _once(
        self, what: str, fingerprint: tuple[Any, ...], request: Callable[[], Awaitable[T]], seq: int | None = None
    ) -> T | None:
        """Make one reply call through ``_call``: at most once per place in the bound event's replies.

        Not bound, it is simply made. ``seq`` places it (default: the next place).
        """
        if not self.bound:
            return await self._call(what, request)
        place = self.next_seq() if seq is None else seq
        return await self.recorded(what, place, fingerprint, lambda _state: self._call(what, request))

    async def send_holding(self, recipient_id: str) -> None:
        """Tell the customer their message is kept and will be answered (once per event)."""
        await self._send_part(recipient_id, self.escape(HOLDING_REPLY), seq=HOLDING_SEQ)

    async def send_text_message(self, recipient_id: str, text: str, **kwargs: Any) -> None:
        """Send ``text``, in as many messages as the platform's length limit needs."""
        for part in self.parts(text):
            await self._send_part(recipient_id, part)

    async def send_text_with_buttons(
        self, recipient_id: str, text: str, buttons: list[dict[str, Any]], **kwargs: Any
    ) -> None:
        """Send ``text`` with Rasa ``buttons`` under its last part."""
        parts = self.parts(text or "") or [self.escape(BUTTONS_PROMPT)]
        options = await self._button_options(parts[-1], buttons)
        for part in parts[:-1]:
            await self._send_part(recipient_id, part)
        await self._send_part(recipient_id, parts[-1], **options)
