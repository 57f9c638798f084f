"""The agent desk end to end: real ``rasa run``, ``rasa run actions`` and ``python -m bot desk`` processes.

A customer writes on the fake Telegram Bot API; Rasa logs every event to its SQL event
broker; the desk (HTTP mode) posts the case card on the fake Slack Web API, takes signed
button presses and thread replies, and answers through Telegram. The model is
``$FIRSTREPLY_TEST_MODEL`` if set, else ``models/firstreply.tar.gz`` (``make train``).

The last test kills the desk with SIGKILL in the middle of Slack deliveries and restarts
it: every message arrives, none twice.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import subprocess
import time
import urllib.parse
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from bot.cases import Case, CaseStore, NewCase, TranscriptLine
from tests.fakes.slack_web_api import TOKEN as SLACK_TOKEN
from tests.fakes.slack_web_api import FakeDeskSlackAPI
from tests.fakes.telegram_api import BOT_USER, TOKEN, FakeTelegramAPI, free_port

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL = Path(os.environ.get("FIRSTREPLY_TEST_MODEL") or REPO_ROOT / "models" / "firstreply.tar.gz")
PYTHON = REPO_ROOT / ".venv" / "bin" / "python"
RASA = REPO_ROOT / ".venv" / "bin" / "rasa"
TELEGRAM_SECRET = "desk-e2e-webhook_secret"
SLACK_SECRET = "desk-e2e-signing-secret"
API_TOKEN = "desk-e2e-rasa-token"
ANA, BEN = "U0ANA", "U0BEN"
QUEUE = "C0QUEUE"
CREDENTIALS = """\
bot.channels.telegram.TelegramInput:
  token: ${TELEGRAM_BOT_TOKEN}
  webhook_secret: ${TELEGRAM_WEBHOOK_SECRET}
  base_url: ${TELEGRAM_API_BASE_URL}
"""
T = TypeVar("T")


def _ports(count: int) -> list[int]:
    socks = [free_port() for _ in range(count)]
    ports = [int(sock.getsockname()[1]) for sock in socks]
    for sock in socks:
        sock.close()
    return ports


def wait_until(what: str, probe: Callable[[], T | None], timeout: float, processes: list[subprocess.Popen[bytes]]) -> T:
    """Return ``probe()``'s first truthy value; fail if a process dies or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        for process in processes:
            if process.poll() is not None:
                raise AssertionError(f"{what}: {process.args!r} exited with {process.returncode}")
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout}s")


def _answers(url: str) -> bool | None:
    try:
        return True if httpx.get(url, timeout=2).status_code == 200 else None
    except httpx.HTTPError:
        return None


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
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    next_update: int = 1

    @property
    def alive(self) -> list[subprocess.Popen[bytes]]:
        return list(self.processes.values())

    def start(self, name: str, *args: str) -> None:
        with (self.tmp / f"{name}.log").open("ab") as log:
            self.processes[name] = subprocess.Popen(
                args, cwd=REPO_ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def start_desk(self) -> None:
        self.start("desk", str(PYTHON), "-m", "bot", "-v", "desk")
        wait_until("desk up", lambda: _answers(self.desk_url.replace("/slack/events", "/health")), 60, self.alive)

    def kill(self, name: str) -> None:
        process = self.processes.pop(name)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)

    def stop_all(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
        for name in self.processes:
            log_file = self.tmp / f"{name}.log"
            if log_file.exists():
                print(f"--- {name}.log (tail) ---", *log_file.read_text(errors="replace").splitlines()[-25:], sep="\n")

    # --- the customer on Telegram ---------------------------------------------------------

    def send(self, chat: int, name: str, **content: Any) -> None:
        person = {"id": chat, "is_bot": False, "first_name": name, "language_code": "en"}
        chat_info = {"id": chat, "type": "private", "first_name": name}
        update: dict[str, Any] = {"update_id": self.next_update}
        if "callback_data" in content:
            bot_message = {"message_id": 1, "date": int(time.time()), "chat": chat_info, "from": BOT_USER, "text": "?"}
            update["callback_query"] = {"id": f"q{self.next_update}", "from": person, "chat_instance": "c",
                                        "message": bot_message, "data": content["callback_data"]}  # fmt: skip
        else:
            update["message"] = {"message_id": 100 + self.next_update, "date": int(time.time()), "chat": chat_info,
                                 "from": person, **content}  # fmt: skip
        self.next_update += 1
        answer = httpx.post(f"{self.rasa_url}/webhooks/telegram/webhook", json=update,
                            headers={"X-Telegram-Bot-Api-Secret-Token": TELEGRAM_SECRET}, timeout=10)  # fmt: skip
        assert (answer.status_code, answer.json()) == (200, {"ok": True})

    def replies(self, chat: int, count: int, expected: int, quiet: float = 1.5) -> list[dict[str, Any]]:
        """Wait for ``expected`` new messages to ``chat`` after the first ``count``, then for quiet; return them."""
        seen: list[int] = [-1]
        since: list[float] = [0.0]

        def probe() -> list[dict[str, Any]] | None:
            calls = [c.params for c in self.telegram.calls("sendMessage") if str(c.params["chat_id"]) == str(chat)]
            if len(calls) != seen[0]:
                seen[0], since[0] = len(calls), time.monotonic()
                return None
            if len(calls) >= count + expected and time.monotonic() - since[0] >= quiet:
                return calls[count:]
            return None

        return wait_until(f"{expected} replies to {chat}", probe, 90, self.alive)

    def step(self, chat: int, name: str, expected: int, **content: Any) -> list[dict[str, Any]]:
        before = len([c for c in self.telegram.calls("sendMessage") if str(c.params["chat_id"]) == str(chat)])
        self.send(chat, name, **content)
        return self.replies(chat, before, expected)

    # --- the agent in Slack -----------------------------------------------------------------

    def signed(self, body: bytes, content_type: str) -> httpx.Response:
        timestamp = str(int(time.time()))
        signature = "v0=" + hmac.new(SLACK_SECRET.encode(), f"v0:{timestamp}:".encode() + body, hashlib.sha256).hexdigest()
        headers = {"Content-Type": content_type, "X-Slack-Request-Timestamp": timestamp, "X-Slack-Signature": signature}
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


def _button(reply: dict[str, Any], title: str) -> str:
    for row in reply["reply_markup"]["inline_keyboard"]:
        for button in row:
            if button["text"] == title:
                return str(button["callback_data"])
    raise AssertionError(f"no button {title!r} in {reply}")


def _fakes() -> tuple[FakeTelegramAPI, FakeDeskSlackAPI]:
    slack = FakeDeskSlackAPI().start()
    slack.add_group("S0AGENTS", [ANA, BEN])
    slack.add_channel(QUEUE, "support-queue")
    slack.add_channel("C0BILLING", "support-billing")
    slack.add_channel("C0LEADS", "support-leads")
    return FakeTelegramAPI().start(), slack


def _env(tmp: Path, telegram: FakeTelegramAPI, slack: FakeDeskSlackAPI, rasa_url: str, desk_port: int) -> dict[str, str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT), "SQLALCHEMY_SILENCE_UBER_WARNING": "1", "TF_CPP_MIN_LOG_LEVEL": "3",
        "SANIC_HOST": "127.0.0.1",
        "TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_WEBHOOK_SECRET": TELEGRAM_SECRET, "TELEGRAM_API_BASE_URL": telegram.base_url,
        "FIRSTREPLY_CASE_DB": f"sqlite:///{tmp / 'cases.db'}", "FIRSTREPLY_CHANNEL_DB": str(tmp / "channels.db"),
        "SLACK_DESK_BOT_TOKEN": SLACK_TOKEN, "SLACK_DESK_SIGNING_SECRET": SLACK_SECRET,
        "SLACK_API_BASE_URL": slack.base_url, "FIRSTREPLY_DESK_AGENTS": "S0AGENTS", "FIRSTREPLY_DESK_LEADS": "",
        "RASA_URL": rasa_url, "FIRSTREPLY_API_TOKEN": API_TOKEN, "FIRSTREPLY_EVENTS_DB": str(tmp / "events.db"),
        "FIRSTREPLY_DESK_PORT": str(desk_port), "FIRSTREPLY_DESK_POLL_SECONDS": "0.2",
        "FIRSTREPLY_DESK_RETRY_SECONDS": "0.2", "FIRSTREPLY_DESK_RETRY_MAX_SECONDS": "2",
    }  # fmt: skip
    for name in ("FIRSTREPLY_NOW", "SLACK_APP_TOKEN", "SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET"):
        env.pop(name, None)
    return env


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    assert MODEL.exists(), f"train the model first (make train, or set FIRSTREPLY_TEST_MODEL): {MODEL}"
    tmp = tmp_path_factory.mktemp("desk-e2e")
    telegram, slack = _fakes()
    rasa_port, actions_port, desk_port = _ports(3)
    rasa_url = f"http://127.0.0.1:{rasa_port}"
    (tmp / "credentials.yml").write_text(CREDENTIALS)
    (tmp / "endpoints.yml").write_text(
        f'action_endpoint:\n  url: "http://127.0.0.1:{actions_port}/webhook"\n'
        f"tracker_store:\n  type: SQL\n  dialect: sqlite\n  db: {tmp / 'trackers.db'}\n"
        f"event_broker:\n  type: SQL\n  dialect: sqlite\n  db: {tmp / 'events.db'}\n"
    )
    env = _env(tmp, telegram, slack, rasa_url, desk_port)
    running = Stack(tmp, telegram, slack, env, rasa_url, f"http://127.0.0.1:{desk_port}/slack/events", env["FIRSTREPLY_CASE_DB"])
    try:
        running.start("actions", str(RASA), "run", "actions", "--port", str(actions_port), "--actions", "actions")
        running.start(
            "rasa", str(RASA), "run", "--model", str(MODEL), "--endpoints", str(tmp / "endpoints.yml"),
            "--credentials", str(tmp / "credentials.yml"), "--interface", "127.0.0.1", "--port", str(rasa_port),
            "--enable-api", "--auth-token", API_TOKEN,
        )  # fmt: skip
        running.start_desk()
        wait_until("action server up", lambda: _answers(f"http://127.0.0.1:{actions_port}/health"), 180, running.alive)
        wait_until("Rasa up", lambda: _answers(f"{rasa_url}/webhooks/telegram/"), 300, running.alive)
        yield running
    finally:
        running.stop_all()
        telegram.stop()
        slack.stop()


def _hand_off(stack: Stack, chat: int, name: str) -> int:
    """Take a customer from the first message to an open case; return the case id."""
    stack.step(chat, name, 3, text="Where is my parcel? It has not arrived yet")
    [question] = stack.step(chat, name, 1, text="AC-2291734")
    [summary] = stack.step(chat, name, 1, callback_data=_button(question, "It's late"))
    [handoff] = stack.step(chat, name, 1, callback_data=_button(summary, "Yes, that's right"))
    assert handoff["text"].startswith(f"Thanks, {name}! I've passed this to our team as case #")
    return int(handoff["text"].split("case #", 1)[1].split(".", 1)[0])


def test_claim_talk_resolve_and_follow_up(stack: Stack) -> None:
    maria = 4242
    case_id = _hand_off(stack, maria, "Maria")
    case = wait_until("card", lambda: (c := stack.case(case_id)).card_ts and c, 30, stack.alive)
    assert case.card_channel == QUEUE
    assert f"Case #{case_id} · Order status" in stack.card_text(case) and "Maria (telegram)" in stack.card_text(case)
    assert "• *Order number:* AC-2291734" in stack.card_text(case)

    stack.press(ANA, "desk_claim", case)
    wait_until("claimed", lambda: stack.case(case_id).claimed_by == ANA, 30, stack.alive)

    # The customer writes while a person holds the case: the bot stays quiet, the thread shows it.
    stack.send(maria, "Maria", text="Any news? <!channel>")
    wait_until("relayed", lambda: any("Any news?" in text for text in stack.thread(case)), 30, stack.alive)
    assert ":speech_balloon: *Maria* wrote:\n>Any news? &lt;!channel&gt;" in stack.thread(case)
    before = len(stack.telegram.sent_texts(maria))

    stack.reply(ANA, case, "Hi Maria, your parcel is out for delivery today.")
    stack.reply(ANA, case, "note: courier confirmed by phone")
    wait_until("agent reply sent", lambda: len(stack.telegram.sent_texts(maria)) > before, 30, stack.alive)
    time.sleep(1.5)
    assert stack.telegram.sent_texts(maria)[before:] == ["Hi Maria, your parcel is out for delivery today."]
    bot_texts = wait_until(
        "reply in the tracker",
        lambda: [e["text"] for e in stack.tracker(str(maria)) if e["event"] == "bot" and (e.get("metadata") or {}).get("agent")],
        30, stack.alive,
    )  # fmt: skip
    assert bot_texts == ["Hi Maria, your parcel is out for delivery today."]
    assert stack.case(case_id).first_human_reply_at is not None

    stack.press(ANA, "desk_resolve", case)
    [ask] = stack.replies(maria, len(stack.telegram.sent_texts(maria)), 1)
    assert ask["text"] == f"Hi again! Our team has marked case #{case_id} as resolved. Did that solve it?"
    [rate] = stack.step(maria, "Maria", 1, callback_data=_button(ask, "Yes, it's solved"))
    assert rate["text"].startswith("Great to hear! How would you rate our help")
    [thanks] = stack.step(maria, "Maria", 1, callback_data=_button(rate, "4"))
    assert thanks["text"] == "Thank you for telling us! Is there anything else we can help you with? Just write it here."

    done = stack.case(case_id)
    assert (done.status, done.resolved_by, done.solved, done.rating) == ("resolved", ANA, True, 4)
    wait_until("card shows the rating", lambda: "customer says: solved · rated 4/5" in stack.card_text(case), 30, stack.alive)
    assert stack.thread(case)[-2:] == [":tada: The customer says it is solved.", ":star: The customer rated the help 4/5."]
    # After the follow-up the customer talks to the bot again; nothing goes to the old thread.
    [greeting] = stack.step(maria, "Maria", 1, text="thanks!")
    assert greeting["text"]
    assert not any("thanks!" in text for text in stack.thread(case))


def test_not_solved_reopens_the_case_and_hands_the_customer_back(stack: Stack) -> None:
    tom = 5151
    case_id = _hand_off(stack, tom, "Tom")
    case = wait_until("card", lambda: (c := stack.case(case_id)).card_ts and c, 30, stack.alive)
    stack.press(BEN, "desk_claim", case)
    wait_until("claimed", lambda: stack.case(case_id).claimed_by == BEN, 30, stack.alive)
    stack.press(BEN, "desk_resolve", case)
    [ask] = stack.replies(tom, len(stack.telegram.sent_texts(tom)), 1)

    [sorry] = stack.step(tom, "Tom", 1, callback_data=_button(ask, "No, not yet"))

    assert sorry["text"].startswith(f"I'm sorry it isn't sorted yet. I've reopened case #{case_id}")
    reopened = stack.case(case_id)
    assert (reopened.status, reopened.reopened_count, reopened.solved, reopened.claimed_by) == ("waiting", 1, False, None)
    wait_until("note", lambda: any("*not solved*" in text for text in stack.thread(case)), 30, stack.alive)
    wait_until("card back in the queue", lambda: '"text": "Claim"' in stack.card_text(case), 30, stack.alive)
    # Paused again: what Tom writes goes to the thread, and the bot says nothing.
    sent = len(stack.telegram.sent_texts(tom))
    stack.send(tom, "Tom", text="it still has not arrived")
    wait_until("relayed", lambda: any("still has not arrived" in text for text in stack.thread(case)), 30, stack.alive)
    time.sleep(1.5)
    assert len(stack.telegram.sent_texts(tom)) == sent


# --- a crash in the middle of deliveries ---------------------------------------------------------


def test_a_desk_killed_mid_delivery_loses_nothing_and_doubles_nothing(tmp_path: Path) -> None:
    from rasa.core.brokers.sql import SQLEventBroker

    telegram, slack = _fakes()
    desk_port, closed_port = _ports(2)
    env = _env(tmp_path, telegram, slack, f"http://127.0.0.1:{closed_port}", desk_port)
    stack = Stack(tmp_path, telegram, slack, env, "", f"http://127.0.0.1:{desk_port}/slack/events", env["FIRSTREPLY_CASE_DB"])
    store = CaseStore.from_url(stack.case_db)
    now = datetime.now(timezone.utc)
    case = store.lifecycle.open_case(
        NewCase(
            channel="telegram", sender_id="4242", customer_name="Maria", case_type="order_status", intent_confidence=0.9,
            answers={}, summary="Parcel late.", transcript=(TranscriptLine("customer", "late", now),), language="en",
            priority="normal", complaint_score=0.0, promised_by=now + timedelta(minutes=20),
            promise_wording="within about 20 minutes", handoff_key="crash:1", metadata={"route": "#support-queue"},
        ),  # fmt: skip
        now - timedelta(seconds=5),
    )
    store.dispose()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Calling URL\\(\\) directly is deprecated")
        broker = SQLEventBroker(dialect="sqlite", db=str(tmp_path / "events.db"))
    for number in range(4):
        broker.publish({"sender_id": "4242", "event": "user", "timestamp": time.time(), "text": f"message {number}",
                        "input_channel": "telegram", "metadata": {}})  # fmt: skip
    broker.engine.dispose()
    try:
        # Slack takes the card, but the desk dies before it hears back.
        slack.delay_next(1, 30.0, method="chat.postMessage")
        stack.start_desk()
        wait_until("card taken", lambda: slack.calls("chat.postMessage"), 30, stack.alive)
        stack.kill("desk")
        # Restarted: the card is found by its key, not posted again; then the second thread post hangs: kill again.
        slack.delay_next(1, 30.0, method="chat.postMessage")
        stack.start_desk()
        wait_until("thread post taken", lambda: len(slack.calls("chat.postMessage")) >= 2, 30, stack.alive)
        time.sleep(0.5)
        stack.kill("desk")
        stack.start_desk()
        wait_until("all four relayed", lambda: len(slack.calls("chat.postMessage")) >= 5 and (
            c := stack.case(case.id)).card_ts and len(stack.thread(c)) >= 4, 60, stack.alive)  # fmt: skip
        time.sleep(1.0)

        carded = stack.case(case.id)
        assert [m.ts for m in slack.top_level(QUEUE)] == [carded.card_ts]
        assert [text.rsplit(">", 1)[-1] for text in stack.thread(carded)] == [f"message {n}" for n in range(4)]
        keys = [c.params["metadata"]["event_payload"]["key"] for c in slack.calls("chat.postMessage")]
        assert len(keys) == len(set(keys)) == 5
        assert len(slack.calls("conversations.history")) >= 1 and len(slack.calls("conversations.replies")) >= 1
        store = CaseStore.from_url(stack.case_db)
        pending = [i.key for i in store.outbox.items() if i.delivered_at is None]
        store.dispose()
        assert pending == []
    finally:
        stack.stop_all()
        telegram.stop()
        slack.stop()
