"""The connectors' senders: every reply to a stored event recorded, so that none is sent twice.

A platform's sender is a ``RecordedOutput`` (the receiving half, ``WebhookConnector``, is in
``bot.channels.base``). Its copy bound to one inbound event (``bound_to``) records each reply
under (message id, position) in the inbox's reply records (``bot.channels.inbox``), just
before the platform call and right after its answer (``recorded``), so handling the event
again sends only a reply that was in flight, and a customer is greeted once per
conversation (``Inbox.claim_greeting``). It also splits long text at the platform's
``text_limit``, puts buttons under the last part, sends the holding line after a first
failure (``HOLDING_SEQ``) and the channel's greeting of a new customer ahead of the dialogue
(``send_edge_greeting``, ``EDGE_GREETING_SEQ``).

What a platform supplies: ``_send_part`` (one platform call, through ``_once``), ``_call``
(its retries), ``_button_options``, ``refused_for_good``, and ``escape`` where its markup needs it.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ClassVar, TypeVar

from rasa.core.channels.channel import OutputChannel

from bot.channels.common import count_from_env, split_text
from bot.channels.inbox import GREETING_KEY, SENDING, SENT, Inbox, greeting_memory_from_env, reply_digest
from bot.channels.reply_windows import REPLY_WINDOWS
from bot.channels.sending import SENDING_THREAD
from bot.channels.sending import sending_thread_from_env
from bot.constants import GREETED_AT_EDGE, GREETING_RESPONSES

log = logging.getLogger(__name__)
T = TypeVar("T")
Bound = TypeVar("Bound", bound="RecordedOutput")

# What the customer reads, on every platform. Plain text (a platform escapes it if it must).
HOLDING_REPLY = (
    "Sorry, I'm having a technical problem and can't answer right away. Your message is safe with us: "
    "I'll reply here as soon as I can."
)
BUTTONS_PROMPT = "Please choose:"
# Where the holding line sits among an event's recorded replies: after any real one.
HOLDING_SEQ = 1_000_000
# Where the channel's greeting of a new customer sits (``bot.channels.edge``): before the dialogue's (0, 1, ...).
EDGE_GREETING_SEQ = -1
# How many recorded replies one sender has in flight at once (``$FIRSTREPLY_REPLY_CALLS``).
# A reply is recorded "sending" only once it holds one of these places, so under a burst the
# replies waiting for the platform client (its connection pool, the event loop) are not yet
# in doubt: a crash catches at most this many replies in flight, not every customer's.
ENV_REPLY_CALLS = "FIRSTREPLY_REPLY_CALLS"
DEFAULT_REPLY_CALLS = 4
# How a sender judges a failed try (``call_looking_first``): ``None`` raises it; ``(wait, maybe_sent)``
# tries again after ``wait`` seconds, looking first whether it arrived if ``maybe_sent``.
Retry = Callable[[BaseException, int], "tuple[float, bool] | None"]


async def call_looking_first(
    what: str, call: Callable[[], Awaitable[T]], *, attempts: int, retry: Retry,
    look_up: Callable[[], Awaitable[T | None]] | None = None, in_doubt: bool = False,
    describe: Callable[[BaseException], str] = repr,
) -> T:  # fmt: skip
    """Make a platform ``call`` up to ``attempts`` times; where it may have gone through, look first.

    A failed try is judged by ``retry(error, attempt)`` (see ``Retry``); the last one is raised.
    Once a try may have reached the platform without its answer coming back (or from the start,
    ``in_doubt``: a crash cut an earlier call off), each new try first asks ``look_up`` (the
    platform's record of what it delivered); what it finds is returned instead of calling
    again. Without ``look_up`` the call is simply made again.
    """
    for attempt in range(1, attempts + 1):
        try:
            if in_doubt and look_up is not None:
                found = await look_up()
                if found is not None:
                    log.info("%s: already delivered, not sent again", what)
                    return found
            return await call()
        except Exception as error:
            judged = retry(error, attempt) if attempt < attempts else None
            if judged is None:
                raise
            wait, maybe_sent = judged
            in_doubt = in_doubt or maybe_sent
            looking = "; looking whether it arrived first" if maybe_sent and look_up is not None else ""
            log.warning("%s: %s%s, try %d in %.1fs", what, describe(error), looking, attempt + 1, wait)
            await asyncio.sleep(wait)
    raise AssertionError("unreachable: the last attempt returns or raises")


def reply_calls_from_env() -> int:
    """Return how many recorded replies a sender has in flight at once (``$FIRSTREPLY_REPLY_CALLS``, default 4).

    Raises:
        ValueError: the value is not a whole number of at least 1.
    """
    return count_from_env(ENV_REPLY_CALLS, DEFAULT_REPLY_CALLS)


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
    # Whether the platform client works from any event loop, so that a recorded reply (its
    # "sending" record, the call, its "sent" record) can run on the sending thread
    # (``bot.channels.sending``) instead of waiting for Rasa's busy loop between them.
    sends_on_own_thread: ClassVar[bool] = False
    # Whether the customer was shown "typing…" already (in the webhook's answer), so the
    # channel's greeting sends no typing indicator of its own.
    typing_shown: bool = False
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

        Both records are written in the thread that makes the call, not handed to a thread
        pool: "sending" just before the call, "sent" as soon as the platform answered. Under
        a burst the pool's queue is long, and every reply whose "sent" record waits in it is
        one a crash would leave in doubt. Each is one short write. A sender whose client can
        (``sends_on_own_thread``) does all three on the sending thread, so Rasa's loop, busy
        with other customers' dialogue, does not stand between the answer and the record
        (``bot.channels.sending``); the others on Rasa's loop. And a reply is recorded
        "sending" only once it holds one of the sender's places for calls in flight
        (``DEFAULT_REPLY_CALLS``): one waiting for a place has not started, and is sent after a
        crash like any new reply.
        """
        assert self.inbox is not None and self.origin is not None
        if self.on_sending_thread() and not SENDING_THREAD.here():
            # Its places, its checks, its records and the call, all on the sending thread.
            return await SENDING_THREAD.run(self.recorded(what, seq, fingerprint, send))
        greeting = self._greeting_to is not None
        if greeting and not self._may_greet():
            return None
        # A greeting in doubt is sent again only where the platform is asked first.
        at_most_once = greeting and not self.can_look_up_sent
        async with self._calls_in_flight():
            return await self._recorded_call(what, seq, reply_digest(*fingerprint), send, at_most_once)

    def on_sending_thread(self) -> bool:
        """Return whether this sender's recorded calls run on the sending thread (``bot.channels.sending``)."""
        return self.sends_on_own_thread and sending_thread_from_env()

    def _calls_in_flight(self) -> asyncio.Semaphore:
        """Return the places for replies in flight, shared by every copy of this sender.

        Taken on one loop only: the sending thread's for a sender that uses it, else Rasa's.
        """
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
            # Typing first: its call goes out before the greeting's records are written.
            await asyncio.gather(self._typing_quietly(recipient_id),
                                 self._send_part(recipient_id, parts[0], seq=EDGE_GREETING_SEQ))  # fmt: skip
        finally:
            self._greeting_to = None
        return self.inbox.reply_states(self.origin).get(EDGE_GREETING_SEQ) in (SENDING, SENT)

    async def show_typing(self, recipient_id: str) -> None:
        """Show the customer the assistant is writing, where the platform can (default: nothing to do)."""

    async def _typing_quietly(self, recipient_id: str) -> None:
        if self.typing_shown:
            return
        try:
            if self.on_sending_thread():  # not behind the dialogue work on Rasa's loop either
                await SENDING_THREAD.run(self.show_typing(recipient_id))
            else:
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
