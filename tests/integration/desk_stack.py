"""The agent desk's end-to-end stack: the fakes it talks to, its processes, and a customer and an agent acting on it.

A customer writes on the fake Telegram Bot API; Rasa logs every event to its SQL event
broker; the desk (HTTP mode) posts the case card on the fake Slack Web API, takes signed
button presses and thread replies, and answers through Telegram. Used by
test_desk_e2e.py (the whole stack) and test_desk_failover.py (two desks).
"""

from __future__ import annotations

import json
import os
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bot.cases import Case, CaseStore
from tests.fakes.slack_api import signed_headers
from tests.fakes.slack_web_api import TOKEN as SLACK_TOKEN
from tests.fakes.slack_web_api import FakeDeskSlackAPI
from tests.fakes.telegram_api import TOKEN, FakeTelegramAPI, rasa_credentials
from tests.integration.telegram_customer import deliver, replies_after, update
from tests.processes import MODEL as TRAINED_MODEL
from tests.processes import Process, answers, base_env, start_desk, wait_until

MODEL = Path(os.environ.get("FIRSTREPLY_TEST_MODEL") or TRAINED_MODEL)
TELEGRAM_SECRET = "desk-e2e-webhook_secret"
SLACK_SECRET = "desk-e2e-signing-secret"
API_TOKEN = "desk-e2e-rasa-token"
ANA, BEN = "U0ANA", "U0BEN"
QUEUE = "C0QUEUE"
CREDENTIALS = rasa_credentials(bot_username=None)


@dataclass
class Stack:
    """Running processes, fakes, and the ways a customer and an agent act on them."""

    tmp: Path
    telegram: FakeTelegramAPI
    slack: FakeDeskSlackAPI
    env: dict[str, str]
    rasa_url: str
    desk_url: str
    case_db: str
    processes: dict[str, Process] = field(default_factory=dict)
    next_update: int = 1

    @property
    def alive(self) -> list[Process]:
        return list(self.processes.values())

    @property
    def health_url(self) -> str:
        return self.desk_url.replace("/slack/events", "/health")

    def add(self, process: Process) -> None:
        self.processes[process.name] = process

    def start_desk(self, name: str = "desk") -> None:
        self.add(start_desk(name, self.env, self.tmp / f"{name}.log", verbose=True))
        wait_until(f"{name} up", lambda: answers(self.health_url), 60, self.alive)

    def kill(self, name: str) -> None:
        self.processes.pop(name).kill()

    def stop_all(self) -> None:
        for process in self.processes.values():
            process.stop(timeout=30)
        for name in self.processes:
            log_file = self.tmp / f"{name}.log"
            if log_file.exists():
                print(f"--- {name}.log (tail) ---", *log_file.read_text(errors="replace").splitlines()[-25:], sep="\n")

    # --- the customer on Telegram ---------------------------------------------------------

    def send(self, chat: int, name: str, **content: Any) -> None:
        person = {"id": chat, "is_bot": False, "first_name": name, "language_code": "en"}
        chat_info = {"id": chat, "type": "private", "first_name": name}
        deliver(self.rasa_url, TELEGRAM_SECRET, update(self.next_update, person, chat_info, **content), self.telegram)
        self.next_update += 1

    def replies(self, chat: int, count: int, expected: int, quiet: float = 1.5) -> list[dict[str, Any]]:
        """Wait for ``expected`` new messages to ``chat`` after the first ``count``, then for quiet; return them."""
        return replies_after(self.telegram, count, expected, self.alive, chat=chat, timeout=90, quiet=quiet)

    def step(self, chat: int, name: str, expected: int, **content: Any) -> list[dict[str, Any]]:
        before = len([c for c in self.telegram.calls("sendMessage") if str(c.params["chat_id"]) == str(chat)])
        self.send(chat, name, **content)
        return self.replies(chat, before, expected)

    # --- the agent in Slack -----------------------------------------------------------------

    def signed(self, body: bytes, content_type: str) -> httpx.Response:
        headers = signed_headers(SLACK_SECRET, body, content_type)
        return httpx.post(self.desk_url, content=body, headers=headers, timeout=10)

    def press(self, user: str, action_id: str, case: Case) -> None:
        payload = {
            "type": "block_actions", "team": {"id": "T0BRAND"}, "api_app_id": "A0FIRSTREPLY",
            "user": {"id": user, "team_id": "T0BRAND"}, "trigger_id": f"t{time.time()}",
            "container": {"type": "message", "message_ts": case.card_ts, "channel_id": case.card_channel},
            "channel": {"id": case.card_channel}, "message": {"ts": case.card_ts, "text": "card"},
            "actions": [{"action_id": action_id, "type": "button", "value": str(case.id), "action_ts": str(time.time())}],
        }  # fmt: skip
        answer = self.signed(urllib.parse.urlencode({"payload": json.dumps(payload)}).encode(), "application/x-www-form-urlencoded")
        assert answer.status_code == 200

    def reply(self, user: str, case: Case, text: str) -> None:
        event = {"type": "message", "channel": case.card_channel, "channel_type": "channel", "user": user,
                 "text": text, "ts": f"{time.time():.6f}", "thread_ts": case.card_ts}  # fmt: skip
        body = {"type": "event_callback", "team_id": "T0BRAND", "api_app_id": "A0FIRSTREPLY",
                "event_id": f"Ev{time.time_ns()}", "event_time": int(time.time()), "event": event}  # fmt: skip
        assert self.signed(json.dumps(body).encode(), "application/json").status_code == 200

    # --- reading -------------------------------------------------------------------------------

    def case(self, case_id: int) -> Case:
        store = CaseStore.from_url(self.case_db)
        try:
            found = store.lookup.get(case_id)
        finally:
            store.dispose()
        assert found is not None
        return found

    def thread(self, case: Case) -> list[str]:
        return [m.text for m in self.slack.thread(str(case.card_channel), str(case.card_ts))]

    def card_text(self, case: Case) -> str:
        return json.dumps(self.slack.message(str(case.card_channel), str(case.card_ts)).blocks, ensure_ascii=False)

    def tracker(self, conversation: str) -> list[dict[str, Any]]:
        answer = httpx.get(f"{self.rasa_url}/conversations/{conversation}/tracker", params={"token": API_TOKEN}, timeout=10)
        return list(answer.json()["events"])


def desk_fakes() -> tuple[FakeTelegramAPI, FakeDeskSlackAPI]:
    slack = FakeDeskSlackAPI().start()
    slack.add_group("S0AGENTS", [ANA, BEN])
    slack.add_channel(QUEUE, "support-queue")
    slack.add_channel("C0BILLING", "support-billing")
    slack.add_channel("C0LEADS", "support-leads")
    return FakeTelegramAPI().start(), slack


def desk_env(tmp: Path, telegram: FakeTelegramAPI, slack: FakeDeskSlackAPI, rasa_url: str, desk_port: int) -> dict[str, str]:
    env = {
        **base_env(),
        "TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_WEBHOOK_SECRET": TELEGRAM_SECRET, "TELEGRAM_API_BASE_URL": telegram.base_url,
        "FIRSTREPLY_CASE_DB": f"sqlite:///{tmp / 'cases.db'}", "FIRSTREPLY_CHANNEL_DB": str(tmp / "channels.db"),
        "SLACK_DESK_BOT_TOKEN": SLACK_TOKEN, "SLACK_DESK_SIGNING_SECRET": SLACK_SECRET,
        "SLACK_API_BASE_URL": slack.base_url, "FIRSTREPLY_DESK_AGENTS": "S0AGENTS", "FIRSTREPLY_DESK_LEADS": "",
        "RASA_URL": rasa_url, "FIRSTREPLY_API_TOKEN": API_TOKEN, "FIRSTREPLY_EVENTS_DB": str(tmp / "events.db"),
        "FIRSTREPLY_DESK_PORT": str(desk_port), "FIRSTREPLY_DESK_POLL_SECONDS": "0.2",
        "FIRSTREPLY_DESK_RETRY_SECONDS": "0.2", "FIRSTREPLY_DESK_RETRY_MAX_SECONDS": "2",
    }  # fmt: skip
    for name in ("SLACK_APP_TOKEN", "SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET"):
        env.pop(name, None)
    return env
