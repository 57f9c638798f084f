"""The web chat in a real browser against real ``rasa run`` and ``rasa run actions`` processes.

Rasa loads ``models/firstreply.tar.gz`` with a temporary credentials.yml that enables only
``bot.channels.webchat.WebChatInput``; Debian's Chromium (driven by Playwright, headless)
opens the page Rasa serves and talks to the assistant as a customer would. The case is read
back with ``python -m bot cases list --json`` and the conversation with Rasa's HTTP API.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from playwright.sync_api import Browser, Locator, Page, Request, Route, expect

from tests.integration.conftest import Assistant, local_page, serve_assistant
from tests.processes import ROOT, Process, base_env, free_port, http, require_model, write_endpoints

pytestmark = pytest.mark.integration

SCREENSHOT = ROOT / "test-artifacts" / "webchat.png"
REPLY_TIMEOUT_MS = 90_000
STORAGE_KEY = "firstreply.webchat.v1"
HANDOFF = re.compile(
    r"^Thanks, Maria! I've passed this to our team as case #(\d+)\. A person will reply [^.]+\. "
    r"Anything you add here goes straight to them\.$"
)


@dataclass
class ChatServer:
    assistant: Assistant
    processes: list[Process]

    @property
    def url(self) -> str:
        return self.assistant.rasa_url

    def customer_messages(self, sender: str) -> list[str]:
        """Return the text of every customer message Rasa recorded for ``sender``, in order."""
        status, raw = http("GET", f"{self.url}/conversations/{sender}/tracker")
        assert status == 200
        return [event["text"] for event in json.loads(raw)["events"] if event["event"] == "user"]


@pytest.fixture(scope="module")
def chat_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChatServer]:
    """Start Rasa (web chat channel and HTTP API) and the action server on free ports."""
    require_model()
    work = tmp_path_factory.mktemp("webchat")
    rasa_port, actions_port = free_port(), free_port()
    (work / "credentials.yml").write_text("bot.channels.webchat.WebChatInput:\n")
    endpoints = write_endpoints(work, actions_port)
    case_db_url = f"sqlite:///{work / 'cases.db'}"
    env = {
        **base_env(),
        "FIRSTREPLY_CASE_DB": case_db_url,
        "FIRSTREPLY_CHANNEL_DB": str(work / "channels.db"),
        "FIRSTREPLY_WEBCHAT_SECRET": "browser-test-secret-0123456789",
    }
    running = Assistant(f"http://127.0.0.1:{rasa_port}", case_db_url, env, token="")
    with serve_assistant(
        running, work, actions_port, rasa_port, endpoints, "/webhooks/webchat/",
        credentials=work / "credentials.yml", launcher=False,
    ) as assistant:  # fmt: skip
        yield ChatServer(assistant, assistant.processes)


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    # Nothing may be loaded from anywhere but the Rasa server.
    with local_page(browser, 900, 860, REPLY_TIMEOUT_MS) as opened:
        yield opened


def conversation(page: Page) -> list[tuple[str, str]]:
    """Return the messages on the page: (who, text), in order."""
    rows = page.locator("#messages > li").evaluate_all(
        "items => items.map(item => [item.classList.contains('from-customer') ? 'customer' : 'bot',"
        " item.querySelector('.text').textContent])"
    )
    return [(str(who), str(text)) for who, text in rows]


def session_sender(page: Page) -> str:
    return str(page.evaluate(f"JSON.parse(localStorage.getItem('{STORAGE_KEY}')).session.sender"))


def type_message(page: Page, text: str) -> None:
    page.get_by_label("Your message").fill(text)
    page.get_by_label("Your message").press("Enter")


def wait_for_answer(page: Page) -> None:
    """Wait until every message sent is answered (its replies are shown in the same step)."""
    expect(page.locator("#messages > li.pending")).to_have_count(0, timeout=REPLY_TIMEOUT_MS)
    expect(page.locator("#typing")).to_be_hidden()


def last_bot_text(page: Page) -> Locator:
    return page.locator("#messages > li.from-bot .text").last


def test_a_customer_goes_from_first_message_to_a_case_in_the_browser(chat_server: ChatServer, page: Page) -> None:
    page.goto(f"{chat_server.url}/chat")
    expect(page).to_have_url(f"{chat_server.url}/webhooks/webchat/")
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    page.get_by_label("Your name").fill("Maria")

    type_message(page, "where is my parcel?? ordered 2 weeks ago")
    wait_for_answer(page)
    expect(page.locator("#messages > li.from-bot .text").first).to_have_text("Hi Maria! I'm Northwind's assistant.")
    expect(last_bot_text(page)).to_have_text(re.compile(r"^What's your order number\?"))

    type_message(page, "AC-2291734")
    wait_for_answer(page)
    expect(last_bot_text(page)).to_have_text("What's happening with the delivery?")
    expect(page.locator(".quick-reply")).to_have_text(
        ["It's late", "Tracking hasn't moved", "Says delivered, but it isn't here", "Something else"]
    )

    page.get_by_role("button", name="It's late").click()
    expect(page.locator("#messages > li.from-customer .text").last).to_have_text("It's late")
    wait_for_answer(page)
    summary = re.compile(r"^Here is what I will pass on: .*AC-2291734.* Is that right\?$")
    expect(last_bot_text(page)).to_have_text(summary)
    expect(page.locator(".quick-reply")).to_have_text(["Yes, that's right", "No, let me correct it"])

    page.get_by_role("button", name="Yes, that's right").click()
    wait_for_answer(page)
    handoff = last_bot_text(page)
    expect(handoff).to_have_text(HANDOFF)
    expect(page.locator(".quick-reply")).to_have_count(0)
    match = HANDOFF.match(handoff.text_content() or "")
    assert match is not None
    case_id = int(match.group(1))
    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOT))

    shown = conversation(page)
    assert [text for who, text in shown if who == "customer"] == [
        "where is my parcel?? ordered 2 weeks ago", "AC-2291734", "It's late", "Yes, that's right",
    ]  # fmt: skip
    page.reload()
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    assert conversation(page) == shown
    expect(page.get_by_label("Your name")).to_have_value("Maria")

    sender = session_sender(page)
    assert chat_server.customer_messages(sender) == [
        "where is my parcel?? ordered 2 weeks ago", "AC-2291734", "It's late", "/affirm",
    ]  # fmt: skip
    [case] = [case for case in chat_server.assistant.cases() if case["sender_id"] == sender]
    assert (case["id"], case["channel"], case["customer_name"], case["case_type"], case["status"]) == (
        case_id, "webchat", "Maria", "order_status", "waiting",
    )  # fmt: skip
    assert case["answers"] == {"order_number": "AC-2291734", "delivery_problem": "It's late"}


def test_a_message_sent_while_the_server_is_unreachable_is_delivered_exactly_once(
    chat_server: ChatServer, page: Page
) -> None:
    message_posts: list[dict[str, Any]] = []
    failures = {"before": 1, "after": 0}

    def flaky(route: Route, request: Request) -> None:
        message_posts.append(json.loads(request.post_data or "{}"))
        if failures["before"]:
            failures["before"] -= 1
            route.abort("connectionrefused")  # the server is down: nothing arrives
        elif failures["after"]:
            failures["after"] -= 1
            route.fetch()  # the server takes the message and answers...
            route.abort("connectionreset")  # ...but the answer never reaches the browser
        else:
            route.continue_()

    page.route("**/webhooks/webchat/message", flaky)
    page.goto(f"{chat_server.url}/webhooks/webchat/")
    expect(page.locator("body")).to_have_attribute("data-ready", "true")

    type_message(page, "hello, where is my parcel?")
    expect(page.locator("#status")).to_have_text("Connection lost, reconnecting…")
    expect(page.locator("#messages > li.from-customer.pending .text")).to_have_text("hello, where is my parcel?")
    expect(page.locator("#status")).to_be_hidden(timeout=REPLY_TIMEOUT_MS)
    expect(page.locator("#messages > li.from-customer.pending")).to_have_count(0)
    expect(last_bot_text(page)).to_have_text(re.compile(r"^What's your order number\?"))
    bot_count = page.locator("#messages > li.from-bot").count()

    failures["after"] = 1
    type_message(page, "AC-2291734")
    wait_for_answer(page)
    expect(last_bot_text(page)).to_have_text("What's happening with the delivery?")
    expect(page.locator("#status")).to_be_hidden()

    sender = session_sender(page)
    # The first message three times, with one client id: refused, then answered with the greeting
    # alone ("more": a new visitor's greeting shown at once), then asked again for the whole answer.
    assert [(post["message"], post["client_id"]) for post in message_posts] == [
        ("hello, where is my parcel?", message_posts[0]["client_id"]),
        ("hello, where is my parcel?", message_posts[0]["client_id"]),
        ("hello, where is my parcel?", message_posts[0]["client_id"]),
        ("AC-2291734", message_posts[3]["client_id"]),
        ("AC-2291734", message_posts[3]["client_id"]),
    ]
    assert chat_server.customer_messages(sender) == ["hello, where is my parcel?", "AC-2291734"]
    customer_lines = [text for who, text in conversation(page) if who == "customer"]
    assert customer_lines == ["hello, where is my parcel?", "AC-2291734"]
    assert page.locator("#messages > li.from-bot").count() == bot_count + 1
    assert page.evaluate(f"JSON.parse(localStorage.getItem('{STORAGE_KEY}')).outbox") == []
