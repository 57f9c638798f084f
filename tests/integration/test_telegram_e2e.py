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
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from tests.fakes.telegram_api import BOT_USER, TOKEN, FakeTelegramAPI, free_port

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL = REPO_ROOT / "models" / "firstreply.tar.gz"
PYTHON = REPO_ROOT / ".venv" / "bin" / "python"
RASA = REPO_ROOT / ".venv" / "bin" / "rasa"
SECRET = "e2e-webhook_secret"
MARIA = {"id": 4242, "is_bot": False, "first_name": "Maria", "username": "maria_k", "language_code": "en"}
CHAT = {"id": 4242, "type": "private", "first_name": "Maria"}
CREDENTIALS = """\
bot.channels.telegram.TelegramInput:
  token: ${TELEGRAM_BOT_TOKEN}
  webhook_secret: ${TELEGRAM_WEBHOOK_SECRET}
  base_url: ${TELEGRAM_API_BASE_URL}
  bot_username: firstreply_test_bot
"""
T = TypeVar("T")


def _port() -> int:
    sock = free_port()
    port = int(sock.getsockname()[1])
    sock.close()
    return port


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

    def replies_after(self, count: int, expected: int, timeout: float = 60) -> list[dict[str, Any]]:
        """Wait for ``expected`` new ``sendMessage`` calls after the first ``count``."""

        def probe() -> list[dict[str, Any]] | None:
            calls = self.api.calls("sendMessage")
            return [call.params for call in calls[count:]] if len(calls) >= count + expected else None

        return wait_until(f"{expected} replies after {count}", probe, timeout, self.processes)


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    assert MODEL.exists(), f"train the model first (make train): {MODEL}"
    tmp = tmp_path_factory.mktemp("telegram-e2e")
    api = FakeTelegramAPI().start()
    rasa_port, actions_port = _port(), _port()
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
        log = (tmp / f"{name}.log").open("wb")
        processes.append(
            subprocess.Popen(args, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
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
                print(f"--- {name}.log (tail) ---\n" + "\n".join(log_file.read_text(errors="replace").splitlines()[-30:]))


def _button(reply: dict[str, Any], title: str) -> str:
    for row in reply["reply_markup"]["inline_keyboard"]:
        for button in row:
            if button["text"] == title:
                return str(button["callback_data"])
    raise AssertionError(f"no button {title!r} in {reply}")


def test_a_telegram_customer_gets_from_first_message_to_an_open_case(running: Running) -> None:
    running.send(text="/start")
    [greeting] = running.replies_after(0, 1)
    assert greeting["chat_id"] == "4242" and "Maria" in greeting["text"]

    sent = len(running.api.calls("sendMessage"))
    running.send(text="Where is my parcel? It has not arrived yet")
    replies = running.replies_after(sent, 2)
    assert "order number" in replies[-1]["text"]

    sent = len(running.api.calls("sendMessage"))
    running.send(text="AC-2291734")
    [question] = running.replies_after(sent, 1)
    assert question["text"] == "What's happening with the delivery?"
    late = _button(question, "It's late")

    sent = len(running.api.calls("sendMessage"))
    running.send(callback_data=late)
    [summary] = running.replies_after(sent, 1)
    assert summary["text"].startswith("Here is what I will pass on:") and "AC-2291734" in summary["text"]
    yes = _button(summary, "Yes, that's right")

    sent = len(running.api.calls("sendMessage"))
    running.send(callback_data=yes)
    [handoff] = running.replies_after(sent, 1)
    assert handoff["text"].startswith("Thanks, Maria! I've passed this to our team as case #1.")
    assert [c.params["callback_query_id"] for c in running.api.calls("answerCallbackQuery")] == ["q4", "q5"]

    # After the handoff the assistant is silent, but a photo still gets its notice.
    sent = len(running.api.calls("sendMessage"))
    running.send(photo=[{"file_id": "crushed-box", "file_unique_id": "u", "width": 800, "height": 600}])
    [notice] = running.replies_after(sent, 1)
    assert notice["text"].startswith("I can only read text, but I've attached your photo to your case")

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
    assert case["transcript"][0]["who"] == "customer"

    def photo_in_tracker() -> dict[str, Any] | None:
        events = httpx.get(f"{running.rasa_url}/conversations/4242/tracker", timeout=10).json()["events"]
        photos = [e for e in events if e["event"] == "user" and (e.get("metadata") or {}).get("photo")]
        return photos[0] if photos else None

    event = wait_until("photo in the tracker", photo_in_tracker, 30, running.processes)
    assert (event["text"], event["metadata"]["photo"], event["input_channel"]) == ("[photo]", "crushed-box", "telegram")
