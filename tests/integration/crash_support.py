"""Random kills in a burst of new customers: the crash test's and ``make bench-crash``'s harness.

One trial: new customers write at once to a platform connector's webhook in Rasa (Telegram,
Slack DMs, WhatsApp, X DMs, Messenger or Instagram Direct, against their local fakes:
``TelegramPlatform``, ``SlackPlatform``, ``WhatsAppPlatform``, ``XPlatform``,
``MessengerPlatform``, ``InstagramPlatform``), each the first message of a case
(POSTed as the platform posts it: sent again until taken). At a moment drawn at random in the
burst one part is killed: a Rasa server or an action server with SIGKILL, or every PostgreSQL
connection of the stack (``pg_terminate_backend``). A killed server is started again at once, as
``make run`` again would. Right after the kill the reply records are read: the replies then
recorded "sending" are the ones in flight at the kill.

Once every update is handled, each customer's side (what the fake Bot API delivered) is held
against the conversation Rasa saved, giving the ``Outcome`` figures: lost messages, customers
greeted twice, customers with a repeated reply (and whether a reply of theirs was in flight at
the kill), replies missing, customers told to wait (the holding line), and how soon the
answers resumed after the restart.

Two stacks, each running the connectors of every platform given: ``SoloStack``, what ``make run`` starts (one Rasa through ``bot.launcher``, one
action server, SQLite files; leases of the default 60 s), and ``ReplicaStack``, the scale-out
stack of ``stack_support`` (two of each on PostgreSQL and Redis behind round-robin proxies).

The web chat's trial, on the same stacks, is ``crash_webchat``; the desk outbox's is ``crash_desk``.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Dict, List, Optional, Protocol

import httpx
from sqlalchemy import create_engine, select, text
from sqlalchemy.pool import NullPool

from bot.channels.inbox import SENDING, inbox as inbox_table, replies as replies_table
from bot.channels.replies import HOLDING_REPLY
from bot.constants import GREETING_RESPONSES
from bot.front import PULL_SECONDS_BEHIND_FRONT, RASA_NICE
from bot.channels.meta_events import stored_id
from tests.fakes.graph_api import IG_ID, PAGE_ID, FakeGraphAPI, dm, encoded, webhook_body
from tests.fakes.graph_api import rasa_environment as graph_env
from tests.fakes.graph_api import signed_headers as graph_signed_headers
from tests.fakes.server import FakeServer
from tests.fakes.slack_api import APP_ID as SLACK_APP_ID
from tests.fakes.slack_api import RASA_CREDENTIALS as SLACK_CREDENTIALS
from tests.fakes.slack_api import TEAM_ID as SLACK_TEAM_ID
from tests.fakes.slack_api import TOKEN as SLACK_TOKEN
from tests.fakes.slack_api import FakeSlackAPI, dm_channel_of, signed_headers
from tests.fakes.telegram_api import RASA_CREDENTIALS, TOKEN, FakeTelegramAPI
from tests.fakes.whatsapp_api import FakeWhatsAppAPI
from tests.fakes.whatsapp_api import connector_env as whatsapp_env
from tests.fakes.whatsapp_api import notification as whatsapp_notification
from tests.fakes.whatsapp_api import rasa_credentials as whatsapp_credentials
from tests.fakes.whatsapp_api import signed as whatsapp_signed
from tests.fakes.whatsapp_api import text_message as whatsapp_text
from tests.fakes.x_api import ACCESS_TOKEN as X_ACCESS_TOKEN
from tests.fakes.x_api import ACCESS_TOKEN_SECRET as X_ACCESS_TOKEN_SECRET
from tests.fakes.x_api import BRAND_HANDLE as X_BRAND_HANDLE
from tests.fakes.x_api import BRAND_ID as X_BRAND_ID
from tests.fakes.x_api import CONSUMER_KEY as X_CONSUMER_KEY
from tests.fakes.x_api import CONSUMER_SECRET as X_CONSUMER_SECRET
from tests.fakes.x_api import CREDENTIALS as X_CREDENTIALS
from tests.fakes.x_api import DM_METHOD as X_DM_METHOD
from tests.fakes.x_api import FakeXAPI, activity, dm_event
from tests.fakes.x_api import signed_headers as x_signed_headers
from tests.fakes.x_api import user as x_user
from tests.integration.stack_support import Stack
from tests.processes import ROOT, Process, base_env, free_ports, http, start_action_server, start_front, start_rasa_server
from tests.processes import wait_until_up

SECRET = "crash-webhook_secret"
SLACK_SECRET = "crash0signing0secret000000000000"
RASA = "rasa"
ACTIONS = "actions"
FRONT = "front"
DATABASE = "database"
# First messages of real cases: each is greeted, acknowledged (a complaint with an apology) and asked
# its first question.
FIRST_MESSAGES = (
    "my order arrived broken and nobody answers me, this is ridiculous",
    "where is my parcel?? ordered 2 weeks ago and still nothing",
    "i was charged twice for my order",
    "i need to change the delivery address on my order 48213907",
)
SETTLE_TIMEOUT_S = 240
# What the inbox logs for an update it took from a process that is gone (bot.channels.inbox).
TAKEN_OVER_AT_ONCE = "taken over at once from"
# The front stores a burst of 30 and greets it within a few hundred milliseconds: a kill drawn
# from the whole burst would mostly find it idle.
FRONT_KILL_WINDOW_S = (0.02, 0.5)


def kill_window(target: str, window: tuple[float, float]) -> tuple[float, float]:
    """Return the seconds into a burst a kill of ``target`` is drawn from (``window`` unless it is the front)."""
    return FRONT_KILL_WINDOW_S if target == FRONT else window
QUIET_S = 1.5


class CrashStack(Protocol):
    """What a trial needs of a running stack."""

    channel_db_url: str
    targets: tuple[str, ...]

    def webhook(self, platform: Platform) -> str:
        """Return the URL the platform's webhooks go to."""

    async def kill(self, target: str, rng: random.Random) -> str:
        """Kill ``target`` (one of ``targets``); return what was killed."""

    async def restart(self) -> None:
        """Start again what ``kill`` killed; return once it answers."""

    def tracker(self, sender: str) -> Dict[str, Any]:
        """Return a customer's conversation as Rasa saved it."""

    def logs(self) -> str:
        """Return the Rasa servers' logs so far."""


@dataclass
class Outcome:
    """What one trial did to its customers (see the module doc)."""

    stack: str
    target: str
    kill_at_s: float
    customers: int
    killed: str = ""
    lost: int = 0
    handled_twice: int = 0
    greeted_twice: int = 0
    repeated: int = 0
    repeated_without_reply_in_flight: int = 0
    missing: int = 0
    greetings_in_doubt_kept: int = 0
    # Customers told their message is kept (the handling failed once: a database connection killed).
    held: int = 0
    held_twice: int = 0
    in_flight_at_kill: int = 0
    unfinished_at_kill: int = 0
    # Of those, the ones a process held (the rest were queued for any process with room).
    leased_at_kill: int = 0
    resent: int = 0
    resume_s: Optional[float] = None
    complete_s: float = 0.0
    taken_over_at_once: int = 0
    problems: List[str] = field(default_factory=list)

    def as_dict(self) -> Dict[str, Any]:
        """Return the figures as JSON-ready values."""
        return asdict(self)


# --- the platforms -------------------------------------------------------------------------


@dataclass
class Customer:
    """A new customer: one first message, under the platform's ids for customer ``number``."""

    number: int
    text: str


class Platform:
    """What a trial needs of a messaging platform: its fake API, ids, webhook and what it delivered."""

    name: str
    # The fake API's deliveries that are replies to the customer.
    send_methods: tuple[str, ...]
    api: FakeServer

    def env(self) -> Dict[str, str]:
        """Return the connector's settings against the fake API."""
        raise NotImplementedError

    def credentials(self) -> str:
        """Return the credentials.yml text that enables the connector."""
        raise NotImplementedError

    def sender(self, customer: Customer) -> str:
        """Return the customer's sender id in Rasa."""
        raise NotImplementedError

    def chat(self, customer: Customer) -> str:
        """Return where the fake API delivers the customer's replies."""
        raise NotImplementedError

    def update_id(self, customer: Customer) -> str:
        """Return the inbox's id of the customer's message."""
        raise NotImplementedError

    def message_id(self, customer: Customer) -> str:
        """Return Rasa's message id of the customer's message (the key of its reply records)."""
        raise NotImplementedError

    def request(self, customer: Customer) -> tuple[bytes, Dict[str, str]]:
        """Return the body and headers the platform POSTs for the customer's message."""
        raise NotImplementedError

    def read(self, text: str) -> str:
        """Return a delivered text as the customer reads it."""
        return text


class TelegramPlatform(Platform):
    """Telegram against ``tests/fakes/telegram_api.py``: a customer's number is their chat and update id."""

    name = "telegram"
    send_methods = ("sendMessage",)

    def __init__(self, api: FakeTelegramAPI) -> None:
        """Use the fake Bot API ``api``."""
        self.api = api

    def env(self) -> Dict[str, str]:
        """Return the token, webhook secret and Bot API URL."""
        return telegram_env(self.api)

    def credentials(self) -> str:
        """Return the Telegram connector's credentials."""
        return RASA_CREDENTIALS

    def sender(self, customer: Customer) -> str:
        """Return the chat id."""
        return str(customer.number)

    chat = sender
    update_id = sender

    def message_id(self, customer: Customer) -> str:
        """Return ``telegram-<update id>``."""
        return f"telegram-{customer.number}"

    def request(self, customer: Customer) -> tuple[bytes, Dict[str, str]]:
        """Return the update, with the secret-token header."""
        number = customer.number
        user = {"id": number, "is_bot": False, "first_name": f"Sam{number % 1000}", "language_code": "en"}
        chat = {"id": number, "type": "private", "first_name": user["first_name"]}
        message = {"message_id": number, "date": int(time.time()), "chat": chat, "from": user, "text": customer.text}
        body = json.dumps({"update_id": number, "message": message}).encode()
        return body, {"Content-Type": "application/json", "X-Telegram-Bot-Api-Secret-Token": SECRET}


class SlackPlatform(Platform):
    """Slack DMs against ``tests/fakes/slack_api.py``: each customer a user of the workspace."""

    name = "slack_dm"
    send_methods = ("chat.postMessage",)

    def __init__(self, api: FakeSlackAPI) -> None:
        """Use the fake Web API ``api``."""
        self.api = api

    def env(self) -> Dict[str, str]:
        """Return the bot token, signing secret and Web API URL."""
        return {"SLACK_BOT_TOKEN": SLACK_TOKEN, "SLACK_SIGNING_SECRET": SLACK_SECRET, "SLACK_API_BASE_URL": self.api.base_url}

    def credentials(self) -> str:
        """Return the Slack DM connector's credentials."""
        return SLACK_CREDENTIALS

    def sender(self, customer: Customer) -> str:
        """Return the user id (made known to the fake's ``users.info``)."""
        user = f"U0C{customer.number}"
        self.api.add_user(user, f"Sam Customer{customer.number % 1000}", locale="en-GB")
        return user

    def chat(self, customer: Customer) -> str:
        """Return the DM channel the fake opens with the user."""
        return dm_channel_of(self.sender(customer))

    def update_id(self, customer: Customer) -> str:
        """Return the event id."""
        return f"Ev{customer.number}"

    def message_id(self, customer: Customer) -> str:
        """Return ``slack_dm-<event id>``."""
        return f"slack_dm-Ev{customer.number}"

    def request(self, customer: Customer) -> tuple[bytes, Dict[str, str]]:
        """Return the ``message.im`` event, signed with the signing secret."""
        user, ts = self.sender(customer), f"{time.time():.6f}"
        event = {"type": "message", "channel": dm_channel_of(user), "user": user, "text": customer.text, "ts": ts,
                 "event_ts": ts, "channel_type": "im", "team": SLACK_TEAM_ID}  # fmt: skip
        body = json.dumps({"token": "legacy", "team_id": SLACK_TEAM_ID, "api_app_id": SLACK_APP_ID, "event": event,
                           "type": "event_callback", "event_id": self.update_id(customer),
                           "event_time": int(time.time())}).encode()  # fmt: skip
        return body, {}

    def read(self, text: str) -> str:
        """Return the text unescaped (Slack's ``&amp;``, ``&lt;``, ``&gt;``)."""
        return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


class WhatsAppPlatform(Platform):
    """WhatsApp against ``tests/fakes/whatsapp_api.py``: a customer's number is a phone number, their message a wamid."""

    name = "whatsapp"
    send_methods = ("text", "interactive")

    def __init__(self, api: FakeWhatsAppAPI) -> None:
        """Use the fake Cloud API ``api``."""
        self.api = api

    def env(self) -> Dict[str, str]:
        """Return the access token, app secret and Cloud API URL."""
        return whatsapp_env(self.api.base_url)

    def credentials(self) -> str:
        """Return the WhatsApp connector's credentials."""
        return whatsapp_credentials()

    def sender(self, customer: Customer) -> str:
        """Return the customer's phone number (their ``wa_id``)."""
        return f"4915100{customer.number:07d}"

    chat = sender

    def update_id(self, customer: Customer) -> str:
        """Return the message's wamid."""
        return f"wamid.crash{customer.number}"

    def message_id(self, customer: Customer) -> str:
        """Return ``whatsapp-<wamid>``."""
        return f"whatsapp-{self.update_id(customer)}"

    def request(self, customer: Customer) -> tuple[bytes, Dict[str, str]]:
        """Return the notification Meta POSTs, signed with the app secret."""
        sender = self.sender(customer)
        message = whatsapp_text(sender, customer.text, message_id=self.update_id(customer))
        return whatsapp_signed(whatsapp_notification([message], names={sender: f"Sam Customer{customer.number % 1000}"}))


class XPlatform(Platform):
    """X DMs against ``tests/fakes/x_api.py``: a customer's number makes their user id and their DM's event id."""

    name = "x"
    send_methods = (X_DM_METHOD,)
    # What ``bot.channels.choices.numbered`` writes under a text with buttons (v2 DMs carry no quick replies).
    _CHOICES = re.compile(r"\n\n(?:[0-9]+\. [^\n]*\n)*[0-9]+\. [^\n]*\n\n\(Reply with a number\.\)\Z")

    def __init__(self, api: FakeXAPI) -> None:
        """Use the fake X API ``api``."""
        self.api = api

    def env(self) -> Dict[str, str]:
        """Return the app's and the brand's keys, the brand's account and the API URL."""
        return {
            "X_CONSUMER_KEY": X_CONSUMER_KEY, "X_CONSUMER_SECRET": X_CONSUMER_SECRET, "X_ACCESS_TOKEN": X_ACCESS_TOKEN,
            "X_ACCESS_TOKEN_SECRET": X_ACCESS_TOKEN_SECRET, "X_BRAND_USER_ID": X_BRAND_ID,
            "X_BRAND_HANDLE": X_BRAND_HANDLE, "X_API_BASE_URL": self.api.base_url,
        }  # fmt: skip

    def credentials(self) -> str:
        """Return the X connector's credentials."""
        return X_CREDENTIALS

    def sender(self, customer: Customer) -> str:
        """Return the customer's user id (where the fake delivers their DMs, too)."""
        return f"2244{customer.number:010d}"

    chat = sender

    def update_id(self, customer: Customer) -> str:
        """Return ``dm-<event id>``, the inbox's id of a DM."""
        return f"dm-{self._event_id(customer)}"

    def message_id(self, customer: Customer) -> str:
        """Return ``x-dm-<event id>``."""
        return f"x-{self.update_id(customer)}"

    def request(self, customer: Customer) -> tuple[bytes, Dict[str, str]]:
        """Return the Account Activity call with the customer's DM, signed with the consumer secret."""
        sender = x_user(self.sender(customer), f"Sam Customer{customer.number % 1000}", f"sam_c{customer.number}")
        body = activity(dms=[dm_event(self._event_id(customer), sender, customer.text)], users=[sender])
        return body, x_signed_headers(body)

    def read(self, text: str) -> str:
        """Return the text without the numbered choices written under it (the buttons Rasa recorded)."""
        return self._CHOICES.sub("", text)

    @staticmethod
    def _event_id(customer: Customer) -> str:
        return f"1900{customer.number:010d}"


class MessengerPlatform(Platform):
    """Messenger against ``tests/fakes/graph_api.py``: a customer's number makes their PSID and their DM's ``mid``.

    The connector's ``base_url`` is in its credentials, so Messenger and Instagram can each
    have a fake Graph API of their own. Each customer is made known to the fake (``customer_wrote``:
    Meta's 24-hour window is open, as it is once a person writes) with a profile. Only
    ``messages`` are replies: ``mark_seen`` and ``typing_on`` go as ``sender_action``.
    Rasa's buttons go as quick replies under the text, so the delivered text is the bot's.
    """

    name = "messenger"
    send_methods = ("messages",)
    module = "messenger.MessengerInput"
    account_key, account_env, token_env = "page_id", "MESSENGER_PAGE_ID", "MESSENGER_PAGE_TOKEN"
    account = PAGE_ID
    webhook_object = "page"

    def __init__(self, api: FakeGraphAPI) -> None:
        """Use the fake Graph API ``api``."""
        self.api = api

    def env(self) -> Dict[str, str]:
        """Return the account, its token, the app secret and the verify token (the API URL is in the credentials)."""
        env = graph_env(self.api.base_url)
        return {key: env[key] for key in (self.account_env, self.token_env, "META_APP_SECRET", "META_VERIFY_TOKEN")}

    def credentials(self) -> str:
        """Return this connector's credentials, with the fake's URL."""
        return (
            f"bot.channels.{self.module}:\n  {self.account_key}: ${{{self.account_env}}}\n"
            f"  token: ${{{self.token_env}}}\n  app_secret: ${{META_APP_SECRET}}\n"
            f"  verify_token: ${{META_VERIFY_TOKEN}}\n  base_url: {self.api.base_url}\n"
        )

    def sender(self, customer: Customer) -> str:
        """Return the customer's page-scoped id (where the fake delivers their replies, too)."""
        return f"7{customer.number:015d}"

    chat = sender

    def update_id(self, customer: Customer) -> str:
        """Return the inbox's id of the DM: its ``mid``."""
        return stored_id(self._mid(customer))

    def message_id(self, customer: Customer) -> str:
        """Return ``<channel>-<mid>``."""
        return f"{self.name}-{self.update_id(customer)}"

    def request(self, customer: Customer) -> tuple[bytes, Dict[str, str]]:
        """Return the ``messaging`` webhook Meta POSTs, signed with the app secret (the customer's window opened)."""
        sender = self.sender(customer)
        self.api.profiles[sender] = self.profile(customer)
        self.api.customer_wrote(sender)
        raw = encoded(webhook_body(self.webhook_object, self.account,
                                   [dm(sender, self._mid(customer), account=self.account, text=customer.text)]))  # fmt: skip
        return raw, graph_signed_headers(raw)

    def profile(self, customer: Customer) -> Dict[str, str]:
        """Return what the profile API tells of the customer."""
        return {"first_name": "Sam", "last_name": f"Customer{customer.number % 1000}"}

    def _mid(self, customer: Customer) -> str:
        return f"m_crash{customer.number}"


class InstagramPlatform(MessengerPlatform):
    """Instagram Direct against ``tests/fakes/graph_api.py``: Messenger's, with the Instagram account's values."""

    name = "instagram"
    module = "instagram.InstagramInput"
    account_key, account_env, token_env = "account_id", "INSTAGRAM_ACCOUNT_ID", "INSTAGRAM_TOKEN"
    account = IG_ID
    webhook_object = "instagram"

    def sender(self, customer: Customer) -> str:
        """Return the customer's Instagram-scoped id."""
        return f"8{customer.number:015d}"

    chat = sender

    def profile(self, customer: Customer) -> Dict[str, str]:
        """Return what the profile API tells of the customer."""
        return {"name": f"Sam Customer{customer.number % 1000}", "username": f"sam_c{customer.number}"}

    def _mid(self, customer: Customer) -> str:
        return f"aWdfZAG1faXRlbToxOklHTWVzc2FnZAUlEOjE3ODQxNDAw{customer.number}"


# --- the stacks -----------------------------------------------------------------------------


def telegram_env(api: FakeTelegramAPI) -> Dict[str, str]:
    """Return the Telegram connector's settings against the fake Bot API."""
    return {"TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_WEBHOOK_SECRET": SECRET, "TELEGRAM_API_BASE_URL": api.base_url}


def write_credentials(work: Path, platforms: List[Platform]) -> Path:
    """Write a credentials.yml with the platforms' connectors (and the REST channel); return it."""
    credentials = work / "credentials.yml"
    credentials.write_text("".join(platform.credentials() for platform in platforms))
    return credentials


def platforms_env(platforms: List[Platform]) -> Dict[str, str]:
    """Return the settings of every platform's connector."""
    return {name: value for platform in platforms for name, value in platform.env().items()}


async def _sigkill(process: Process) -> None:
    os.killpg(process.popen.pid, signal.SIGKILL)
    await asyncio.to_thread(process.popen.wait)


# The platforms whose connector keeps an inbox: with one, make run starts the front process.
INBOX_PLATFORMS = ("telegram", "slack_dm", "whatsapp", "x", "messenger", "instagram")


class SoloStack:
    """What ``make run`` starts: one Rasa (``bot.launcher``) and one action server on SQLite files.

    With a messaging app among the platforms, also the front process (``bot.front``) on the
    public port, Rasa behind it at lower priority, as ``make run`` starts them; it stays up while
    Rasa restarts, and is a target of its own: killed, the platform's deliveries are refused
    until it is back (they retry), and a greeting it had in flight is in doubt.
    """

    def __init__(self, work: Path, platforms: List[Platform]) -> None:
        """Set up in ``work`` with the connectors of ``platforms``; ``solo_stack`` starts it."""
        self.work = work
        self.platforms = platforms
        self.rasa_port, self.actions_port = free_ports(2)
        self.channel_db_url = f"sqlite:///{work / 'channels.db'}"
        self.env = {
            **base_env(), **platforms_env(platforms),
            "FIRSTREPLY_CASE_DB": f"sqlite:///{work / 'cases.db'}",
            "FIRSTREPLY_CHANNEL_DB": self.channel_db_url,
        }  # fmt: skip
        self.front_port = free_ports(1)[0] if any(p.name in INBOX_PLATFORMS for p in platforms) else None
        self.front: Optional[Process] = None
        self.targets: tuple[str, ...] = (RASA, ACTIONS, FRONT) if self.front_port else (RASA, ACTIONS)
        if self.front_port:
            self.env["FIRSTREPLY_PULL_SECONDS"] = str(PULL_SECONDS_BEHIND_FRONT)  # as make run sets it
        # endpoints.yml as make run uses it: the SQLite tracker store, here in ``work``.
        self.endpoints = work / "endpoints.yml"
        self.endpoints.write_text(
            (ROOT / "endpoints.yml").read_text()
            .replace("http://127.0.0.1:5055/webhook", f"http://127.0.0.1:{self.actions_port}/webhook")
            .replace("db: var/trackers.db", f"db: {work / 'trackers.db'}")
        )  # fmt: skip
        self.credentials = write_credentials(work, platforms)
        self.rasa: Optional[Process] = None
        self.actions: Optional[Process] = None
        self.runs = 0
        self._killed: Optional[str] = None

    def start_rasa(self) -> None:
        """Start Rasa (again); return once it answers."""
        self.runs += 1
        self.rasa = start_rasa_server(
            "rasa", self.rasa_port, self.endpoints, self.env, self.work / f"rasa-{self.runs}.log",
            credentials=self.credentials, nice=RASA_NICE if self.front_port else 0,
        )  # fmt: skip
        wait_until_up(self.rasa, f"http://127.0.0.1:{self.rasa_port}/webhooks/{self.platforms[0].name}/")
        if self.front_port and self.front is None:
            self.start_front()

    def start_front(self) -> None:
        """Start the front (again); return once it answers."""
        self.runs += 1
        self.front = start_front("front", self.front_port, f"http://127.0.0.1:{self.rasa_port}", self.credentials,
                                 self.env, self.work / f"front-{self.runs}.log")  # fmt: skip
        wait_until_up(self.front, f"http://127.0.0.1:{self.front_port}/webhooks/{self.platforms[0].name}/")

    def start_actions(self) -> None:
        """Start the action server (again); return once it answers."""
        self.runs += 1
        self.actions = start_action_server("actions", self.actions_port, self.env, self.work / f"actions-{self.runs}.log")
        wait_until_up(self.actions, f"http://127.0.0.1:{self.actions_port}/health")

    def stop(self) -> None:
        """Stop them all."""
        for process in (self.front, self.rasa, self.actions):
            if process is not None:
                process.stop()

    def webhook(self, platform: Platform) -> str:
        """Return the public webhook of ``platform`` (the front's, when there is one)."""
        return f"http://127.0.0.1:{self.front_port or self.rasa_port}{webhook_path(platform)}"

    async def kill(self, target: str, rng: random.Random) -> str:
        """SIGKILL Rasa, the action server or the front."""
        process = {RASA: self.rasa, ACTIONS: self.actions, FRONT: self.front}[target]
        assert process is not None
        await _sigkill(process)
        self._killed = target
        return target

    async def restart(self) -> None:
        """Start the killed server again."""
        start = {RASA: self.start_rasa, ACTIONS: self.start_actions, FRONT: self.start_front}[self._killed or RASA]
        await asyncio.to_thread(start)

    def tracker(self, sender: str) -> Dict[str, Any]:
        """Return the conversation from Rasa's HTTP API."""
        status, raw = http("GET", f"http://127.0.0.1:{self.rasa_port}/conversations/{sender}/tracker")
        assert status == 200, raw[:300]
        return dict(json.loads(raw))

    def logs(self) -> str:
        """Return every Rasa log of this stack."""
        return "".join(path.read_text(errors="replace") for path in sorted(self.work.glob("rasa-*.log")))

    def reply_windows(self) -> Dict[str, Any]:
        """Return the running Rasa's reply figures (``GET /webhooks/<channel>/replies``)."""
        [found] = reply_windows([f"http://127.0.0.1:{self.rasa_port}"], self.platforms[0])
        return found


class ReplicaStack:
    """The scale-out stack (``stack_support.running_stack``) seen by a trial: two of each, PostgreSQL and Redis."""

    targets = (RASA, ACTIONS, DATABASE)

    def __init__(self, stack: Stack) -> None:
        """Drive ``stack``, whose Rasa servers run the connectors of the trials' platforms."""
        self.stack = stack
        self.channel_db_url = stack.database_url
        self._restart: Optional[Callable[[], Any]] = None

    def webhook(self, platform: Platform) -> str:
        """Return the front proxy's URL of the platform's webhook."""
        return f"{self.stack.front.url}{webhook_path(platform)}"

    async def kill(self, target: str, rng: random.Random) -> str:
        """SIGKILL one Rasa or action server (drawn at random), or terminate every database connection."""
        self._restart = None
        if target == DATABASE:
            events = self.stack.events_url.rsplit("/", 1)[1]
            killed = await asyncio.to_thread(terminate_connections, self.stack.database_url, [events])
            return f"{killed} database connections"
        index = rng.randrange(len(self.stack.rasa_servers))
        servers = self.stack.rasa_servers if target == RASA else self.stack.action_servers
        await _sigkill(servers[index])
        self._restart = partial(self.stack.start_rasa if target == RASA else self.stack.start_actions, index)
        return f"{target} {index + 1}"

    async def restart(self) -> None:
        """Start the killed server again (nothing to start after terminated connections)."""
        if self._restart is not None:
            await asyncio.to_thread(self._restart)

    def tracker(self, sender: str) -> Dict[str, Any]:
        """Return the conversation from the first Rasa server's HTTP API.

        Rasa's tracker store keeps database connections in a pool without checking them: the
        first read on one that was terminated fails (500), and the next opens a new one.
        """
        url = f"{self.stack.rasa_urls[0]}/conversations/{sender}/tracker?token={self.stack.api_token}"
        for _ in range(5):
            status, raw = http("GET", url)
            if status < 500:
                break
            time.sleep(0.2)
        assert status == 200, raw[:300]
        return dict(json.loads(raw))

    def logs(self) -> str:
        """Return every Rasa log of the stack."""
        work = self.stack.work or Path(".")
        return "".join(path.read_text(errors="replace") for path in sorted(work.glob("rasa*.log")))


def webhook_path(platform: Platform) -> str:
    """Return the path of the platform connector's webhook."""
    return f"/webhooks/{platform.name}/{'events' if isinstance(platform, SlackPlatform) else 'webhook'}"


def reply_windows(rasa_urls: List[str], platform: Platform) -> List[Dict[str, Any]]:
    """Return the reply figures of each Rasa process at ``rasa_urls`` (``GET /webhooks/<channel>/replies``)."""
    found = []
    for url in rasa_urls:
        status, raw = http("GET", f"{url}/webhooks/{platform.name}/replies", timeout=10)
        assert status == 200, raw[:300]
        found.append({"url": url, **json.loads(raw)})
    return found


@contextmanager
def solo_stack(work: Path, platforms: List[Platform]) -> Iterator[SoloStack]:
    """Start a ``SoloStack`` in ``work`` with the connectors of ``platforms``; stop it at the end."""
    stack = SoloStack(work, platforms)
    try:
        stack.start_actions()
        stack.start_rasa()
        yield stack
    finally:
        stack.stop()


# --- a trial --------------------------------------------------------------------------------


class Deliveries:
    """What the fake API delivered, each message stamped with when it was seen (polled every 50 ms)."""

    def __init__(self, platform: Platform) -> None:
        """Watch the platform's fake API from now on."""
        self.platform = platform
        self.seen: List[tuple[float, str, str]] = []
        self._count = 0

    def poll(self) -> None:
        """Stamp the deliveries that came since the last poll."""
        delivered = [d for d in self.platform.api.deliveries() if d.method in self.platform.send_methods]
        now = time.monotonic()
        for delivery in delivered[self._count :]:
            self.seen.append((now, delivery.chat, self.platform.read(delivery.text)))
        self._count = len(delivered)

    def to(self, chat: str) -> List[str]:
        """Return the texts delivered to ``chat``, in order."""
        return [line for _, to, line in self.seen if to == chat]


async def _deliver(client: httpx.AsyncClient, webhook: str, platform: Platform, customer: Customer) -> None:
    """POST the customer's message until it is taken (2xx), as the platform does (signed anew each time)."""
    while True:
        body, headers = platform.request(customer)
        if isinstance(platform, SlackPlatform):
            headers = signed_headers(SLACK_SECRET, body, "application/json")
        try:
            answer = await client.post(webhook, content=body, headers=headers)
            if answer.is_success:
                return
            assert answer.status_code >= 500, f"message refused: {answer.status_code} {answer.text[:200]}"
        except httpx.HTTPError:
            pass
        await asyncio.sleep(0.3)


def _at_kill(url: str, message_ids: set[str], update_ids: set[str]) -> tuple[set[str], set[str], int]:
    """Return the replies (message id, seq) recorded "sending", the updates not handled, and how many of those a process held."""
    engine = create_engine(url, future=True, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            sending = {
                f"{message_id}#{seq}"
                for message_id, seq in conn.execute(
                    select(replies_table.c.message_id, replies_table.c.seq).where(replies_table.c.state == SENDING)
                )
                if message_id in message_ids
            }
            rows = conn.execute(
                select(inbox_table.c.update_id, inbox_table.c.lease_owner).where(inbox_table.c.state == "pending")
            ).all()
    finally:
        engine.dispose()
    pending = {str(update_id) for update_id, _ in rows if str(update_id) in update_ids}
    # The rest were queued (leased to nobody): any process takes them, with nothing to take over.
    leased = sum(1 for update_id, owner in rows if str(update_id) in update_ids and owner is not None)
    return sending, pending, leased


def _records(url: str, update_ids: set[str]) -> tuple[Dict[str, str], Dict[str, int], set[str]]:
    """Return each update's inbox state, the resent count per message id, and the replies still "sending"."""
    engine = create_engine(url, future=True, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            states = {str(u): str(s) for u, s in conn.execute(select(inbox_table.c.update_id, inbox_table.c.state))
                      if str(u) in update_ids}  # fmt: skip
            rows = conn.execute(select(replies_table.c.message_id, replies_table.c.seq, replies_table.c.state,
                                       replies_table.c.resent)).all()  # fmt: skip
    finally:
        engine.dispose()
    resent: Counter[str] = Counter()
    sending = set()
    for message_id, seq, state, count in rows:
        resent[str(message_id)] += int(count)
        if state == SENDING:
            sending.add(f"{message_id}#{seq}")
    return states, dict(resent), sending


async def run_trial(
    stack: CrashStack, platform: Platform, label: str, customers: List[Customer], target: str, kill_at: float,
    rng: random.Random,
) -> Outcome:  # fmt: skip
    """Run one trial (see the module doc) and return its figures."""
    deliveries = Deliveries(platform)
    deliveries.poll()
    outcome = Outcome(label, target, round(kill_at, 2), len(customers))
    update_ids = {platform.update_id(c) for c in customers}
    message_ids = {platform.message_id(c) for c in customers}
    restarted_at = [0.0]

    async def watch() -> None:
        while True:
            deliveries.poll()
            await asyncio.sleep(0.05)

    async def fault() -> None:
        await asyncio.sleep(kill_at)
        outcome.killed = await stack.kill(target, rng)
        sending, pending, leased = await asyncio.to_thread(_at_kill, stack.channel_db_url, message_ids, update_ids)
        outcome.in_flight_at_kill, outcome.unfinished_at_kill, outcome.leased_at_kill = len(sending), len(pending), leased
        in_flight.update(sending)
        unfinished.update(pending)
        await stack.restart()
        restarted_at[0] = time.monotonic()

    in_flight: set[str] = set()
    unfinished: set[str] = set()
    taken_before = stack.logs().count(TAKEN_OVER_AT_ONCE)
    watcher = asyncio.ensure_future(watch())
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            await asyncio.gather(fault(), *(_deliver(client, stack.webhook(platform), platform, c) for c in customers))
        await _settle(stack, update_ids, deliveries)
    finally:
        watcher.cancel()
    deliveries.poll()
    _judge(stack, platform, outcome, customers, deliveries, in_flight, unfinished, restarted_at[0])
    outcome.taken_over_at_once = stack.logs().count(TAKEN_OVER_AT_ONCE) - taken_before
    return outcome


async def _settle(stack: CrashStack, update_ids: set[str], deliveries: Deliveries) -> None:
    """Wait until every update is handled and nothing more is delivered for a moment."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while time.monotonic() < deadline:
        states, _, _ = await asyncio.to_thread(_records, stack.channel_db_url, update_ids)
        last = deliveries.seen[-1][0] if deliveries.seen else 0.0
        if len(states) == len(update_ids) and set(states.values()) == {"done"} and time.monotonic() - last > QUIET_S:
            return
        await asyncio.sleep(0.25)


def _judge(
    stack: CrashStack, platform: Platform, outcome: Outcome, customers: List[Customer], deliveries: Deliveries,
    in_flight: set[str], unfinished: set[str], restarted_at: float,
) -> None:  # fmt: skip
    states, resent, still_sending = _records(stack.channel_db_url, {platform.update_id(c) for c in customers})
    outcome.resent = sum(resent.get(platform.message_id(c), 0) for c in customers)
    for customer in customers:
        message_id, update_id = platform.message_id(customer), platform.update_id(customer)
        events = stack.tracker(platform.sender(customer))["events"]
        handled = [e for e in events if e["event"] == "user" and e.get("message_id") == message_id]
        if states.get(update_id) != "done" or not handled:
            outcome.lost += 1
            outcome.problems.append(f"{update_id}: message not handled ({states.get(update_id)})")
        outcome.handled_twice += len(handled) > 1
        bot = [e for e in events if e["event"] == "bot"]
        greetings = {e.get("text") for e in bot if (e.get("metadata") or {}).get("utter_action") in GREETING_RESPONSES}
        recorded = Counter(e.get("text") or "" for e in bot)
        received = Counter(deliveries.to(platform.chat(customer)))
        # The holding line is the inbox's, not Rasa's: at most once per update.
        held = received.pop(HOLDING_REPLY, 0)
        outcome.held += held > 0
        outcome.held_twice += held > 1
        mine_in_flight = any(key.startswith(f"{message_id}#") for key in in_flight)
        outcome.greeted_twice += sum(received[g] for g in greetings) > 1
        if received - recorded:
            outcome.repeated += 1
            if not mine_in_flight:
                outcome.repeated_without_reply_in_flight += 1
                outcome.problems.append(f"{update_id}: repeated {dict(received - recorded)} with nothing in flight")
        missing = recorded - received
        kept = {g for g in greetings if missing[g] and any(k.startswith(f"{message_id}#") for k in still_sending)}
        outcome.greetings_in_doubt_kept += len(kept)
        if set(missing) - kept:
            outcome.missing += 1
            outcome.problems.append(f"{update_id}: never received {sorted(set(missing) - kept)}")
    after = [stamp for stamp, _, _ in deliveries.seen if stamp >= restarted_at]
    unfinished_chats = {platform.chat(c) for c in customers if platform.update_id(c) in unfinished}
    resumed = [stamp for stamp, chat, _ in deliveries.seen if stamp >= restarted_at and chat in unfinished_chats]
    outcome.resume_s = round(resumed[0] - restarted_at, 2) if resumed and unfinished_chats else None
    outcome.complete_s = round(max(after) - restarted_at, 2) if after else 0.0


def new_customers(first: int, count: int) -> List[Customer]:
    """Return ``count`` new customers numbered from ``first``, their first messages in turn."""
    return [Customer(first + n, FIRST_MESSAGES[n % len(FIRST_MESSAGES)]) for n in range(count)]


def terminate_connections(database_url: str, other_databases: List[str]) -> int:
    """Terminate every PostgreSQL connection to ``database_url``'s database and ``other_databases``; return how many."""
    engine = create_engine(database_url, future=True, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return len(conn.execute(text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE (datname = current_database() "
                "OR datname = ANY(:others)) AND pid <> pg_backend_pid()"), {"others": other_databases}).all())  # fmt: skip
    finally:
        engine.dispose()
