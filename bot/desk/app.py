"""The desk process: the slack-bolt app, and the loops that post cards, relay and deliver.

``python -m bot desk`` builds a ``Desk`` from the environment (``bot.desk.settings``) and
runs (``bot.desk.server``), until SIGTERM or Ctrl-C:

- the bolt app, over HTTP (bolt's aiohttp adapter at ``/slack/events``; Slack signs every
  request and bolt checks it) or over Socket Mode when ``SLACK_APP_TOKEN`` is set; its
  listeners are the card actions (``bot.desk.card_actions``: buttons, the reassign form,
  replies in a card's thread) and the commands (``bot.desk.commands``: ``/queue``, ``/shift``,
  the Home tab);
- the card loop: queues a card for every new open case, and a card update whenever what
  a card shows changed (status, owner, follow-up, the promise countdown in words);
- the relay loop: queues the customers' new messages for their case's thread
  (``bot.desk.relay``);
- the outbox worker that delivers all of it (``bot.desk.outbox``);
- the watchdog (``bot.desk.watchdog``): escalations, honest promise updates, check-ins
  and closing quiet cases.

Any number of desk processes may share a case store. All of them serve Slack (listeners,
``/health``, ``/metrics``, ``/dashboard``); the card, relay, delivery and watchdog loops
run in one of them only, the leader elected on the case store (``bot.election``,
``LEADER_ELECTION``). The others try to take the lead every ``FIRSTREPLY_DESK_LEADER_SECONDS``;
what their listeners queue is delivered by the leader.

The HTTP server also serves ``GET /health``, ``GET /metrics`` (Prometheus,
``bot.desk.metrics``) and ``GET /dashboard`` (``bot.desk.dashboard``); in Socket Mode
these run on a small server of their own on the same host and port.

Listeners acknowledge first, then check everything against the store and the acting user
(``bot.desk.listener``). Refusals are shown to the user alone (ephemeral) and change nothing.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot.channels.outbound import Outbound
from bot.desk import cards, messages
from bot.desk.access import AgentDirectory
from bot.desk.card_actions import CardActions
from bot.desk.commands import Commands
from bot.desk.customer_texts import CustomerTexts
from bot.desk.metrics import build_registry
from bot.desk.outbox import OutboxWorker, render_card, utc_now
from bot.desk.rasa_api import RasaClient
from bot.desk.relay import CustomerMessages
from bot.desk.watchdog import Watchdog
from bot.desk.windows import reopen_template

if TYPE_CHECKING:
    from collections.abc import Callable

    from slack_bolt.context.ack.async_ack import AsyncAck

    from bot.cases import CaseStore
    from bot.desk.settings import DeskSettings
    from bot.election import Election
    from bot.ops import SupportConfig

log = logging.getLogger(__name__)

# How long after it is resolved a card still follows its case (the follow-up answers).
CARD_FOLLOW_DAYS = 2
# The election of the desk process that runs the loops (bot.election): one per case store.
LEADER_ELECTION = "firstreply:desk-workers"


class Desk:
    """The agent desk: bolt listeners plus the card, relay and delivery loops."""

    def __init__(
        self,
        settings: DeskSettings,
        store: CaseStore,
        support: SupportConfig,
        *,
        outbound: Outbound | None = None,
        clock: Callable[[], datetime] = utc_now,
        election: Election | None = None,
    ) -> None:
        """Build the Slack and Rasa clients and the bolt app (no network call).

        ``election`` decides whether this process runs the loops; without one it always does
        (the only desk of its case store: tests, tools).
        """
        self.settings = settings
        self.store = store
        self.support = support
        self.clock = clock
        self.election = election
        # Retries are the outbox's job (with its own backoff and Retry-After): none in the client.
        self.client = AsyncWebClient(token=settings.bot_token, base_url=settings.base_url, timeout=15, retry_handlers=[])
        self.directory = AgentDirectory(self.client, settings.agents, settings.leads)
        self.rasa = RasaClient(settings.rasa_url, settings.rasa_token)
        self.outbound = outbound if outbound is not None else Outbound()
        self.worker = OutboxWorker(
            store, self.client, self.rasa, self.outbound,
            retry_seconds=settings.retry_seconds, retry_max_seconds=settings.retry_max_seconds,
            poll_seconds=max(settings.poll_seconds, 0.05), unchecked_sends=settings.unchecked_sends, clock=clock,
            lead_channel=support.lead_channel, reopen_template=reopen_template(support),
        )  # fmt: skip
        self.relay = CustomerMessages(store, settings.events_db)
        # Read and checked once: a response missing from the domain stops the desk here.
        self.texts = CustomerTexts.load(support)
        self.watchdog = Watchdog(
            store, support, can_push=self.outbound.can_push, lease_seconds=settings.watchdog_lease_seconds,
            texts=self.texts,
        )
        self.metrics = build_registry(store, clock, self.worker.stats)
        listening = (store, self.client, self.directory, self.worker, clock, self.poke)
        self.card_actions = CardActions(*listening, texts=self.texts)
        self.commands = Commands(*listening)
        self.app = self.build_app()
        self._cards_wake = asyncio.Event()

    # --- the loops -----------------------------------------------------------------------

    def poke(self) -> None:
        """Look at cards and the outbox now (a listener just changed something)."""
        self._cards_wake.set()
        self.worker.wake()

    def sync_cards(self, now: datetime) -> int:
        """Queue cards for new cases and updates for cards that show something old; return how many.

        Blocking (database work): async callers run it in a thread.
        """
        queued = [messages.card_post(case.id) for case in self.store.lookup.cases_without_card()]
        count = self.store.outbox.enqueue(queued, now) if queued else 0
        for case in self.store.lookup.cases_with_cards(now - timedelta(days=CARD_FOLLOW_DAYS)):
            card = render_card(self.store, case, now)
            if card.digest == case.card_digest or self.store.outbox.has_undelivered(case.id, messages.KIND_CARD_UPDATE):
                continue
            count += self.store.outbox.enqueue([messages.card_update(case.id, card.digest, now)], now)
        return count

    async def _every(
        self,
        what: str,
        work: Callable[[datetime], int],
        stop: asyncio.Event,
        wake: asyncio.Event | None,
        period: float | None = None,
    ) -> None:
        seconds = self.settings.poll_seconds if period is None else period
        while not stop.is_set():
            if wake is not None:
                wake.clear()  # before the work: a poke during it means "look again"
            try:
                if await asyncio.to_thread(work, self.clock()):
                    self.worker.wake()
            except Exception:  # noqa: BLE001 - a database hiccup must not end the loop
                log.exception("desk: the %s loop failed; trying again", what)
            waiters = [asyncio.ensure_future(stop.wait())]
            if wake is not None:
                waiters.append(asyncio.ensure_future(wake.wait()))
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()

    @property
    def leading(self) -> bool:
        """Return whether this desk process runs the loops now."""
        return self.election is None or self.election.leading

    async def run_loops(self, stop: asyncio.Event) -> None:
        """Run the loops until ``stop`` is set: whenever this process leads, if the desk has an election."""
        if self.election is None:
            await self.lead(stop)
        else:
            await self.election.run(stop, self.lead, on_lost=self.worker.abandon)

    async def lead(self, stop: asyncio.Event) -> None:
        """Run the card, relay, watchdog and delivery loops until ``stop`` is set."""
        if self.support.watchdog.enabled and self.election is not None:
            # Elected: a lease left by a leader that died is ours now, not in a few ticks.
            try:
                await asyncio.to_thread(self.watchdog.take_over, self.clock())
            except Exception:  # noqa: BLE001 - without the lease the watchdog waits for it to expire
                log.exception("desk: could not take the watchdog's lease over; it waits for the lease to expire")
        loops = [
            self._every("card", self.sync_cards, stop, self._cards_wake),
            self._every("relay", self.relay.poll_once, stop, None),
            self.worker.run(stop),
        ]
        if self.support.watchdog.enabled:
            loops.append(self._every("watchdog", self.watchdog.tick, stop, None, self.settings.watchdog_seconds))
        try:
            await asyncio.gather(*loops)
        finally:
            if self.support.watchdog.enabled:
                await self._release_watchdog()

    async def _release_watchdog(self) -> None:
        try:
            await asyncio.to_thread(self.watchdog.release, self.clock())
        except Exception:  # noqa: BLE001 - stopping anyway: the lease then simply expires
            log.exception("desk: could not give the watchdog's lease up; it expires by itself")

    async def close(self) -> None:
        """Close every connection the desk opened."""
        await self.rasa.close()
        await self.outbound.close()
        self.relay.dispose()

    # --- the bolt app ----------------------------------------------------------------------

    def build_app(self) -> AsyncApp:
        """Return the bolt app with the desk's listeners (buttons, modal, thread replies, commands, Home)."""
        app = AsyncApp(
            client=self.client,
            signing_secret=self.settings.signing_secret or "",
            request_verification_enabled=not self.settings.socket_mode,
            process_before_response=False,
        )

        @app.action(cards.ACTION_CLAIM)
        async def claim(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any]) -> None:
            await ack()
            await self.card_actions.on_claim(body, action)

        @app.action(cards.ACTION_RESOLVE)
        async def resolve(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any]) -> None:
            await ack()
            await self.card_actions.on_resolve(body, action)

        @app.action(cards.ACTION_REASSIGN)
        async def reassign(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any]) -> None:
            await ack()
            await self.card_actions.on_reassign_button(body, action)

        @app.view(cards.REASSIGN_VIEW)
        async def reassign_to(ack: AsyncAck, body: dict[str, Any], view: dict[str, Any]) -> None:
            await self.card_actions.on_reassign_submit(ack, body, view)

        @app.event("message")
        async def thread_message(ack: AsyncAck, event: dict[str, Any]) -> None:
            await ack()
            await self.card_actions.on_message(event)

        @app.event("app_home_opened")
        async def home(ack: AsyncAck, event: dict[str, Any]) -> None:
            await ack()
            if event.get("tab", "home") == "home":
                await self.commands.publish_home(str(event["user"]))

        @app.command("/queue")
        async def queue(ack: AsyncAck, command: dict[str, Any]) -> None:
            await self.commands.on_queue(ack, command)

        @app.command("/shift")
        async def shift(ack: AsyncAck, command: dict[str, Any]) -> None:
            await self.commands.on_shift(ack, command)

        return app
