"""The desk process: the slack-bolt app, and the loops that post cards, relay and deliver.

``python -m bot desk`` builds a ``Desk`` from the environment (``bot.desk.settings``) and
runs, until SIGTERM or Ctrl-C:

- the bolt app, over HTTP (bolt's aiohttp adapter at ``/slack/events``; Slack signs every
  request and bolt checks it) or over Socket Mode when ``SLACK_APP_TOKEN`` is set;
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

Listeners acknowledge first, then check everything against the store and the acting user:
a button's case must be the case whose card the button is on, the user must be an agent
(``bot.desk.access``), and only the owner of a case (or a lead) may answer, reassign or
resolve it. Refusals are shown to the user alone (ephemeral) and change nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import uuid
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.channels.outbound import Outbound
from bot.constants import STATUS_CLAIMED, STATUS_WAITING
from bot.desk import cards, dashboard, messages
from bot.desk.access import AccessUnknown, AgentDirectory
from bot.desk.metrics import CONTENT_TYPE, build_registry, exposition
from bot.desk.outbox import OutboxWorker, render_card, utc_now
from bot.desk.rasa_api import RasaClient
from bot.desk.relay import CustomerMessages
from bot.desk.settings import EVENTS_PATH, DeskSettings
from bot.desk.text import is_note, plain_from_slack
from bot.desk.watchdog import Watchdog, is_late, late_pickup_text

if TYPE_CHECKING:
    from collections.abc import Callable

    from slack_bolt.context.ack.async_ack import AsyncAck

    from bot.cases import Case, CaseStore
    from bot.cases.records import OutboxMessage
    from bot.election import Election
    from bot.ops import SupportConfig

log = logging.getLogger(__name__)

# How long after it is resolved a card still follows its case (the follow-up answers).
CARD_FOLLOW_DAYS = 2
NOT_AGENT = "Only the support team can use the desk. Ask a lead to add you to the agents group."
CANNOT_CHECK = "The desk cannot check who is on the support team right now (Slack did not answer). Try again in a minute."
UNKNOWN_CARD = "This card is not a case the desk knows."
RESUME_EVENTS: list[dict[str, Any]] = list(messages.RESUME_EVENTS)
SHIFT_USAGE = "Use `/shift on` when you start and `/shift off` when you stop taking cases."
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
            poll_seconds=max(settings.poll_seconds, 0.05), clock=clock,
        )  # fmt: skip
        self.relay = CustomerMessages(store, settings.events_db)
        self.watchdog = Watchdog(
            store, support, can_push=self.outbound.can_push, lease_seconds=settings.watchdog_lease_seconds
        )
        self.metrics = build_registry(store, clock, self.worker.stats)
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
            card = render_card(self.store.lookup, case, now)
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
            await self.on_claim(body, action)

        @app.action(cards.ACTION_RESOLVE)
        async def resolve(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any]) -> None:
            await ack()
            await self.on_resolve(body, action)

        @app.action(cards.ACTION_REASSIGN)
        async def reassign(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any]) -> None:
            await ack()
            await self.on_reassign_button(body, action)

        @app.view(cards.REASSIGN_VIEW)
        async def reassign_to(ack: AsyncAck, body: dict[str, Any], view: dict[str, Any]) -> None:
            await self.on_reassign_submit(ack, body, view)

        @app.event("message")
        async def thread_message(ack: AsyncAck, event: dict[str, Any]) -> None:
            await ack()
            await self.on_message(event)

        @app.event("app_home_opened")
        async def home(ack: AsyncAck, event: dict[str, Any]) -> None:
            await ack()
            if event.get("tab", "home") == "home":
                await self.publish_home(str(event["user"]))

        @app.command("/queue")
        async def queue(ack: AsyncAck, command: dict[str, Any]) -> None:
            await self.on_queue(ack, command)

        @app.command("/shift")
        async def shift(ack: AsyncAck, command: dict[str, Any]) -> None:
            await self.on_shift(ack, command)

        return app

    # --- helpers ---------------------------------------------------------------------------

    async def _store(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(method, *args, **kwargs)

    async def tell(self, user: str, channel: str, text: str, thread_ts: str | None = None) -> None:
        """Show ``text`` to ``user`` alone (through the outbox)."""
        message = messages.ephemeral(f"ephemeral:{uuid.uuid4()}", channel, user, text, thread_ts)
        await self._store(self.store.outbox.enqueue, [message], self.clock())
        self.worker.wake()

    async def _agent(self, user: str) -> bool | None:
        """Return whether ``user`` is an agent; None when Slack cannot say right now."""
        try:
            return await self.directory.is_agent(user)
        except AccessUnknown:
            return None

    async def _check_agent(self, user: str, channel: str, thread_ts: str | None = None) -> bool:
        allowed = await self._agent(user)
        if allowed is None:
            await self.tell(user, channel, CANNOT_CHECK, thread_ts)
            return False
        if not allowed:
            log.info("desk: %s is not an agent; refused", user)
            await self.tell(user, channel, NOT_AGENT, thread_ts)
            return False
        return True

    async def _card_case(self, body: dict[str, Any], action: dict[str, Any]) -> tuple[Case | None, str, str]:
        """Return the case of the card a button was pressed on (checked against the button's value)."""
        container = body.get("container") or {}
        channel = str(container.get("channel_id") or (body.get("channel") or {}).get("id") or "")
        message_ts = str(container.get("message_ts") or (body.get("message") or {}).get("ts") or "")
        case = await self._store(self.store.lookup.case_by_card, channel, message_ts) if channel and message_ts else None
        if case is not None and str(action.get("value")) != str(case.id):
            log.warning("desk: button value %r does not match case %s of its card", action.get("value"), case.id)
            case = None
        return case, channel, message_ts

    def _late_pickup(self, case: Case, agent: str, now: datetime) -> list[OutboxMessage]:
        """Return the apology suggested to the agent who picks up ``case`` late (none if it is on time)."""
        if not is_late(case, now):
            return []
        key = f"late-pickup:{case.id}:{case.reopened_count}:{case.promise_updates}"
        return [messages.thread_message(case.id, key, late_pickup_text(case, agent, now))]

    def _may_handle(self, case: Case, user: str) -> bool:
        return self.directory.is_lead(user) or (case.status == STATUS_CLAIMED and case.claimed_by == user)

    # --- claim, resolve, reassign ----------------------------------------------------------

    async def on_claim(self, body: dict[str, Any], action: dict[str, Any]) -> None:
        """Claim the case of the card for the user who pressed Claim (exactly one wins)."""
        user = str(body["user"]["id"])
        case, channel, _ts = await self._card_case(body, action)
        if case is None:
            await self.tell(user, channel, UNKNOWN_CARD)
            return
        if not await self._check_agent(user, channel):
            return
        now = self.clock()
        notice = messages.thread_notice(case.id, f"claimed:{case.id}:{uuid.uuid4()}", messages.NOTICE_CLAIMED, by=user)
        won = await self._store(self.store.lifecycle.claim, case.id, user, now, outbox=[notice, *self._late_pickup(case, user, now)])
        if won:
            self.poke()
            return
        current = await self._store(self.store.lookup.get, case.id)
        holder = cards.user_ref(current.claimed_by) if current is not None else "someone"
        if current is not None and current.status == STATUS_CLAIMED:
            text = f"Case #{case.id} is already claimed by {holder}."
        else:
            text = f"Case #{case.id} is not waiting any more ({current.status if current else 'gone'})."
        await self.tell(user, channel, text)

    async def on_resolve(self, body: dict[str, Any], action: dict[str, Any]) -> None:
        """Resolve the case: the bot resumes and asks the customer how it went."""
        user = str(body["user"]["id"])
        case, channel, _ts = await self._card_case(body, action)
        if case is None:
            await self.tell(user, channel, UNKNOWN_CARD)
            return
        if not await self._check_agent(user, channel):
            return
        lead = self.directory.is_lead(user)
        if case.status == STATUS_WAITING and not lead:
            await self.tell(user, channel, f"Claim case #{case.id} before you resolve it.")
            return
        if not self._may_handle(case, user):
            await self.tell(user, channel, self._not_yours(case))
            return
        prefix = f"resolve:{case.id}:{case.reopened_count}"
        follow = [
            messages.thread_notice(case.id, f"{prefix}:notice", messages.NOTICE_RESOLVED, by=user),
            # The hand-off paused the bot right after its action: it never listened. Resume and
            # listen, so the triggered intent meets the rules as a new turn.
            messages.rasa_events(case, f"{prefix}:resume", RESUME_EVENTS),
            messages.rasa_trigger(case, f"{prefix}:followup", messages.INTENT_CASE_RESOLVED),
        ]
        done = await self._store(
            self.store.lifecycle.resolve, case.id, self.clock(), by=user, only_if_claimed_by=None if lead else user, outbox=follow
        )
        if done:
            log.info("desk: case %s resolved by %s", case.id, user)
            self.poke()
        else:
            await self.tell(user, channel, f"Case #{case.id} changed meanwhile; nothing was resolved.")

    def _not_yours(self, case: Case) -> str:
        if case.status == STATUS_CLAIMED:
            return f"Case #{case.id} is {cards.user_ref(case.claimed_by)}'s: only they (or a lead) can do that."
        return f"Case #{case.id} is {case.status}: nothing to do."

    async def on_reassign_button(self, body: dict[str, Any], action: dict[str, Any]) -> None:
        """Open the modal that asks whom to hand the case to."""
        user = str(body["user"]["id"])
        case, channel, _ts = await self._card_case(body, action)
        if case is None:
            await self.tell(user, channel, UNKNOWN_CARD)
            return
        if not await self._check_agent(user, channel):
            return
        if not self._may_handle(case, user):
            await self.tell(user, channel, self._not_yours(case))
            return
        try:
            await self.client.views_open(trigger_id=str(body["trigger_id"]), view=cards.reassign_view(case, case.claimed_by))
        except SlackApiError as error:
            # The trigger expires in 3 seconds: this cannot wait in the outbox.
            log.warning("desk: could not open the reassign form: %s", error.response.get("error"))
            await self.tell(user, channel, "Slack did not open the form; press Reassign again.")

    async def on_reassign_submit(self, ack: AsyncAck, body: dict[str, Any], view: dict[str, Any]) -> None:
        """Hand the case over, after checking the user, the new owner and that the case did not change."""
        user = str(body["user"]["id"])
        try:
            meta = json.loads(view.get("private_metadata") or "{}")
            case_id, owner = int(meta["case_id"]), meta.get("owner")
            chosen = str(view["state"]["values"][cards.REASSIGN_BLOCK][cards.REASSIGN_SELECT]["selected_user"])
        except (KeyError, TypeError, ValueError):
            await ack(response_action="errors", errors={cards.REASSIGN_BLOCK: "Choose a person."})
            return
        allowed, target = await self._agent(user), await self._agent(chosen)
        if allowed is None or target is None:
            await ack(response_action="errors", errors={cards.REASSIGN_BLOCK: CANNOT_CHECK})
            return
        if not target:
            await ack(response_action="errors", errors={cards.REASSIGN_BLOCK: "That person is not on the support team."})
            return
        case = await self._store(self.store.lookup.get, case_id)
        if not allowed or case is None or (case.status != STATUS_WAITING and not self._may_handle(case, user)):
            await ack(response_action="errors", errors={cards.REASSIGN_BLOCK: "Only the case's owner or a lead can reassign it."})
            return
        if case.status == STATUS_WAITING and not self.directory.is_lead(user):
            await ack(response_action="errors", errors={cards.REASSIGN_BLOCK: "Claim the case first, or ask a lead to assign it."})
            return
        await ack()
        notice = messages.thread_notice(
            case.id, f"reassigned:{case.id}:{uuid.uuid4()}", messages.NOTICE_REASSIGNED, by=user, to=chosen
        )
        now = self.clock()
        if case.status == STATUS_WAITING:
            moved = await self._store(
                self.store.lifecycle.claim, case.id, chosen, now, outbox=[notice, *self._late_pickup(case, chosen, now)]
            )
        else:
            moved = await self._store(self.store.lifecycle.reassign, case.id, str(owner or case.claimed_by), chosen, now, outbox=[notice])
        if moved:
            self.poke()
        elif case.card_channel:
            await self.tell(user, case.card_channel, f"Case #{case.id} changed meanwhile; it was not reassigned.")

    # --- the thread: the conversation with the customer ---------------------------------------

    async def on_message(self, event: dict[str, Any]) -> None:
        """Relay an owner's reply in a card's thread to the customer; leave notes and other talk alone."""
        subtype = event.get("subtype")
        if event.get("bot_id") or subtype not in (None, "thread_broadcast", "file_share"):
            return
        channel, ts, thread_ts = str(event.get("channel") or ""), str(event.get("ts") or ""), event.get("thread_ts")
        user = str(event.get("user") or "")
        if not thread_ts or thread_ts == ts or not user:
            return  # not a reply in a thread
        case = await self._store(self.store.lookup.case_by_card, channel, str(thread_ts))
        if case is None:
            return  # a thread that is not a case's
        text = str(event.get("text") or "")
        if is_note(text):
            return  # internal: stays in the thread
        if not await self._check_agent(user, channel, str(thread_ts)):
            return
        refusal = None
        if case.status == STATUS_WAITING:
            refusal = f"Claim case #{case.id} first: your message was not sent to the customer."
        elif not self._may_handle(case, user):
            refusal = self._not_yours(case) + " Your message was not sent to the customer."
        elif subtype == "file_share":
            refusal = "Files are not sent to the customer; paste a link in your message instead."
        if refusal is not None:
            await self.tell(user, channel, refusal + " Start a message with `note:` to keep it in the team.", str(thread_ts))
            return
        plain = plain_from_slack(text)
        if not plain:
            return
        reply = messages.customer_reply(case, f"relay-out:{channel}:{ts}", plain, user)
        await self._store(self.store.outbox.enqueue, [reply], self.clock())
        self.worker.wake()

    # --- queue, Home, shifts -----------------------------------------------------------------

    async def queue_view(self) -> list[dict[str, Any]]:
        """Return the open cases as blocks, the earliest promise first."""
        open_cases = await self._store(self.store.lookup.open_cases)
        return cards.queue_blocks(open_cases, self.clock())

    async def on_queue(self, ack: AsyncAck, command: dict[str, Any]) -> None:
        """``/queue``: the open cases, oldest promise first (for agents only)."""
        allowed = await self._agent(str(command["user_id"]))
        if not allowed:
            await ack(text=NOT_AGENT if allowed is False else CANNOT_CHECK, response_type="ephemeral")
            return
        blocks = await self.queue_view()
        await ack(text=f"{len(blocks) - 1} open case(s)", blocks=blocks, response_type="ephemeral")

    async def on_shift(self, ack: AsyncAck, command: dict[str, Any]) -> None:
        """``/shift on|off``: tell the response-time estimate who is working."""
        user = str(command["user_id"])
        allowed = await self._agent(user)
        if not allowed:
            await ack(text=NOT_AGENT if allowed is False else CANNOT_CHECK, response_type="ephemeral")
            return
        word = str(command.get("text") or "").strip().lower()
        if word not in ("on", "off"):
            await ack(text=SHIFT_USAGE, response_type="ephemeral")
            return
        await self._store(self.store.desk.set_agent_shift, user, word == "on", self.clock())
        working = await self._store(self.store.desk.agents_on_shift)
        state = "on shift" if word == "on" else "off shift"
        await ack(text=f"You are {state}. Agents on shift now: {working}.", response_type="ephemeral")

    async def publish_home(self, user: str) -> None:
        """Show the queue on the user's Home tab of the desk app."""
        allowed = await self._agent(user)
        if allowed:
            blocks = await self.queue_view()
        else:
            blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": NOT_AGENT if allowed is False else CANNOT_CHECK}}]
        try:
            await self.client.views_publish(user_id=user, view={"type": "home", "blocks": blocks})
        except SlackApiError as error:
            log.warning("desk: could not publish the Home tab for %s: %s", user, error.response.get("error"))


# --- serving ------------------------------------------------------------------------------


def http_app(desk: Desk, *, slack_events: bool = True) -> web.Application:
    """Return the desk's aiohttp application.

    ``POST /slack/events`` (HTTP mode only: ``slack_events``), ``GET /health``, ``GET /metrics``
    (Prometheus text format) and ``GET /dashboard`` (``?days=N``).
    """
    application = web.Application()

    async def events(request: web.Request) -> web.Response:
        try:
            bolt_request = await to_bolt_request(request)
        except (KeyError, TypeError, ValueError):
            # bolt reads the body before checking the signature; a malformed one is no request from Slack.
            log.warning("desk: malformed request to %s dropped", EVENTS_PATH)
            return web.json_response({"error": "malformed request"}, status=400)
        answer = await desk.app.async_dispatch(bolt_request)
        return await to_aiohttp_response(answer)

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "leader": desk.leading})

    async def metrics(_: web.Request) -> web.Response:
        body = await asyncio.to_thread(exposition, desk.metrics)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    async def board(request: web.Request) -> web.Response:
        days = dashboard.days_param(request.query)
        page = await asyncio.to_thread(dashboard.render, desk.store, desk.support, desk.clock(), days)
        return web.Response(
            text=page,
            content_type="text/html",
            headers={
                "Cache-Control": "no-store",
                # Everything is inline and nothing may load from elsewhere.
                "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:",
            },
        )

    if slack_events:
        application.router.add_post(EVENTS_PATH, events)
    application.router.add_get("/health", health)
    application.router.add_get("/metrics", metrics)
    application.router.add_get("/dashboard", board)
    return application


async def _status_server(desk: Desk) -> web.AppRunner | None:
    """In Socket Mode, serve /health, /metrics and /dashboard on the desk's host and port.

    Slack work matters more than figures: if the port is taken, say so and carry on without.
    """
    runner = web.AppRunner(http_app(desk, slack_events=False), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, desk.settings.host, desk.settings.port).start()
    except OSError as error:
        log.error(
            "desk: cannot serve /metrics and /dashboard on %s:%s (%s); running without them",
            desk.settings.host, desk.settings.port, error,
        )  # fmt: skip
        await runner.cleanup()
        return None
    log.info("desk: /health, /metrics and /dashboard on http://%s:%s", desk.settings.host, desk.settings.port)
    return runner


async def serve(desk: Desk, stop: asyncio.Event) -> None:
    """Run the desk until ``stop``: HTTP mode, or Socket Mode when an app token is set."""
    loops = asyncio.create_task(desk.run_loops(stop), name="desk-loops")
    try:
        if desk.settings.socket_mode:
            from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

            status = await _status_server(desk)
            try:
                handler = AsyncSocketModeHandler(desk.app, desk.settings.app_token)
                await handler.connect_async()
                log.info("desk: connected to Slack over Socket Mode")
                try:
                    await _until(stop, loops)
                finally:
                    await handler.close_async()
            finally:
                if status is not None:
                    await status.cleanup()
        else:
            runner = web.AppRunner(http_app(desk), access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, desk.settings.host, desk.settings.port)
            await site.start()
            log.info("desk: listening on http://%s:%s%s", desk.settings.host, desk.settings.port, EVENTS_PATH)
            try:
                await _until(stop, loops)
            finally:
                await runner.cleanup()
    finally:
        stop.set()
        await loops
        await desk.close()


async def _until(stop: asyncio.Event, loops: asyncio.Task[None]) -> None:
    waiter = asyncio.ensure_future(stop.wait())
    await asyncio.wait([waiter, loops], return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if loops.done() and loops.exception() is not None:
        raise loops.exception()  # type: ignore[misc]


async def main_async(
    settings: DeskSettings, store: CaseStore, support: SupportConfig, election: Election | None = None
) -> None:
    """Build the desk and serve it until SIGTERM or SIGINT (running the loops while ``election`` elects it)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(number, stop.set)
    desk = Desk(settings, store, support, election=election)
    await serve(desk, stop)
