"""The real action server holds the domain Rasa sent once and runs later calls that name it (bot/action_domain.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from rasa.core.actions.action import RemoteAction
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import ActionExecuted, SessionStarted, UserUttered
from rasa.shared.core.trackers import DialogueStateTracker

from bot import speedups
from bot.action_domain import DOMAIN_DIGEST_KEY, asks_for_the_domain
from tests.processes import ROOT, base_env, free_ports, start_action_server, wait_until_up


@pytest.fixture(scope="module")
def action_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    work = tmp_path_factory.mktemp("action-domain")
    [port] = free_ports(1)
    env = {**base_env(), "FIRSTREPLY_CASE_DB": f"sqlite:///{work / 'cases.db'}"}
    process = start_action_server("action server", port, env, work / "actions.log")
    try:
        wait_until_up(process, f"http://127.0.0.1:{port}/health")
        yield f"http://127.0.0.1:{port}/webhook"
    finally:
        process.stop()


def acknowledge_call(domain: Domain, sender: str) -> speedups.ActionCall:
    tracker = DialogueStateTracker.from_events(sender, [
        ActionExecuted("action_session_start"), SessionStarted(), ActionExecuted("action_listen"),
        UserUttered("where is my parcel, order 4711?", {"name": "order_status", "confidence": 0.97}),
    ], domain.slots)  # fmt: skip
    return speedups.ActionCall(RemoteAction("action_acknowledge", None)._action_call_format(tracker, domain), domain)


def outcome(answer: dict[str, Any]) -> tuple[list[Any], list[Any]]:
    """Return what the action did: its responses and the names of the events it returned."""
    return answer["responses"], sorted(event.get("name") or event["event"] for event in answer["events"])


def test_a_call_naming_the_domain_runs_as_the_call_that_brought_it(action_server: str) -> None:
    domain = Domain.load(str(ROOT / "domain"))
    digest = speedups.domain_digest(domain)
    headers = {"Content-Type": "application/json"}
    with httpx.Client(timeout=60) as client:
        # Named before it was ever sent: refused, nothing run.
        unknown = client.post(action_server, content=acknowledge_call(domain, "c1").encoded(with_domain=False),
                              headers=headers)  # fmt: skip
        assert asks_for_the_domain(unknown.status_code, unknown.content)

        # Rasa's own call (no digest) is answered as rasa_sdk answers it.
        plain = json.loads(acknowledge_call(domain, "c2").encoded())
        del plain[DOMAIN_DIGEST_KEY]
        as_rasa = client.post(action_server, json=plain).json()
        assert DOMAIN_DIGEST_KEY not in as_rasa

        full = client.post(action_server, content=acknowledge_call(domain, "c3").encoded(), headers=headers).json()
        assert full.pop(DOMAIN_DIGEST_KEY) == digest  # held now

        short = client.post(action_server, content=acknowledge_call(domain, "c4").encoded(with_domain=False),
                            headers=headers).json()  # fmt: skip
        assert short.pop(DOMAIN_DIGEST_KEY) == digest

    # The acknowledgement comes from the domain's responses and the case from its intents:
    # the call without the domain did what the calls with it did.
    assert outcome(short) == outcome(full) == outcome(as_rasa)
    responses, events = outcome(short)
    assert {"response": "utter_ack_order_status"} in [{"response": r.get("response")} for r in responses]
    assert "case_type" in events
