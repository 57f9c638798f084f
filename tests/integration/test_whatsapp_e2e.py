"""WhatsApp customers through real ``rasa run`` and ``rasa run actions`` processes.

Rasa loads ``models/firstreply.tar.gz`` with a temporary credentials.yml that enables
``bot.channels.whatsapp.WhatsAppInput`` against the local fake Cloud API; notifications
go to Rasa's webhook exactly as Meta sends them (signed with the app secret, several
customers in one POST, redelivered). The case is read back from the case store, and an
agent's late reply is delivered by the desk's real outbox worker, which reads the
customer's last message from the real Rasa tracker.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from slack_sdk.web.async_client import AsyncWebClient

from bot.cases import CaseStore
from bot.channels.meta import SIGNATURE_HEADER
from bot.channels.outbound import Outbound
from bot.desk import messages
from bot.desk.outbox import OutboxWorker
from bot.desk.rasa_api import RasaClient
from bot.desk.windows import ReopenTemplate
from tests.fakes.slack_web_api import TOKEN as SLACK_TOKEN
from tests.fakes.slack_web_api import FakeDeskSlackAPI
from tests.fakes.whatsapp_api import (
    VERIFY_TOKEN,
    FakeWhatsAppAPI,
    batched,
    button_reply,
    choices_of,
    connector_env,
    notification,
    rasa_credentials,
    signed,
    status,
    text_message,
)
from tests.integration.conftest import channel_assistant
from tests.processes import Process, wait_until

pytestmark = pytest.mark.integration

WEBHOOK = "/webhooks/whatsapp/webhook"
MARIA, JOAO, AIKO, NEW = "4915112345678", "351912345678", "819012345678", "447700900123"
NAMES = {MARIA: "Maria Keller", JOAO: "João Silva", AIKO: "Aiko Tanaka", NEW: "Sam Okafor"}


@dataclass
class Running:
    api: FakeWhatsAppAPI
    rasa_url: str
    env: dict[str, str]
    processes: list[Process]

    def post(self, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
        raw, signed_headers = signed(body)
        return httpx.post(f"{self.rasa_url}{WEBHOOK}", content=raw, headers=headers or signed_headers, timeout=10)

    def say(self, sender: str, text: str, **kwargs: Any) -> dict[str, Any]:
        message = text_message(sender, text, **kwargs)
        answer = self.post(notification([message], names=NAMES))
        assert answer.status_code == 200
        return message

    def replies(self, to: str, expected: int, timeout: float = 60, quiet: float = 1.5) -> list[dict[str, Any]]:
        """Wait until ``to`` has at least ``expected`` messages and none more for ``quiet`` seconds; return them."""
        seen, since = [-1], [0.0]

        def probe() -> list[dict[str, Any]] | None:
            sent = self.api.sent(to)
            if len(sent) != seen[0]:
                seen[0], since[0] = len(sent), time.monotonic()
                return None
            return sent if len(sent) >= expected and time.monotonic() - since[0] >= quiet else None

        return wait_until(f"{expected} messages to {to}", probe, timeout, list(self.processes), interval=0.25)


def shown(message: dict[str, Any]) -> str:
    if message["type"] == "interactive":
        return str(message["interactive"]["body"]["text"])
    return str(message.get("text", {}).get("body") or f"[{message['type']}]")


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    tmp = tmp_path_factory.mktemp("whatsapp-e2e")
    api = FakeWhatsAppAPI().start()
    try:
        with channel_assistant(tmp, rasa_credentials(), connector_env(api.base_url), "/webhooks/whatsapp/") as started:
            yield Running(api, started.rasa_url, started.env, started.processes)
    finally:
        api.stop()


def test_the_handshake_and_the_signature_are_checked_by_the_running_server(running: Running) -> None:
    url = f"{running.rasa_url}{WEBHOOK}"
    good = httpx.get(url, params={"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "42"})
    wrong = httpx.get(url, params={"hub.mode": "subscribe", "hub.verify_token": "nope", "hub.challenge": "42"})
    assert (good.status_code, good.text, wrong.status_code) == (200, "42", 403)

    body = notification([text_message(NEW, "hello?", message_id="wamid.FORGED")], names=NAMES)
    raw, _ = signed(body)
    forged = running.post(body, headers={"Content-Type": "application/json", SIGNATURE_HEADER: "sha256=" + "a" * 64})
    missing = httpx.post(url, content=raw, headers={"Content-Type": "application/json"}, timeout=10)
    statuses = running.post(notification(statuses=[status("wamid.OUT9", NEW, "read")]))
    assert (forged.status_code, missing.status_code, statuses.status_code) == (401, 401, 200)
    time.sleep(2)
    assert running.api.sent(NEW) == [] and running.api.calls("read") == []


def test_a_whatsapp_customer_is_greeted_by_name_and_gets_to_an_open_case(running: Running) -> None:
    first = running.say(MARIA, "Where is my parcel? Can you check it for me")
    greeting = running.replies(MARIA, 2)
    assert shown(greeting[0]).startswith("Hi Maria! I'm ")
    assert shown(greeting[-1]).startswith("What's your order number?")
    # Read, with the typing indicator, as soon as it was stored.
    assert {c.params["message_id"] for c in running.api.calls("read")} >= {first["id"]}

    running.say(MARIA, "AC-2291734")
    question = running.replies(MARIA, 3)[-1]
    assert shown(question) == "What's happening with the delivery?"
    # Four choices, one title past 20 characters: a list message.
    assert question["interactive"]["type"] == "list"
    late = next(key for title, key in choices_of(question) if title == "It's late")
    running.post(notification([button_reply(MARIA, late, "It's late")], names=NAMES))
    summary = running.replies(MARIA, 4)[-1]
    assert shown(summary).startswith("Here is what I will pass on: Where my order is. Order number: AC-2291734;")
    yes = next(key for title, key in choices_of(summary) if title.startswith("Yes"))
    running.post(notification([button_reply(MARIA, yes, "Yes, that's right")], names=NAMES))
    handoff = running.replies(MARIA, 5)[-1]
    assert shown(handoff).startswith("Thanks, Maria! I've passed this to our team as case #")

    store = CaseStore.from_url(running.env["FIRSTREPLY_CASE_DB"])
    try:
        [case] = [c for c in store.lookup.open_cases() if c.sender_id == MARIA]
    finally:
        store.dispose()
    assert (case.channel, case.customer_name, case.case_type, dict(case.answers)) == (
        "whatsapp", "Maria Keller", "order_status", {"order_number": "AC-2291734", "delivery_problem": "It's late"},
    )  # fmt: skip


def test_one_post_with_three_customers_answers_each_and_a_redelivery_once(running: Running) -> None:
    messages_ = [text_message(JOAO, "hi", message_id="wamid.JOAO1"),
                 text_message(AIKO, "hello", message_id="wamid.AIKO1")]  # fmt: skip
    body = batched(notification(messages_, names=NAMES), notification([text_message(NEW, "hey")], names=NAMES))
    assert running.post(body).json() == {"ok": True, "messages": 3, "duplicate": False}
    for sender, name in ((JOAO, "João"), (AIKO, "Aiko"), (NEW, "Sam")):
        assert shown(running.replies(sender, 1)[0]).startswith(f"Hi {name}!")

    before = {sender: len(running.api.sent(sender)) for sender in (JOAO, AIKO)}
    again = running.post(notification(messages_, names=NAMES))
    assert again.json() == {"ok": True, "messages": 2, "duplicate": True}
    time.sleep(3)
    assert {sender: len(running.api.sent(sender)) for sender in (JOAO, AIKO)} == before


def test_an_agents_late_reply_goes_inside_the_window_and_is_held_back_outside_it(running: Running) -> None:
    """The desk's outbox worker, with the real tracker: Maria's case (opened above) answered at +23 h and at +25 h."""
    store = CaseStore.from_url(running.env["FIRSTREPLY_CASE_DB"])
    [case] = [c for c in store.lookup.open_cases() if c.sender_id == MARIA]
    slack = FakeDeskSlackAPI().start()
    slack.add_channel("C0QUEUE", "support-queue")
    outbound = Outbound(running.env)
    clock = [datetime.now(timezone.utc) + timedelta(hours=23)]
    worker = OutboxWorker(
        store, AsyncWebClient(token=SLACK_TOKEN, base_url=slack.base_url, retry_handlers=[]),
        RasaClient(running.rasa_url), outbound, clock=lambda: clock[0],
        reopen_template=ReopenTemplate("reopen_conversation", "en_GB"),
    )  # fmt: skip

    async def deliver() -> None:
        store.outbox.enqueue([messages.card_post(case.id)], clock[0])
        store.outbox.enqueue([messages.customer_reply(case, "late:23h", "Your parcel arrives tomorrow.", "U0ANA")],
                             clock[0])  # fmt: skip
        await worker.drain()
        clock[0] += timedelta(hours=2)
        store.outbox.enqueue([messages.customer_reply(case, "late:25h", "Did it arrive?", "U0ANA")], clock[0])
        await worker.drain()
        await worker.rasa.close()
        await outbound.close()

    try:
        asyncio.run(deliver())
        texts = [shown(m) for m in running.api.sent(MARIA)]
        assert "Your parcel arrives tomorrow." in texts and "Did it arrive?" not in texts
        thread = [p["text"] for p in slack.posted("C0QUEUE") if p.get("thread_ts")]
        assert any("*not delivered*" in text and "`reopen_conversation`" in text for text in thread)
        events = httpx.get(f"{running.rasa_url}/conversations/{MARIA}/tracker", timeout=10).json()["events"]
        bot_texts = [e["text"] for e in events if e["event"] == "bot"]
        assert "Your parcel arrives tomorrow." in bot_texts and "Did it arrive?" not in bot_texts
    finally:
        store.dispose()
        slack.stop()


def test_the_fakes_calls_were_authenticated_and_well_formed(running: Running) -> None:
    refused = [c for c in running.api.calls(answered=None) if c.status != 200]
    assert refused == [], json.dumps([c.answer for c in refused])[:500]
