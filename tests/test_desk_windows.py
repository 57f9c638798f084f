"""Meta's policy windows applied to what the desk sends later: agents' replies and the watchdog's updates.

The real outbox worker delivers to the fake WhatsApp Cloud API through the real pywa
sender, posts to the fake Slack Web API, and reads the customer's last message from the
fake Rasa HTTP API's tracker, with a clock the test moves. Messenger and Instagram have no
sender on this branch yet: their window decisions (the ``HUMAN_AGENT`` tag for a person's
reply from 24 hours to 7 days, nothing after) are checked on the worker's decision itself.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from slack_sdk.web.async_client import AsyncWebClient

from bot.cases import Case, CaseStore, NewCase, TranscriptLine
from bot.channels.meta import INSTAGRAM, MESSENGER, WHATSAPP, Window
from bot.channels.outbound import Outbound
from bot.desk import cards, messages, windows
from bot.desk.metrics import build_registry
from bot.desk.outbox import OutboxWorker, _OutsideWindow, render_card
from bot.desk.rasa_api import RasaClient
from bot.desk.text import is_template_request
from bot.desk.watchdog import Watchdog
from bot.ops import load_support_config
from tests.conftest import OPEN_NOW
from tests.fakes.rasa_api import TOKEN as RASA_TOKEN
from tests.fakes.rasa_api import FakeRasa
from tests.fakes.slack_web_api import TOKEN, FakeDeskSlackAPI
from tests.fakes.whatsapp_api import PHONE_NUMBER_ID
from tests.fakes.whatsapp_api import TOKEN as WHATSAPP_TOKEN
from tests.fakes.whatsapp_api import FakeWhatsAppAPI

ROOT = Path(__file__).resolve().parent.parent
MARIA = "4915112345678"
ANA = "U0ANA"
T0 = OPEN_NOW  # Monday 10:00 in London: open
TEMPLATE = windows.ReopenTemplate("reopen_conversation", "en_GB")


def hours(count: float) -> timedelta:
    return timedelta(hours=count)


@dataclass
class Rig:
    store: CaseStore
    worker: OutboxWorker
    whatsapp: FakeWhatsAppAPI
    slack: FakeDeskSlackAPI
    rasa: FakeRasa
    now: list[datetime]

    def customer_wrote(self, at: datetime, sender: str = MARIA, channel: str = WHATSAPP) -> None:
        """Put a customer message in the conversation as Rasa's tracker holds it."""
        self.rasa.events.setdefault(sender, []).append(
            {"event": "user", "text": "still waiting", "timestamp": at.timestamp(), "input_channel": channel}
        )

    def open_case(self, at: datetime, channel: str = WHATSAPP) -> Case:
        case = self.store.lifecycle.open_case(
            NewCase(
                channel=channel, sender_id=MARIA, customer_name="Maria Keller", case_type="order_status",
                intent_confidence=0.9, answers={}, summary="Parcel late.",
                transcript=(TranscriptLine("customer", "where is my parcel", at),), language="en",
                priority="normal", complaint_score=0.1, promised_by=at + timedelta(minutes=20),
                promise_wording="within about 20 minutes", handoff_key=f"{channel}:{at.isoformat()}",
                metadata={"route": "#support-queue"},
            ),
            at,
        )  # fmt: skip
        self.store.outbox.enqueue([messages.card_post(case.id)], at)
        return case

    def thread(self) -> list[str]:
        return [post["text"] for post in self.slack.posted("C0QUEUE") if post.get("thread_ts")]

    def given_up(self, case_id: int) -> list[Any]:
        return [i for i in self.store.outbox.items(case_id=case_id, kind=messages.KIND_CUSTOMER)
                if i.delivered_at is None and i.next_attempt_at is None]  # fmt: skip


@pytest_asyncio.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    slack = FakeDeskSlackAPI().start()
    slack.add_channel("C0QUEUE", "support-queue")
    slack.add_channel("C0LEADS", "support-leads")
    whatsapp = FakeWhatsAppAPI().start()
    rasa = FakeRasa().start()
    outbound = Outbound({
        "WHATSAPP_ACCESS_TOKEN": WHATSAPP_TOKEN, "WHATSAPP_PHONE_NUMBER_ID": PHONE_NUMBER_ID,
        "WHATSAPP_API_BASE_URL": whatsapp.base_url, "FIRSTREPLY_CHANNEL_DB": str(tmp_path / "channels.db"),
    })  # fmt: skip
    store = CaseStore.from_url(f"sqlite:///{tmp_path / 'cases.db'}")
    now = [T0]
    client = AsyncWebClient(token=TOKEN, base_url=slack.base_url, retry_handlers=[])
    worker = OutboxWorker(
        store, client, RasaClient(rasa.url, RASA_TOKEN), outbound, clock=lambda: now[0], retry_seconds=0.01,
        lead_channel="#support-leads", reopen_template=TEMPLATE,
    )  # fmt: skip
    try:
        yield Rig(store, worker, whatsapp, slack, rasa, now)
    finally:
        await worker.rasa.close()
        await outbound.close()
        store.dispose()
        rasa.stop()
        whatsapp.stop()
        slack.stop()


# --- an agent's reply on WhatsApp ----------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_reply_within_24_hours_of_the_customers_last_message_is_sent(rig: Rig) -> None:
    case = rig.open_case(T0)
    rig.customer_wrote(T0 + hours(2))
    rig.now[0] = T0 + hours(25)  # 25 h after the case opened, 23 h after the customer last wrote
    reply = messages.customer_reply(case, "relay-out:1", "Your parcel is on its way.", ANA)
    rig.store.outbox.enqueue([reply], rig.now[0])
    await rig.worker.drain()

    assert rig.whatsapp.delivered_texts(MARIA) == ["Your parcel is on its way."]
    delivered = rig.store.lookup.get(case.id)
    assert delivered is not None and delivered.first_human_reply_at == rig.now[0]
    assert [e["text"] for e in rig.rasa.events[MARIA] if e["event"] == "bot"] == ["Your parcel is on its way."]


@pytest.mark.asyncio
async def test_past_24_hours_the_reply_is_not_sent_and_the_agent_is_offered_the_template(rig: Rig) -> None:
    case = rig.open_case(T0)
    rig.customer_wrote(T0)
    rig.now[0] = T0 + hours(24) + timedelta(minutes=1)
    rig.store.outbox.enqueue([messages.customer_reply(case, "relay-out:1", "Any news on your side?", ANA)], rig.now[0])
    await rig.worker.drain()

    assert rig.whatsapp.calls(answered=None) == []
    [refused] = rig.given_up(case.id)
    assert refused.last_error.startswith("whatsapp: outside the messaging window")
    [notice] = rig.thread()
    assert "Your reply was *not delivered*" in notice and "more than 24 hours" in notice
    assert "reply `template:` in this thread" in notice and "`reopen_conversation` (en_GB)" in notice
    # Not a reply the customer got: neither the case nor the conversation counts it.
    unanswered = rig.store.lookup.get(case.id)
    assert unanswered is not None and unanswered.first_human_reply_at is None
    assert [e for e in rig.rasa.events[MARIA] if e["event"] == "bot"] == []
    # Nobody in the leads' channel: an agent's own reply is the agent's to follow up.
    assert rig.slack.posted("C0LEADS") == []

    # The agent's ``template:`` sends the approved template, which may go outside the window.
    assert is_template_request("template: please") and not is_template_request("the template is wrong")
    rig.store.outbox.enqueue([messages.reopen_template(case, "relay-out:2", ANA)], rig.now[0])
    await rig.worker.drain()
    [sent] = rig.whatsapp.sent(MARIA)
    assert sent["type"] == "template"
    assert sent["template"] == {"name": "reopen_conversation", "language": {"code": "en_GB"}}
    still = rig.store.lookup.get(case.id)
    assert still is not None and still.first_human_reply_at is None  # an invitation, not an answer


@pytest.mark.asyncio
async def test_whatsapps_own_window_error_is_read_as_a_closed_window_not_retried(rig: Rig) -> None:
    case = rig.open_case(T0)
    rig.customer_wrote(T0)
    rig.now[0] = T0 + hours(23)  # our clock says open; WhatsApp's says otherwise
    rig.whatsapp.fail_with(131047, times=3)
    rig.store.outbox.enqueue([messages.customer_reply(case, "relay-out:1", "Hello again", ANA)], rig.now[0])
    await rig.worker.drain()

    assert len(rig.whatsapp.calls("messages", answered=None)) == 1
    [refused] = rig.given_up(case.id)
    assert "131047" in refused.last_error
    [notice] = rig.thread()
    assert "WhatsApp refused it as outside its messaging window of 24 hours" in notice and "`template:`" in notice


@pytest.mark.asyncio
async def test_a_throughput_limit_is_retried_until_the_reply_goes(rig: Rig) -> None:
    case = rig.open_case(T0)
    rig.customer_wrote(T0)
    rig.whatsapp.fail_with(130429, times=2)
    rig.store.outbox.enqueue([messages.customer_reply(case, "relay-out:1", "On it", ANA)], rig.now[0])
    for _ in range(3):  # each retry falls due a moment later
        await rig.worker.drain()
        rig.now[0] += timedelta(seconds=1)

    assert rig.whatsapp.delivered_texts(MARIA) == ["On it"]
    assert [c.status for c in rig.whatsapp.calls("messages", answered=None)] == [400, 400, 200]
    assert rig.thread() == []


@pytest.mark.asyncio
async def test_while_rasa_cannot_say_when_the_customer_last_wrote_nothing_is_sent_blind(rig: Rig) -> None:
    case = rig.open_case(T0)
    rig.customer_wrote(T0)
    rig.rasa.fail_next = 2
    rig.store.outbox.enqueue([messages.customer_reply(case, "relay-out:1", "On it", ANA)], rig.now[0])
    await rig.worker.drain()
    assert rig.whatsapp.calls(answered=None) == []  # not given up either: tried again later
    for _ in range(3):
        rig.now[0] += timedelta(seconds=1)
        await rig.worker.drain()

    assert rig.whatsapp.delivered_texts(MARIA) == ["On it"]
    assert rig.given_up(case.id) == []


# --- the watchdog's update ------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_the_watchdog_makes_no_new_estimate_it_cannot_deliver_and_tells_the_leads_once(rig: Rig) -> None:
    support = load_support_config(ROOT / "support.yml")
    case = rig.open_case(T0 - hours(30))  # opened (the customer's last word) before a closed weekend, say
    watchdog = Watchdog(rig.store, support)
    watchdog.tick(rig.now[0])
    watchdog.tick(rig.now[0] + timedelta(minutes=1))
    await rig.worker.drain()

    kept = rig.store.lookup.get(case.id)
    assert kept is not None and (kept.promise_updates, kept.promised_by) == (0, case.promised_by)
    assert rig.whatsapp.calls(answered=None) == [] and rig.given_up(case.id) == []
    [lead_notice] = [p["text"] for p in rig.slack.posted("C0LEADS") if "not* told" in p["text"]]
    assert lead_notice.startswith(f":warning: Case #{case.id}: the customer was *not* told (promise update)")
    [notice] = [text for text in rig.thread() if "cannot be sent a new estimate" in text]
    assert "whatsapp lets the assistant write only within 24 hours" in notice

    # A customer who wrote again (relayed to the thread) can be told: the update goes.
    rig.store.outbox.enqueue([messages.thread_message(case.id, messages.relay_in_key(1), "Maria wrote")], rig.now[0])
    rig.customer_wrote(rig.now[0])
    rig.now[0] += timedelta(minutes=2)
    assert watchdog.tick(rig.now[0]) >= 1
    await rig.worker.drain()
    assert [text.startswith("Sorry, Maria") for text in rig.whatsapp.delivered_texts(MARIA)] == [True]


@pytest.mark.asyncio
async def test_no_check_in_goes_past_the_window_and_the_quiet_case_does_not_close_by_itself(rig: Rig) -> None:
    support = load_support_config(ROOT / "support.yml")
    case = rig.open_case(T0 - hours(26))
    rig.customer_wrote(T0 - hours(26))
    rig.now[0] = T0 - hours(25)
    rig.store.lifecycle.claim(case.id, ANA, rig.now[0])
    rig.store.outbox.enqueue([messages.customer_reply(case, "relay-out:1", "Checking with the courier.", ANA)],
                             rig.now[0])  # fmt: skip
    await rig.worker.drain()
    assert rig.whatsapp.delivered_texts(MARIA) == ["Checking with the courier."]

    rig.now[0] = T0  # 25 h later, the customer silent all along
    watchdog = Watchdog(rig.store, support)
    watchdog.tick(rig.now[0])
    watchdog.tick(rig.now[0] + hours(3))
    await rig.worker.drain()

    quiet = rig.store.lookup.get(case.id)
    assert quiet is not None and (quiet.status, quiet.checkin_at) == ("claimed", None)
    assert rig.whatsapp.delivered_texts(MARIA) == ["Checking with the courier."]
    [notice] = [text for text in rig.thread() if "no check-in was sent" in text]
    assert "the case will not close by itself" in notice


@pytest.mark.asyncio
async def test_a_watchdog_update_refused_at_delivery_is_not_counted_as_delivered_and_the_leads_are_told(
    rig: Rig,
) -> None:
    case = rig.open_case(T0)
    rig.customer_wrote(T0)
    rig.now[0] = T0 + hours(24) + timedelta(minutes=5)  # the window closed while the update waited to go
    key = f"{messages.PROMISE_UPDATE_PREFIX}{case.id}:1"
    update = messages.assistant_message(case, key, "Sorry, Maria — it's taking longer.", "promise_update")
    later = case.promised_by + hours(1)
    assert rig.store.watch.update_promise(case.id, 0, later, "by 11:20", "busy", rig.now[0], outbox=[update])
    before = build_registry(rig.store, lambda: rig.now[0], rig.worker.stats)
    await rig.worker.drain()

    assert rig.whatsapp.calls(answered=None) == []
    [refused] = rig.given_up(case.id)
    assert refused.key == key
    assert any("The assistant's update was *not delivered*" in text for text in rig.thread())
    [lead_notice] = [p["text"] for p in rig.slack.posted("C0LEADS") if "not* told" in p["text"]]
    assert lead_notice.startswith(f":warning: Case #{case.id}: the customer was *not* told (promise update)")
    # The new estimate the customer never got is not counted among those told.
    families = {family.name: family for family in before.collect()}
    updates = [s.value for s in families["firstreply_watchdog_actions"].samples
               if s.labels.get("action") == "promise_update"]  # fmt: skip
    assert updates == [0.0]
    assert [s.value for s in families["firstreply_promises_updated"].samples] == [0.0]
    # Nor on the card: the estimate in force is not said to be what the customer heard.
    updated = rig.store.lookup.get(case.id)
    assert updated is not None and updated.promise_updates == 1
    line = cards.promise_line(updated, rig.now[0], undelivered_updates=1)
    assert "(the latest estimate “by 11:20”)" in line and "new estimate sent" not in line
    assert " · :no_entry: 1 new estimate(s) not delivered (outside the platform's window)" in line
    assert "1 new estimate(s) not delivered" in json.dumps(render_card(rig.store, updated, rig.now[0]).blocks)


# --- Messenger and Instagram: the worker's decision ------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("channel", [MESSENGER, INSTAGRAM])
@pytest.mark.parametrize(
    ("since", "by_person", "expected"),
    [
        (hours(23), True, {}),
        (hours(23), False, {}),
        (hours(25), True, {"tag": "HUMAN_AGENT"}),
        (timedelta(days=6, hours=23), True, {"tag": "HUMAN_AGENT"}),
        (hours(25), False, Window.CLOSED),  # the bot's own message never carries the tag
        (timedelta(days=7, minutes=1), True, Window.CLOSED),
    ],
)
async def test_messenger_and_instagram_replies_follow_the_24_hour_and_7_day_windows(
    rig: Rig, channel: str, since: timedelta, by_person: bool, expected: Any
) -> None:
    case = rig.open_case(T0, channel=channel)
    rig.customer_wrote(T0, channel=channel)
    rig.customer_wrote(T0 + hours(1), channel="telegram")  # another channel's message opens nothing here
    rig.now[0] = T0 + since
    item = rig.store.outbox.items(case_id=case.id)[0]
    if isinstance(expected, dict):
        assert await rig.worker._window_options(item, channel, MARIA, by_person) == expected
    else:
        with pytest.raises(_OutsideWindow) as raised:
            await rig.worker._window_options(item, channel, MARIA, by_person)
        assert raised.value.window is expected


def test_the_customers_last_message_is_read_from_the_conversation() -> None:
    stamp = T0.timestamp()
    events = [
        {"event": "user", "text": "hi", "timestamp": stamp, "input_channel": WHATSAPP},
        {"event": "bot", "text": "Hello!", "timestamp": stamp + 5},
        {"event": "user", "text": "EXTERNAL: case_resolved", "timestamp": stamp + 9000, "input_channel": WHATSAPP},
        {"event": "user", "text": "thanks", "timestamp": stamp + 60, "input_channel": WHATSAPP},
        {"event": "user", "text": "other app", "timestamp": stamp + 600, "input_channel": "telegram"},
    ]
    assert windows.last_customer_message(events, WHATSAPP) == T0 + timedelta(seconds=60)
    assert windows.last_customer_message(events[1:3], WHATSAPP) is None


def test_what_the_agent_reads_names_the_platform_and_the_way_out() -> None:
    closed = windows.not_delivered_text(MESSENGER, Window.CLOSED, watchdog=None, template=TEMPLATE)
    assert "more than 7 days" in closed and "Messenger will deliver nothing" in closed and "template" not in closed
    bare = windows.not_delivered_text(WHATSAPP, Window.TEMPLATE_ONLY, watchdog="checkin", template=None)
    assert bare.startswith(":no_entry: The assistant's update") and "No reopening template is set" in bare
