"""The watchdog: escalations, honest promise updates, late-pickup apologies, check-ins and closing, the lease.

Frozen clock (Monday 23 November 2026 in London, open 08:00-20:00), a real case store in a
temporary SQLite file, the shipped support.yml, and the outbox read back as the desk's
worker would find it. One test delivers through the real worker to the fake Slack and
Telegram APIs; the last one runs ``python -m bot desk`` with a short tick.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from bot.cases import Case, CaseStore, NewCase, TranscriptLine
from bot.channels.outbound import Outbound
from bot.desk import cards, messages
from bot.desk.app import Desk
from bot.desk.customer_texts import CustomerTexts
from bot.desk.outbox import OutboxWorker
from bot.desk.rasa_api import RasaClient
from bot.desk.settings import DeskSettings
from bot.desk.watchdog import LEASE, Watchdog, apology_line, is_late, late_pickup_text
from bot.ops import OpsConfigError, SupportConfig, WatchdogRules, load_support_config
from tests.conftest import OPEN_NOW
from tests.desk_support import serving
from tests.fakes.rasa_api import FakeRasa
from tests.fakes.slack_web_api import TOKEN, FakeDeskSlackAPI
from tests.fakes.telegram_api import TOKEN as TELEGRAM_TOKEN
from tests.fakes.telegram_api import FakeTelegramAPI
from tests.polling import until as poll_until
from tests.processes import free_port, start_desk

ROOT = Path(__file__).resolve().parent.parent
ONCALL = "S0ONCALL"
ANA = "U0ANA"
MARIA = "4242"
T0 = OPEN_NOW  # Monday 10:00 in London (UTC in November): open until 20:00


def minutes(count: float) -> timedelta:
    return timedelta(minutes=count)


@pytest.fixture
def support() -> SupportConfig:
    shipped = load_support_config(ROOT / "support.yml")
    return replace(shipped, watchdog=replace(shipped.watchdog, oncall=ONCALL))


def open_case(
    store: CaseStore, at: datetime, promise: float = 20, *, sender: str = MARIA, key: str | None = None, **overrides: Any
) -> Case:
    fields: dict[str, Any] = dict(
        channel="telegram", sender_id=sender, customer_name="Maria Lopez", case_type="order_status",
        intent_confidence=0.9, answers={"order_number": "AC-2291734"}, summary="Parcel late.",
        transcript=(TranscriptLine("customer", "where is my parcel", at - minutes(1)),
                    TranscriptLine("bot", "What's your order number?", at - minutes(1))),
        language="en", priority="normal", complaint_score=0.1, promised_by=at + minutes(promise),
        promise_wording=f"within about {promise:g} minutes", handoff_key=key or f"telegram:{sender}:{at.isoformat()}",
        metadata={"route": "#support-queue"},
    )  # fmt: skip
    fields.update(overrides)
    return store.lifecycle.open_case(NewCase(**fields), at)


def queued(store: CaseStore, case_id: int, kind: str | None = None) -> list[Any]:
    return [item for item in store.outbox.items(case_id=case_id, kind=kind)]


def get(store: CaseStore, case_id: int) -> Case:
    found = store.lookup.get(case_id)
    assert found is not None
    return found


# --- escalation ------------------------------------------------------------------------------------


def test_an_unclaimed_case_is_escalated_exactly_once_at_75_percent(store: CaseStore, support: SupportConfig) -> None:
    case = open_case(store, T0, customer_name="Maria <!channel>")
    watchdog = Watchdog(store, support, holder="desk-1")

    assert watchdog.tick(T0 + minutes(14.9)) == 0
    assert store.outbox.items() == []
    assert watchdog.tick(T0 + minutes(15)) == 1
    assert watchdog.tick(T0 + minutes(15.5)) == 0
    assert watchdog.tick(T0 + minutes(16.9)) == 0

    [post] = queued(store, case.id, messages.KIND_LEAD_POST)
    assert (post.key, post.target, dict(post.payload)) == (
        f"escalation:{case.id}:0", messages.slack_target(case.id),
        {"channel": "#support-leads", "oncall": ONCALL, "share": 0.75},
    )  # fmt: skip
    [notice] = queued(store, case.id, messages.KIND_THREAD)
    assert notice.payload["text"] == (
        ":rotating_light: Escalated to the leads in #support-leads: nobody has claimed this case and 75% of its "
        "promise has passed."
    )
    escalated = get(store, case.id)
    assert (escalated.escalated_promise, escalated.promise_updates, escalated.status) == (0, 0, "waiting")
    # What the leads read: our mention as markup, the customer's text escaped.
    text = cards.escalation_text(escalated, post.payload, T0 + minutes(15))
    assert text.startswith(f":rotating_light: <!subteam^{ONCALL}> *Case #{case.id}* is still waiting for someone: 75% ")
    assert "Maria &lt;!channel&gt; (telegram)" in text and "<!channel>" not in text
    assert ":alarm_clock: Promise due in 5 min (the customer was told “within about 20 minutes”)" in text
    # The card says so too.
    assert ":rotating_light: escalated to the leads" in cards.promise_line(escalated, T0 + minutes(15))


def test_the_lead_channel_defaults_to_urgent_routing_and_can_be_set(support: SupportConfig) -> None:
    assert support.lead_channel == "#support-leads"
    assert replace(support, watchdog=WatchdogRules(lead_channel="#on-call")).lead_channel == "#on-call"
    unrouted = replace(support, routing=replace(support.routing, priorities={}))
    assert unrouted.lead_channel == "#support-queue"


def test_claimed_cases_are_neither_escalated_nor_updated(store: CaseStore, support: SupportConfig) -> None:
    case = open_case(store, T0)
    assert store.lifecycle.claim(case.id, ANA, T0 + minutes(5))

    assert Watchdog(store, support).tick(T0 + minutes(19.5)) == 0
    assert Watchdog(store, support).tick(T0 + minutes(45)) == 0
    assert store.outbox.items() == []
    assert get(store, case.id).promise_updates == 0


# --- the honest update -----------------------------------------------------------------------------


def test_the_customer_gets_a_new_estimate_at_90_percent(store: CaseStore, support: SupportConfig) -> None:
    case = open_case(store, T0)
    for agent in ("U0A1", "U0A2", "U0A3", "U0A4"):
        store.desk.set_agent_shift(agent, True, T0)
    watchdog = Watchdog(store, support)
    assert watchdog.tick(T0 + minutes(15)) == 1  # the escalation

    # 0.5 x 12 min / 4 agents = 1.5 minutes to a pickup: the queue alone does not see the promise slip.
    assert watchdog.tick(T0 + minutes(17.9)) == 0
    assert watchdog.tick(T0 + minutes(18)) == 1

    updated = get(store, case.id)
    assert (updated.promised_by, updated.promise_wording, updated.promise_updates) == (
        T0 + minutes(18 + 15), "within about 15 minutes", 1,
    )  # fmt: skip
    assert (updated.promise_made_at, updated.delay_reason, updated.first_human_reply_at) == (T0 + minutes(18), "slow", None)
    [message] = queued(store, case.id, messages.KIND_CUSTOMER)
    assert message.key == f"promise-update:{case.id}:1"
    assert message.target == messages.customer_target("telegram", MARIA)
    assert dict(message.payload) == {
        "channel": "telegram", "sender_id": MARIA, "agent": None, "watchdog": "promise_update",
        "text": f"Sorry, Maria — case #{case.id} is taking longer than we said: it's taking us longer than usual. "
                "A person will reply within about 15 minutes.",
    }  # fmt: skip
    notices = [item.payload["text"] for item in queued(store, case.id, messages.KIND_THREAD)]
    assert notices[-1] == (
        ":hourglass: The customer was sent a new estimate (it's taking us longer than usual): a person will reply "
        "within about 15 minutes."
    )
    assert "new estimate sent once" in cards.promise_line(updated, T0 + minutes(18))
    # The new promise is watched in turn: escalated once at 75 % of it, updated again at 90 %.
    assert watchdog.tick(T0 + minutes(18 + 11.2)) == 0
    assert watchdog.tick(T0 + minutes(18 + 11.25)) == 1
    assert [item.key for item in queued(store, case.id, messages.KIND_LEAD_POST)] == [
        f"escalation:{case.id}:0", f"escalation:{case.id}:1",
    ]  # fmt: skip
    assert watchdog.tick(T0 + minutes(18 + 13.5)) == 1
    assert get(store, case.id).promise_updates == 2


@pytest.mark.parametrize(
    ("opened", "promise", "tick", "reason", "wording", "said"),
    [
        pytest.param(
            T0 + minutes(580), 15, T0 + minutes(593.5), "closing", "by 8:09 tomorrow, Tuesday", "we're closing for the day",
            id="hours-end-before-the-new-deadline",
        ),
        pytest.param(
            T0 + minutes(580), 15, T0 + minutes(630), "closed", "by 8:15 tomorrow, Tuesday", "we're now closed",
            id="closed-now (the desk was down at the deadline)",
        ),
        pytest.param(
            T0, 20, T0 + minutes(18), "slow", "within about 15 minutes", "it's taking us longer than usual",
            id="nobody-ahead",
        ),
    ],
)
def test_the_update_gives_an_honest_reason(
    store: CaseStore, support: SupportConfig, opened: datetime, promise: float, tick: datetime, reason: str, wording: str,
    said: str,
) -> None:  # fmt: skip
    case = open_case(store, opened, promise)

    Watchdog(store, support).tick(tick)

    updated = get(store, case.id)
    assert (updated.delay_reason, updated.promise_wording, updated.promise_updates) == (reason, wording, 1)
    [message] = queued(store, case.id, messages.KIND_CUSTOMER)
    assert message.payload["text"] == (
        f"Sorry, Maria — case #{case.id} is taking longer than we said: {said}. A person will reply {wording}."
    )


def test_the_update_is_in_the_customers_language_and_the_thread_in_english(
    store: CaseStore, support: SupportConfig
) -> None:
    case = open_case(store, T0 + minutes(580), 15, language="es", promise_wording="en unos 15 minutos")

    assert Watchdog(store, support).tick(T0 + minutes(630)) == 2  # escalated and updated, closed now

    updated = get(store, case.id)
    # The case keeps the wording the customer read, as it keeps the first promise's.
    assert (updated.delay_reason, updated.promise_wording) == ("closed", "antes de las 8:15 de mañana, martes")
    [message] = queued(store, case.id, messages.KIND_CUSTOMER)
    assert message.payload["text"] == (
        f"Lo sentimos, Maria. El caso n.º {case.id} está tardando más de lo que te dijimos: ahora estamos cerrados. "
        "Una persona te responderá antes de las 8:15 de mañana, martes."
    )
    notices = [item.payload["text"] for item in queued(store, case.id, messages.KIND_THREAD)]
    assert notices[-1] == (
        ":hourglass: The customer was sent a new estimate (we're now closed): a person will reply "
        "by 8:15 tomorrow, Tuesday."
    )


def test_no_update_while_the_estimate_says_the_promise_holds(store: CaseStore, support: SupportConfig) -> None:
    case = open_case(store, T0, 300)  # "by 15:00"
    watchdog = Watchdog(store, support)
    assert watchdog.tick(T0 + minutes(225)) == 1  # the escalation, at 75 %

    # At 90 % (14:30) the estimate (15 minutes) still falls before 15:00: nothing to tell yet.
    assert watchdog.tick(T0 + minutes(270)) == 0
    assert watchdog.tick(T0 + minutes(285)) == 0
    # Once it would not, the customer hears it, before the deadline.
    assert watchdog.tick(T0 + minutes(286)) == 1
    updated = get(store, case.id)
    assert updated.promised_by == T0 + minutes(286 + 15) and updated.promised_by > case.promised_by
    assert [item.key for item in queued(store, case.id, messages.KIND_CUSTOMER)] == [f"promise-update:{case.id}:1"]


def test_a_queue_that_cannot_keep_the_promise_is_told_early(store: CaseStore, support: SupportConfig) -> None:
    case = open_case(store, T0, 30)
    store.desk.set_agent_shift(ANA, True, T0)
    for number in range(5):
        open_case(store, T0 + minutes(1), 120, sender=f"urgent-{number}", priority="urgent")
    watchdog = Watchdog(store, support)

    # In its first minutes a promise is not re-predicted; then (5 + 0.5) x 12 / 1 agent = 66 > 24 minutes left.
    assert watchdog.tick(T0 + minutes(4)) == 0
    assert watchdog.tick(T0 + minutes(6)) == 1
    updated = get(store, case.id)
    # The new estimate knows Ana is free and takes one of the five at once:
    # (5 - 1 + 0.5) x 12 / 1 = 54, x 1.5 = 81 -> an hour and a half.
    assert (updated.delay_reason, updated.promise_updates, updated.promised_by) == ("busy", 1, T0 + minutes(96))
    [message] = queued(store, case.id, messages.KIND_CUSTOMER)
    assert message.payload["text"] == (
        f"Sorry, Maria — case #{case.id} is taking longer than we said: it's busier than usual. "
        "A person will reply within about an hour and a half."
    )


# --- the late pickup --------------------------------------------------------------------------------


def test_the_apology_line_names_the_customer_and_the_reason(store: CaseStore, support: SupportConfig) -> None:
    texts = CustomerTexts.load(support)
    case = open_case(store, T0)
    assert apology_line(case, texts) == (
        f"Sorry for the wait, Maria — it's been busier than usual. Thanks for bearing with us: I'm on case #{case.id} now."
    )
    Watchdog(store, support).tick(T0 + minutes(630))  # closed: "we're now closed"
    assert apology_line(get(store, case.id), texts).startswith(
        "Sorry for the wait, Maria — we were closed for part of the wait."
    )
    nameless = open_case(store, T0, sender="77", customer_name=None)
    assert apology_line(nameless, texts).startswith("Sorry for the wait — it's been busier than usual.")
    # In the thread the customer's name is escaped; the mention is ours.
    sly = open_case(store, T0, sender="78", customer_name="<!here> Bob")
    assert late_pickup_text(sly, ANA, T0 + minutes(25), texts) == (
        f":bulb: <@{ANA}>, this customer waited longer than we first said (promise overdue by 5 min). "
        f"Suggested first line:\n>Sorry for the wait, &lt;!here&gt; — it's been busier than usual. Thanks for "
        f"bearing with us: I'm on case #{sly.id} now."
    )
    assert not is_late(sly, T0 + minutes(19)) and is_late(sly, T0 + minutes(21))
    # The agent sends it to the customer: in their language, and the thread says which.
    spanish = open_case(store, T0, sender="79", language="es")
    assert late_pickup_text(spanish, ANA, T0 + minutes(25), texts) == (
        f":bulb: <@{ANA}>, this customer waited longer than we first said (promise overdue by 5 min). "
        f"Suggested first line (in Spanish):\n>Perdona la espera, Maria: ha habido más trabajo de lo habitual. "
        f"Gracias por tu paciencia; ya me ocupo del caso n.º {spanish.id}."
    )


@pytest_asyncio.fixture
async def desk(tmp_path: Path, support: SupportConfig) -> AsyncIterator[tuple[Desk, FakeDeskSlackAPI, str]]:
    """A desk over HTTP against the fake Slack Web API, its watchdog off (the test drives time)."""
    slack = FakeDeskSlackAPI().start()
    slack.add_group("S0AGENTS", [ANA])
    slack.add_channel("C0QUEUE", "support-queue")
    env = {
        "SLACK_DESK_BOT_TOKEN": TOKEN, "SLACK_DESK_SIGNING_SECRET": "secret", "SLACK_API_BASE_URL": slack.base_url,
        "FIRSTREPLY_DESK_AGENTS": "S0AGENTS", "RASA_URL": "http://127.0.0.1:9",
        "FIRSTREPLY_EVENTS_DB": str(tmp_path / "events.db"), "FIRSTREPLY_DESK_POLL_SECONDS": "0.05",
    }  # fmt: skip
    store = CaseStore.from_url(f"sqlite:///{tmp_path / 'cases.db'}")
    quiet = replace(support, watchdog=replace(support.watchdog, enabled=False))
    built = Desk(DeskSettings.from_env(env), store, quiet, outbound=Outbound({}))
    try:
        async with serving(built) as url:
            yield built, slack, url
    finally:
        store.dispose()
        slack.stop()


async def _until(what: str, probe: Callable[[], Any], timeout: float = 10.0) -> Any:
    return await poll_until(what, probe, timeout)


@pytest.mark.asyncio
async def test_a_late_pickup_gives_the_agent_a_ready_apology(desk: tuple[Desk, FakeDeskSlackAPI, str]) -> None:
    built, slack, _url = desk
    now = datetime.now(timezone.utc)
    late = open_case(built.store, now - minutes(25), 20, customer_name="Maria <b>")
    on_time = open_case(built.store, now - minutes(1), 20, sender="77", customer_name="Tom")
    for case in (late, on_time):
        carded = await _until("card", lambda c=case: (found := built.store.lookup.get(c.id)) and found.card_ts and found)
        press = {
            "user": {"id": ANA}, "container": {"channel_id": carded.card_channel, "message_ts": carded.card_ts},
        }
        await built.card_actions.on_claim(press, {"value": str(case.id)})
    await _until("claimed", lambda: all(get(built.store, c.id).status == "claimed" for c in (late, on_time)))
    late_ts = str(get(built.store, late.id).card_ts)
    await _until("apology", lambda: len(slack.thread("C0QUEUE", late_ts)) >= 2)
    await asyncio.sleep(0.3)

    late_thread = [m.text for m in slack.thread("C0QUEUE", late_ts)]
    assert late_thread == [
        f":raising_hand: Claimed by <@{ANA}>.",
        f":bulb: <@{ANA}>, this customer waited longer than we first said (promise overdue by 5 min). Suggested first "
        f"line:\n>Sorry for the wait, Maria — it's been busier than usual. Thanks for bearing with us: I'm on case "
        f"#{late.id} now.",
    ]
    assert [m.text for m in slack.thread("C0QUEUE", str(get(built.store, on_time.id).card_ts))] == [
        f":raising_hand: Claimed by <@{ANA}>."
    ]


# --- silence after the agent's reply -------------------------------------------------------------------


def _agent_replies(store: CaseStore, case: Case, at: datetime, number: int = 1) -> None:
    """The desk delivered an agent's reply to the customer at ``at``."""
    store.outbox.enqueue([messages.customer_reply(case, f"relay-out:C0QUEUE:{number}", "Your parcel ships today.", ANA)], at)
    [item] = [i for i in store.outbox.items(case_id=case.id) if i.key == f"relay-out:C0QUEUE:{number}"]
    assert store.outbox.start_delivery(item.id, at) is not None
    store.outbox.finish_delivery(item.id, at, {"pushed": True}, human_reply=True)


def _customer_writes(store: CaseStore, case: Case, at: datetime, row: int) -> None:
    """The desk relayed a customer message (Rasa event row ``row``) to the case's thread at ``at``."""
    store.desk.advance_cursor("rasa_events", row, at, outbox=[messages.thread_message(case.id, messages.relay_in_key(row), "hi")])


def test_a_silent_customer_is_asked_then_the_case_is_closed(store: CaseStore, support: SupportConfig) -> None:
    case = open_case(store, T0)
    store.lifecycle.claim(case.id, ANA, T0 + minutes(5))
    _agent_replies(store, case, T0 + minutes(10))
    watchdog = Watchdog(store, support)

    assert watchdog.tick(T0 + minutes(69)) == 0
    assert watchdog.tick(T0 + minutes(70)) == 1
    assert watchdog.tick(T0 + minutes(71)) == 0
    [checkin] = [i for i in queued(store, case.id, messages.KIND_CUSTOMER) if i.payload.get("watchdog")]
    assert (checkin.key, checkin.payload["text"], checkin.payload["agent"]) == (
        f"checkin:{case.id}:{(T0 + minutes(10)).isoformat()}",
        f"Hi Maria, is there anything else we can help with on case #{case.id}? Just reply here.",
        None,
    )
    assert get(store, case.id).checkin_at == T0 + minutes(70)

    assert watchdog.tick(T0 + minutes(129)) == 0
    assert watchdog.tick(T0 + minutes(130)) == 1
    closed = get(store, case.id)
    assert (closed.status, closed.closed_at) == ("closed", T0 + minutes(130))
    keys = [item.key for item in store.outbox.items(case_id=case.id)]
    assert keys[-3:] == [
        f"close:{case.id}:{(T0 + minutes(70)).isoformat()}",
        f"close:{case.id}:{(T0 + minutes(70)).isoformat()}:resume",
        f"close:{case.id}:{(T0 + minutes(70)).isoformat()}:notice",
    ]
    resume = store.outbox.items(case_id=case.id, kind=messages.KIND_RASA_EVENTS)[-1]
    assert resume.payload["events"] == [{"event": "resume"}, {"event": "action", "name": "action_listen"}]
    assert store.outbox.items(case_id=case.id)[-3].payload["text"] == (
        f"We haven't heard back, so we've closed case #{case.id}. If there's anything else, just write here and "
        "we'll pick it up."
    )
    # The card follows: closed, no buttons.
    text, blocks = cards.card(closed, [], T0 + minutes(130))
    assert ":lock: *Closed*: the customer did not answer the check-in" in json.dumps(blocks, ensure_ascii=False)
    assert not [block for block in blocks if block["type"] == "actions"]
    assert watchdog.tick(T0 + minutes(300)) == 0


def test_the_checkin_and_the_closing_message_are_in_the_customers_language(
    store: CaseStore, support: SupportConfig
) -> None:
    case = open_case(store, T0, language="de")
    store.lifecycle.claim(case.id, ANA, T0 + minutes(5))
    _agent_replies(store, case, T0 + minutes(10))
    watchdog = Watchdog(store, support)

    assert watchdog.tick(T0 + minutes(70)) == 1
    assert watchdog.tick(T0 + minutes(130)) == 1

    sent = queued(store, case.id, messages.KIND_CUSTOMER)
    said = [item.payload["text"] for item in sent if item.payload.get("watchdog")]
    assert said == [
        f"Hallo Maria, können wir dir bei Fall Nr. {case.id} noch mit etwas anderem helfen? Antworte einfach hier.",
        f"Wir haben nichts mehr von dir gehört und Fall Nr. {case.id} daher geschlossen. Wenn noch etwas ist, "
        "schreib einfach hier.",
    ]


def test_a_customer_who_answers_is_not_closed(store: CaseStore, support: SupportConfig) -> None:
    case = open_case(store, T0)
    store.lifecycle.claim(case.id, ANA, T0 + minutes(5))
    _agent_replies(store, case, T0 + minutes(10))
    watchdog = Watchdog(store, support)
    assert watchdog.tick(T0 + minutes(70)) == 1

    _customer_writes(store, case, T0 + minutes(80), row=7)

    # The agent's turn now: no second check-in, no closing.
    assert watchdog.tick(T0 + minutes(200)) == 0
    assert get(store, case.id).status == "claimed"
    # The agent answers; the silence after that is watched afresh.
    _agent_replies(store, case, T0 + minutes(210), number=2)
    assert watchdog.tick(T0 + minutes(269)) == 0
    assert watchdog.tick(T0 + minutes(270)) == 1
    assert len([i for i in queued(store, case.id, messages.KIND_CUSTOMER) if i.payload.get("watchdog")]) == 2


def test_silence_is_counted_in_open_minutes(store: CaseStore, support: SupportConfig) -> None:
    case = open_case(store, T0 + minutes(560))  # 19:20
    store.lifecycle.claim(case.id, ANA, T0 + minutes(562))
    _agent_replies(store, case, T0 + minutes(570))  # 19:30: 30 open minutes left today
    watchdog = Watchdog(store, support)

    assert watchdog.tick(T0 + timedelta(hours=21)) == 0  # Tuesday 07:00: still 30 minutes
    assert watchdog.tick(T0 + timedelta(hours=22, minutes=29)) == 0
    assert watchdog.tick(T0 + timedelta(hours=22, minutes=30)) == 1  # Tuesday 08:30


# --- the lease --------------------------------------------------------------------------------------


def test_of_two_watchdogs_only_the_lease_holder_acts(store: CaseStore, support: SupportConfig) -> None:
    first = Watchdog(store, support, holder="desk-a", lease_seconds=600)
    second = Watchdog(store, support, holder="desk-b", lease_seconds=600)
    case = open_case(store, T0)

    assert first.tick(T0 + minutes(1)) == 0  # takes the lease; nothing due yet
    assert second.tick(T0 + minutes(10)) == 0
    assert first.tick(T0 + minutes(10)) == 0  # renews it, until 10:20
    assert second.tick(T0 + minutes(15)) == 0  # the escalation is due, but not desk-b's to do
    assert store.outbox.items() == []
    assert first.tick(T0 + minutes(15)) == 1  # renewed until 10:25
    assert store.desk.lease_holder(LEASE, T0 + minutes(15)) == "desk-a"

    # desk-a stops renewing (it died): once its lease ran out, desk-b takes over.
    assert second.tick(T0 + minutes(24.9)) == 0
    assert second.tick(T0 + minutes(25)) == 1  # the overdue promise gets its update
    assert store.desk.lease_holder(LEASE, T0 + minutes(25)) == "desk-b"
    assert [i.key for i in store.outbox.items(kind=messages.KIND_CUSTOMER)] == [f"promise-update:{case.id}:1"]
    # A clean stop hands over at once.
    second.release(T0 + minutes(26))
    assert first.tick(T0 + minutes(26)) == 0
    assert store.desk.lease_holder(LEASE, T0 + minutes(26)) == "desk-a"


def test_a_lease_taken_by_many_at_once_goes_to_exactly_one(db_url: str) -> None:
    url = db_url
    CaseStore.from_url(url).dispose()
    stores = [CaseStore.from_url(url) for _ in range(8)]
    start = threading.Barrier(len(stores))
    won: list[str] = []

    def take(number: int) -> None:
        start.wait()
        if stores[number].desk.take_lease(LEASE, f"desk-{number}", T0, 60):
            won.append(f"desk-{number}")

    threads = [threading.Thread(target=take, args=(number,)) for number in range(len(stores))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    try:
        assert len(won) == 1 and stores[0].desk.lease_holder(LEASE, T0) == won[0]
    finally:
        for opened in stores:
            opened.dispose()


def test_a_disabled_watchdog_does_nothing(store: CaseStore, support: SupportConfig) -> None:
    open_case(store, T0)
    off = replace(support, watchdog=replace(support.watchdog, enabled=False))
    assert Watchdog(store, off).tick(T0 + minutes(60)) == 0
    assert store.outbox.items() == [] and store.desk.lease_holder(LEASE, T0 + minutes(60)) is None


# --- delivered through the real worker -------------------------------------------------------------


@pytest.mark.asyncio
async def test_escalation_and_update_are_delivered_and_the_update_is_no_human_reply(
    tmp_path: Path, store: CaseStore, support: SupportConfig
) -> None:
    slack = FakeDeskSlackAPI().start()
    slack.add_channel("C0QUEUE", "support-queue")
    slack.add_channel("C0LEADS", "support-leads")
    telegram = FakeTelegramAPI().start()
    rasa = FakeRasa().start()
    outbound = Outbound({"TELEGRAM_BOT_TOKEN": TELEGRAM_TOKEN, "TELEGRAM_API_BASE_URL": telegram.base_url,
                         "FIRSTREPLY_CHANNEL_DB": str(tmp_path / "channels.db")})  # fmt: skip
    from slack_sdk.web.async_client import AsyncWebClient

    now = [T0 + minutes(18)]
    client = AsyncWebClient(token=TOKEN, base_url=slack.base_url, retry_handlers=[])
    worker = OutboxWorker(store, client, RasaClient(rasa.url, "rasa-api-token"), outbound, clock=lambda: now[0])
    case = open_case(store, T0, customer_name="Maria <!here>")
    try:
        store.outbox.enqueue([messages.card_post(case.id)], T0)
        watchdog = Watchdog(store, support)
        assert watchdog.tick(now[0]) == 2  # escalated and updated in one tick (75 % and 90 % passed)
        await worker.drain()

        [lead] = slack.posted("C0LEADS")
        assert lead["text"].startswith(f":rotating_light: <!subteam^{ONCALL}> *Case #{case.id}* is still waiting")
        assert "Maria &lt;!here&gt; (telegram)" in lead["text"] and "The card is in <#C0QUEUE>" in lead["text"]
        assert lead["metadata"]["event_payload"]["key"] == f"escalation:{case.id}:0"
        assert telegram.sent_texts(MARIA) == [
            f"Sorry, Maria — case #{case.id} is taking longer than we said: it's taking us longer than usual. "
            "A person will reply within about 15 minutes."
        ]
        [event] = rasa.events[MARIA]
        assert (event["event"], event["text"], event["metadata"]["watchdog"], event["metadata"]["agent"]) == (
            "bot", telegram.sent_texts(MARIA)[0], "promise_update", None,
        )  # fmt: skip
        delivered = get(store, case.id)
        assert (delivered.first_human_reply_at, delivered.last_agent_reply_at) == (None, None)
        # Claimed before the escalation went out: it is skipped, not posted.
        second = open_case(store, T0 + minutes(5), sender="77")
        store.outbox.enqueue([messages.card_post(second.id)], T0 + minutes(5))
        now[0] = T0 + minutes(20)
        # At 75 %, and with Maria ahead of it (1.5 x 12 / 2 = 9 > 5 minutes left): escalated and updated.
        assert watchdog.tick(now[0]) == 2
        store.lifecycle.claim(second.id, ANA, now[0])
        await worker.drain()
        assert len(slack.posted("C0LEADS")) == 1
        [skipped] = store.outbox.items(case_id=second.id, kind=messages.KIND_LEAD_POST)
        assert skipped.result == {"skipped": "claimed"}
    finally:
        await worker.rasa.close()
        await outbound.close()
        rasa.stop()
        telegram.stop()
        slack.stop()


# --- support.yml -----------------------------------------------------------------------------------


def _with_watchdog(tmp_path: Path, section: str) -> Path:
    shipped = (ROOT / "support.yml").read_text(encoding="utf-8")
    path = tmp_path / "support.yml"
    path.write_text(shipped.split("\nwatchdog:\n")[0] + "\n" + section, encoding="utf-8")
    return path


def test_the_watchdog_section_is_optional_and_has_defaults(tmp_path: Path) -> None:
    assert load_support_config(ROOT / "support.yml").watchdog == WatchdogRules()
    assert load_support_config(_with_watchdog(tmp_path, "")).watchdog == WatchdogRules()
    assert load_support_config(_with_watchdog(tmp_path, "watchdog:\n")).watchdog == WatchdogRules()
    config = load_support_config(
        _with_watchdog(
            tmp_path,
            'watchdog:\n  enabled: false\n  escalate_at: 0.5\n  update_at: 0.8\n  lead_channel: "#leads"\n'
            "  oncall: U0BOSS\n  checkin_after_minutes: 30\n  close_after_minutes: 90\n",
        )
    )
    assert config.watchdog == WatchdogRules(False, 0.5, 0.8, "#leads", "U0BOSS", 30.0, 90.0)
    assert config.lead_channel == "#leads"


@pytest.mark.parametrize(
    ("section", "offset", "message"),
    [
        pytest.param(
            "  escalate_at: 1.5\n", 1,
            "watchdog.escalate_at must be a number greater than 0 and at most 1 (a share of the promised wait, "
            "e.g. 0.75) (got 1.5)",
            id="share-above-1",
        ),
        pytest.param(
            "  escalate_at: 0.9\n  update_at: 0.5\n", 2,
            "watchdog.update_at must not be below escalate_at (0.9): the leads hear of a case before its customer "
            "gets a new estimate (got 0.5)",
            id="update-before-escalation",
        ),
        pytest.param(
            "  oncall: '@oncall'\n", 1,
            "watchdog.oncall must be a Slack user id (U...) or user group id (S...) (got '@oncall')",
            id="oncall-not-an-id",
        ),
        pytest.param(
            "  lead_channel: #leads\n", 1, "watchdog.lead_channel must be a channel name; put it in quotes (got None)",
            id="unquoted-channel",
        ),
        pytest.param(
            "  checkin_after_minutes: 0\n", 1,
            "watchdog.checkin_after_minutes must be a number greater than 0 (got 0)", id="checkin-zero",
        ),
        pytest.param("  enabled: maybe\n", 1, "watchdog.enabled must be true or false (got 'maybe')", id="not-a-flag"),
        pytest.param(
            "  escalate: 0.5\n", 1, "unknown key in watchdog; did you mean 'escalate_at'? (got 'escalate')",
            id="unknown-key",
        ),
    ],
)
def test_watchdog_mistakes_name_the_line(tmp_path: Path, section: str, offset: int, message: str) -> None:
    path = _with_watchdog(tmp_path, "watchdog:\n" + section)
    line = path.read_text(encoding="utf-8").splitlines().index("watchdog:") + 1 + offset

    with pytest.raises(OpsConfigError) as caught:
        load_support_config(path)

    assert str(caught.value) == f"{path}:{line}: {message}"


# --- a desk process delivering an update through Telegram ---------------------------------------------


ALWAYS_OPEN = '["00:00-24:00"]'


@pytest.mark.integration
def test_a_desk_process_updates_a_telegram_customer_before_the_deadline(tmp_path: Path) -> None:
    lines = []
    in_holidays = False
    for line in (ROOT / "support.yml").read_text(encoding="utf-8").splitlines():
        day = line.strip().split(":", 1)[0]
        in_holidays = line.startswith("  holidays:") or (in_holidays and line.startswith("    "))
        if in_holidays:
            continue  # no holidays: open whenever the test runs
        lines.append(f"    {day}: {ALWAYS_OPEN}" if line.startswith("    ") and day.endswith("day") else line)
    shipped = "\n".join(lines)
    support_file = tmp_path / "support.yml"
    support_file.write_text(shipped.replace("  update_at: 0.9\n", f"  update_at: 0.9\n  oncall: {ONCALL}\n") + "\n")
    case_db = f"sqlite:///{tmp_path / 'cases.db'}"
    store = CaseStore.from_url(case_db)
    now = datetime.now(timezone.utc)
    case = open_case(store, now - minutes(19), 20)  # 95 % of the promise has passed
    store.dispose()
    slack = FakeDeskSlackAPI().start()
    slack.add_group("S0AGENTS", [ANA])
    slack.add_channel("C0QUEUE", "support-queue")
    slack.add_channel("C0LEADS", "support-leads")
    telegram = FakeTelegramAPI().start()
    port = free_port()
    with FakeRasa() as rasa:
        env = {
            **os.environ, "PYTHONPATH": str(ROOT), "SQLALCHEMY_SILENCE_UBER_WARNING": "1",
            "SLACK_DESK_BOT_TOKEN": TOKEN, "SLACK_DESK_SIGNING_SECRET": "secret", "SLACK_API_BASE_URL": slack.base_url,
            "FIRSTREPLY_DESK_AGENTS": "S0AGENTS", "RASA_URL": rasa.url, "FIRSTREPLY_API_TOKEN": "rasa-api-token",
            "FIRSTREPLY_EVENTS_DB": str(tmp_path / "events.db"), "FIRSTREPLY_CASE_DB": case_db,
            "FIRSTREPLY_SUPPORT_FILE": str(support_file), "FIRSTREPLY_DESK_PORT": str(port),
            "FIRSTREPLY_DESK_POLL_SECONDS": "0.2", "FIRSTREPLY_WATCHDOG_SECONDS": "0.3",
            "TELEGRAM_BOT_TOKEN": TELEGRAM_TOKEN, "TELEGRAM_API_BASE_URL": telegram.base_url,
            "FIRSTREPLY_CHANNEL_DB": str(tmp_path / "channels.db"),
        }  # fmt: skip
        for name in ("FIRSTREPLY_NOW", "SLACK_APP_TOKEN", "SLACK_BOT_TOKEN"):
            env.pop(name, None)
        desk = start_desk("desk", env, tmp_path / "desk.log")
        try:
            deadline = time.monotonic() + 30
            while not telegram.calls("sendMessage") and time.monotonic() < deadline:
                assert desk.popen.poll() is None, f"the desk exited with {desk.popen.returncode}"
                time.sleep(0.1)
            [sent] = telegram.calls("sendMessage")
            assert (sent.params["chat_id"], sent.params["text"]) == (
                MARIA,
                f"Sorry, Maria — case #{case.id} is taking longer than we said: it's taking us longer than usual. "
                "A person will reply within about 15 minutes.",
            )
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and not (rasa.events.get(MARIA) and slack.posted("C0LEADS")):
                time.sleep(0.1)
            assert [(e["event"], e["text"]) for e in rasa.events[MARIA]] == [("bot", sent.params["text"])]
            [lead] = slack.posted("C0LEADS")
            assert lead["text"].startswith(f":rotating_light: <!subteam^{ONCALL}> *Case #{case.id}*")
            checked = CaseStore.from_url(case_db)
            updated = get(checked, case.id)
            checked.dispose()
            assert (updated.promise_updates, updated.promise_wording, updated.first_human_reply_at) == (
                1, "within about 15 minutes", None,
            )  # fmt: skip
            time.sleep(1.0)  # further ticks change nothing: the new promise is far from due
            assert len(telegram.calls("sendMessage")) == 1
        finally:
            desk.stop()
            telegram.stop()
            slack.stop()
            print((tmp_path / "desk.log").read_text(errors="replace")[-3000:])  # shown when the test fails
