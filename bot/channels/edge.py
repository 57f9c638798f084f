"""The greeting at the edge: a new customer is greeted by the channel layer, before NLU and the dialogue.

In a burst every message waits its turn through Rasa's NLU and dialogue, so a new customer's
first sight of the brand would wait behind every message ahead of it. The channel layer
knows enough to greet at once: the message's text (its language, with lingua, the channel's
locale as a hint: ``bot.i18n``), the customer's name where the platform gives it, and the
greeting's wording (the ``utter_greeting`` / ``utter_greeting_named`` responses of the
domain, with their language variations, read from the model Rasa serves). So when a message
comes from a customer with no conversation going on, the connector greets them before it
hands the message to Rasa, and tells Rasa in the message's metadata (``GREETED_AT_EDGE``):
the dialogue's greeting step then records the greeting in the conversation instead of
sending it (``actions/acknowledge.py``), and the rest of the first answer follows as before.

When the greeting goes: a connector that can read a stored message without side effects
(``WebhookConnector.first_message``: Telegram) greets in a task of its own started as soon
as the message is stored (``EarlyGreetings``), with the typing indicator, not behind the
inbox worker's turn; the others greet when the worker reads the message back, before Rasa.
And while greetings started that way are under way, no message is handed to Rasa
(``EarlyGreetings.quiet``, for at most ``QUIET_WAIT_SECONDS``): Rasa's NLU runs on the
event loop, so in a burst a greeting would otherwise wait behind other customers' NLU.
The web chat (``bot.channels.webchat``), which answers in the request, greets with the same
wording and metadata: it stores a new visitor's greeting before Rasa reads the first message
and answers the page with it at once, the rest of the answer when the page asks again.

What keeps it honest:

- A greeting goes out once per customer and conversation: the edge greeting takes the same
  claim as the dialogue's (``Inbox.claim_greeting``) and is a reply record of the message
  at its own place (``EDGE_GREETING_SEQ``, before the dialogue's replies), written just
  before and after the platform call; one in flight at a crash is not sent again (where the
  platform can be asked, Messenger's, Instagram's and X's conversations, it is looked for
  and sent only if it is not there), and the message handled again tells Rasa it was
  greeted. The worker waits for the greeting started when the message was stored and takes
  its outcome, so the two never both send.
- The edge greets only before anything else was sent for the message; if its call failed,
  Rasa is not told, so the dialogue greets as it always did (or the edge tries again when
  the message is handled again, if nothing else went out meanwhile).
- Only a customer's first message: none of theirs stored in the inbox within the greeting
  memory (``FIRSTREPLY_GREETING_MEMORY_SECONDS``, Rasa's session expiry). Never a public
  post or comment (their flow answers in public, then privately with the dialogue's
  greeting), a button press, or a message with no private conversation.

Switched off with ``FIRSTREPLY_EDGE_GREETING=off`` (then the dialogue greets, as before).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.channels.common import BackgroundTasks, OnNewMessage
from bot.channels.inbox import SENDING, SENT
from bot.channels.replies import EDGE_GREETING_SEQ, HOLDING_SEQ, RecordedOutput
from bot.constants import GREETED_AT_EDGE, PUBLIC_POST_KEY, RESPONSE_GREETING, RESPONSE_GREETING_NAMED
from bot.conversation import customer_name, first_name
from bot.i18n import message_language, variation_text

if TYPE_CHECKING:
    from rasa.core.channels.channel import UserMessage

    from bot.channels.inbox import Inbox, InboxEntry

log = logging.getLogger(__name__)

ENV_EDGE_GREETING = "FIRSTREPLY_EDGE_GREETING"
OFF_VALUES = frozenset({"off", "0", "false", "no"})
# The longest a message waits before Rasa reads it while other customers' greetings are under way:
# their greeting's priority, not a lock (a greeting held by a slow platform call holds no one long).
QUIET_WAIT_SECONDS = 2.0
# How long a process handling a queued message waits for the greeting another process is sending.
GREETING_WAIT_SECONDS = 2.0
DOMAIN_DIR = Path(__file__).resolve().parents[2] / "domain"


def edge_greeting_on(environ: Mapping[str, str] | None = None) -> bool:
    """Return whether the channel layer greets new customers (``$FIRSTREPLY_EDGE_GREETING``, default on)."""
    value = (os.environ if environ is None else environ).get(ENV_EDGE_GREETING, "")
    return value.strip().lower() not in OFF_VALUES


@dataclass(frozen=True)
class Greeting:
    """One customer's greeting: the response it comes from, its text, its language (None: the main one)."""

    response: str
    text: str
    language: str | None

    def as_metadata(self) -> dict[str, Any]:
        """Return what Rasa is told (``GREETED_AT_EDGE``): the dialogue records this text."""
        return {"response": self.response, "text": self.text, "language": self.language}


class GreetingWords:
    """The greeting's wording, from the domain's responses, filled in for one message.

    ``responses`` is called for each greeting: it returns the responses of the model Rasa
    serves (so a new model's wording is used from its first message), else the domain files.
    """

    def __init__(self, responses: Callable[[], Mapping[str, Any]], assistant_name: str, languages: Sequence[str]):
        """Word greetings with ``responses``, as ``assistant_name``, in the switched-on ``languages`` (main first)."""
        self._responses = responses
        self.assistant_name = assistant_name
        self.languages = list(languages)

    @classmethod
    def for_app(cls, app: Any) -> GreetingWords:
        """Return the wording of the model served by Rasa's ``app`` (else the domain files) and support.yml's brand."""
        from bot.ops import load_support_config

        support = load_support_config()

        def responses() -> Mapping[str, Any]:
            domain = getattr(getattr(getattr(app, "ctx", None), "agent", None), "domain", None)
            served = getattr(domain, "responses", None)
            return served if served else domain_responses()

        return cls(responses, support.brand.assistant_name, support.languages.answer_in)

    def for_message(self, text: str | None, metadata: Mapping[str, Any]) -> Greeting | None:
        """Return the greeting for a customer's first message (``None``: the domain has no wording for it).

        The first name as the dialogue takes it (``bot.conversation``); the language the message
        is read in (the channel's locale a hint), else the main one.
        """
        from rasa.core.nlg.interpolator import interpolate_text

        name = first_name(customer_name([{"event": "user", "metadata": dict(metadata)}]))
        response = RESPONSE_GREETING_NAMED if name else RESPONSE_GREETING
        language = message_language(text, metadata, self.languages) if self.languages else None
        wording = variation_text(self._responses(), response, language)
        if not wording:
            return None
        values = {"assistant_name": self.assistant_name, "customer_name": name or ""}
        return Greeting(response, interpolate_text(wording, values), language)


@lru_cache(maxsize=1)
def domain_responses() -> Mapping[str, Any]:
    """Return the responses of the domain files (read once), for when no model is loaded."""
    from bot.ops.responses import load_responses

    return load_responses(DOMAIN_DIR)


class EarlyGreetings:
    """The greetings started as soon as their messages were stored, by update id, until the worker takes them."""

    def __init__(self) -> None:
        """Start with none."""
        self._outcomes: dict[str, asyncio.Future[Greeting | None]] = {}
        self._under_way = 0
        self._quiet = asyncio.Event()
        self._quiet.set()

    def start(
        self, update_id: str, greet: Callable[[], Awaitable[Greeting | None]], tasks: BackgroundTasks,
        *, keep: bool = True,
    ) -> None:  # fmt: skip
        """Run ``greet`` for the update ``update_id`` now, in a task of its own; keep its outcome for the worker.

        Without ``keep`` (a queued update, which any process may handle) the outcome is kept only
        while the greeting is under way; the process handling it then reads the reply records.
        """
        outcome: asyncio.Future[Greeting | None] = asyncio.get_running_loop().create_future()
        self._outcomes[update_id] = outcome
        self._under_way += 1
        self._quiet.clear()

        async def run() -> None:
            try:
                outcome.set_result(await greet())
            except Exception as error:  # the worker looks at the reply records and decides, as after a crash
                log.warning("the greeting of update %s could not be sent ahead (%r); left to its handling",
                            update_id, error)  # fmt: skip
            finally:
                if not outcome.done():  # failed or cancelled: as if none had been started
                    outcome.cancel()
                self._under_way -= 1
                if not self._under_way:
                    self._quiet.set()
                if not keep:
                    self._outcomes.pop(update_id, None)

        tasks.start(run(), label=f"greeting {update_id}")

    async def outcome(self, update_id: str) -> tuple[bool, Greeting | None]:
        """Return whether a greeting was started for ``update_id`` and came to an end, and what it sent (or may have).

        ``(False, None)`` when none was started, or it failed: the caller decides from the reply records.
        """
        outcome = self._outcomes.pop(update_id, None)
        if outcome is None:
            return False, None
        await asyncio.wait([outcome])
        return (False, None) if outcome.cancelled() else (True, outcome.result())

    def started(self, update_id: str) -> bool:
        """Return whether a greeting was started for ``update_id`` and the worker has not taken it yet."""
        return update_id in self._outcomes

    def forget(self, update_id: str) -> None:
        """Drop the outcome of ``update_id`` (its handling ended without taking it)."""
        self._outcomes.pop(update_id, None)

    async def quiet(self, limit_seconds: float = QUIET_WAIT_SECONDS) -> None:
        """Wait until no greeting started ahead is under way, for at most ``limit_seconds``."""
        if self._quiet.is_set():
            return
        try:
            await asyncio.wait_for(self._quiet.wait(), limit_seconds)
        except asyncio.TimeoutError:
            log.info("greetings still under way after %.1f s: the next message goes to Rasa now", limit_seconds)


def greeting_first(
    on_new_message: OnNewMessage, entry: InboxEntry, inbox: Inbox, words: Callable[[], GreetingWords],
    memory_seconds: float, early: EarlyGreetings,
) -> OnNewMessage:  # fmt: skip
    """Wrap ``on_new_message`` so that a new customer's message is greeted before Rasa reads it.

    The greeting started when the message was stored (``early``) is awaited and its outcome
    taken; only a message none was started for is greeted here. Then the message waits while
    greetings started ahead for other customers are under way (``EarlyGreetings.quiet``).
    """

    async def deliver(message: UserMessage) -> Any:
        started, greeting = await early.outcome(entry.update_id)
        if not started:
            greeting = await greet_at_edge(message, entry, inbox, words, memory_seconds)
        if greeting is not None:
            message.metadata = {**(message.metadata or {}), GREETED_AT_EDGE: greeting.as_metadata()}
        await early.quiet()
        return await on_new_message(message)

    return deliver


async def _greeting_sent(inbox: Inbox, origin: str) -> dict[int, str]:
    """Return the reply records of ``origin`` once its greeting is no longer being sent, or after ``GREETING_WAIT_SECONDS``."""
    deadline = time.monotonic() + GREETING_WAIT_SECONDS
    while True:
        records = inbox.reply_states(origin)
        if records.get(EDGE_GREETING_SEQ) != SENDING or time.monotonic() >= deadline:
            return records
        await asyncio.sleep(0.05)


async def greet_at_edge(
    message: UserMessage, entry: InboxEntry, inbox: Inbox, words: Callable[[], GreetingWords],
    memory_seconds: float,
) -> Greeting | None:  # fmt: skip
    """Greet the customer of ``message`` if it is their first; return the greeting they have (or may have)."""
    output = message.output_channel
    metadata = message.metadata or {}
    if not isinstance(output, RecordedOutput) or not output.bound or not entry.conversation:
        return None
    if metadata.get(PUBLIC_POST_KEY) or metadata.get("button"):
        return None
    assert output.origin is not None
    records = inbox.reply_states(output.origin)
    before = records.get(EDGE_GREETING_SEQ)
    if before == SENDING and not entry.replay:
        # Queued, and greeted by the process that stored it, which may be sending it still:
        # the greeting comes first, so wait for it (a little).
        records = await _greeting_sent(inbox, output.origin)
        before = records.get(EDGE_GREETING_SEQ)
    if before == SENDING and entry.replay and output.can_look_up_sent:
        # Cut off mid-send by a crash, on a platform that can be asked: the greeting is looked
        # for in the conversation and sent only if it is not there (``RecordedOutput.recorded``).
        greeting = words().for_message(message.text, metadata)
        if greeting is not None:
            try:
                await output.send_edge_greeting(str(message.sender_id), greeting.text)
            except Exception as error:  # still in doubt: the customer may have it, as before
                log.warning("%s %s: the greeting in doubt could not be looked up or sent (%s)",
                            output.name(), output.origin, output.describe(error))  # fmt: skip
        return greeting
    if before in (SENT, SENDING):
        # It went out (or may have) when the message was handled before, whatever else did since:
        # the dialogue records it again, and its replies keep the places they had then.
        return words().for_message(message.text, metadata)
    if any(seq not in (EDGE_GREETING_SEQ, HOLDING_SEQ) for seq in records):
        return None  # the dialogue's answer began without it: its own greeting step stands
    # Read in place, not in a pool: one indexed read, and under a burst the pool's queue
    # (every inbox write waits in it) would hold the greeting back.
    if before is None and inbox.earlier_message(entry, memory_seconds):
        return None
    greeting = words().for_message(message.text, metadata)
    if greeting is None:
        return None
    try:
        sent = await output.send_edge_greeting(str(message.sender_id), greeting.text)
    except Exception as error:  # the dialogue greets instead: no customer is left without a greeting
        log.warning("%s %s: the greeting could not be sent ahead (%s); the dialogue sends it",
                    output.name(), output.origin, output.describe(error))  # fmt: skip
        return None
    return greeting if sent else None
