"""Time to the first thing a customer sees, per connector: WhatsApp next to Telegram.

One ``rasa run`` (with the trained model) and one action server serve both connectors, each
against its local fake platform API (``tests/fakes/``). Customers take turns, one at a
time (uncontended latency, not load: ``make bench-stack`` measures load), each a new
conversation whose first message is posted to the connector's webhook exactly as the
platform sends it. Timed on one clock (``time.perf_counter``), from the webhook POST to:

- **first sign**: the first call the customer sees anything from. WhatsApp: the read
  receipt with the typing indicator, sent as soon as the message is stored; Telegram has
  no such call in the connector, so its first sign is its first message;
- **first message**: the greeting delivered to the customer's chat.

Run: ``make bench-first-message`` (or ``python -m bench.first_message --customers 30``);
results in ``bench/results/first-message-latest.{json,md}`` and docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.fakes.server import Call, Delivery
from tests.fakes.telegram_api import TOKEN as TELEGRAM_TOKEN
from tests.fakes.telegram_api import FakeTelegramAPI
from tests.fakes.telegram_api import rasa_credentials as telegram_credentials
from tests.fakes.whatsapp_api import FakeWhatsAppAPI, connector_env, notification, signed, text_message
from tests.fakes.whatsapp_api import rasa_credentials as whatsapp_credentials
from tests.integration.conftest import channel_assistant

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
TELEGRAM_SECRET = "bench-webhook_secret"
FIRST_MESSAGES = ("Where is my parcel? It was due on Monday", "hi", "I want a refund for my order",
                  "my card was charged twice")  # fmt: skip


class _Clocked:
    """What a fake records, with the moment (``perf_counter``) each chat first saw something."""

    def __init__(self) -> None:
        self.first_seen: dict[tuple[str, str], float] = {}
        self._clock_lock = threading.Lock()

    def stamp(self, what: str, chat: str) -> None:
        with self._clock_lock:
            self.first_seen.setdefault((what, chat), time.perf_counter())


class TimedWhatsApp(FakeWhatsAppAPI, _Clocked):
    """The fake Cloud API, stamping each customer's first read receipt and first message."""

    def __init__(self) -> None:
        FakeWhatsAppAPI.__init__(self)
        _Clocked.__init__(self)
        self.read_by: dict[str, str] = {}

    def _record(self, call: Call) -> None:
        if call.method == "read" and call.status == 200:
            self.stamp("sign", self.read_by.get(str(call.params.get("message_id")), "?"))
        super()._record(call)

    def _deliver(self, delivery: Delivery) -> None:
        self.stamp("message", delivery.chat)
        super()._deliver(delivery)


class TimedTelegram(FakeTelegramAPI, _Clocked):
    """The fake Bot API, stamping each chat's first message."""

    def __init__(self) -> None:
        FakeTelegramAPI.__init__(self)
        _Clocked.__init__(self)

    def _deliver(self, delivery: Delivery) -> None:
        self.stamp("message", delivery.chat)
        super()._deliver(delivery)


@dataclass
class Timings:
    """Seconds from the POST to the first sign and the first message, per customer."""

    sign: list[float] = field(default_factory=list)
    message: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        def figures(values: list[float]) -> dict[str, float]:
            ordered = sorted(values)
            p90 = ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]
            return {"p50_ms": round(statistics.median(ordered) * 1000, 1), "p90_ms": round(p90 * 1000, 1),
                    "max_ms": round(ordered[-1] * 1000, 1)}  # fmt: skip

        found = {"first_sign": figures(self.sign), "first_message": figures(self.message)}
        return {"customers": len(self.message), **found}


def _wait(first_seen: dict[tuple[str, str], float], key: tuple[str, str], timeout: float = 60.0) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if key in first_seen:
            return first_seen[key]
        time.sleep(0.002)
    raise TimeoutError(f"nothing for {key} within {timeout}s")


def _whatsapp_customer(rasa_url: str, api: TimedWhatsApp, number: int, text: str) -> tuple[float, float]:
    sender = f"49151{number:08d}"
    message = text_message(sender, text)
    api.read_by[message["id"]] = sender
    raw, headers = signed(notification([message], names={sender: "Maria Keller"}))
    started = time.perf_counter()
    answer = httpx.post(f"{rasa_url}/webhooks/whatsapp/webhook", content=raw, headers=headers, timeout=30)
    answer.raise_for_status()
    message_at = _wait(api.first_seen, ("message", sender))
    return _wait(api.first_seen, ("sign", sender)) - started, message_at - started


def _telegram_customer(rasa_url: str, api: TimedTelegram, number: int, text: str) -> tuple[float, float]:
    chat = 10_000_000 + number
    user = {"id": chat, "is_bot": False, "first_name": "Maria"}
    update = {"update_id": number, "message": {"message_id": number, "date": int(time.time()), "text": text,
                                               "chat": {"id": chat, "type": "private"}, "from": user}}  # fmt: skip
    started = time.perf_counter()
    answer = httpx.post(f"{rasa_url}/webhooks/telegram/webhook", json=update,
                        headers={"X-Telegram-Bot-Api-Secret-Token": TELEGRAM_SECRET}, timeout=30)  # fmt: skip
    answer.raise_for_status()
    seen = _wait(api.first_seen, ("message", str(chat))) - started
    return seen, seen


def measure(customers: int, warmup: int = 3) -> dict[str, Any]:
    """Start the stack, time ``customers`` first messages per connector (after ``warmup`` each); return the figures."""
    work = Path(tempfile.mkdtemp(prefix="firstreply-bench-first-message-"))
    whatsapp, telegram = TimedWhatsApp().start(), TimedTelegram().start()
    env = {**connector_env(whatsapp.base_url), "TELEGRAM_BOT_TOKEN": TELEGRAM_TOKEN,
           "TELEGRAM_WEBHOOK_SECRET": TELEGRAM_SECRET, "TELEGRAM_API_BASE_URL": telegram.base_url}  # fmt: skip
    credentials = whatsapp_credentials() + telegram_credentials(None)
    timings = {"whatsapp": Timings(), "telegram": Timings()}
    runs: dict[str, Callable[[str, int, str], tuple[float, float]]] = {
        "whatsapp": lambda url, n, text: _whatsapp_customer(url, whatsapp, n, text),
        "telegram": lambda url, n, text: _telegram_customer(url, telegram, n, text),
    }
    try:
        with channel_assistant(work, credentials, env, "/webhooks/whatsapp/") as started:
            for number in range(1, warmup + customers + 1):
                text = FIRST_MESSAGES[number % len(FIRST_MESSAGES)]
                # Alternate which connector goes first, so neither always meets a warmer server.
                order = ("whatsapp", "telegram") if number % 2 else ("telegram", "whatsapp")
                for name in order:
                    sign, message = runs[name](started.rasa_url, number, text)
                    if number > warmup:
                        timings[name].sign.append(sign)
                        timings[name].message.append(message)
                    time.sleep(0.3)  # let the conversation's other replies go out before the next customer
    finally:
        whatsapp.stop()
        telegram.stop()
    return {name: found.summary() for name, found in timings.items()}


def report(results: dict[str, Any]) -> str:
    """Return the results as a Markdown table."""
    lines = ["| Connector | Customers | First sign p50 / p90 (ms) | First message p50 / p90 / max (ms) |",
             "| --- | --- | --- | --- |"]  # fmt: skip
    for name, found in results.items():
        sign, message = found["first_sign"], found["first_message"]
        lines.append(f"| {name} | {found['customers']} | {sign['p50_ms']} / {sign['p90_ms']} | "
                     f"{message['p50_ms']} / {message['p90_ms']} / {message['max_ms']} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the bench and write its results."""
    parser = argparse.ArgumentParser(prog="python -m bench.first_message", description=__doc__)
    parser.add_argument("--customers", type=int, default=30, help="customers per connector (default 30)")
    arguments = parser.parse_args(argv)
    results = measure(arguments.customers)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "first-message-latest.json").write_text(json.dumps(results, indent=2) + "\n")
    table = report(results)
    (RESULTS / "first-message-latest.md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
