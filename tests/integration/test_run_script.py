"""``make run`` itself (``scripts/run.sh``) with Telegram in webhook mode, against the local fake Bot API.

The script runs in a throwaway copy of the checkout (every top-level entry linked, ``var/``
its own), on free ports, with one Rasa worker. What a new user of the README sees is checked
end to end: the webhook registered with Telegram, the front process on the public port
answering Telegram's webhook with the typing indicator and greeting the customer, Rasa behind
it at lower priority answering with the acknowledgement and the first question, the REST
channel passed through the front, and Ctrl-C stopping every process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from bot.front import RASA_NICE
from tests.fakes.telegram_api import TOKEN, FakeTelegramAPI
from tests.integration.telegram_customer import deliver, update
from tests.processes import ROOT, base_env, free_ports, require_model

pytestmark = pytest.mark.integration

SECRET = "run-script-secret"
PUBLIC_URL = "https://bot.example.com/webhooks/telegram/webhook"
# Variables that would switch on other channels (or the desk) if the machine running the tests had them.
OTHER_CHANNELS = ("SLACK_", "WHATSAPP_", "MESSENGER_", "INSTAGRAM_", "META_", "X_", "FIRSTREPLY_FRONT")


@dataclass
class Started:
    process: subprocess.Popen[str]
    public_url: str
    rasa_port: int
    api: FakeTelegramAPI
    output: list[str] = field(default_factory=list)


def _checkout_copy(work: Path) -> Path:
    """Return a directory that looks like the checkout (its entries linked) with a ``var/`` of its own."""
    copy = work / "checkout"
    (copy / "var").mkdir(parents=True)
    for entry in ROOT.iterdir():
        if entry.name not in ("var", ".git", ".pytest_cache"):
            (copy / entry.name).symlink_to(entry)
    return copy


@pytest.fixture(scope="module")
def started(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Started]:
    require_model()
    work = tmp_path_factory.mktemp("run-script")
    copy = _checkout_copy(work)
    public, actions, rasa = free_ports(3)
    env = {name: value for name, value in base_env().items() if not name.startswith(OTHER_CHANNELS)}
    with FakeTelegramAPI() as api:
        env.update({
            "FIRSTREPLY_RASA_PORT": str(public), "FIRSTREPLY_ACTIONS_PORT": str(actions),
            "FIRSTREPLY_RASA_OWN_PORT": str(rasa), "FIRSTREPLY_RASA_WORKERS": "1",
            "TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_API_BASE_URL": api.base_url,
            "TELEGRAM_WEBHOOK_URL": PUBLIC_URL, "TELEGRAM_WEBHOOK_SECRET": SECRET,
            # Their defaults are under the real checkout (the modules' own path); the rest of var/ is the copy's.
            "FIRSTREPLY_CHANNEL_DB": str(copy / "var" / "channels.db"),
            "FIRSTREPLY_CASE_DB": f"sqlite:///{copy / 'var' / 'cases.db'}",
        })  # fmt: skip
        # As from a terminal: Ctrl-C reaches the script (a test runner started in the background may
        # ignore SIGINT, and a shell cannot trap a signal ignored when it started).
        process = subprocess.Popen(["bash", str(copy / "scripts" / "run.sh")], cwd=work, env=env, text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                                   preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
        running = Started(process, f"http://127.0.0.1:{public}", rasa, api)
        reader = threading.Thread(target=lambda: running.output.extend(process.stdout or ()), daemon=True)  # type: ignore[arg-type]
        reader.start()
        try:
            deadline = time.monotonic() + 400
            while not any("Web chat" in line for line in running.output):
                if process.poll() is not None or time.monotonic() > deadline:
                    logs = "".join((copy / "var" / "run" / name).read_text(errors="replace")[-3000:]
                                   for name in ("rasa.log", "front.log") if (copy / "var" / "run" / name).exists())  # fmt: skip
                    pytest.fail(f"make run did not start:\n{''.join(running.output)}\n{logs}")
                time.sleep(0.5)
            yield running
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)
            reader.join(timeout=10)
            if process.stdout is not None:
                process.stdout.close()


def test_it_registers_the_webhook_with_its_secret(started: Started) -> None:
    [call] = started.api.calls("setWebhook")

    assert (call.params["url"], call.params["secret_token"]) == (PUBLIC_URL, SECRET)


def test_the_front_greets_a_new_customer_at_once_and_rasa_behind_it_answers(started: Started) -> None:
    user = {"id": 8181, "is_bot": False, "first_name": "Nina", "language_code": "en"}
    deliver(started.public_url, SECRET, update(5, user, {"id": 8181, "type": "private", "first_name": "Nina"},
                                                text="my parcel never arrived, ordered two weeks ago"), started.api)  # fmt: skip

    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not any(t.startswith("What's your order number?")
                                                  for t in started.api.delivered_texts(8181)):  # fmt: skip
        time.sleep(0.25)
    time.sleep(1.0)  # nothing else follows the question
    texts = started.api.delivered_texts(8181)
    assert texts[0] == "Hi Nina! I'm Northwind's assistant."
    assert texts.count(texts[0]) == 1
    assert texts[-1].startswith("What's your order number?"), texts
    assert [c.params["chat_id"] for c in started.api.calls("sendChatAction")].count("8181") == 1


def test_rest_goes_through_the_front_and_rasa_runs_behind_it_at_lower_priority(started: Started) -> None:
    answer = httpx.post(f"{started.public_url}/webhooks/rest/webhook", json={"sender": "run-sh", "message": "hi"},
                        timeout=60)  # fmt: skip

    assert answer.status_code == 200 and answer.json(), answer.text
    listing = subprocess.run(["ps", "-eo", "ni=,args="], capture_output=True, text=True, check=True).stdout
    rasa = [line for line in listing.splitlines() if "bot.launcher run" in line and f"--port {started.rasa_port}" in line]
    front = [line for line in listing.splitlines() if "bot.front" in line and started.public_url.rsplit(":", 1)[1] in line]
    assert rasa and front
    # Relative to the front's: the tests themselves may run at a lower priority.
    assert {int(line.split()[0]) - int(front[0].split()[0]) for line in rasa} == {RASA_NICE}


def test_ctrl_c_stops_every_process(started: Started) -> None:
    os.killpg(started.process.pid, signal.SIGINT)
    assert started.process.wait(timeout=60) == 0
    time.sleep(1)
    listing = subprocess.run(["ps", "-eo", "args="], capture_output=True, text=True, check=True).stdout

    assert "FirstReply stopped." in "".join(started.output)
    assert f"--port {started.rasa_port}" not in listing
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{started.public_url}/webhooks/telegram/", timeout=5)
