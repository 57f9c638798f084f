"""A whole Telegram conversation through real ``rasa run`` and ``rasa run actions`` processes.

Rasa loads ``models/firstreply.tar.gz`` with a temporary credentials.yml that enables
``bot.channels.telegram.TelegramInput`` against the local fake Bot API; updates go to
Rasa's webhook exactly as Telegram would send them (with the secret header). The case
is then read back with ``python -m bot cases list --json``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from tests.fakes.telegram_api import BOT_USER, TOKEN, FakeTelegramAPI, free_port
from tests.fakes.telegram_api import RASA_CREDENTIALS as CREDENTIALS

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL = REPO_ROOT / "models" / "firstreply.tar.gz"
PYTHON = REPO_ROOT / ".venv" / "bin" / "python"
RASA = REPO_ROOT / ".venv" / "bin" / "rasa"
SECRET = "e2e-webhook_secret"
MARIA = {"id": 4242, "is_bot": False, "first_name": "Maria", "username": "maria_k", "language_code": "en"}
CHAT = {"id": 4242, "type": "private", "first_name": "Maria"}
T = TypeVar("T")


def _ports(count: int) -> list[int]:
    """Return ``count`` distinct free ports (held together while choosing, then released)."""
    socks = [free_port() for _ in range(count)]
    ports = [int(sock.getsockname()[1]) for sock in socks]
    for sock in socks:
        sock.close()
    return ports


def wait_until(what: str, probe: Callable[[], T | None], timeout: float, processes: list[subprocess.Popen[bytes]]) -> T:
    """Return ``probe()``'s first non-None value; fail if a process dies or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value is not None:
            return value
        for process in processes:
            if process.poll() is not None:
                raise AssertionError(f"{what}: {process.args!r} exited with {process.returncode}")
        time.sleep(0.25)
    raise AssertionError(f"{what}: not within {timeout}s")


def _answers(url: str) -> bool | None:
    try:
        return True if httpx.get(url, timeout=2).status_code == 200 else None
    except httpx.HTTPError:
        return None


@dataclass
class Running:
    api: FakeTelegramAPI
    rasa_url: str
    env: dict[str, str]
    processes: list[subprocess.Popen[bytes]]
    next_update: int = 1

    def send(self, **content: Any) -> None:
        """Deliver one update from Maria to Rasa's Telegram webhook, as Telegram does."""
        update: dict[str, Any] = {"update_id": self.next_update}
        if "callback_data" in content:
            bot_message = {"message_id": 1, "date": int(time.time()), "chat": CHAT, "from": BOT_USER, "text": "?"}
            update["callback_query"] = {"id": f"q{self.next_update}", "from": MARIA, "chat_instance": "c",
                                        "message": bot_message, "data": content["callback_data"]}  # fmt: skip
        else:
            update["message"] = {"message_id": 100 + self.next_update, "date": int(time.time()),
                                 "chat": CHAT, "from": MARIA, **content}  # fmt: skip
        self.next_update += 1
        answer = httpx.post(
            f"{self.rasa_url}/webhooks/telegram/webhook",
            json=update,
            headers={"X-Telegram-Bot-Api-Secret-Token": SECRET},
            timeout=10,
        )
        assert (answer.status_code, answer.json()) == (200, {"ok": True})

    def replies_after(self, count: int, expected: int, timeout: float = 60, quiet: float = 1.5) -> list[dict[str, Any]]:
        """Wait for at least ``expected`` ``sendMessage`` calls after the first ``count``, then
        for ``quiet`` seconds without another; return the new ones."""
        last: list[int] = [-1]
        since: list[float] = [0.0]

        def probe() -> list[dict[str, Any]] | None:
            calls = self.api.calls("sendMessage")
            if len(calls) != last[0]:
                last[0], since[0] = len(calls), time.monotonic()
                return None
            if len(calls) >= count + expected and time.monotonic() - since[0] >= quiet:
                return [call.params for call in calls[count:]]
            return None

        return wait_until(f"{expected} replies after {count}", probe, timeout, self.processes)


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    assert MODEL.exists(), f"train the model first (make train): {MODEL}"
    tmp = tmp_path_factory.mktemp("telegram-e2e")
    api = FakeTelegramAPI().start()
    rasa_port, actions_port = _ports(2)
    (tmp / "credentials.yml").write_text(CREDENTIALS)
    (tmp / "endpoints.yml").write_text(f'action_endpoint:\n  url: "http://127.0.0.1:{actions_port}/webhook"\n')
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "SQLALCHEMY_SILENCE_UBER_WARNING": "1",
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "TELEGRAM_BOT_TOKEN": TOKEN,
        "TELEGRAM_WEBHOOK_SECRET": SECRET,
        "TELEGRAM_API_BASE_URL": api.base_url,
        "FIRSTREPLY_CASE_DB": f"sqlite:///{tmp / 'cases.db'}",
        "FIRSTREPLY_CHANNEL_DB": str(tmp / "channels.db"),
        "SANIC_HOST": "127.0.0.1",
    }
    processes: list[subprocess.Popen[bytes]] = []

    def start(name: str, *args: str) -> None:
        with (tmp / f"{name}.log").open("wb") as log:  # the child keeps its own handle
            processes.append(
                subprocess.Popen(
                    args, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
            )

    start("actions", str(RASA), "run", "actions", "--port", str(actions_port), "--actions", "actions")
    start(
        "rasa", str(RASA), "run", "--model", str(MODEL), "--endpoints", str(tmp / "endpoints.yml"),
        "--credentials", str(tmp / "credentials.yml"), "--interface", "127.0.0.1", "--port", str(rasa_port),
        "--enable-api",
    )  # fmt: skip
    rasa_url = f"http://127.0.0.1:{rasa_port}"
    try:
        wait_until("action server up", lambda: _answers(f"http://127.0.0.1:{actions_port}/health"), 180, processes)
        wait_until("Rasa up", lambda: _answers(f"{rasa_url}/webhooks/telegram/"), 300, processes)
        yield Running(api, rasa_url, env, processes)
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
        api.stop()
        for name in ("rasa", "actions"):
            log_file = tmp / f"{name}.log"
            if log_file.exists():
                tail = log_file.read_text(errors="replace").splitlines()[-30:]
                print(f"--- {name}.log (tail) ---", *tail, sep="\n")


def _button(reply: dict[str, Any], title: str) -> str:
    for row in reply["reply_markup"]["inline_keyboard"]:
        for button in row:
            if button["text"] == title:
                return str(button["callback_data"])
    raise AssertionError(f"no button {title!r} in {reply}")


def test_a_telegram_customer_gets_from_first_message_to_an_open_case(running: Running) -> None:
    def step(expected: int, **content: Any) -> list[dict[str, Any]]:
        sent = len(running.api.calls("sendMessage"))
        running.send(**content)
        replies = running.replies_after(sent, expected)
        assert {reply["chat_id"] for reply in replies} == {"4242"}
        return replies

    greeting = step(2, text="/start")
    assert greeting[0]["text"].startswith("Hi Maria! I'm ")
    asked = step(3, text="Where is my parcel? It has not arrived yet")
    assert asked[-1]["text"].startswith("What's your order number?")
    [question] = step(1, text="AC-2291734")
    assert question["text"] == "What's happening with the delivery?"
    [summary] = step(1, callback_data=_button(question, "It's late"))
    assert summary["text"].startswith("Here is what I will pass on: Where my order is. Order number: AC-2291734;")

    # A photo at the summary: the customer is told it is attached, and Rasa records it.
    notice, added, summary = step(3, photo=[{"file_id": "crushed-box", "file_unique_id": "u", "width": 8, "height": 6}])
    assert notice["text"] == (
        "I can only read text, but I've attached your photo to your case for the person who picks it up."
        " Could you also tell me in a few words what it's about?"
    )
    assert (added["text"], "reply_markup" in summary) == ("Got it, I've added that.", True)

    [handoff] = step(1, callback_data=_button(summary, "Yes, that's right"))
    assert handoff["text"].startswith("Thanks, Maria! I've passed this to our team as case #1.")
    assert [c.params for c in running.api.calls("answerCallbackQuery")] == [
        {"callback_query_id": "q4"}, {"callback_query_id": "q6"},
    ]  # fmt: skip

    listed = subprocess.run(
        [str(PYTHON), "-m", "bot", "cases", "list", "--json"],
        cwd=REPO_ROOT, env=running.env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    [case] = json.loads(listed.stdout)
    assert (case["id"], case["channel"], case["sender_id"], case["customer_name"], case["case_type"]) == (
        1, "telegram", "4242", "Maria", "order_status",
    )  # fmt: skip
    assert case["answers"] == {"order_number": "AC-2291734", "delivery_problem": "It's late"}
    assert case["status"] == "waiting"
    customer_lines = [line["text"] for line in case["transcript"] if line["who"] == "customer"]
    assert customer_lines == [
        "[pressed: greet]", "Where is my parcel? It has not arrived yet", "AC-2291734", "It's late",
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
