"""The desk's Prometheus metrics and dashboard: exact values from a known set of cases.

Six cases with known timings in a real case store (SQLite temp file), a pinned clock
(Monday 23 November 2026, 13:00), the exposition text parsed back with
``prometheus_client.parser``; then ``GET /metrics`` and ``GET /dashboard`` through the
desk's own aiohttp application.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from bot.cases import Case, CaseStore, NewCase, TranscriptLine
from bot.channels.outbound import Outbound
from bot.desk import messages
from bot.desk.app import Desk
from bot.desk.metrics import build_registry, exposition
from bot.desk.server import http_app
from bot.desk.settings import DeskSettings
from bot.ops import load_support_config
from tests.conftest import OPEN_NOW

ROOT = Path(__file__).resolve().parent.parent
NOW = OPEN_NOW + timedelta(hours=3)  # Monday 13:00
ANA, BEN = "U0ANA", "U0BEN"


def at(clock: str) -> datetime:
    """Monday 23 November 2026 at ``HH:MM[:SS.f]`` (UTC, which is London time in November)."""
    hours, minutes, *rest = clock.split(":")
    seconds = float(rest[0]) if rest else 0.0
    return OPEN_NOW.replace(hour=int(hours), minute=int(minutes)) + timedelta(seconds=seconds)


def open_case(
    store: CaseStore, key: str, opened: str, promised: str, *, channel: str = "telegram", priority: str = "normal",
    said: tuple[str, str | None] | None = None, name: str = "Maria Lopez",
) -> Case:  # fmt: skip
    lines: tuple[TranscriptLine, ...] = ()
    if said is not None:
        customer, bot = said
        lines = (TranscriptLine("customer", "where is my parcel", at(customer)),)
        if bot is not None:
            lines += (TranscriptLine("bot", "Hi! What's your order number?", at(bot)),)
    new = NewCase(
        channel=channel, sender_id=key, customer_name=name, case_type="order_status", intent_confidence=0.9,
        answers={}, summary="Parcel late.", transcript=lines, language="en", priority=priority, complaint_score=0.0,
        promised_by=at(promised), promise_wording="within about 20 minutes", handoff_key=key,
        metadata={"route": "#support-queue"},
    )  # fmt: skip
    return store.lifecycle.open_case(new, at(opened))


def agent_reply(store: CaseStore, case: Case, when: str) -> None:
    """The desk delivered an agent's reply at ``when``."""
    store.outbox.enqueue([messages.customer_reply(case, f"relay-out:{case.id}", "On it.", ANA)], at(when))
    [item] = [i for i in store.outbox.items(case_id=case.id) if i.key == f"relay-out:{case.id}"]
    store.outbox.start_delivery(item.id, at(when))
    store.outbox.finish_delivery(item.id, at(when), {"pushed": True}, human_reply=True)


@pytest.fixture
def store(db_url: str) -> Iterator[CaseStore]:
    """The six cases, as of Monday 13:00."""
    opened = CaseStore.from_url(db_url)
    # A: answered in 10 minutes, within its promise; resolved, rated 5.
    a = open_case(opened, "a", "10:00", "10:20", said=("09:58", "09:58:02"))
    opened.lifecycle.claim(a.id, ANA, at("10:05"))
    agent_reply(opened, a, "10:10")
    opened.lifecycle.resolve(a.id, at("10:30"), by=ANA)
    opened.lifecycle.record_followup(a.id, at("10:40"), solved=True, rating=5)
    # B: answered after its promise; resolved, rated 3.
    b = open_case(opened, "b", "10:30", "10:50", priority="high", said=("10:29", "10:29:01"))
    opened.lifecycle.claim(b.id, BEN, at("11:00"))
    agent_reply(opened, b, "11:10")
    opened.lifecycle.resolve(b.id, at("11:20"), by=BEN)
    opened.lifecycle.record_followup(b.id, at("11:30"), rating=3)
    # C: nobody claimed it; escalated, given a new estimate (12:45), which also passed.
    c = open_case(opened, "c", "12:00", "12:15", channel="rest", priority="urgent", said=("11:59:30", "11:59:30.5"))
    lead = messages.lead_post(c, f"escalation:{c.id}:0", "#support-leads", share=0.75)
    assert opened.watch.mark_escalated(c.id, 0, at("12:11:15"), outbox=[lead])
    assert opened.watch.update_promise(c.id, 0, at("12:45"), "within about 30 minutes", "busy", at("12:13:30"))
    # D: just opened, promise not due; the assistant has not answered yet.
    open_case(opened, "d", "12:50", "13:05", channel="rest", priority="low", said=("12:49", None))
    # E: answered at once, then the customer went quiet: checked in on, closed.
    e = open_case(opened, "e", "11:00", "11:15", said=("10:59:57", "11:00"))
    opened.lifecycle.claim(e.id, ANA, at("11:02"))
    agent_reply(opened, e, "11:03")
    checkin = messages.assistant_message(e, f"checkin:{e.id}:1", "Anything else?", "checkin")
    assert opened.watch.record_checkin(e.id, at("11:03"), at("12:03"), customer_key_prefix="relay-in:", outbox=[checkin])
    assert opened.watch.close_stale(e.id, at("12:03"), at("12:59"), customer_key_prefix="relay-in:")
    [failed] = opened.outbox.items(kind=messages.KIND_CUSTOMER, case_id=e.id)[-1:]
    opened.outbox.fail_delivery(failed.id, "Forbidden: bot was blocked by the user", None)
    # F: claimed, not answered, promise passed.
    f = open_case(opened, "f", "12:30", "12:45", priority="high")
    opened.lifecycle.claim(f.id, BEN, at("12:40"))
    opened.desk.set_agent_shift(ANA, True, at("09:00"))
    opened.desk.set_agent_shift(BEN, True, at("09:00"))
    opened.desk.set_agent_shift("U0CARL", False, at("09:00"))
    yield opened
    opened.dispose()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def histogram(found: dict[Any, float], name: str) -> tuple[dict[str, float], float, float]:
    buckets = {dict(labels)["le"]: value for (metric, labels), value in found.items() if metric == f"{name}_bucket"}
    return buckets, found[(f"{name}_count", ())], found[(f"{name}_sum", ())]


def test_the_metrics_are_exact(store: CaseStore) -> None:
    found = samples(exposition(build_registry(store, lambda: NOW)).decode())

    assert found[("firstreply_cases_opened_total", (("channel", "rest"),))] == 2
    assert found[("firstreply_cases_opened_total", (("channel", "telegram"),))] == 4
    queue = {dict(labels)["priority"] + "/" + dict(labels)["status"]: value
             for (name, labels), value in found.items() if name == "firstreply_open_cases"}  # fmt: skip
    assert queue == {
        "low/waiting": 1, "low/claimed": 0, "normal/waiting": 0, "normal/claimed": 0,
        "high/waiting": 0, "high/claimed": 1, "urgent/waiting": 1, "urgent/claimed": 0,
    }  # fmt: skip
    overdue = {dict(labels)["priority"]: value for (name, labels), value in found.items() if name == "firstreply_overdue_cases"}
    assert overdue == {"low": 0, "normal": 0, "high": 1, "urgent": 1}

    # A 2 s, B 1 s, C 0.5 s, E 3 s; D has no answer yet, F no transcript.
    assert histogram(found, "firstreply_first_bot_response_seconds") == (
        {"0.5": 1, "1.0": 2, "2.0": 3, "5.0": 4, "10.0": 4, "30.0": 4, "60.0": 4, "+Inf": 4}, 4, 6.5,
    )  # fmt: skip
    # A 5 min, B 30, E 2, F 10.
    claim, claims, claim_sum = histogram(found, "firstreply_time_to_claim_seconds")
    assert (claims, claim_sum) == (4, 2820)
    assert [claim[le] for le in ("60.0", "300.0", "900.0", "1800.0", "3600.0", "+Inf")] == [0, 2, 3, 4, 4, 4]
    # A 10 min, B 40, E 3.
    human, replies, human_sum = histogram(found, "firstreply_time_to_first_human_reply_seconds")
    assert (replies, human_sum) == (3, 3180)
    assert [human[le] for le in ("60.0", "300.0", "900.0", "1800.0", "3600.0", "+Inf")] == [0, 1, 2, 2, 3, 3]

    # Six first promises and one new estimate: A and E kept; B (late), C (its new estimate passed) and F
    # (claimed, unanswered) broken; C's first promise updated; D's pending.
    assert found[("firstreply_promises_made_total", ())] == 7
    assert found[("firstreply_promises_kept_total", ())] == 2
    assert found[("firstreply_promises_broken_total", ())] == 3
    assert found[("firstreply_promises_updated_total", ())] == 1
    assert found[("firstreply_promises_pending", ())] == 1

    assert histogram(found, "firstreply_csat_rating") == ({"1.0": 0, "2.0": 0, "3.0": 1, "4.0": 1, "5.0": 2, "+Inf": 2}, 2, 8)
    assert found[("firstreply_csat_satisfied_ratio", ())] == 0.5

    actions = {dict(labels)["action"]: value for (name, labels), value in found.items() if name == "firstreply_watchdog_actions_total"}
    assert actions == {"escalation": 1, "promise_update": 1, "checkin": 1, "close": 1}
    assert found[("firstreply_desk_outbox_messages", (("state", "failed"),))] == 1  # E's check-in: blocked
    assert found[("firstreply_desk_outbox_messages", (("state", "pending"),))] == 1  # C's escalation
    assert found[("firstreply_agents_on_shift", ())] == 2


def test_an_empty_store_has_zero_metrics_and_no_csat_ratio(tmp_path: Path) -> None:
    empty = CaseStore.from_url(f"sqlite:///{tmp_path / 'empty.db'}")
    try:
        found = samples(exposition(build_registry(empty, lambda: NOW)).decode())
    finally:
        empty.dispose()

    assert found[("firstreply_promises_made_total", ())] == 0
    assert found[("firstreply_first_bot_response_seconds_count", ())] == 0
    assert found[("firstreply_open_cases", (("priority", "urgent"), ("status", "waiting")))] == 0
    assert ("firstreply_csat_satisfied_ratio", ()) not in found
    assert not [name for name, _ in found if name.startswith(("python_", "process_"))]  # a registry of its own


# --- over HTTP -------------------------------------------------------------------------------


@pytest_asyncio.fixture
async def client(tmp_path: Path, store: CaseStore) -> AsyncIterator[TestClient]:
    env = {
        "SLACK_DESK_BOT_TOKEN": "xoxb-metrics-test", "SLACK_DESK_SIGNING_SECRET": "secret",
        "SLACK_API_BASE_URL": "http://127.0.0.1:9/api/", "FIRSTREPLY_DESK_AGENTS": "S0AGENTS",
        "RASA_URL": "http://127.0.0.1:9", "FIRSTREPLY_EVENTS_DB": str(tmp_path / "events.db"),
    }  # fmt: skip
    desk = Desk(DeskSettings.from_env(env), store, load_support_config(ROOT / "support.yml"), outbound=Outbound({}),
                clock=lambda: NOW)  # fmt: skip
    async with TestClient(TestServer(http_app(desk))) as opened:
        yield opened
    await desk.close()


@pytest.mark.asyncio
async def test_metrics_and_dashboard_are_served_by_the_desk(client: TestClient, store: CaseStore) -> None:
    answer = await client.get("/metrics")
    assert answer.status == 200
    assert answer.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert samples(await answer.text())[("firstreply_promises_kept_total", ())] == 2

    page = await client.get("/dashboard")
    assert page.status == 200 and page.content_type == "text/html"
    assert page.headers["Content-Security-Policy"].startswith("default-src 'none'")
    body = await page.text()
    # The live queue, the earliest promise first: C (12:45), F (12:45, after C), D (13:05).
    ids = {case.sender_id: case.id for case in store.lookup.list_cases()}
    rows = [f'data-case="{ids[key]}"' for key in ("c", "f", "d")]
    assert all(row in body for row in rows)
    assert [body.index(row) for row in rows] == sorted(body.index(row) for row in rows)
    assert '<meta http-equiv="refresh" content="30">' in body
    assert "Maria" not in body and "where is my parcel" not in body  # no customer's name or words
    assert "http://" not in body.replace('xmlns="http://www.w3.org/2000/svg"', "") and "<script" not in body
    assert (await client.get("/dashboard?days=nonsense")).status == 200
    assert (await client.get("/health")).status == 200


@pytest.mark.asyncio
async def test_in_socket_mode_a_small_server_serves_metrics_and_the_dashboard(tmp_path: Path, store: CaseStore) -> None:
    import asyncio
    import socket

    import aiohttp

    from bot.desk.server import serve
    from tests.fakes.slack_web_api import TOKEN, FakeDeskSlackAPI
    from tests.test_desk_socket import APP_TOKEN

    slack = FakeDeskSlackAPI(app_token=APP_TOKEN).start()
    slack.add_group("S0AGENTS", [ANA])
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        "SLACK_DESK_BOT_TOKEN": TOKEN, "SLACK_APP_TOKEN": APP_TOKEN, "SLACK_API_BASE_URL": slack.base_url,
        "FIRSTREPLY_DESK_AGENTS": "S0AGENTS", "RASA_URL": "http://127.0.0.1:9",
        "FIRSTREPLY_EVENTS_DB": str(tmp_path / "events.db"), "FIRSTREPLY_DESK_PORT": str(port),
    }  # fmt: skip
    shipped = load_support_config(ROOT / "support.yml")
    quiet = replace(shipped, watchdog=replace(shipped.watchdog, enabled=False))  # the figures stay as seeded
    desk = Desk(DeskSettings.from_env(env), store, quiet, outbound=Outbound({}), clock=lambda: NOW)
    stop = asyncio.Event()
    served = asyncio.create_task(serve(desk, stop))
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(200):
                if slack.connected:
                    break
                await asyncio.sleep(0.02)
            async with session.get(f"http://127.0.0.1:{port}/metrics") as answer:
                assert answer.status == 200
                assert samples(await answer.text())[("firstreply_promises_made_total", ())] == 7
            async with session.get(f"http://127.0.0.1:{port}/dashboard") as answer:
                assert answer.status == 200 and "Live queue" in await answer.text()
            async with session.post(f"http://127.0.0.1:{port}/slack/events", data=b"{}") as answer:
                assert answer.status in (404, 405)  # Slack talks over the socket here
    finally:
        stop.set()
        await served
        slack.stop()
