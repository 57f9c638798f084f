"""A whole Slack DM conversation through real ``rasa run`` and ``rasa run actions`` processes.

Rasa loads ``models/firstreply.tar.gz`` with a temporary credentials.yml that enables
``bot.channels.slack.SlackDMInput`` against the local fake Web API; events and button
presses go to Rasa's endpoint exactly as Slack sends them (signed with the signing
secret). The case is then read back with ``python -m bot cases list --json --db URL``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from tests.fakes.slack_api import APP_ID, BOT_ID, BOT_USER_ID, TEAM_ID, TOKEN, FakeSlackAPI, signed_headers
from tests.fakes.slack_api import RASA_CREDENTIALS as CREDENTIALS
from tests.integration.conftest import Assistant, serve_assistant
from tests.processes import ROOT, Process, base_env, free_port, require_model, write_endpoints

pytestmark = pytest.mark.integration

SECRET = "e2e0signing0secret0000000000000a"
MARIA, MARIA_DM = "U0MARIA", "D0MARIA"


def signed_post(url: str, body: bytes, content_type: str, secret: str = SECRET, **headers: str) -> httpx.Response:
    """POST ``body`` as Slack does: ``X-Slack-Signature: v0=HMAC-SHA256(v0:{ts}:{body})``."""
    return httpx.post(url, content=body, headers={**signed_headers(secret, body, content_type), **headers}, timeout=10)


@dataclass
class Running:
    api: FakeSlackAPI
    rasa_url: str
    case_db_url: str
    env: dict[str, str]
    processes: list[Process]
    events: list[bytes] = field(default_factory=list)

    @property
    def endpoint(self) -> str:
        return f"{self.rasa_url}/webhooks/slack_dm/events"

    def say(self, text: str, **extra: Any) -> None:
        """Deliver one DM from Maria as an Events API ``message.im`` event."""
        ts = f"{time.time():.6f}"
        event = {"type": "message", "channel": MARIA_DM, "user": MARIA, "text": text, "ts": ts, "event_ts": ts,
                 "channel_type": "im", "team": TEAM_ID, **extra}  # fmt: skip
        body = {"token": "legacy", "team_id": TEAM_ID, "api_app_id": APP_ID, "event": event, "type": "event_callback",
                "event_id": f"Ev{len(self.events) + 1:04d}", "event_time": int(time.time())}  # fmt: skip
        raw = json.dumps(body).encode()
        self.events.append(raw)
        answer = signed_post(self.endpoint, raw, "application/json")
        assert (answer.status_code, answer.text) == (200, "")

    def press(self, reply: dict[str, Any], title: str) -> None:
        """Press the button titled ``title`` under a posted message, as Slack reports it."""
        params, ts = reply["params"], reply["ts"]
        elements = [e for block in params["blocks"] if block["type"] == "actions" for e in block["elements"]]
        [button] = [e for e in elements if e["text"]["text"] == title]
        payload = {
            "type": "block_actions", "api_app_id": APP_ID, "token": "legacy", "trigger_id": f"t.{ts}",
            "user": {"id": MARIA, "username": "maria", "team_id": TEAM_ID}, "team": {"id": TEAM_ID},
            "container": {"type": "message", "message_ts": ts, "channel_id": MARIA_DM, "is_ephemeral": False},
            "channel": {"id": MARIA_DM, "name": "directmessage"},
            "message": {"type": "message", "user": BOT_USER_ID, "bot_id": BOT_ID, "text": params["text"], "ts": ts,
                        "blocks": params["blocks"]},
            "actions": [{**button, "block_id": "b", "action_ts": f"{time.time():.6f}"}],
        }  # fmt: skip
        answer = signed_post(self.endpoint, urlencode({"payload": json.dumps(payload)}).encode(),
                             "application/x-www-form-urlencoded")  # fmt: skip
        assert (answer.status_code, answer.text) == (200, "")

    def replies_after(self, count: int, expected: int, timeout: float = 60, quiet: float = 1.5) -> list[dict[str, Any]]:
        """Wait for at least ``expected`` posts after the first ``count``, then ``quiet`` seconds
        without another; return the new ones (``params`` and the ``ts`` the fake gave them)."""
        deadline, last, since = time.monotonic() + timeout, -1, time.monotonic()
        while time.monotonic() < deadline:
            calls = self.api.calls("chat.postMessage")
            if len(calls) != last:
                last, since = len(calls), time.monotonic()
            elif len(calls) >= count + expected and time.monotonic() - since >= quiet:
                return [{"params": c.params, "ts": c.answer["ts"]} for c in calls[count:]]
            for process in self.processes:
                process.check_alive()
            time.sleep(0.2)
        raise AssertionError(f"{last - count} post(s) after {timeout}s, expected {expected}")


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    require_model()
    work = tmp_path_factory.mktemp("slack-e2e")
    api = FakeSlackAPI().start()
    api.add_user(MARIA, "Maria Silva", display_name="maria", locale="en-GB")
    rasa_port, actions_port = free_port(), free_port()
    (work / "credentials.yml").write_text(CREDENTIALS)
    endpoints = write_endpoints(work, actions_port)
    case_db_url = f"sqlite:///{work / 'cases.db'}"
    env = {
        **base_env(),
        "SLACK_BOT_TOKEN": TOKEN,
        "SLACK_SIGNING_SECRET": SECRET,
        "SLACK_API_BASE_URL": api.base_url,
        "FIRSTREPLY_CASE_DB": case_db_url,
        "FIRSTREPLY_CHANNEL_DB": str(work / "channels.db"),
    }
    assistant = Assistant(f"http://127.0.0.1:{rasa_port}", case_db_url, env, token="")
    try:
        with serve_assistant(
            assistant, work, actions_port, rasa_port, endpoints, "/webhooks/slack_dm/",
            credentials=work / "credentials.yml", launcher=False,
        ) as started:  # fmt: skip
            yield Running(api, started.rasa_url, case_db_url, env, started.processes)
    finally:
        api.stop()


def test_a_slack_customer_gets_from_first_dm_to_an_open_case(running: Running) -> None:
    api = running.api

    def step(expected: int, act: Any, *args: Any, **extra: Any) -> list[dict[str, Any]]:
        sent = len(api.calls("chat.postMessage"))
        act(*args, **extra)
        replies = running.replies_after(sent, expected)
        assert {reply["params"]["channel"] for reply in replies} == {MARIA_DM}
        return replies

    first = step(2, running.say, "Hi! Where is my parcel? Can you check it for me")
    assert first[0]["params"]["text"].startswith("Hi Maria! I'm ")
    assert first[-1]["params"]["text"].startswith("What's your order number?")
    [question] = step(1, running.say, "AC-2291734")
    assert question["params"]["text"] == "What's happening with the delivery?"
    assert [b["type"] for b in question["params"]["blocks"]] == ["section", "actions"]

    [summary] = step(1, running.press, question, "It's late")
    assert summary["params"]["text"].startswith(
        "Here is what I will pass on: Where my order is. Order number: AC-2291734;"
    )
    [update] = api.calls("chat.update")
    assert (update.params["ts"], update.params["blocks"][-1]) == (
        question["ts"], {"type": "context", "elements": [{"type": "mrkdwn", "text": "You chose: *It's late*"}]},
    )  # fmt: skip

    # A file at the summary: the customer is told it is attached, and Rasa records it.
    receipt = {"id": "F0RECEIPT", "name": "receipt.pdf", "mimetype": "application/pdf"}
    notice, added, summary = step(3, running.say, "", subtype="file_share", files=[receipt])
    assert notice["params"]["text"] == (
        "I can only read text, but I've attached your file to your case for the person who picks it up."
        " Could you also tell me in a few words what it's about?"
    )
    assert (added["params"]["text"], "blocks" in summary["params"]) == ("Got it, I've added that.", True)

    [handoff] = step(1, running.press, summary, "Yes, that's right")
    assert handoff["params"]["text"].startswith("Thanks, Maria! I've passed this to our team as case #1.")

    # Slack retries the first event (as if our answer were lost): acknowledged, not handled again.
    posts = len(api.calls("chat.postMessage"))
    retry = signed_post(running.endpoint, running.events[0], "application/json", **{"X-Slack-Retry-Num": "1"})
    forged = signed_post(running.endpoint, running.events[1], "application/json", secret="not-the-secret")
    assert (retry.status_code, forged.status_code) == (200, 401)
    time.sleep(2)
    assert len(api.calls("chat.postMessage")) == posts
    assert [c.params["user"] for c in api.calls("users.info")] == [MARIA]

    listed = subprocess.run(
        [sys.executable, "-m", "bot", "cases", "list", "--json", "--db", running.case_db_url],
        cwd=ROOT, env=running.env, capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    [case] = json.loads(listed.stdout)
    assert (case["id"], case["channel"], case["sender_id"], case["customer_name"], case["case_type"]) == (
        1, "slack_dm", MARIA, "Maria Silva", "order_status",
    )  # fmt: skip
    assert case["answers"] == {"order_number": "AC-2291734", "delivery_problem": "It's late"}
    assert case["status"] == "waiting"
    customer_lines = [line["text"] for line in case["transcript"] if line["who"] == "customer"]
    assert customer_lines == [
        "Hi! Where is my parcel? Can you check it for me", "AC-2291734", "It's late", "[attachments sent]",
        "[pressed: affirm]",
    ]  # fmt: skip

    events = httpx.get(f"{running.rasa_url}/conversations/{MARIA}/tracker", timeout=10).json()["events"]
    [with_file] = [e for e in events if e["event"] == "user" and (e.get("metadata") or {}).get("slack_file_ids")]
    # Rasa adds its own model_id and assistant_id to what the channel sent.
    sent_metadata = {k: v for k, v in with_file["metadata"].items() if k not in ("model_id", "assistant_id")}
    assert (with_file["text"], with_file["input_channel"], sent_metadata) == (
        "[file]", "slack_dm",
        {"customer_name": "Maria Silva", "locale": "en-GB", "slack_user_id": MARIA, "slack_channel_id": MARIA_DM,
         "team_id": TEAM_ID, "slack_file_ids": ["F0RECEIPT"],
         "attachments": [{"file_id": "F0RECEIPT", "name": "receipt.pdf", "mimetype": "application/pdf"}]},
    )  # fmt: skip
