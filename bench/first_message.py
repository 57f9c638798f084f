"""Time to the first message a new customer sees, per connector: ``make bench-first-message``.

One Rasa server (``bot.launcher``, as ``make run`` starts it) with its action server serves
Telegram, Messenger, Instagram Direct and WhatsApp at once, against the local fakes of the Bot
API, the Graph API and the WhatsApp Cloud API (``tests/fakes/``), so the four connectors share
one process, one model and one moment of the shared machine. Each round, a new customer on each connector (the order
rotating every round) sends the same first message to its webhook as the platform does
(signed, batched in Meta's shape); measured on ``time.perf_counter`` from the POST:

* **first sign**: the first thing the customer's app shows; on Messenger and Instagram the
  ``mark_seen`` call, on WhatsApp the read receipt with the typing indicator (each sent as
  soon as the message is stored), on Telegram the typing indicator the connector puts in the
  webhook's answer for a new customer (``FIRSTREPLY_EDGE_GREETING``; the bench runs it on the fake
  Bot API as Telegram runs a method given there), else the reply itself;
* **first reply**: the first text message delivered to the customer.

The next customer writes only once the previous turn is quiet, so turns never overlap.
Each configuration runs twice, the channel's greeting of new customers off and then on
(``FIRSTREPLY_EDGE_GREETING``), each on its own servers. Writes
bench/results/first-message-latest.json and .md (``--quick``: first-message-quick.*).

``--burst``: a burst of new Telegram customers instead (``--customers``, default 200), all
sent at once over ``--connections`` (default 40) keep-alive connections, as Telegram does when
many people write at the same moment. Per customer, from the POST: the **first sign** (the
typing indicator or the greeting) and the **first answer** (the greeting, the acknowledgement
and the first question: the third message). Each of ``--trials`` trials (default 3) runs the
channel's greeting off and on, each on fresh servers, the order alternating; the table gives
p50/p90/p99/max over every customer of every trial, and each trial's p99 (the spread). Writes
bench/results/first-message-burst-latest.json and .md. ``--compare`` sets other settings side by
side instead (``workers``: one Rasa worker against one per core, with ``make run``'s SQLite
stores; ``reply-calls``; ``sending-thread``; ``handling``; ``front``; results in
first-message-burst-<compare>-latest.*),
and ``--latency-ms`` makes the fake platforms answer each call that much later, as a platform
across a network does.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.procs import publish, thread_cpu_seconds
from bench.run import loadavg, machine_facts
from bot.front import PULL_SECONDS_BEHIND_FRONT, RASA_NICE
from tests.fakes.graph_api import IG_ID, PAGE_ID, FakeGraphAPI, dm, encoded, rasa_environment, signed_headers
from tests.fakes.graph_api import RASA_CREDENTIALS as META_CREDENTIALS
from tests.fakes.graph_api import webhook_body
from tests.fakes.server import Call, Delivery
from tests.fakes.telegram_api import RASA_CREDENTIALS as TELEGRAM_CREDENTIALS
from tests.fakes.telegram_api import TOKEN as TELEGRAM_TOKEN
from tests.fakes.telegram_api import FakeTelegramAPI
from tests.fakes.whatsapp_api import FakeWhatsAppAPI, connector_env, notification, signed, text_message
from tests.fakes.whatsapp_api import rasa_credentials as whatsapp_credentials
from tests.processes import base_env, free_ports, start, start_action_server, start_front, start_rasa_server
from tests.processes import wait_until_up
from tests.processes import write_endpoints

CONNECTORS = ("telegram", "messenger", "instagram", "whatsapp")
TELEGRAM_SECRET = "bench-first-message-secret"
# Each customer writes their own words: the NLU keeps the embeddings of texts it read lately,
# so a burst of one identical message would measure that memory, not the reading.
FIRST_MESSAGES = (
    "Hi, where is my parcel? I ordered it last week, order {n}",
    "my order {n} still hasn't arrived and it's been 10 days",
    "Tracking for order {n} hasn't moved since Monday. Where is it?",
    "Hello, I paid for express delivery on order {n} and it is late",
    "Where is my package?? order number {n}, nothing since the 3rd",
    "hey my delivery {n} was supposed to come yesterday, still waiting",
)


def first_message(number: int) -> str:
    """Return customer ``number``'s first message: a late delivery, in words of their own."""
    return FIRST_MESSAGES[number % len(FIRST_MESSAGES)].format(n=480_000 + number * 37)
TURN_TIMEOUT_S = 60.0
QUIET_S = 0.6
# The burst: how many new customers write at once, over how many connections, and what their first answer is.
BURST_CUSTOMERS = 200
BURST_CONNECTIONS = 40
BURST_TRIALS = 3
FIRST_ANSWER_MESSAGES = 3  # the greeting, the acknowledgement, the first question
BURST_TIMEOUT_S = 600.0


@dataclass
class Stamps:
    """When each customer first saw something, on ``time.perf_counter``'s clock (filled by the fakes' threads)."""

    sign: dict[str, float] = field(default_factory=dict)
    reply: dict[str, float] = field(default_factory=dict)
    last: dict[str, float] = field(default_factory=dict)
    # Every message each customer received, in order (the burst's first answer is the third).
    messages: dict[str, list[float]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def seen(self, customer: str, *, reply: bool) -> None:
        now = time.perf_counter()
        with self.lock:
            self.sign.setdefault(customer, now)
            if reply:
                self.reply.setdefault(customer, now)
                self.last[customer] = now
                self.messages.setdefault(customer, []).append(now)


class TimedGraphAPI(FakeGraphAPI):
    """The fake Graph API, stamping each customer's first ``mark_seen`` and first message."""

    def __init__(self, stamps: Stamps) -> None:
        super().__init__()
        self.stamps = stamps

    def _record(self, call: Call) -> None:
        if call.method == "sender_action" and call.status == 200:
            self.stamps.seen(str(call.params["recipient"]["id"]), reply=False)
        super()._record(call)

    def _deliver(self, delivery: Delivery) -> None:
        self.stamps.seen(delivery.chat, reply=True)
        super()._deliver(delivery)


class TimedBotAPI(FakeTelegramAPI):
    """The fake Bot API, stamping each chat's first typing indicator and first message."""

    def __init__(self, stamps: Stamps) -> None:
        super().__init__()
        self.stamps = stamps

    def _record(self, call: Call) -> None:
        if call.method == "sendChatAction" and call.status == 200:
            self.stamps.seen(str(call.params["chat_id"]), reply=False)
        super()._record(call)

    def _deliver(self, delivery: Delivery) -> None:
        self.stamps.seen(delivery.chat, reply=True)
        super()._deliver(delivery)


class TimedWhatsApp(FakeWhatsAppAPI):
    """The fake Cloud API, stamping each customer's first read receipt (with typing) and first message."""

    def __init__(self, stamps: Stamps) -> None:
        super().__init__()
        self.stamps = stamps
        self.read_by: dict[str, str] = {}

    def _record(self, call: Call) -> None:
        if call.method == "read" and call.status == 200:
            self.stamps.seen(self.read_by.get(str(call.params.get("message_id")), "?"), reply=False)
        super()._record(call)

    def _deliver(self, delivery: Delivery) -> None:
        self.stamps.seen(delivery.chat, reply=True)
        super()._deliver(delivery)


@dataclass(frozen=True)
class Setting:
    """One column of the burst's comparison: how Rasa runs, and how fast the platform answers."""

    label: str
    workers: int = 1
    # The conversations and their locks in SQLite files, as ``make run`` keeps them (else in memory).
    make_run_stores: bool = False
    latency_s: float = 0.0
    env: dict[str, str] = field(default_factory=dict)
    # The front process (``bot.front``) on the public port, as ``make run`` starts it with a messaging app.
    front: bool = False
    # Rasa's workers at this lower priority (``nice``), as ``make run`` starts them behind the front.
    rasa_nice: int = 0
    # A server alone, with no Rasa: "null" (``bench.null_webhook``, which only answers: the floor)
    # or "front" (the front process with nothing behind it: what it adds to the floor).
    alone: str = ""


# What ``make run`` writes into its endpoints.yml (endpoints.yml), with the files in the trial's directory.
MAKE_RUN_STORES = """tracker_store:
  type: bot.trackers.SQLiteTrackerStore
  db: {work}/trackers.db
lock_store:
  type: bot.locks.SQLiteLockStore
  db: {work}/locks.db
"""


@dataclass
class Fakes:
    """The platforms' fake APIs the connectors talk to (and, once started, Rasa's URL)."""

    graph: TimedGraphAPI
    telegram: TimedBotAPI
    whatsapp: TimedWhatsApp
    rasa_url: str = ""
    # Rasa's own address (behind the front, when there is one).
    rasa_own_url: str = ""
    # The servers' process ids by role ("rasa", "actions", "front"), each with its children.
    pids: dict[str, int] = field(default_factory=dict)

    def stop(self) -> None:
        for fake in (self.graph, self.telegram, self.whatsapp):
            fake.stop()


def telegram_update(customer: str, number: int) -> dict[str, Any]:
    """Return the update Telegram POSTs for customer ``customer``'s first message (``first_message(number)``)."""
    chat = {"id": int(customer), "type": "private", "first_name": "Maria"}
    return {"update_id": number, "message": {"message_id": number, "date": int(time.time()), "chat": chat,
                                             "from": {**chat, "is_bot": False}, "text": first_message(number)}}  # fmt: skip


def _post(
    client: httpx.Client, connector: str, customer: str, fakes: Fakes, number: int,
    acked: Callable[[], None] | None = None,
) -> None:  # fmt: skip
    """POST the customer's first message as the platform does; ``acked`` is called once the webhook answered."""
    if connector == "whatsapp":
        message = text_message(customer, first_message(number))
        fakes.whatsapp.read_by[message["id"]] = customer
        raw, headers = signed(notification([message], names={customer: "Maria Keller"}))
        answer = client.post("/webhooks/whatsapp/webhook", content=raw, headers=headers)
    elif connector == "telegram":
        answer = client.post("/webhooks/telegram/webhook", json=telegram_update(customer, number),
                             headers={"X-Telegram-Bot-Api-Secret-Token": TELEGRAM_SECRET})  # fmt: skip
    else:
        graph = fakes.graph
        graph.customer_wrote(customer)
        obj, account = ("page", PAGE_ID) if connector == "messenger" else ("instagram", IG_ID)
        raw = encoded(webhook_body(obj, account, [dm(customer, f"m_bench_{number}", account, text=first_message(number))]))
        answer = client.post(f"/webhooks/{connector}/webhook", content=raw, headers=signed_headers(raw))
    answer.raise_for_status()
    if acked is not None:
        acked()
    if connector == "telegram":  # Telegram runs a method given in the answer (the typing indicator)
        fakes.telegram.run_webhook_answer(answer.json())


def _wait_for_turn(stamps: Stamps, customer: str) -> None:
    """Wait for the customer's first reply, then until no message came for ``QUIET_S``."""
    deadline = time.perf_counter() + TURN_TIMEOUT_S
    while time.perf_counter() < deadline:
        with stamps.lock:
            last = stamps.last.get(customer)
        if last is not None and time.perf_counter() - last >= QUIET_S:
            return
        time.sleep(0.01)
    raise RuntimeError(f"customer {customer} got no reply within {TURN_TIMEOUT_S:.0f} s")


def _percentile(ordered: list[float], share: float) -> float:
    """Return the nearest-rank percentile ``share`` (0-1) of the sorted ``ordered`` values."""
    return ordered[max(0, min(len(ordered) - 1, math.ceil(share * len(ordered)) - 1))]


def _summary(values: list[float]) -> dict[str, float] | None:
    ordered = sorted(values)
    if not ordered:
        return None  # not measured in this setting (the floor server sends nothing)
    return {
        "n": len(ordered),
        "p50_ms": round(statistics.median(ordered) * 1000, 1),
        "p90_ms": round(_percentile(ordered, 0.9) * 1000, 1),
        "p99_ms": round(_percentile(ordered, 0.99) * 1000, 1),
        "max_ms": round(ordered[-1] * 1000, 1),
    }


def telegram_env(telegram: FakeTelegramAPI, work: Path) -> dict[str, str]:
    """Return a server's environment for the Telegram connector against ``telegram``, its inbox in ``work``."""
    return {**base_env(), "TELEGRAM_BOT_TOKEN": TELEGRAM_TOKEN, "TELEGRAM_WEBHOOK_SECRET": TELEGRAM_SECRET,
            "TELEGRAM_API_BASE_URL": telegram.base_url, "FIRSTREPLY_CHANNEL_DB": str(work / "channels.db")}  # fmt: skip


@contextmanager
def serving(work: Path, stamps: Stamps, edge_greeting: str, telegram_only: bool = False,
            setting: Setting | None = None) -> Iterator[Fakes]:  # fmt: skip
    """Start the fakes, the action server and Rasa (``bot.launcher``, as ``make run``); yield the fakes.

    ``Fakes.rasa_url`` is then Rasa's address; ``telegram_only``: no other connector configured;
    ``setting``: Rasa's workers and stores, and the platforms' answer latency (default: one
    worker, conversations in memory, answers at once).
    """
    setting = setting or Setting("default")
    fakes = Fakes(TimedGraphAPI(stamps).start(), TimedBotAPI(stamps).start(), TimedWhatsApp(stamps).start())
    graph, telegram = fakes.graph, fakes.telegram
    for fake in (graph, telegram, fakes.whatsapp):
        fake.answer_latency = setting.latency_s
    rasa_port, actions_port = free_ports(2)
    credentials = TELEGRAM_CREDENTIALS
    if not telegram_only:
        credentials += META_CREDENTIALS + whatsapp_credentials()
    (work / "credentials.yml").write_text(credentials)
    env = {
        **telegram_env(telegram, work),
        **rasa_environment(graph.base_url),
        **connector_env(fakes.whatsapp.base_url),
        "FIRSTREPLY_CASE_DB": f"sqlite:///{work / 'cases.db'}",
        "FIRSTREPLY_EDGE_GREETING": edge_greeting, "SANIC_WORKERS": str(setting.workers), **setting.env,
    }  # fmt: skip
    stores = MAKE_RUN_STORES.format(work=work) if setting.make_run_stores else ""
    actions = start_action_server("action server", actions_port, env, work / "actions.log")
    if setting.front:
        env.setdefault("FIRSTREPLY_PULL_SECONDS", str(PULL_SECONDS_BEHIND_FRONT))  # as make run sets it
    rasa = start_rasa_server("rasa server", rasa_port, write_endpoints(work, actions_port, stores), env,
                             work / "rasa.log", credentials=work / "credentials.yml", nice=setting.rasa_nice)  # fmt: skip
    processes = [rasa, actions]
    fakes.pids = {"Rasa": rasa.popen.pid, "action server": actions.popen.pid}
    fakes.rasa_url = fakes.rasa_own_url = f"http://127.0.0.1:{rasa_port}"
    if setting.front:
        [front_port] = free_ports(1)
        processes.append(start_front("front", front_port, fakes.rasa_own_url, work / "credentials.yml", env,
                                     work / "front.log"))  # fmt: skip
        fakes.rasa_url = f"http://127.0.0.1:{front_port}"
        fakes.pids["front"] = processes[-1].popen.pid
    try:
        wait_until_up(actions, f"http://127.0.0.1:{actions_port}/health")
        ready = "/webhooks/telegram/" if telegram_only else "/webhooks/messenger/"
        wait_until_up(rasa, f"{fakes.rasa_own_url}{ready}", 300)
        if setting.front:
            wait_until_up(processes[-1], f"{fakes.rasa_url}{ready}", 300)
        yield fakes
    finally:
        for process in processes:
            process.stop()
        fakes.stop()


def measure(rounds: int, work: Path, edge_greeting: str = "on") -> dict[str, Any]:
    """Start the servers and the fakes, run ``rounds`` rounds, return the figures per connector."""
    stamps = Stamps()
    timings: dict[str, dict[str, list[float]]] = {c: {"sign": [], "reply": []} for c in CONNECTORS}
    with serving(work, stamps, edge_greeting) as fakes:
        customers = range(len(CONNECTORS) * (rounds + 1))
        fakes.graph.profiles.update({str(7_000_000 + n): {"first_name": "Maria", "name": "Maria"} for n in customers})
        with httpx.Client(base_url=fakes.rasa_url, timeout=30) as client:
            number = 0
            for round_number in range(rounds + 1):  # round 0 warms every connector up, unmeasured
                turn = round_number % len(CONNECTORS)
                for connector in CONNECTORS[turn:] + CONNECTORS[:turn]:
                    customer = str((4915100000000 if connector == "whatsapp" else 7_000_000) + number)
                    number += 1
                    started = time.perf_counter()
                    _post(client, connector, customer, fakes, number)
                    _wait_for_turn(stamps, customer)
                    if round_number:
                        timings[connector]["sign"].append(stamps.sign[customer] - started)
                        timings[connector]["reply"].append(stamps.reply[customer] - started)
    return {c: {"first_sign": _summary(t["sign"]), "first_reply": _summary(t["reply"])} for c, t in timings.items()}


def burst(customers: int, connections: int, work: Path, setting: Setting) -> dict[str, list[float]]:
    """Send ``customers`` new Telegram customers' first messages at once over ``connections``; return their timings.

    One customer first warms the server up, unmeasured. Returns, per measured customer (in
    seconds from their POST), the webhook's answer, the first sign and the first answer (its third message).
    """
    stamps = Stamps()
    if setting.alone:
        acked, sign = alone_burst(setting.alone, customers, connections, work, stamps)
        return {"windows": {}, "cpu_ms": {}, "acked": acked, "sign": sign, "answer": []}
    with serving(work, stamps, "on", telegram_only=True, setting=setting) as fakes:
        with httpx.Client(base_url=fakes.rasa_url, timeout=60) as client:
            _post(client, "telegram", "6999999", fakes, 1)
        _wait_for_turn(stamps, "6999999")
        cpu_before = _cpu_by_thread(fakes.pids)
        started, acked, typing = _send_burst(fakes.rasa_url, customers, connections)
        deadline = time.perf_counter() + BURST_TIMEOUT_S
        while True:
            with stamps.lock:
                answered = sum(len(stamps.messages.get(c, ())) >= FIRST_ANSWER_MESSAGES for c in started)
            if answered == len(started):
                break
            if time.perf_counter() > deadline:
                raise RuntimeError(f"{len(started) - answered} of {len(started)} customers got no first answer "
                                   f"within {BURST_TIMEOUT_S:.0f} s; see {work / 'rasa.log'}")  # fmt: skip
            time.sleep(0.05)
        cpu_after = _cpu_by_thread(fakes.pids)
        windows = httpx.get(f"{fakes.rasa_own_url}/webhooks/telegram/replies", timeout=30).json()
        signs = _first_signs(stamps, started, acked, typing)
    return {
        "windows": windows,
        # CPU per customer, ms, by process and kind of thread, from the burst's start to its last first answer.
        "cpu_ms": {where: round((used - cpu_before.get(where, 0.0)) * 1000 / len(started), 2)
                   for where, used in cpu_after.items()},  # fmt: skip
        "acked": [acked[c] - t for c, t in started.items()],
        "sign": [signs[c] - t for c, t in started.items()],
        "answer": [stamps.messages[c][FIRST_ANSWER_MESSAGES - 1] - t for c, t in started.items()],
    }


def _cpu_by_thread(pids: dict[str, int]) -> dict[str, float]:
    """Return the CPU seconds used so far by each server (``pids``) and kind of thread, as "server: kind"."""
    return {f"{role}: {kind}": used for role, pid in pids.items() for kind, used in thread_cpu_seconds(pid).items()}


def render(results: dict[str, Any]) -> str:
    """Return the figures as the Markdown table docs/benchmarks.md quotes."""
    lines = [
        f"Time to the first message, {results['rounds']} new customers per connector, one Rasa process "
        f"(load average before: {results['loadavg_before']})",
        "",
        "| Channel greeting | Connector | first sign p50 | p90 | first reply p50 | p90 | max |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for switch, connectors in results["runs"].items():
        for connector in CONNECTORS:
            sign, reply = connectors[connector]["first_sign"], connectors[connector]["first_reply"]
            lines.append(f"| {switch} | {connector} | {sign['p50_ms']:.0f} ms | {sign['p90_ms']:.0f} ms "
                         f"| {reply['p50_ms']:.0f} ms | {reply['p90_ms']:.0f} ms | {reply['max_ms']:.0f} ms |")  # fmt: skip
    return "\n".join(lines) + "\n"


def _send_burst(base_url: str, customers: int, connections: int) -> tuple[dict[str, float], dict[str, float], set[str]]:
    """POST ``customers`` new customers' first messages at once over ``connections`` (``bench.burst_client``).

    Returns when each was sent and answered, and the customers whose answer carried the
    typing indicator (Telegram shows it as it reads the answer).
    """
    requests = []
    for number in range(customers):
        customer = str(7_000_000 + number)
        requests.append({"key": customer, "body": telegram_update(customer, 10 + number)})
    command = [sys.executable, "-m", "bench.burst_client", "--url", f"{base_url}/webhooks/telegram/webhook",
               "--warm", f"{base_url}/webhooks/telegram/", "--connections", str(connections),
               "--header", f"X-Telegram-Bot-Api-Secret-Token:{TELEGRAM_SECRET}"]  # fmt: skip
    done = subprocess.run(command, input=json.dumps(requests), capture_output=True, text=True, timeout=BURST_TIMEOUT_S,
                          env=base_env())  # fmt: skip
    if done.returncode:
        raise RuntimeError(f"the burst's client failed: {done.stderr[-2000:]}")
    timings = json.loads(done.stdout)
    started = {customer: float(t[0]) for customer, t in timings.items()}
    acked = {customer: float(t[1]) for customer, t in timings.items()}
    typing = {customer for customer, t in timings.items() if t[2] == "sendChatAction"}
    return started, acked, typing


def _first_signs(stamps: Stamps, started: dict[str, float], acked: dict[str, float], typing: set[str]) -> dict[str, float]:
    """Return when each customer first saw something: the typing in the webhook's answer, or the first message."""
    with stamps.lock:
        seen = dict(stamps.sign)
    signs = {}
    for customer in started:
        candidates = [acked[customer]] if customer in typing else []
        if customer in seen:
            candidates.append(seen[customer])
        if candidates:
            signs[customer] = min(candidates)
    return signs


def alone_burst(server: str, customers: int, connections: int, work: Path, stamps: Stamps) -> tuple[list[float], list[float]]:
    """Send the burst to one server with no Rasa (``Setting.alone``); return when each was answered and first saw a sign."""
    fakes = Fakes(TimedGraphAPI(stamps).start(), TimedBotAPI(stamps).start(), TimedWhatsApp(stamps).start())
    [port] = free_ports(1)
    if server == "null":
        process = start("null webhook", [sys.executable, "-m", "bench.null_webhook", str(port)], base_env(),
                        work / "null.log")  # fmt: skip
    else:
        (work / "credentials.yml").write_text(TELEGRAM_CREDENTIALS)
        process = start_front("front", port, "http://127.0.0.1:9", work / "credentials.yml",
                              telegram_env(fakes.telegram, work), work / "front.log")  # fmt: skip
    fakes.rasa_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(process, f"{fakes.rasa_url}/webhooks/telegram", 120)
        with httpx.Client(base_url=fakes.rasa_url, timeout=60) as client:
            _post(client, "telegram", "6999999", fakes, 1)
        time.sleep(1)
        started, acked, typing = _send_burst(fakes.rasa_url, customers, connections)
        time.sleep(2)  # the last greetings
        signs = _first_signs(stamps, started, acked, typing)
        return [acked[c] - t for c, t in started.items()], [signs[c] - t for c, t in started.items() if c in signs]
    finally:
        process.stop()
        fakes.stop()


def render_burst(results: dict[str, Any]) -> str:
    """Return the burst's figures as the Markdown table docs/benchmarks.md quotes."""
    lines = [
        f"A burst of {results['customers']} new Telegram customers at once over {results['connections']} connections, "
        f"{results['trials']} trials per setting, the platform answering after {results['latency_ms']:.0f} ms "
        f"(load average before: {results['loadavg_before']}, after: {results['loadavg_after']})",
        "",
        "| Setting | Measure | p50 | p90 | p99 | max | p99 of each trial |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label, run in results["runs"].items():
        for measure_name, name in (("webhook_answered", "webhook answered"), ("first_sign", "first sign"),
                                   ("first_answer", "first answer")):  # fmt: skip
            whole = run[measure_name]
            if whole is None:
                continue
            trials = ", ".join(f"{t[measure_name]['p99_ms']:.0f}" for t in run["trials"])
            lines.append(f"| {label} | {name} | {whole['p50_ms']:.0f} ms | {whole['p90_ms']:.0f} ms "
                         f"| {whole['p99_ms']:.0f} ms | {whole['max_ms']:.0f} ms | {trials} ms |")  # fmt: skip
    lines += ["", "Replies in doubt (from the \"sending\" record to the \"sent\" one), per trial, ms p50 / p99 / max "
              "(Rasa's `GET /webhooks/telegram/replies` after the burst):", ""]  # fmt: skip
    for label, run in results["runs"].items():
        for number, trial in enumerate(run["trials"], 1):
            if not trial["in_doubt"]:
                continue
            window = trial["in_doubt"]["in_doubt_window_ms"]
            lines.append(f"- {label}, trial {number}: {trial['in_doubt']['replies']} replies, "
                         f"{window['p50']} / {window['p99']} / {window['max']}")  # fmt: skip
    return "\n".join(lines + _cpu_table(results["runs"])) + "\n"


def _cpu_table(runs: dict[str, Any]) -> list[str]:
    """Return the lines of the CPU table: ms per customer by server and kind of thread, median (range) of the trials."""
    measured = {label: [t.get("cpu_ms_per_customer") or {} for t in run["trials"]] for label, run in runs.items()}
    measured = {label: trials for label, trials in measured.items() if any(trials)}
    if not measured:
        return []
    for trials in measured.values():
        for trial in trials:
            servers = {where.split(": ", 1)[0] for where in trial}
            trial.update({f"{server}: all threads": sum(ms for where, ms in trial.items()
                                                        if where.startswith(f"{server}: ")) for server in servers})
            trial["all servers"] = sum(ms for where, ms in trial.items() if where.endswith(": all threads"))
    rows = sorted({where for trials in measured.values() for trial in trials for where in trial},
                  key=lambda where: (where == "all servers", where.split(": ")[0], not where.endswith("all threads"),
                                     -max(trial.get(where, 0.0) for ts in measured.values() for trial in ts)))
    lines = ["", "CPU per customer (ms) from the burst's start to its last first answer, by server and kind of thread "
             "(`bench.procs.thread_cpu_seconds`): median of the trials (lowest-highest):", "",
             "| Server: threads | " + " | ".join(measured) + " |", "| --- |" + " --- |" * len(measured)]  # fmt: skip
    for where in rows:
        cells = []
        for trials in measured.values():
            values = sorted(trial.get(where, 0.0) for trial in trials)
            cells.append(f"{statistics.median(values):.1f} ({values[0]:.1f}-{values[-1]:.1f})")
        lines.append(f"| {where} | " + " | ".join(cells) + " |")
    return lines


def burst_settings(compare: str, latency_s: float) -> list[Setting]:
    """Return the settings a burst comparison sets side by side (``--compare``).

    ``greeting``: the channel's greeting of new customers off and on, one Rasa worker, the
    conversations in memory. ``workers``: one Rasa worker against one per core, each with
    ``make run``'s SQLite stores and the greeting on. ``reply-calls``: four replies in flight
    at once per process against one (``FIRSTREPLY_REPLY_CALLS``), as ``make run`` starts it (its
    stores, the front).
    ``sending-thread``: the replies' calls on Rasa's loop against the sending thread
    (``FIRSTREPLY_SENDING_THREAD``), one worker, the greeting on. ``handling``: 4, 2 and 1
    updates handled at once per process (``FIRSTREPLY_HANDLING_AT_ONCE``), one Rasa worker per
    core with ``make run``'s stores. ``priority``: behind the front, Rasa's workers at ``make run``'s
    ``nice`` against the lowest priority (19). ``encoder``: MiniLM's forward pass on NumPy against
    TensorFlow (``FIRSTREPLY_ENCODER_BACKEND``), ``make run`` as it starts.
    """
    cores = os.cpu_count() or 1
    if compare == "greeting":
        pairs = [Setting(f"greeting {s}", latency_s=latency_s, env={"FIRSTREPLY_EDGE_GREETING": s}) for s in ("off", "on")]
    elif compare == "workers":
        pairs = [Setting(f"{n} Rasa worker{'s' if n > 1 else ''}", workers=n, make_run_stores=True, latency_s=latency_s)
                 for n in (1, cores)]  # fmt: skip
    elif compare == "reply-calls":
        pairs = [Setting(f"{n} repl{'ies' if n > 1 else 'y'} in flight", workers=cores, make_run_stores=True,
                         latency_s=latency_s, env={"FIRSTREPLY_REPLY_CALLS": str(n)}, front=True, rasa_nice=RASA_NICE)
                 for n in (4, 1)]  # fmt: skip
    elif compare == "sending-thread":
        pairs = [Setting(f"sending thread {s}", latency_s=latency_s, env={"FIRSTREPLY_SENDING_THREAD": s})
                 for s in ("off", "on")]  # fmt: skip
    elif compare == "handling":
        pairs = [Setting(f"{n} handled at once", workers=cores, make_run_stores=True, latency_s=latency_s,
                         env={"FIRSTREPLY_HANDLING_AT_ONCE": str(n)}) for n in (4, 2, 1)]  # fmt: skip
    elif compare == "front":
        pairs = [Setting("front off", workers=cores, make_run_stores=True, latency_s=latency_s),
                 Setting("front on", workers=cores, make_run_stores=True, latency_s=latency_s, front=True,
                         rasa_nice=RASA_NICE),
                 Setting("front alone", latency_s=latency_s, alone="front"),
                 Setting("server that only answers", latency_s=latency_s, alone="null")]  # fmt: skip
    elif compare == "encoder":
        pairs = [Setting(f"MiniLM on {backend}", workers=cores, make_run_stores=True, latency_s=latency_s, front=True,
                         rasa_nice=RASA_NICE, env={"FIRSTREPLY_ENCODER_BACKEND": backend})
                 for backend in ("numpy", "tensorflow")]  # fmt: skip
    elif compare == "priority":
        pairs = [Setting(f"Rasa at nice {n}", workers=cores, make_run_stores=True, latency_s=latency_s, front=True,
                         rasa_nice=n) for n in (RASA_NICE, 19)]  # fmt: skip
    else:
        raise ValueError(f"unknown comparison {compare!r}; one of {', '.join(COMPARISONS)}")
    return pairs


COMPARISONS = ("greeting", "workers", "reply-calls", "sending-thread", "handling", "front", "priority", "encoder")


def run_bursts(customers: int, connections: int, trials: int, settings: list[Setting]) -> dict[str, Any]:
    """Run ``trials`` bursts per setting, each on fresh servers, the order alternating; return the figures."""
    results: dict[str, Any] = {"customers": customers, "connections": connections, "trials": trials,
                               "latency_ms": settings[0].latency_s * 1000, "machine": machine_facts(),
                               "loadavg_before": loadavg()}  # fmt: skip
    timings: dict[str, dict[str, list[float]]] = {s.label: {"acked": [], "sign": [], "answer": []} for s in settings}
    per_trial: dict[str, list[dict[str, Any]]] = {s.label: [] for s in settings}
    for trial in range(trials):
        for setting in settings if trial % 2 == 0 else settings[::-1]:
            with tempfile.TemporaryDirectory(prefix="firstreply-first-message-burst-") as work:
                measured = burst(customers, connections, Path(work), setting)
            for measure_name in ("acked", "sign", "answer"):
                timings[setting.label][measure_name] += measured[measure_name]
            per_trial[setting.label].append({
                "webhook_answered": _summary(measured["acked"]), "first_sign": _summary(measured["sign"]),
                "first_answer": _summary(measured["answer"]), "in_doubt": measured["windows"],
                "cpu_ms_per_customer": measured["cpu_ms"], "loadavg": loadavg(),
            })  # fmt: skip
            print(f"trial {trial + 1}, {setting.label}: " + ", ".join(
                f"{name} p99 {figures['p99_ms']:.0f} ms" for name, figures in per_trial[setting.label][-1].items()
                if name in ("webhook_answered", "first_sign", "first_answer") and figures), flush=True)  # fmt: skip
    results["runs"] = {
        label: {"webhook_answered": _summary(t["acked"]), "first_sign": _summary(t["sign"]),
                "first_answer": _summary(t["answer"]), "trials": per_trial[label]}
        for label, t in timings.items()
    }
    results["loadavg_after"] = loadavg()
    return results


def main() -> None:
    """Run the benchmark and write its results."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=30, help="new customers per connector (default 30)")
    parser.add_argument("--quick", action="store_true", help="5 rounds, results in first-message-quick.*")
    parser.add_argument("--burst", action="store_true", help="a burst of new Telegram customers at once instead")
    parser.add_argument("--customers", type=int, default=BURST_CUSTOMERS,
                        help=f"burst size (default {BURST_CUSTOMERS})")  # fmt: skip
    parser.add_argument("--connections", type=int, default=BURST_CONNECTIONS,
                        help=f"connections the burst comes over (default {BURST_CONNECTIONS})")  # fmt: skip
    parser.add_argument("--trials", type=int, default=BURST_TRIALS, help=f"bursts per setting (default {BURST_TRIALS})")
    parser.add_argument("--compare", choices=COMPARISONS, default="greeting",
                        help="what the burst sets side by side (default: the channel's greeting off and on)")
    parser.add_argument("--latency-ms", type=float, default=0.0,
                        help="the fake platforms answer each call this long after taking it (default 0)")
    args = parser.parse_args()
    if args.burst:
        results = run_bursts(args.customers, args.connections, args.trials,
                             burst_settings(args.compare, args.latency_ms / 1000))  # fmt: skip
        name = "first-message-burst" + ("" if args.compare == "greeting" else f"-{args.compare}")
        publish(name, results, render_burst(results))
        return
    rounds = 5 if args.quick else args.rounds
    results = {"rounds": rounds, "machine": machine_facts(), "loadavg_before": loadavg()}
    results["runs"] = {}
    # The channel's greeting of new customers off (the dialogue greets), then on: side by side.
    for switch in ("off", "on"):
        with tempfile.TemporaryDirectory(prefix="firstreply-first-message-") as work:
            results["runs"][switch] = measure(rounds, Path(work), switch)
    results["loadavg_after"] = loadavg()
    publish("first-message-quick" if args.quick else "first-message", results, render(results))


if __name__ == "__main__":
    main()
