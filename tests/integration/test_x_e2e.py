"""X customers through real ``rasa run`` and ``rasa run actions`` processes.

Rasa loads ``models/firstreply.tar.gz`` with a temporary credentials.yml that enables
``bot.channels.x.XInput`` against the local fake X API (``tests/fakes/x_api.py``); events
are POSTed to Rasa's webhook exactly as X's Account Activity API sends them (signed), and
what the customer sees is read from the fake's deliveries (DMs and public replies).

A second Rasa (a replica: the same channel database and SQLite tracker store) starts
alongside; the crash test ``kill -9``s it while it holds an acknowledged event, and the
first one takes the event over.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.ops import load_support_config
from tests.fakes.server import HOLD
from tests.fakes.x_api import (
    ACCESS_TOKEN,
    ACCESS_TOKEN_SECRET,
    BRAND_HANDLE,
    BRAND_ID,
    CONSUMER_KEY,
    CONSUMER_SECRET,
    CREDENTIALS,
    DM_METHOD,
    FakeXAPI,
    activity,
    dm_event,
    post,
    signed_headers,
    user,
)
from tests.processes import ROOT, VENV_BIN, Process, base_env, free_ports, require_model, start_rasa_server
from tests.processes import wait_until, wait_until_up, write_endpoints
from tests.integration.conftest import Assistant, serve_assistant

pytestmark = pytest.mark.integration

DM_LINK = f"https://x.com/messages/compose?recipient_id={BRAND_ID}"
MARIA = user("2244994945", "Maria Silva", "maria_k")
JOAO = user("2244994946", "João Costa", "joao_c")
ANA = user("2244994947", "Ana Lima", "ana_l")


@dataclass
class Running:
    api: FakeXAPI
    rasa_url: str
    env: dict[str, str]
    processes: list[Process]
    work: Path
    replica_url: str
    ids: Iterator[int] = field(default_factory=lambda: itertools.count(7000))

    def post(self, body: bytes, headers: dict[str, str] | None = None, rasa_url: str = "") -> httpx.Response:
        """POST one webhook call to Rasa (or the one at ``rasa_url``), signed as X signs it unless ``headers`` are given."""
        return httpx.post(f"{rasa_url or self.rasa_url}/webhooks/x/webhook", content=body,
                          headers=signed_headers(body) if headers is None else headers, timeout=10)  # fmt: skip

    def dm(self, sender: dict[str, Any], text: str, event_id: str | None = None, rasa_url: str = "") -> bytes:
        """Send a DM from ``sender`` (it must be taken); return the body, for a redelivery."""
        body = activity(dms=[dm_event(event_id or str(next(self.ids)), sender, text)], users=[sender])
        answer = self.post(body, rasa_url=rasa_url)
        assert (answer.status_code, answer.json()) == (200, {"ok": True})
        return body

    def replies(self, to: str, count: int, expected: int, quiet: float = 1.5) -> list[str]:
        """Wait for ``expected`` DMs to ``to`` after the first ``count``, then ``quiet`` s without another."""
        seen, since = [-1], [0.0]

        def probe() -> list[str] | None:
            sent = self.api.dms(to)
            if len(sent) != seen[0]:
                seen[0], since[0] = len(sent), time.monotonic()
                return None
            return sent[count:] if len(sent) >= count + expected and time.monotonic() - since[0] >= quiet else None

        return wait_until(f"{expected} DM(s) to {to}", probe, 90, self.processes, interval=0.25)

    def step(self, sender: dict[str, Any], text: str, expected: int) -> list[str]:
        before = len(self.api.dms(sender["id_str"]))
        self.dm(sender, text)
        return self.replies(sender["id_str"], before, expected)

    def cases(self) -> list[dict[str, Any]]:
        listed = subprocess.run([str(VENV_BIN / "python"), "-m", "bot", "cases", "list", "--json"], cwd=ROOT,
                                env=self.env, capture_output=True, text=True, check=True)  # fmt: skip
        return list(json.loads(listed.stdout))


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    require_model()
    work = tmp_path_factory.mktemp("x-e2e")
    api = FakeXAPI().start()
    rasa_port, actions_port, replica_port = free_ports(3)
    (work / "credentials.yml").write_text(CREDENTIALS)
    endpoints = write_endpoints(
        work, actions_port, f"tracker_store:\n  type: bot.trackers.SQLiteTrackerStore\n  db: {work / 'trackers.db'}\n"
    )
    env = {
        **base_env(),
        "X_CONSUMER_KEY": CONSUMER_KEY, "X_CONSUMER_SECRET": CONSUMER_SECRET, "X_ACCESS_TOKEN": ACCESS_TOKEN,
        "X_ACCESS_TOKEN_SECRET": ACCESS_TOKEN_SECRET, "X_BRAND_USER_ID": BRAND_ID, "X_BRAND_HANDLE": BRAND_HANDLE,
        "X_API_BASE_URL": api.base_url,
        "FIRSTREPLY_CASE_DB": f"sqlite:///{work / 'cases.db'}",
        "FIRSTREPLY_CHANNEL_DB": str(work / "channels.db"),
        # A Rasa killed mid-event leaves its lease behind: another takes the event over this soon.
        "FIRSTREPLY_INBOX_LEASE_SECONDS": "5",
        "FIRSTREPLY_INBOX_SWEEP_SECONDS": "1",
    }  # fmt: skip
    assistant = Assistant(f"http://127.0.0.1:{rasa_port}", env["FIRSTREPLY_CASE_DB"], env, token="")
    # Started first, so both Rasa servers load the model at the same time.
    replica = start_rasa_server("rasa replica", replica_port, endpoints, env, work / "replica.log",
                                None, work / "credentials.yml", launcher=False)  # fmt: skip
    try:
        with serve_assistant(
            assistant, work, actions_port, rasa_port, endpoints, "/webhooks/x/",
            credentials=work / "credentials.yml", launcher=False, rasa_timeout=300,
        ) as started:  # fmt: skip
            replica_url = f"http://127.0.0.1:{replica_port}"
            wait_until_up(replica, f"{replica_url}/webhooks/x/", 300)
            yield Running(api, started.rasa_url, env, [*started.processes, replica], work, replica_url)
    finally:
        replica.stop()
        api.stop()
        for name in ("rasa", "replica", "actions"):
            log_file = work / f"{name}.log"
            if log_file.exists():
                tail = log_file.read_text(errors="replace").splitlines()[-30:]
                print(f"--- {name}.log (tail) ---", *tail, sep="\n")


def test_the_challenge_is_answered_and_unsigned_events_are_refused(running: Running) -> None:
    answer = httpx.get(f"{running.rasa_url}/webhooks/x/webhook", params={"crc_token": "token-from-x"}, timeout=10)
    digest = hmac.new(CONSUMER_SECRET.encode(), b"token-from-x", hashlib.sha256).digest()
    expected = "sha256=" + base64.b64encode(digest).decode()
    assert (answer.status_code, answer.json()) == (200, {"response_token": expected})
    wrong = hmac.new(b"not-the-secret", b"token-from-x", hashlib.sha256).digest()
    assert answer.json()["response_token"] != "sha256=" + base64.b64encode(wrong).decode()

    body = activity(dms=[dm_event("6001", ANA, "hello")], users=[ANA])
    forged = {**signed_headers(body, "not-the-secret")}
    missing = {"Content-Type": "application/json"}
    assert [running.post(body, headers).status_code for headers in (forged, missing)] == [401, 401]
    time.sleep(1.5)
    assert running.api.dms(ANA["id_str"]) == []
    # The genuine call is then taken: nothing of the refused ones was kept.
    assert running.post(body).json() == {"ok": True}
    assert running.replies(ANA["id_str"], 0, 1)


def test_a_dm_is_greeted_by_name_asked_its_first_question_and_a_redelivery_is_answered_once(running: Running) -> None:
    body = running.dm(MARIA, "Hi! Where is my parcel? Can you check it for me", event_id="6101")
    replies = running.replies(MARIA["id_str"], 0, 2)
    assert replies[0].startswith("Hi Maria! I'm ")
    assert replies[-1].startswith("What's your order number?")

    again = running.post(body)  # X's retry of the same event
    assert (again.status_code, again.json()) == (200, {"ok": True, "duplicate": True})
    time.sleep(2)
    assert running.api.dms(MARIA["id_str"]) == replies
    events = httpx.get(f"{running.rasa_url}/conversations/{MARIA['id_str']}/tracker", timeout=10).json()["events"]
    said = [e["text"] for e in events if e["event"] == "user"]
    assert said == ["Hi! Where is my parcel? Can you check it for me"]
    metadata = [e for e in events if e["event"] == "user"][0]["metadata"]
    assert (metadata["customer_name"], metadata["username"], metadata["user_id"]) == ("Maria Silva", "maria_k",
                                                                                      MARIA["id_str"])  # fmt: skip


def test_a_mention_is_answered_in_public_once_and_the_case_continues_in_a_dm(running: Running) -> None:
    joao = JOAO["id_str"]
    said = "@NorthwindHelp my parcel AC-2291734 is 2 weeks late, useless service"
    mention = activity(posts=[post("6201", JOAO, said)])
    assert running.post(mention).json() == {"ok": True}
    dms = running.replies(joao, 0, 1)
    wait_until("the public reply", lambda: running.api.public_replies("6201"), 30, running.processes)
    assert running.post(mention).json() == {"ok": True, "duplicate": True}

    invite = load_support_config().public_replies["x"].text.format(dm_link=DM_LINK)
    assert dms[0].startswith("Hi João! I'm ")  # by DM, greeted by name
    assert "AC-2291734" not in " ".join(running.api.public_replies())  # no case details in public

    # The conversation goes on by DM until the case is handed over.
    for _ in range(6):
        if dms[-1].startswith("Here is what I will pass on"):
            break
        dms += running.step(JOAO, "1" if "\n1. " in dms[-1] else "It's late", 1)
    assert dms[-1].startswith("Here is what I will pass on"), dms
    [handoff] = running.step(JOAO, "1", 1)  # "Yes, that's right", as a numbered choice
    assert "case #" in handoff

    # His reply under the brand's public reply reaches the conversation, with no second public reply.
    [brand_reply] = running.api.calls("tweets.create", answered=201)
    thread_reply = post("6202", JOAO, "@NorthwindHelp thanks", reply_to=brand_reply.answer["data"]["id"],
                        reply_to_user=BRAND_ID)  # fmt: skip
    assert running.post(activity(posts=[thread_reply])).json() == {"ok": True}

    def tracked() -> list[str] | None:
        events = httpx.get(f"{running.rasa_url}/conversations/{joao}/tracker", timeout=10).json()["events"]
        ids = [e.get("message_id") for e in events if e["event"] == "user"]
        return ids if "x-post-6202" in ids else None

    assert wait_until("the thread reply in the conversation", tracked, 60, running.processes).count("x-post-6201") == 1
    time.sleep(1.5)
    assert (running.api.public_replies("6201"), running.api.public_replies("6202")) == ([invite], [])

    [case] = [c for c in running.cases() if c["sender_id"] == joao]
    assert (case["channel"], case["metadata"]["origin"]) == ("x", "public post")
    assert (case["customer_name"], case["metadata"]["customer_handle"]) == ("João Costa", "@joao_c")
    assert case["metadata"]["public_post"]["url"] == "https://x.com/joao_c/status/6201"
    assert case["priority"] in ("high", "urgent")
    assert case["transcript"][0]["text"].startswith("[public post] my parcel AC-2291734 is 2 weeks late")


def test_kill_9_while_holding_an_acknowledged_event_then_it_is_answered_exactly_once(running: Running) -> None:
    ana = ANA["id_str"]
    before = len(running.api.dms(ana))
    # X's API keeps the reply without answering: the replica has taken the event (200) and is mid-send.
    held = running.api.fault(HOLD, method=DM_METHOD, times=1, hold=60)
    running.dm(ANA, "my order AC-5550001 never arrived", event_id="6301", rasa_url=running.replica_url)
    wait_until("the reply under way", lambda: held.calls_left == 0, 60, running.processes)
    replica = running.processes.pop()
    replica.kill()

    # The other Rasa takes the event over once the replica's lease has run out.
    replies = running.replies(ana, before, 1, quiet=3)
    events = httpx.get(f"{running.rasa_url}/conversations/{ana}/tracker", timeout=10).json()["events"]
    assert [e.get("message_id") for e in events if e["event"] == "user"].count("x-dm-6301") == 1
    turn = events[[e.get("message_id") for e in events].index("x-dm-6301"):]
    recorded = [e["text"] for e in turn if e["event"] == "bot" and e.get("text")]
    # Exactly the replies Rasa recorded for the event, each once (numbered choices under a text with buttons).
    assert len(replies) == len(recorded) and all(sent.startswith(text) for sent, text in zip(replies, recorded))
