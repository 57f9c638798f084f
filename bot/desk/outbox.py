"""The outbox worker: delivers what the desk queued, with retries, exactly once where it can.

Every Slack post, every reply to a customer and every change to a Rasa conversation is
first written to the ``outbox`` table (``bot.cases``), in the same transaction as the
change that causes it. This worker, inside the desk process, delivers it:

- per target (a case's Slack thread, a customer, a Rasa conversation) one message at a
  time, oldest first, so a thread reads in order and a retry never overtakes;
- a failure is retried with exponential backoff (``retry_seconds`` doubling up to
  ``retry_max_seconds``); a 429 waits as long as its ``Retry-After`` says, and holds back
  every Slack call until then; errors that sending again cannot fix are given up on and
  logged (the row stays, with ``last_error``);
- delivered is marked in the same transaction that queues what follows (a customer
  reply's tracker event) and stores what it produced (the card's ts);
- an attempt may have gone through although it failed: its answer was lost (a time-out,
  a dropped connection, a 5xx after sending), or the desk stopped while it was under way
  (*in doubt*). Slack posts carry their idempotency key in the message metadata, so every
  try after the first looks for the message in the channel, thread or customer's DM and
  only posts if it is not there; Rasa's bot events are looked for in the tracker; a
  follow-up trigger is not repeated once the case records it was asked; card updates are
  simply made again. Only a Telegram message whose answer was lost cannot be checked
  (Telegram has no such lookup): it is sent again, with a warning and a count in the
  metrics (``DeliveryStats``), since a reply seen twice is better than a reply lost; such
  messages (Telegram's and every other channel without a lookup) go one at a time
  (``unchecked_sends``), so a crash leaves at most that many in doubt;
- errors that sending again cannot fix (a bot blocked by the customer, a channel gone)
  are given up on at once, with the reason in ``last_error`` (and, for a customer, a
  notice in the case's thread); everything else is retried for as long as it fails;
- a message to a Messenger, Instagram or WhatsApp customer obeys the platform's policy
  window, counted from the customer's last message (``bot.desk.windows``): a person's late
  reply goes with the ``HUMAN_AGENT`` tag; one that may not go at all is not sent, never
  counted as delivered, and the agent is told in the thread (on WhatsApp, with the
  template that reopens the conversation: the agent's ``template:`` sends it); the leads
  are told of a watchdog update that could not go.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import aiohttp
import httpx
from slack_sdk.errors import SlackApiError
from sqlalchemy.exc import InterfaceError, OperationalError

from bot.cases.records import CardPlacement, OutboxMessage
from bot.channels.meta import WHATSAPP, GraphError, Window
from bot.channels.outbound import OutboundUnavailable
from bot.constants import OPEN_STATUSES, STATUS_WAITING
from bot.desk import cards, messages, windows
from bot.desk.metrics import IN_DOUBT_FOUND, IN_DOUBT_UNCHECKED, DeliveryStats
from bot.desk.rasa_api import RasaError

if TYPE_CHECKING:
    from slack_sdk.web.async_client import AsyncWebClient

    from bot.cases import Case, CaseStore
    from bot.cases.records import OutboxItem
    from bot.channels.outbound import Outbound
    from bot.desk.rasa_api import RasaClient

log = logging.getLogger(__name__)

METADATA_EVENT = "firstreply_outbox"
# Errors about the message itself: sending it again cannot succeed.
_SLACK_CONTENT_ERRORS = frozenset(
    {"invalid_blocks", "invalid_blocks_format", "msg_too_long", "no_text", "invalid_arguments", "too_many_attachments",
     "invalid_metadata_format", "invalid_metadata_schema", "metadata_too_large", "message_not_found",
     "cant_update_message", "edit_window_closed", "user_not_in_channel", "user_not_found"}
)  # fmt: skip
# Errors about where the message goes: the channel or person is gone or closed to the app for
# good. (``not_in_channel`` is not: inviting the app fixes it, and the retries then deliver.)
_SLACK_CHANNEL_ERRORS = frozenset(
    {"channel_not_found", "is_archived", "cannot_dm_bot", "account_inactive", "user_disabled", "messages_tab_disabled"}
)
_CHANNEL_ID = re.compile(r"[CGD][A-Z0-9]{2,}")
# Errors that sending again cannot fix: python-telegram-bot's and tweepy's class names, and the X
# sender's refusal of a DM (the customer does not accept DMs from the brand).
_PERMANENT_SEND_ERRORS = ("BadRequest", "Forbidden", "ChatMigrated", "InvalidToken", "NotFound", "DMRefused")
# What python-telegram-bot's failures stand on when the request went out and its answer was lost.
_ANSWER_LOST = (httpx.ReadTimeout, httpx.ReadError, httpx.RemoteProtocolError)
# How far before a message was queued an earlier post of it is looked for (clocks differ).
LOOKBACK_SECONDS = 60.0
# The log's words for a delivery cut off under way (the desk stopped or lost the lead) and sent again.
CUT_OFF_SENT_AGAIN = "was cut off under way and cannot be checked: sent again"
# Waits between tries at recording a delivery that went (a database connection lost meanwhile).
FINISH_RETRY_SECONDS = (0.2, 0.5, 1.0, 2.0)


def utc_now() -> datetime:
    """Return the real current time in UTC (the desk never uses a pinned clock)."""
    return datetime.now(timezone.utc)


class _GiveUp(Exception):
    """Delivery failed for good."""


class _GiveUpWithNotice(_GiveUp):
    """A customer could not be reached for good: the agent is told in the thread."""


class _OutsideWindow(_GiveUp):
    """The platform's policy window is closed to this message: the agent (and for the watchdog, the leads) are told."""

    def __init__(self, message: str, window: Window, platform_said: bool = False) -> None:
        super().__init__(message)
        self.window = window
        self.platform_said = platform_said


class _Retry(Exception):
    """Delivery failed for now; try again after ``wait`` seconds (None: the usual backoff)."""

    def __init__(self, message: str, wait: float | None = None, slack_pause: bool = False) -> None:
        super().__init__(message)
        self.wait = wait
        self.slack_pause = slack_pause


@dataclass(frozen=True)
class RenderedCard:
    """A case card as blocks, with its digest."""

    text: str
    blocks: list[dict[str, Any]]
    digest: str


def render_card(store: CaseStore, case: Case, now: datetime) -> RenderedCard:
    """Render ``case``'s card as of ``now`` (its previous cases and undelivered new estimates read from ``store``)."""
    lookup = store.lookup
    previous = [earlier for earlier in (lookup.get(number) for number in case.previous_cases) if earlier is not None]
    undelivered = store.outbox.count(
        kind=messages.KIND_CUSTOMER, key_prefix=f"{messages.PROMISE_UPDATE_PREFIX}{case.id}:", given_up=True
    )
    text, blocks = cards.card(case, previous, now, undelivered_updates=undelivered)
    return RenderedCard(text, blocks, cards.digest(text, blocks))


def outbox_metadata(key: str) -> dict[str, Any]:
    """Return the Slack message metadata that marks a post with its idempotency key."""
    return {"event_type": METADATA_EVENT, "event_payload": {"key": key}}


class ChannelDirectory:
    """Turns the channel names of support.yml routing (``#support-queue``) into channel ids."""

    def __init__(self, client: AsyncWebClient) -> None:
        """Look channels up with ``client``."""
        self._client = client
        self._ids: dict[str, str] = {}

    async def resolve(self, channel: str) -> str:
        """Return the id of ``channel`` (a name, with or without ``#``, or already an id)."""
        if _CHANNEL_ID.fullmatch(channel):
            return channel
        name = channel.lstrip("#")
        if name not in self._ids:
            cursor = None
            while True:
                answer = await self._client.conversations_list(
                    types="public_channel,private_channel", exclude_archived=True, limit=1000, cursor=cursor
                )
                for found in answer.get("channels") or []:
                    self._ids[str(found["name"])] = str(found["id"])
                cursor = (answer.get("response_metadata") or {}).get("next_cursor")
                if name in self._ids or not cursor:
                    break
        if name not in self._ids:
            raise _Retry(f"no channel named #{name} that the desk app can see (invite the app to it)")
        return self._ids[name]


class OutboxWorker:
    """Delivers the outbox (see the module docstring)."""

    def __init__(
        self,
        store: CaseStore,
        slack: AsyncWebClient,
        rasa: RasaClient,
        outbound: Outbound,
        *,
        retry_seconds: float = 1.0,
        retry_max_seconds: float = 300.0,
        poll_seconds: float = 1.0,
        concurrency: int = 4,
        unchecked_sends: int = 1,
        clock: Callable[[], datetime] = utc_now,
        stats: DeliveryStats | None = None,
        lead_channel: str | None = None,
        reopen_template: windows.ReopenTemplate | None = None,
    ) -> None:
        """Deliver through ``slack``, ``rasa`` and the customer senders of ``outbound``; count in ``stats``.

        ``concurrency`` deliveries run at once, of them at most ``unchecked_sends`` messages to
        customers that no lookup can confirm afterwards (every channel but Slack DMs): a
        crash cuts off at most that many, each of which the customer may then see twice.
        ``lead_channel`` hears of a watchdog update that could not be delivered;
        ``reopen_template`` is the WhatsApp template an agent may send past 24 hours.
        """
        self.store = store
        self.slack = slack
        self.rasa = rasa
        self.outbound = outbound
        self.channels = ChannelDirectory(slack)
        self.retry_seconds = retry_seconds
        self.retry_max_seconds = retry_max_seconds
        self.poll_seconds = poll_seconds
        self.concurrency = concurrency
        self.unchecked_sends = unchecked_sends
        self.clock = clock
        self.stats = stats if stats is not None else DeliveryStats()
        self.lead_channel = lead_channel
        self.reopen_template = reopen_template
        self._slack_paused_until = datetime.min.replace(tzinfo=timezone.utc)
        self._running: dict[int, asyncio.Task[None]] = {}
        self._unchecked_running: set[int] = set()
        self._wake = asyncio.Event()
        self._abandoned = False

    def wake(self) -> None:
        """Look at the outbox now (something was just queued)."""
        self._wake.set()

    def abandon(self) -> None:
        """Start nothing more and cut off the deliveries under way: this process may no longer deliver.

        For a desk process that lost the lead (``bot.election``) while ``run`` goes on until its
        stop: what was cut off is in doubt, and the next leader checks it before sending again.
        """
        self._abandoned = True
        for task in list(self._running.values()):
            task.cancel()

    async def run(self, stop: asyncio.Event, grace_seconds: float = 10.0) -> None:
        """Deliver until ``stop`` is set; then give running deliveries ``grace_seconds`` to finish."""
        self._abandoned = False
        recovered = await asyncio.to_thread(self.store.outbox.recover_interrupted)
        if recovered:
            log.warning("desk outbox: %d delivery(ies) were cut off by a stop; checking them before sending", recovered)
        while not stop.is_set():
            self._wake.clear()  # before reading: a wake during it means "look again"
            try:
                await self.run_once()
            except Exception:  # noqa: BLE001 - the loop must outlive a database hiccup
                log.exception("desk outbox: reading the outbox failed; trying again")
            waiters = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())]
            await asyncio.wait(waiters, timeout=self.poll_seconds, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()
        if self._running:
            await asyncio.wait(list(self._running.values()), timeout=grace_seconds)

    async def run_once(self) -> int:
        """Start delivering what is due now; return how many deliveries were started."""
        now = self.clock()
        items = await asyncio.to_thread(self.store.outbox.ready, now, 50, first_kinds=(messages.KIND_CARD_POST,))
        if self._abandoned:
            return 0
        started = 0
        for item in items:
            if len(self._running) >= self.concurrency:
                break
            if item.id in self._running:
                continue
            if item.kind in messages.SLACK_KINDS and now < self._slack_paused_until:
                continue
            if self._unchecked(item):
                if len(self._unchecked_running) >= self.unchecked_sends:
                    continue
                self._unchecked_running.add(item.id)
            task = asyncio.create_task(self._attempt(item.id), name=f"desk-outbox-{item.id}")
            self._running[item.id] = task
            task.add_done_callback(lambda done, number=item.id: self._finished(number, done))
            started += 1
        return started

    def _unchecked(self, item: OutboxItem) -> bool:
        """Return whether ``item`` is a message to a customer that no lookup can confirm once sent."""
        if item.kind != messages.KIND_CUSTOMER:
            return False
        try:
            sender = self.outbound.sender_for(str(item.payload.get("channel")))
        except OutboundUnavailable:
            return False  # not sent this time: the attempt waits and tries again
        return sender is not None and (bool(item.payload.get("template")) or getattr(sender, "deliver_text", None) is None)

    def _finished(self, item_id: int, task: asyncio.Task[None]) -> None:
        self._running.pop(item_id, None)
        self._unchecked_running.discard(item_id)
        if not task.cancelled() and task.exception() is not None:
            log.error("desk outbox: delivery %s failed unexpectedly", item_id, exc_info=task.exception())
        self._wake.set()  # the next message of the same target may go now

    async def drain(self, timeout: float = 30.0) -> None:
        """Deliver until nothing is due or running (for tests and the command line)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            started = await self.run_once()
            if not started and not self._running:
                return
            if self._running:
                await asyncio.wait(list(self._running.values()), timeout=1.0)
        raise TimeoutError(f"the outbox was still busy after {timeout}s")

    # --- one attempt ---------------------------------------------------------------------

    async def _attempt(self, item_id: int) -> None:
        item = await asyncio.to_thread(self.store.outbox.start_delivery, item_id, self.clock())
        if item is None:
            return  # delivered meanwhile, or already under way
        handler = self._handlers().get(item.kind)
        try:
            if handler is None:
                raise _GiveUp(f"unknown kind {item.kind!r}")
            await handler(item)
        except _OutsideWindow as error:
            log.warning("desk outbox: %s %s not sent: %s", item.kind, item.key, error)
            await asyncio.to_thread(self.store.outbox.fail_delivery, item.id, str(error), None)
            await asyncio.to_thread(self.store.outbox.enqueue, self._window_notices(item, error), self.clock())
        except _GiveUp as error:
            log.error("desk outbox: giving up on %s %s: %s", item.kind, item.key, error)
            await asyncio.to_thread(self.store.outbox.fail_delivery, item.id, str(error), None)
            if isinstance(error, _GiveUpWithNotice) and item.case_id is not None:
                notice = messages.thread_notice(
                    item.case_id, f"{item.key}:not-delivered", messages.NOTICE_NOT_DELIVERED, error=str(error)
                )
                await asyncio.to_thread(self.store.outbox.enqueue, [notice], self.clock())
        except _Retry as error:
            await self._retry_later(item, str(error), error.wait, error.slack_pause)
        except SlackApiError as error:
            await self._slack_failed(item, error)
        except RasaError as error:
            if error.permanent:
                log.error("desk outbox: giving up on %s %s: %s", item.kind, item.key, error)
                await asyncio.to_thread(self.store.outbox.fail_delivery, item.id, str(error), None)
            else:
                await self._retry_later(item, str(error))
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as error:
            await self._retry_later(item, f"{type(error).__name__}: {error}")
        except Exception as error:  # noqa: BLE001 - a bug must not stop the other deliveries
            log.exception("desk outbox: %s %s failed", item.kind, item.key)
            await self._retry_later(item, f"{type(error).__name__}: {error}")

    def _handlers(self) -> Mapping[str, Callable[[OutboxItem], Awaitable[None]]]:
        return {
            messages.KIND_CARD_POST: self._card_post,
            messages.KIND_CARD_UPDATE: self._card_update,
            messages.KIND_THREAD: self._thread_post,
            messages.KIND_EPHEMERAL: self._ephemeral,
            messages.KIND_CUSTOMER: self._customer_send,
            messages.KIND_RASA_EVENTS: self._rasa_events,
            messages.KIND_RASA_TRIGGER: self._rasa_trigger,
            messages.KIND_LEAD_POST: self._lead_post,
            messages.KIND_LEAD_NOTICE: self._lead_notice,
        }

    def backoff(self, attempts: int) -> float:
        """Return the wait before the next try after ``attempts`` failed ones (doubling, capped, jittered)."""
        wait = min(self.retry_max_seconds, self.retry_seconds * 2 ** max(0, attempts - 1))
        return wait * random.uniform(0.8, 1.0)

    async def _retry_later(self, item: OutboxItem, error: str, wait: float | None = None, slack_pause: bool = False) -> None:
        seconds = self.backoff(item.attempts) if wait is None else wait
        retry_at = self.clock() + timedelta(seconds=seconds)
        if slack_pause:
            self._slack_paused_until = max(self._slack_paused_until, retry_at)
        log.warning("desk outbox: %s %s failed (%s); try %d again in %.1fs", item.kind, item.key, error, item.attempts + 1, seconds)
        await asyncio.to_thread(self.store.outbox.fail_delivery, item.id, error, retry_at)

    async def _slack_failed(self, item: OutboxItem, error: SlackApiError) -> None:
        status = error.response.status_code
        code = str(error.response.get("error") or "")
        if status == 429:
            header = {key.lower(): value for key, value in (error.response.headers or {}).items()}.get("retry-after")
            try:
                wait = float(header[0] if isinstance(header, list) else header) if header else 1.0
            except ValueError:
                wait = 1.0
            await self._retry_later(item, "slack: rate limited (429)", wait, slack_pause=True)
        elif status < 500 and code in _SLACK_CONTENT_ERRORS | _SLACK_CHANNEL_ERRORS:
            log.error("desk outbox: Slack refused %s %s for good: %s", item.kind, item.key, code)
            await asyncio.to_thread(self.store.outbox.fail_delivery, item.id, f"slack: {code}", None)
        else:
            # A 5xx may come after Slack took the post: the next try looks for it first.
            await self._retry_later(item, f"slack: {code or status}")

    async def _finish(self, item: OutboxItem, result: Mapping[str, Any] | None = None, **extra: Any) -> None:
        """Record ``item`` delivered, trying again briefly if the database connection is lost.

        The message went: trying the whole delivery again would send it twice (a Telegram
        message cannot be looked up). Writing the record again is safe: its transaction
        either committed or left nothing.
        """
        for wait in (*FINISH_RETRY_SECONDS, None):
            try:
                await asyncio.to_thread(self.store.outbox.finish_delivery, item.id, self.clock(), result, **extra)
                return
            except (OperationalError, InterfaceError) as error:
                if wait is None:
                    raise
                log.warning("desk outbox: %s %s went, recording it failed (%s); trying again", item.kind, item.key,
                            type(error).__name__)  # fmt: skip
                await asyncio.sleep(wait)

    async def _case(self, item: OutboxItem) -> Case:
        case = await asyncio.to_thread(self.store.lookup.get, item.case_id) if item.case_id is not None else None
        if case is None:
            raise _GiveUp(f"case {item.case_id} does not exist")
        return case

    # --- Slack ---------------------------------------------------------------------------

    @staticmethod
    def _may_be_posted(item: OutboxItem) -> bool:
        """Return whether an earlier attempt at ``item`` may have gone through (look before sending).

        Any earlier attempt, not only those known to be cut off: whether a time-out or a
        5xx came before or after Slack took the post cannot be told, and one lookup per
        retry is cheap.
        """
        return item.in_doubt or item.attempts > 1

    async def _find_posted(self, item: OutboxItem, channel: str, thread_ts: str | None) -> str | None:
        """Return the ts of the message posted for ``item`` by an earlier attempt, if any."""
        oldest = f"{item.created_at.timestamp() - LOOKBACK_SECONDS:.6f}"
        cursor = None
        while True:
            if thread_ts is None:
                answer = await self.slack.conversations_history(
                    channel=channel, oldest=oldest, include_all_metadata=True, limit=200, cursor=cursor
                )
            else:
                answer = await self.slack.conversations_replies(
                    channel=channel, ts=thread_ts, oldest=oldest, include_all_metadata=True, limit=200, cursor=cursor
                )
            for message in answer.get("messages") or []:
                metadata = message.get("metadata") or {}
                if metadata.get("event_type") == METADATA_EVENT and (metadata.get("event_payload") or {}).get("key") == item.key:
                    self.stats.count("slack", IN_DOUBT_FOUND)
                    return str(message["ts"])
            cursor = (answer.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                return None

    async def _card_post(self, item: OutboxItem) -> None:
        case = await self._case(item)
        if case.card_ts is not None:
            await self._finish(item, {"ts": case.card_ts, "already": True})
            return
        route = str(case.metadata.get("route") or "")
        if not route:
            raise _GiveUp(f"case {case.id} has no route")
        channel = await self.channels.resolve(route)
        card = await asyncio.to_thread(render_card, self.store, case, self.clock())
        if self._may_be_posted(item):
            ts = await self._find_posted(item, channel, None)
            if ts is not None:
                log.info("desk outbox: card of case %s was posted by an earlier try (%s)", case.id, ts)
                await self._finish(item, {"ts": ts, "found": True}, card=CardPlacement(channel, ts, ""))
                return
        answer = await self.slack.chat_postMessage(
            channel=channel, text=card.text, blocks=card.blocks, metadata=outbox_metadata(item.key),
            unfurl_links=False, unfurl_media=False,
        )  # fmt: skip
        posted_in, ts = str(answer["channel"]), str(answer["ts"])
        log.info("desk: card of case %s posted in %s", case.id, posted_in)
        await self._finish(item, {"ts": ts, "channel": posted_in}, card=CardPlacement(posted_in, ts, card.digest))

    async def _card_update(self, item: OutboxItem) -> None:
        case = await self._case(item)
        if case.card_ts is None or case.card_channel is None:
            raise _GiveUp(f"case {case.id} has no card to update")
        card = await asyncio.to_thread(render_card, self.store, case, self.clock())
        await self.slack.chat_update(channel=case.card_channel, ts=case.card_ts, text=card.text, blocks=card.blocks)
        await self._finish(item, {"digest": card.digest}, card=CardPlacement(None, None, card.digest))

    async def _thread_post(self, item: OutboxItem) -> None:
        case = await self._case(item)
        if case.card_ts is None or case.card_channel is None:
            if case.status not in OPEN_STATUSES:
                raise _GiveUp(f"case {case.id} is closed and never had a card")
            retry_at = self.clock() + timedelta(seconds=self.poll_seconds)
            await asyncio.to_thread(self.store.outbox.postpone_delivery, item.id, retry_at, "waiting for the card")
            return
        payload = item.payload
        text = str(payload["text"]) if payload.get("text") else cards.notice_text(payload, case)
        if self._may_be_posted(item):
            ts = await self._find_posted(item, case.card_channel, case.card_ts)
            if ts is not None:
                await self._finish(item, {"ts": ts, "found": True})
                return
        answer = await self.slack.chat_postMessage(
            channel=case.card_channel, thread_ts=case.card_ts, text=text, metadata=outbox_metadata(item.key),
            reply_broadcast=bool(payload.get("broadcast")), unfurl_links=False, unfurl_media=False,
        )  # fmt: skip
        await self._finish(item, {"ts": str(answer["ts"])})

    async def _lead_post(self, item: OutboxItem) -> None:
        case = await self._case(item)
        if case.status != STATUS_WAITING:
            # Claimed (or closed) while the escalation waited to go: nothing left to escalate.
            await self._finish(item, {"skipped": case.status})
            return
        posted_in = await self._to_leads(item, cards.escalation_text(case, item.payload, self.clock()))
        if posted_in is not None:
            log.info("desk: case %s escalated in %s", case.id, posted_in)

    async def _lead_notice(self, item: OutboxItem) -> None:
        await self._to_leads(item, str(item.payload["text"]))

    async def _to_leads(self, item: OutboxItem, text: str) -> str | None:
        """Post ``text`` once in the leads' channel of ``item`` and finish it; return where, or None if found posted."""
        channel = await self.channels.resolve(str(item.payload["channel"]))
        if self._may_be_posted(item):
            ts = await self._find_posted(item, channel, None)
            if ts is not None:
                await self._finish(item, {"ts": ts, "found": True})
                return None
        answer = await self.slack.chat_postMessage(
            channel=channel, text=text, metadata=outbox_metadata(item.key), unfurl_links=False, unfurl_media=False
        )
        await self._finish(item, {"ts": str(answer["ts"]), "channel": str(answer["channel"])})
        return str(answer["channel"])

    async def _ephemeral(self, item: OutboxItem) -> None:
        payload = item.payload
        if item.in_doubt:
            # Cannot be looked up, and a stale hint shown twice helps nobody: count it as shown.
            await self._finish(item, {"skipped": "in doubt"})
            return
        options = {"thread_ts": payload["thread_ts"]} if payload.get("thread_ts") else {}
        await self.slack.chat_postEphemeral(
            channel=str(payload["channel"]), user=str(payload["user"]), text=str(payload["text"]), **options
        )
        await self._finish(item)

    # --- customers -------------------------------------------------------------------------

    async def _customer_send(self, item: OutboxItem) -> None:
        payload = item.payload
        channel, sender_id = str(payload["channel"]), str(payload["sender_id"])
        template = self.reopen_template if payload.get("template") else None
        if payload.get("template") and (template is None or channel != WHATSAPP):
            raise _GiveUpWithNotice("no WhatsApp reopening template is set in support.yml (whatsapp.reopen_template)")
        text = f"[template {template.name}]" if template is not None else str(payload["text"])
        # An agent's reply is a person answering; the assistant's own messages (the
        # watchdog's updates and check-ins) are not.
        by_person = bool(payload.get("agent"))
        metadata = {"firstreply_outbox": item.key, "agent": payload.get("agent")}
        if payload.get("watchdog"):
            metadata["watchdog"] = payload["watchdog"]
        try:
            sender = self.outbound.sender_for(channel)
        except OutboundUnavailable as error:
            raise _Retry(str(error)) from error
        tracker_event = OutboxMessage(
            key=f"{item.key}:tracker",
            kind=messages.KIND_RASA_EVENTS,
            target=messages.rasa_target(sender_id),
            payload={
                "conversation_id": sender_id,
                "events": [
                    {
                        "event": "bot",
                        "text": text,
                        "timestamp": self.clock().timestamp(),
                        "metadata": metadata,
                    }
                ],
            },
            case_id=item.case_id,
        )
        if sender is None:
            notice = messages.thread_notice(
                item.case_id or 0, f"{item.key}:not-pushed", messages.NOTICE_NOT_PUSHED, channel=channel
            )
            await self._finish(item, {"pushed": False}, then=[tracker_event, notice] if item.case_id else [tracker_event])
            return
        # A template is what may go outside the window; anything else must fit in it.
        options = {} if template is not None else await self._window_options(item, channel, sender_id, by_person)
        # A sender that can send once per key (Slack DMs: looked up in the DM) does; the
        # others (Telegram) are sent again after a lost answer: at least once.
        deliver_text = getattr(sender, "deliver_text", None)
        if item.in_doubt and deliver_text is None:
            self.stats.count(channel, IN_DOUBT_UNCHECKED)
            log.warning("desk outbox: %s %s to %s %s (the customer may see it twice)", item.kind, item.key, channel,
                        CUT_OFF_SENT_AGAIN)  # fmt: skip
        try:
            if template is not None:
                await sender.send_template(sender_id, template.name, template.language)  # type: ignore[attr-defined]
            elif options:
                await sender.send_text_message(sender_id, text, **options)
            elif deliver_text is not None:
                since = item.created_at.timestamp() - LOOKBACK_SECONDS
                await deliver_text(sender_id, text, item.key, since=since, check_first=self._may_be_posted(item))
            else:
                await sender.send_text_message(sender_id, text)
        except Exception as error:
            self._classify_send_error(item, channel, error)
            raise
        # A template only invites the customer back: it is no answer to the case.
        await self._finish(item, {"pushed": True}, then=[tracker_event], human_reply=by_person and template is None)

    async def _window_options(self, item: OutboxItem, channel: str, sender_id: str, by_person: bool) -> dict[str, Any]:
        """Return the send options the policy window allows now; raise ``_OutsideWindow`` if it allows none.

        The customer's last message is read from the conversation (Rasa's tracker); a
        conversation without one (never expected for a case) counts from the case's opening.
        """
        if not windows.has_window(channel):
            return {}
        try:
            events = await self.rasa.events(sender_id)
        except RasaError as error:
            # Without the conversation the window cannot be told: wait for it, never send blind.
            raise _Retry(f"{channel}: the customer's last message cannot be read from Rasa ({error})") from error
        last = windows.last_customer_message(events, channel)
        if last is None:
            last = (await self._case(item)).created_at
        window = windows.window_now(channel, last, self.clock(), human=by_person)
        if window in (Window.TEMPLATE_ONLY, Window.CLOSED):
            raise _OutsideWindow(f"{channel}: outside the messaging window (customer last wrote {last.isoformat()})",
                                 window)  # fmt: skip
        return windows.send_options(window)

    def _window_notices(self, item: OutboxItem, refused: _OutsideWindow) -> list[OutboxMessage]:
        """Return what tells the agent (and for a watchdog update, the leads) that a message could not go."""
        if item.case_id is None:
            return []
        channel, watchdog = str(item.payload["channel"]), item.payload.get("watchdog")
        text = windows.not_delivered_text(channel, refused.window, watchdog=watchdog, template=self.reopen_template,
                                          platform_said=refused.platform_said)  # fmt: skip
        notices = [messages.thread_message(item.case_id, f"{item.key}:outside-window", text)]
        if watchdog and self.lead_channel:
            notices.append(
                messages.lead_notice(item.case_id, f"{item.key}:outside-window:lead", self.lead_channel,
                                     windows.lead_text(item.case_id, channel, str(watchdog)))
            )  # fmt: skip
        return notices

    def _classify_send_error(self, item: OutboxItem, channel: str, error: Exception) -> None:
        """Turn a customer sender's error into give-up (with a notice in the thread) or retry."""
        if isinstance(error, GraphError):
            # Meta's platforms (Messenger, Instagram, WhatsApp): its error codes decide.
            if error.outside_window:
                closed = Window.TEMPLATE_ONLY if channel == WHATSAPP else Window.CLOSED
                raise _OutsideWindow(f"{channel}: {error}", closed, platform_said=True) from error
            if error.rate_limited:
                raise _Retry(f"{channel}: rate limited ({error})") from error
            if error.refused_for_good:
                raise _GiveUpWithNotice(f"{channel}: {error}") from error
            raise _Retry(f"{channel}: {error}") from error
        if isinstance(error, SlackApiError):
            # The customer app's client: its own rate limit, not the desk's (no pause of the desk's posts).
            code = str(error.response.get("error") or "")
            if error.response.status_code == 429:
                raise _Retry(f"{channel}: rate limited (429)") from error
            if error.response.status_code < 500 and code in _SLACK_CHANNEL_ERRORS | _SLACK_CONTENT_ERRORS:
                raise _GiveUpWithNotice(f"slack: {code}") from error
            raise _Retry(f"{channel}: slack: {code or error.response.status_code}") from error
        retry_after = getattr(error, "retry_after", None)
        if retry_after is not None:
            seconds = retry_after.total_seconds() if isinstance(retry_after, timedelta) else float(retry_after)
            raise _Retry(f"{type(error).__name__}: {error}", seconds) from error
        if type(error).__name__ in _PERMANENT_SEND_ERRORS:
            raise _GiveUpWithNotice(str(error)) from error
        # python-telegram-bot wraps httpx's error; pywa (WhatsApp) lets it through as it is.
        lost = error if isinstance(error, _ANSWER_LOST) else error.__cause__
        if isinstance(lost, _ANSWER_LOST):
            self.stats.count(channel, IN_DOUBT_UNCHECKED)
            log.warning(
                "desk outbox: %s %s to %s: the answer was lost after sending (%s); it cannot be checked, so it is "
                "sent again and the customer may see it twice",
                item.kind, item.key, channel, type(lost).__name__,
            )  # fmt: skip
            raise _Retry(f"{channel}: answer lost after sending, sent again unchecked ({error})") from error
        if type(error).__name__ in ("NetworkError", "TimedOut") or isinstance(error, httpx.TransportError):
            # Refused, reset before sending, a 5xx answer: the platform did not take it.
            raise _Retry(f"{channel}: {type(error).__name__}: {error}") from error

    # --- Rasa ------------------------------------------------------------------------------

    async def _rasa_events(self, item: OutboxItem) -> None:
        conversation = str(item.payload["conversation_id"])
        events = list(item.payload["events"])
        if item.in_doubt and any((event.get("metadata") or {}).get("firstreply_outbox") for event in events):
            keys = {(event.get("metadata") or {}).get("firstreply_outbox") for event in events}
            recorded = await self.rasa.events(conversation)
            if any((event.get("metadata") or {}).get("firstreply_outbox") in keys for event in recorded):
                await self._finish(item, {"found": True})
                return
        await self.rasa.append_events(conversation, events)
        await self._finish(item)

    async def _rasa_trigger(self, item: OutboxItem) -> None:
        if item.in_doubt and item.case_id is not None:
            case = await self._case(item)
            if case.followup_asked_at is not None:
                await self._finish(item, {"found": True})
                return
        await self.rasa.trigger_intent(str(item.payload["conversation_id"]), str(item.payload["intent"]))
        await self._finish(item)
