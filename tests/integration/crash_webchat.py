"""Random kills in a burst of new web chat customers: the web chat's trial of the crash sweep.

The web chat answers in the request itself (``bot.channels.webchat``): no inbox, no reply
records. Each customer here does what the page (``bot/channels/webchat_static/chat.js``) does:
it opens a session, gives its first message a client id, and POSTs it until it is answered
with 200, waiting 1, 2, 4, 8, then 15 s between tries when the server cannot be reached or
answers 0/408/409/425/429/500/502/503/504; a 401 starts a new session and sends the message
again. What the customer sees is the answer's replies plus the conversation's history (the
page polls it), one bubble per message id.

At a random moment one part is killed (``crash_support``'s stacks). Right after the kill the
customer messages taken but not yet answered are counted (*in flight at the kill*). Once
every customer has an answer, each one's side is held against the conversation Rasa saved:
*lost* (no answer, or not in the conversation), *handled twice*, *greeted twice*, *missing*
(a reply Rasa recorded that the customer never sees), *repeated* (a reply seen more often
than Rasa recorded it). *Resumed*: from the restarted server answering to the first answer
to a customer whose message was not yet answered at the kill. *Taken over at once*: messages
the restarted Rasa took from its dead predecessor without waiting for them to go stale.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import time
from collections import Counter
from typing import Any, Dict, List, Optional

import httpx
from sqlalchemy import create_engine, select
from sqlalchemy.pool import NullPool

from bot.channels.webchat import CHANNEL_NAME, ENV_SECRET
from bot.channels.webchat_store import ABANDONED, BOT, CUSTOMER, webchat_messages
from bot.constants import GREETING_RESPONSES
from tests.integration.crash_support import CrashStack, Customer, Outcome, Platform

# What the page does with a failed send (chat.js: BACKOFF_MS, RETRY_STATUSES).
PAGE_BACKOFF_S = (1.0, 2.0, 4.0, 8.0, 15.0)
PAGE_RETRY_STATUSES = frozenset({0, 408, 409, 425, 429, 500, 502, 503, 504})
SETTLE_TIMEOUT_S = 300
SECRET = "crash-webchat-secret-0123456789"
# What the web chat logs for a message it took from a process that is gone (bot.channels.webchat).
TAKEN_OVER_AT_ONCE = f"taken over ({ABANDONED})"


class WebChatPlatform(Platform):
    """The web chat of Rasa itself: a customer is a browser with a session of its own."""

    name = CHANNEL_NAME
    send_methods = ()

    def __init__(self) -> None:
        """Nothing across the network to fake: the page talks to Rasa."""
        self.senders: Dict[int, str] = {}

    def env(self) -> Dict[str, str]:
        """Return a fixed session secret, as ``make run`` sets one (sessions outlive a restart)."""
        return {ENV_SECRET: SECRET}

    def credentials(self) -> str:
        """Return the web chat's credentials (no keys)."""
        return "bot.channels.webchat.WebChatInput:\n"

    def sender(self, customer: Customer) -> str:
        """Return the conversation id the customer's session was given."""
        return self.senders[customer.number]


def webchat_path(route: str = "") -> str:
    """Return the path of the web chat's ``route``."""
    return f"/webhooks/{CHANNEL_NAME}/{route}"


class Browser:
    """One customer's page: its session, its message and what it shows."""

    def __init__(self, customer: Customer, base_url: str) -> None:
        """Write ``customer``'s first message on the web chat at ``base_url``."""
        self.customer = customer
        self.base_url = base_url
        self.client_id = secrets.token_hex(16)
        self.session: Optional[Dict[str, str]] = None
        self.shown: Dict[int, Dict[str, Any]] = {}
        self.answered_at: Optional[float] = None
        self.refused: Optional[str] = None
        self.sessions = 0
        self.tries = 0

    async def _call(self, client: httpx.AsyncClient, method: str, route: str, **kwargs: Any) -> tuple[int, Any]:
        try:
            answer = await client.request(method, self.base_url + webchat_path(route), **kwargs)
        except httpx.HTTPError:
            return 0, {}
        try:
            return answer.status_code, answer.json()
        except ValueError:
            return answer.status_code, {}

    async def send(self, client: httpx.AsyncClient) -> None:
        """Send the message as the page does, until it is answered (or refused for good)."""
        attempt = 0
        while True:
            status, data = 0, {}
            if self.session is None:
                status, found = await self._call(client, "POST", "session")
                if status == 200:
                    self.session = {"sender": found["sender"], "token": found["token"]}
                    self.sessions += 1
                    status = -1
            if self.session is not None:
                self.tries += 1
                body = {**self.session, "client_id": self.client_id, "message": self.customer.text,
                        "name": f"Sam Web{self.customer.number % 1000}"}  # fmt: skip
                status, data = await self._call(client, "POST", "message", json=body)
            if status == 200:
                self.answered_at = time.monotonic()
                for message in [data["customer"], *data["replies"]]:
                    self.shown.setdefault(int(message["id"]), message)
                return
            if status == 401:  # the server no longer knows the session: a new one, the same message
                self.session = None
                continue
            if status not in PAGE_RETRY_STATUSES:
                self.refused = f"{status} {data}"
                return
            await asyncio.sleep(PAGE_BACKOFF_S[min(attempt, len(PAGE_BACKOFF_S) - 1)])
            attempt += 1

    async def poll(self, client: httpx.AsyncClient) -> None:
        """Fetch the conversation's history, as the page's poll does."""
        if self.session is None:
            return
        params = {"sender": self.session["sender"], "after": "0"}
        status, data = await self._call(client, "GET", "history", params=params,
                                        headers={"Authorization": f"Bearer {self.session['token']}"})  # fmt: skip
        if status == 200:
            for message in data["messages"]:
                self.shown.setdefault(int(message["id"]), message)

    def bot_texts(self) -> List[str]:
        """Return the bot's messages the page shows, in order."""
        return [self.shown[key]["text"] for key in sorted(self.shown) if self.shown[key]["from"] == BOT]


def _unanswered(url: str, client_ids: set[str]) -> set[str]:
    """Return the client ids of the customer messages taken but not answered, now."""
    engine = create_engine(url, future=True, poolclass=NullPool)
    rows = webchat_messages.c
    try:
        with engine.connect() as conn:
            found = conn.execute(select(rows.client_id).where(rows.role == CUSTOMER, rows.answered_at.is_(None)))
            return {str(client_id) for client_id, in found if client_id in client_ids}
    finally:
        engine.dispose()


async def run_webchat_trial(
    stack: CrashStack, platform: WebChatPlatform, label: str, customers: List[Customer], target: str, kill_at: float,
    rng: random.Random,
) -> Outcome:  # fmt: skip
    """Run one web chat trial (see the module doc) and return its figures."""
    outcome = Outcome(label, target, round(kill_at, 2), len(customers))
    base_url = stack.webhook(platform).split(webchat_path())[0]
    browsers = [Browser(customer, base_url) for customer in customers]
    in_flight: set[str] = set()
    restarted_at = [0.0]
    taken_before = stack.logs().count(TAKEN_OVER_AT_ONCE)

    async def fault() -> None:
        await asyncio.sleep(kill_at)
        outcome.killed = await stack.kill(target, rng)
        ids = {browser.client_id for browser in browsers}
        in_flight.update(await asyncio.to_thread(_unanswered, stack.channel_db_url, ids))
        outcome.in_flight_at_kill = len(in_flight)
        outcome.unfinished_at_kill = sum(browser.answered_at is None for browser in browsers)
        await stack.restart()
        restarted_at[0] = time.monotonic()

    async with httpx.AsyncClient(timeout=120) as client:
        sends = asyncio.gather(fault(), *(browser.send(client) for browser in browsers))
        await asyncio.wait_for(sends, SETTLE_TIMEOUT_S)
        await asyncio.gather(*(browser.poll(client) for browser in browsers))
    for browser in browsers:
        if browser.session is not None:
            platform.senders[browser.customer.number] = browser.session["sender"]
    _judge(stack, outcome, browsers, in_flight, restarted_at[0])
    outcome.taken_over_at_once = stack.logs().count(TAKEN_OVER_AT_ONCE) - taken_before
    return outcome


def _judge(
    stack: CrashStack, outcome: Outcome, browsers: List[Browser], in_flight: set[str], restarted_at: float
) -> None:
    unfinished_answers = []
    for browser in browsers:
        name = f"customer {browser.customer.number}"
        outcome.resent += max(0, browser.sessions - 1)
        if browser.answered_at is None or browser.session is None:
            outcome.lost += 1
            outcome.problems.append(f"{name}: never answered ({browser.refused})")
            continue
        if browser.answered_at >= restarted_at > 0:
            unfinished_answers.append(browser.answered_at)
        events = stack.tracker(browser.session["sender"])["events"]
        message_id = f"{CHANNEL_NAME}-{browser.client_id}"
        handled = [e for e in events if e["event"] == "user" and e.get("message_id") == message_id]
        if not handled:
            outcome.lost += 1
            outcome.problems.append(f"{name}: message not in the conversation")
        outcome.handled_twice += len(handled) > 1
        if len(handled) > 1:
            outcome.problems.append(f"{name}: handled {len(handled)} times")
        bot = [e for e in events if e["event"] == "bot"]
        greetings = {e.get("text") for e in bot if (e.get("metadata") or {}).get("utter_action") in GREETING_RESPONSES}
        recorded = Counter(e.get("text") or "" for e in bot)
        shown = Counter(browser.bot_texts())
        outcome.greeted_twice += sum(shown[g] for g in greetings) > 1
        if shown - recorded:
            outcome.repeated += 1
            outcome.problems.append(f"{name}: shown more often than recorded {dict(shown - recorded)}")
            if browser.client_id not in in_flight:
                outcome.repeated_without_reply_in_flight += 1
        if recorded - shown:
            outcome.missing += 1
            outcome.problems.append(f"{name}: never shown {sorted(recorded - shown)}")
    outcome.resume_s = round(min(unfinished_answers) - restarted_at, 2) if unfinished_answers else None
    # As for the other channels: the last answer after the restart (0 when all came before it).
    after = [b.answered_at for b in browsers if b.answered_at is not None and b.answered_at >= restarted_at > 0]
    outcome.complete_s = round(max(after) - restarted_at, 2) if after else 0.0
