"""A whole Telegram conversation through real ``rasa run`` and ``rasa run actions`` processes.

Rasa loads ``models/firstreply.tar.gz`` with a temporary credentials.yml that enables
``bot.channels.telegram.TelegramInput`` against the local fake Bot API; updates go to
Rasa's webhook exactly as Telegram would send them (with the secret header). The case
is then read back with ``python -m bot cases list --json``.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.telegram_api import RASA_CREDENTIALS as CREDENTIALS
from tests.fakes.telegram_api import TOKEN, FakeTelegramAPI
from tests.integration.conftest import channel_assistant
from tests.integration.telegram_customer import button, deliver, replies_after, update
from tests.processes import ROOT, VENV_BIN, Process, free_ports, start_front, wait_until_up

pytestmark = pytest.mark.integration

SECRET = "e2e-webhook_secret"
MARIA = {"id": 4242, "is_bot": False, "first_name": "Maria", "username": "maria_k", "language_code": "en"}
CHAT = {"id": 4242, "type": "private", "first_name": "Maria"}


@dataclass
class Running:
    api: FakeTelegramAPI
    rasa_url: str
    env: dict[str, str]
    processes: list[Process]
    work: Path
    next_update: int = 1

    def send(self, **content: Any) -> None:
        """Deliver one update from Maria to Rasa's Telegram webhook, as Telegram does."""
        deliver(self.rasa_url, SECRET, update(self.next_update, MARIA, CHAT, **content), self.api)
        self.next_update += 1

    def replies_after(self, count: int, expected: int, timeout: float = 60, quiet: float = 1.5) -> list[dict[str, Any]]:
        """Wait for at least ``expected`` ``sendMessage`` calls after the first ``count``, then
        for ``quiet`` seconds without another; return the new ones."""
        return replies_after(self.api, count, expected, self.processes, timeout=timeout, quiet=quiet, interval=0.25)


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    tmp = tmp_path_factory.mktemp("telegram-e2e")
    api = FakeTelegramAPI().start()
    channel_env = {"TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_WEBHOOK_SECRET": SECRET, "TELEGRAM_API_BASE_URL": api.base_url}
    try:
        with channel_assistant(tmp, CREDENTIALS, channel_env, "/webhooks/telegram/") as started:
            yield Running(api, started.rasa_url, started.env, started.processes, tmp)
    finally:
        api.stop()


def test_a_telegram_customer_gets_from_first_message_to_an_open_case(running: Running) -> None:
    def step(expected: int, **content: Any) -> list[dict[str, Any]]:
        sent = len(running.api.calls("sendMessage"))
        running.send(**content)
        replies = running.replies_after(sent, expected)
        assert {reply["chat_id"] for reply in replies} == {"4242"}
        return replies

    greeting = step(2, text="/start")
    assert greeting[0]["text"].startswith("Hi Maria! I'm ")
    asked = step(2, text="Where is my parcel? Can you check it for me")
    assert asked[-1]["text"].startswith("What's your order number?")
    [question] = step(1, text="AC-2291734")
    assert question["text"] == "What's happening with the delivery?"
    [summary] = step(1, callback_data=button(question, "It's late"))
    assert summary["text"].startswith("Here is what I will pass on: Where my order is. Order number: AC-2291734;")

    # A photo at the summary: the customer is told it is attached, and Rasa records it.
    notice, added, summary = step(3, photo=[{"file_id": "crushed-box", "file_unique_id": "u", "width": 8, "height": 6}])
    assert notice["text"] == (
        "I can only read text, but I've attached your photo to your case for the person who picks it up."
        " Could you also tell me in a few words what it's about?"
    )
    assert (added["text"], "reply_markup" in summary) == ("Got it, I've added that.", True)

    [handoff] = step(1, callback_data=button(summary, "Yes, that's right"))
    assert handoff["text"].startswith("Thanks, Maria! I've passed this to our team as case #1.")
    assert [c.params for c in running.api.calls("answerCallbackQuery")] == [
        {"callback_query_id": "q4"}, {"callback_query_id": "q6"},
    ]  # fmt: skip

    listed = subprocess.run(
        [str(VENV_BIN / "python"), "-m", "bot", "cases", "list", "--json"],
        cwd=ROOT, env=running.env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    [case] = json.loads(listed.stdout)
    assert (case["id"], case["channel"], case["sender_id"], case["customer_name"], case["case_type"]) == (
        1, "telegram", "4242", "Maria", "order_status",
    )  # fmt: skip
    assert case["answers"] == {"order_number": "AC-2291734", "delivery_problem": "It's late"}
    assert case["status"] == "waiting"
    customer_lines = [line["text"] for line in case["transcript"] if line["who"] == "customer"]
    assert customer_lines == [
        "[pressed: greet]", "Where is my parcel? Can you check it for me", "AC-2291734", "It's late",
        "[photo sent]", "[pressed: affirm]",
    ]  # fmt: skip

    events = httpx.get(f"{running.rasa_url}/conversations/4242/tracker", timeout=10).json()["events"]
    [photo] = [e for e in events if e["event"] == "user" and (e.get("metadata") or {}).get("photo")]
    # Rasa adds its own model_id and assistant_id to what the channel sent.
    sent_metadata = {key: value for key, value in photo["metadata"].items() if key not in ("model_id", "assistant_id")}
    assert (photo["text"], photo["input_channel"], sent_metadata) == (
        "[photo]", "telegram",
        {"photo": "crushed-box", "chat_id": 4242, "chat_type": "private", "customer_name": "Maria",
         "username": "maria_k", "language_code": "en", "user_id": 4242},
    )  # fmt: skip


def _first_message(running: Running, chat_id: int, name: str, text: str, expected: int) -> list[dict[str, Any]]:
    """Send a new customer's first message; return what their chat received."""
    user = {"id": chat_id, "is_bot": False, "first_name": name}
    sent = len(running.api.calls("sendMessage"))
    deliver(running.rasa_url, SECRET, update(running.next_update, user, {"id": chat_id, "type": "private"}, text=text),
            running.api)
    running.next_update += 1
    replies = running.replies_after(sent, expected)
    assert {reply["chat_id"] for reply in replies} == {str(chat_id)}
    return replies


def _greetings_in_tracker(running: Running, sender: int) -> list[dict[str, Any]]:
    events = httpx.get(f"{running.rasa_url}/conversations/{sender}/tracker", timeout=10).json()["events"]
    return [e for e in events if e["event"] == "bot" and (e.get("metadata") or {}).get("utter_action", "").startswith("utter_greeting")]


def test_a_new_customer_is_greeted_by_the_channel_first_then_acknowledged_and_asked(running: Running) -> None:
    texts = [r["text"] for r in _first_message(running, 5151, "Luc", "Where is my parcel? I ordered it two weeks ago", 3)]

    assert texts[0] == "Hi Luc! I'm Northwind's assistant."
    assert texts.count(texts[0]) == 1
    assert texts[2].startswith("What's your order number?")
    assert [c.params["chat_id"] for c in running.api.calls("sendChatAction")].count("5151") == 1
    # In the conversation once, as the assistant's message, recorded by the dialogue (not sent by it).
    [greeting] = _greetings_in_tracker(running, 5151)
    assert (greeting["text"], greeting["metadata"]["greeted_at_edge"]) == (texts[0], True)


def test_a_french_first_message_gets_the_french_greeting(running: Running) -> None:
    texts = [r["text"] for r in _first_message(
        running, 6161, "Élise", "Bonjour, où est mon colis ? Je l'ai commandé il y a deux semaines", 2,
    )]  # fmt: skip

    assert texts[0] == "Bonjour Élise ! Je suis Northwind's assistant."
    assert texts[-1].startswith("Quel est votre numéro de commande")
    [greeting] = _greetings_in_tracker(running, 6161)
    assert greeting["text"] == texts[0]


def test_behind_the_front_a_new_customer_is_greeted_there_and_answered_by_rasa(running: Running) -> None:
    # What make run starts when a messaging app is configured: the front on the public port.
    [port] = free_ports(1)
    front_url = f"http://127.0.0.1:{port}"
    front = start_front("front", port, running.rasa_url, running.work / "credentials.yml", running.env,
                        running.work / "front.log")  # fmt: skip
    try:
        wait_until_up(front, f"{front_url}/webhooks/telegram/", 120)
        lena = {"id": 7373, "is_bot": False, "first_name": "Lena", "language_code": "en"}
        sent = len(running.api.sent_texts(7373))  # replies_after counts this chat's messages
        deliver(front_url, SECRET, update(900, lena, {"id": 7373, "type": "private", "first_name": "Lena"},
                                          text="I was charged twice for my order, please refund one"), running.api)  # fmt: skip
        greeting, *rest = replies_after(running.api, sent, 3, [*running.processes, front], chat=7373)
        # Rasa's HTTP API through the front, as the desk and ops tools reach it.
        tracker = httpx.get(f"{front_url}/conversations/7373/tracker", timeout=30)
    finally:
        front.stop()

    assert greeting["text"] == "Hi Lena! I'm Northwind's assistant."
    assert len(rest) >= 2 and rest[-1]["text"].endswith("?")  # the acknowledgement and the first question, from Rasa
    # The typing indicator rode on the front's answer to the webhook.
    assert [c.params["action"] for c in running.api.calls("sendChatAction") if str(c.params["chat_id"]) == "7373"][:1] == ["typing"]
    # Greeted once, by the front or (had Rasa taken the message first) by Rasa: the claim is shared.
    assert running.api.sent_texts(7373).count(greeting["text"]) == 1
    assert tracker.status_code == 200
    bot_texts = [e["text"] for e in tracker.json()["events"] if e["event"] == "bot"]
    assert bot_texts[0] == greeting["text"] and bot_texts[-1] == rest[-1]["text"]  # recorded in the conversation
