"""The agent desk in process: the real bolt app and slack_sdk client against the fake Slack Web API.

Slack's requests are signed for real (HMAC v0 with the signing secret); customer
messages come through Rasa's own SQL event broker table; replies go to the fake
Telegram Bot API through the real ``TelegramOutput``; Rasa's HTTP API is a small local
fake that records what the desk appends and triggers. The desk's loops run with short
poll and retry times so every test waits for real deliveries, not for mocks.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from sqlalchemy.exc import OperationalError

from bot.cases import Case, CaseStore
from bot.channels.outbound import Outbound
from bot.desk import cards, messages
from bot.desk.app import Desk
from bot.desk.listener import NOT_AGENT
from bot.desk.outbox import outbox_metadata
from bot.desk.settings import DeskSettings
from bot.ops import load_support_config
from tests.desk_support import MARIA_CHAT, open_case, serving
from tests.fakes.rasa_api import TOKEN as RASA_TOKEN
from tests.fakes.rasa_api import FakeRasa
from tests.fakes.slack_api import signed_headers
from tests.fakes.slack_web_api import TOKEN, FakeDeskSlackAPI
from tests.fakes.telegram_api import TOKEN as TELEGRAM_TOKEN
from tests.fakes.telegram_api import FakeTelegramAPI
from tests.polling import until as poll_until

ROOT = Path(__file__).resolve().parent.parent
SECRET = "desk-signing-secret-for-tests"
AGENTS_GROUP = "S0AGENTS"
AGENTS = [f"U0AGENT{number}" for number in range(10)]
ANA, BEN = AGENTS[0], AGENTS[1]
LEAD = "U0LEAD"
OUTSIDER = "U0OUTSIDER"
QUEUE, BILLING, LEADS = "C0QUEUE", "C0BILLING", "C0LEADS"


# --- the desk under test ---------------------------------------------------------------


@dataclass
class Running:
    desk: Desk
    store: CaseStore
    slack: FakeDeskSlackAPI
    telegram: FakeTelegramAPI
    rasa: FakeRasa
    url: str
    session: aiohttp.ClientSession
    events_db: Path
    broker: Any = None
    _counter: int = 0

    def next_id(self) -> int:
        self._counter += 1
        return self._counter

    # -- Slack's side, signed ---------------------------------------------------------

    async def post(self, body: bytes, content_type: str, *, secret: str = SECRET) -> tuple[int, str]:
        headers = signed_headers(secret, body, content_type)
        async with self.session.post(self.url, data=body, headers=headers) as answer:
            return answer.status, await answer.text()

    async def interaction(self, payload: dict[str, Any]) -> tuple[int, str]:
        body = urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()
        return await self.post(body, "application/x-www-form-urlencoded")

    async def press(self, user: str, action_id: str, case: Case, value: str | None = None) -> tuple[int, str]:
        assert case.card_channel and case.card_ts
        number = self.next_id()
        return await self.interaction(
            {
                "type": "block_actions", "team": {"id": "T0BRAND"}, "api_app_id": "A0FIRSTREPLY",
                "user": {"id": user, "team_id": "T0BRAND"}, "token": "legacy", "trigger_id": f"trigger-{number}",
                "container": {"type": "message", "message_ts": case.card_ts, "channel_id": case.card_channel},
                "channel": {"id": case.card_channel}, "message": {"ts": case.card_ts, "text": "card"},
                "actions": [{"action_id": action_id, "block_id": f"desk_case_{case.id}", "type": "button",
                             "value": value if value is not None else str(case.id), "action_ts": f"{time.time():.6f}"}],
            }
        )  # fmt: skip

    async def event(self, event: dict[str, Any]) -> tuple[int, str]:
        number = self.next_id()
        body = {"token": "legacy", "team_id": "T0BRAND", "api_app_id": "A0FIRSTREPLY", "type": "event_callback",
                "event_id": f"Ev{number:06d}", "event_time": int(time.time()), "event": event}  # fmt: skip
        return await self.post(json.dumps(body).encode(), "application/json")

    async def reply(self, user: str, case: Case, text: str, **extra: Any) -> str:
        ts = f"{time.time():.6f}"
        status, _ = await self.event(
            {"type": "message", "channel": case.card_channel, "channel_type": "channel", "user": user, "text": text,
             "ts": ts, "thread_ts": case.card_ts, **extra}  # fmt: skip
        )
        assert status == 200
        return ts

    async def command(self, user: str, command: str, text: str = "") -> dict[str, Any]:
        body = urllib.parse.urlencode(
            {"command": command, "text": text, "user_id": user, "channel_id": QUEUE, "team_id": "T0BRAND",
             "response_url": "http://127.0.0.1:9/unused", "trigger_id": "t", "token": "legacy"}  # fmt: skip
        ).encode()
        status, answer = await self.post(body, "application/x-www-form-urlencoded")
        assert status == 200
        return dict(json.loads(answer))

    # -- the customer's side -------------------------------------------------------------

    def customer_writes(self, sender: str, text: str, channel: str = "telegram", **metadata: Any) -> None:
        """Log a customer's message as Rasa does while the conversation is paused."""
        from rasa.core.brokers.sql import SQLEventBroker

        if self.broker is None:
            with warnings.catch_warnings():
                # Rasa 3.6's own engine URL call, deprecated in SQLAlchemy 1.4: not ours to fix.
                warnings.filterwarnings("ignore", "Calling URL\\(\\) directly is deprecated")
                self.broker = SQLEventBroker(dialect="sqlite", db=str(self.events_db))
        self.broker.publish(
            {"sender_id": sender, "event": "user", "timestamp": time.time(), "text": text, "input_channel": channel,
             "metadata": metadata, "parse_data": {"intent": {"name": "nlu_fallback", "confidence": 0.3}}}  # fmt: skip
        )

    # -- reading ---------------------------------------------------------------------------

    def case(self, case_id: int) -> Case:
        found = self.store.lookup.get(case_id)
        assert found is not None
        return found

    async def until(self, what: str, probe: Callable[[], Any], timeout: float = 15.0) -> Any:
        def outbox() -> str:
            items = [(i.id, i.kind, i.attempts, i.delivered_at is not None, i.last_error) for i in self.store.outbox.items()]
            return f"outbox: {items}"

        return await poll_until(what, probe, timeout, context=outbox)

    async def card_of(self, case_id: int) -> Case:
        return await self.until(f"card of case {case_id}", lambda: (c := self.case(case_id)).card_ts and c)

    async def settled(self, quiet: float = 0.4) -> None:
        """Wait until the outbox has nothing due or under way for ``quiet`` seconds."""
        calm_since = time.monotonic()
        while time.monotonic() - calm_since < quiet:
            pending = [i for i in self.store.outbox.items() if i.delivered_at is None and i.next_attempt_at is not None]
            if pending:
                calm_since = time.monotonic()
            await asyncio.sleep(0.05)


@pytest.fixture
def fakes() -> Iterator[tuple[FakeDeskSlackAPI, FakeTelegramAPI]]:
    slack = FakeDeskSlackAPI().start()
    slack.add_group(AGENTS_GROUP, AGENTS)
    for channel_id, name in ((QUEUE, "support-queue"), (BILLING, "support-billing"), (LEADS, "support-leads")):
        slack.add_channel(channel_id, name)
    telegram = FakeTelegramAPI().start()
    yield slack, telegram
    telegram.stop()
    slack.stop()


@pytest_asyncio.fixture
async def running(tmp_path: Path, fakes: tuple[FakeDeskSlackAPI, FakeTelegramAPI]) -> AsyncIterator[Running]:
    slack, telegram = fakes
    rasa = FakeRasa().start()
    events_db = tmp_path / "events.db"
    env = {
        "SLACK_DESK_BOT_TOKEN": TOKEN, "SLACK_DESK_SIGNING_SECRET": SECRET, "SLACK_API_BASE_URL": slack.base_url,
        "FIRSTREPLY_DESK_AGENTS": AGENTS_GROUP, "FIRSTREPLY_DESK_LEADS": LEAD, "RASA_URL": rasa.url,
        "FIRSTREPLY_API_TOKEN": RASA_TOKEN, "FIRSTREPLY_EVENTS_DB": str(events_db),
        "FIRSTREPLY_DESK_POLL_SECONDS": "0.05", "FIRSTREPLY_DESK_RETRY_SECONDS": "0.05",
        "FIRSTREPLY_DESK_RETRY_MAX_SECONDS": "0.5",
        "TELEGRAM_BOT_TOKEN": TELEGRAM_TOKEN, "TELEGRAM_API_BASE_URL": telegram.base_url,
        "FIRSTREPLY_CHANNEL_DB": str(tmp_path / "channels.db"),
    }  # fmt: skip
    store = CaseStore.from_url(f"sqlite:///{tmp_path / 'cases.db'}")
    desk = Desk(DeskSettings.from_env(env), store, load_support_config(ROOT / "support.yml"), outbound=Outbound(env))
    running: Running | None = None
    try:
        async with serving(desk) as url, aiohttp.ClientSession() as session:
            running = Running(desk, store, slack, telegram, rasa, f"{url}/slack/events", session, events_db)
            yield running
    finally:
        rasa.stop()
        if running is not None and running.broker is not None:
            running.broker.engine.dispose()
        store.dispose()


def card_json(api: FakeDeskSlackAPI, case: Case) -> str:
    assert case.card_channel and case.card_ts
    return json.dumps(api.message(case.card_channel, case.card_ts).blocks, ensure_ascii=False)


def buttons(api: FakeDeskSlackAPI, case: Case) -> list[str]:
    assert case.card_channel and case.card_ts
    blocks = api.message(case.card_channel, case.card_ts).blocks
    return [element["text"]["text"] for block in blocks if block["type"] == "actions" for element in block["elements"]]


# --- cards -----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_new_case_gets_a_card_with_everything_the_agent_needs(running: Running) -> None:
    earlier = open_case(running.store, key="k0", case_type="billing", metadata={"route": "#support-billing"})
    running.store.lifecycle.claim(earlier.id, ANA, datetime.now(timezone.utc))
    running.store.lifecycle.resolve(earlier.id, datetime.now(timezone.utc), by=ANA)
    case = open_case(
        running.store, key="k1", case_type="complaint", priority="urgent", complaint_score=0.93,
        customer_name="Maria <!channel>", summary="Rude courier <@U0AGENT1> & <https://evil.example|click>",
        answers={"complaint_detail": "<!here> shouted at me"}, metadata={"route": "#support-leads"},
    )  # fmt: skip

    carded = await running.card_of(case.id)

    assert (carded.card_channel, running.slack.top_level(LEADS)[0].ts) == (LEADS, carded.card_ts)
    [posted] = [p for p in running.slack.calls("chat.postMessage") if p.params.get("channel") == LEADS]
    assert posted.params["metadata"] == outbox_metadata(f"card-post:{case.id}")
    blocks = running.slack.message(LEADS, str(carded.card_ts)).blocks
    texts = json.dumps(blocks)
    assert blocks[0] == {"type": "header", "text": {"type": "plain_text", "text": f"Case #{case.id} · Complaint"}}
    assert blocks[1]["text"]["text"].startswith(":rotating_light: *URGENT* · :anger: *Complaint* (score 0.93)\n")
    assert ":hourglass_flowing_sand: *Waiting* for " in blocks[1]["text"]["text"]
    assert blocks[2]["fields"][0]["text"] == "*Customer*\nMaria &lt;!channel&gt; (telegram)"
    assert blocks[3]["text"]["text"].startswith(":alarm_clock: Promise due in 1") and "within about 20 minutes" in texts
    assert blocks[4]["text"]["text"] == (
        "*Summary* (confirmed by the customer)\n"
        ">Rude courier &lt;@U0AGENT1&gt; &amp; &lt;https://evil.example|click&gt;"
    )
    assert blocks[5]["text"]["text"] == "*Answers*\n• *Complaint detail:* &lt;!here&gt; shouted at me"
    assert blocks[6]["text"]["text"] == "*Last messages*\n*Customer:* where is my parcel??\n*Assistant:* What's your order number?"
    assert blocks[7]["elements"][0]["text"] == f"Previous cases: #{earlier.id} Billing (resolved)"
    assert buttons(running.slack, carded) == ["Claim", "Reassign", "Resolve"]
    assert [e["value"] for e in blocks[8]["elements"]] == [str(case.id)] * 3
    for injected in ("<!channel>", "<!here>", "<@U0AGENT1>", "<https://evil"):
        assert injected not in texts
    # The earlier case was resolved before the desk saw it: no card, ever.
    assert running.case(earlier.id).card_ts is None


@pytest.mark.asyncio
async def test_cases_go_to_the_channel_their_routing_names(running: Running) -> None:
    billing = open_case(running.store, key="k1", case_type="billing", metadata={"route": "#support-billing"})
    general = open_case(running.store, key="k2", sender="77", metadata={"route": "#support-queue"})

    assert (await running.card_of(billing.id)).card_channel == BILLING
    assert (await running.card_of(general.id)).card_channel == QUEUE
    await running.settled()
    assert len(running.slack.calls("chat.postMessage")) == 2


# --- claim and who may act ----------------------------------------------------------------


@pytest.mark.asyncio
async def test_ten_agents_claim_at_once_and_exactly_one_wins(running: Running) -> None:
    case = await running.card_of(open_case(running.store).id)

    answers = await asyncio.gather(*(running.press(agent, cards.ACTION_CLAIM, case) for agent in AGENTS))

    assert [status for status, _ in answers] == [200] * 10
    owner = (await running.until("claimed", lambda: running.case(case.id).claimed_by))
    assert owner in AGENTS
    refusals = await running.until("9 refusals", lambda: len(running.slack.ephemerals()) >= 9 and running.slack.ephemerals())
    await running.settled()
    refusals = running.slack.ephemerals()
    assert sorted(r["user"] for r in refusals) == sorted(a for a in AGENTS if a != owner)
    assert {r["text"] for r in refusals} == {f"Case #{case.id} is already claimed by <@{owner}>."}
    assert {r["channel"] for r in refusals} == {QUEUE}
    await running.until("card shows the owner", lambda: f"*Claimed* by <@{owner}>" in card_json(running.slack, case))
    assert buttons(running.slack, case) == ["Reassign", "Resolve"]
    assert [m.text for m in running.slack.thread(QUEUE, str(case.card_ts))] == [f":raising_hand: Claimed by <@{owner}>."]


@pytest.mark.asyncio
async def test_someone_outside_the_team_is_refused_and_nothing_changes(running: Running) -> None:
    case = await running.card_of(open_case(running.store).id)
    await running.settled()
    before = running.case(case.id)

    for action in (cards.ACTION_CLAIM, cards.ACTION_RESOLVE, cards.ACTION_REASSIGN):
        assert (await running.press(OUTSIDER, action, case))[0] == 200
    await running.reply(OUTSIDER, case, "hello, I'm not an agent")
    await running.until("4 refusals", lambda: len(running.slack.ephemerals(OUTSIDER)) == 4)
    await running.settled()

    assert {e["text"] for e in running.slack.ephemerals(OUTSIDER)} == {NOT_AGENT}
    after = running.case(case.id)
    assert (after.status, after.claimed_by, after.updated_at, after.first_human_reply_at) == (
        "waiting", None, before.updated_at, None,
    )  # fmt: skip
    assert running.slack.thread(QUEUE, str(case.card_ts)) == []
    assert running.slack.calls("views.open") == [] and running.telegram.calls("sendMessage") == []
    assert running.rasa.requests == []


@pytest.mark.asyncio
async def test_a_button_whose_case_is_not_its_cards_is_refused(running: Running) -> None:
    first = await running.card_of(open_case(running.store, key="k1").id)
    second = await running.card_of(open_case(running.store, key="k2", sender="77").id)

    # Case 2's id on case 1's card: the client cannot pick the case.
    await running.press(ANA, cards.ACTION_CLAIM, first, value=str(second.id))
    await running.until("refusal", lambda: running.slack.ephemerals(ANA))

    assert running.slack.ephemerals(ANA)[0]["text"] == "This card is not a case the desk knows."
    assert (running.case(first.id).status, running.case(second.id).status) == ("waiting", "waiting")


@pytest.mark.asyncio
async def test_a_request_with_a_bad_signature_is_rejected(running: Running) -> None:
    case = await running.card_of(open_case(running.store).id)
    payload = {"type": "block_actions", "team": {"id": "T0BRAND"}, "user": {"id": ANA, "team_id": "T0BRAND"},
               "actions": [{"action_id": cards.ACTION_CLAIM, "value": str(case.id)}],
               "container": {"message_ts": case.card_ts, "channel_id": case.card_channel}}  # fmt: skip
    body = urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()

    assert (await running.post(body, "application/x-www-form-urlencoded", secret="wrong-secret"))[0] == 401
    challenge = json.dumps({"type": "url_verification", "token": "legacy", "challenge": "c-123"}).encode()
    assert await running.post(challenge, "application/json") == (200, '{"challenge": "c-123"}')
    malformed = urllib.parse.urlencode({"payload": json.dumps({"type": "block_actions", "user": {"id": ANA}})}).encode()
    assert (await running.post(malformed, "application/x-www-form-urlencoded", secret="wrong-secret"))[0] == 400
    await asyncio.sleep(0.3)
    assert running.case(case.id).status == "waiting"


# --- the conversation ------------------------------------------------------------------------


async def claimed_case(running: Running, agent: str = ANA, **overrides: Any) -> Case:
    case = await running.card_of(open_case(running.store, **overrides).id)
    await running.press(agent, cards.ACTION_CLAIM, case)
    return await running.until("claimed", lambda: (c := running.case(case.id)).status == "claimed" and c)


@pytest.mark.asyncio
async def test_the_customer_and_the_owner_talk_through_the_thread(running: Running) -> None:
    case = await claimed_case(running)
    thread = str(case.card_ts)

    running.customer_writes(MARIA_CHAT, "still nothing <!channel> :( & it's urgent")
    running.customer_writes("someone-else", "not a case of ours")
    running.customer_writes(MARIA_CHAT, "EXTERNAL: EXTERNAL_case_resolved")
    customer_line = await running.until(
        "customer message in the thread",
        lambda: [m.text for m in running.slack.thread(QUEUE, thread) if m.text.startswith(":speech_balloon:")],
    )
    assert customer_line == [":speech_balloon: *Maria* wrote:\n>still nothing &lt;!channel&gt; :( &amp; it's urgent"]

    # As Slack sends what the agent typed: markup for the link, entities for & < >.
    await running.reply(ANA, case, "Hi Maria, it ships <https://track.example/1|today> &amp; arrives &lt;b&gt;tomorrow&lt;/b&gt;")
    sent = await running.telegram.wait_for_async("sendMessage", 1)
    assert (sent[0].params["chat_id"], sent[0].params["text"]) == (
        MARIA_CHAT, "Hi Maria, it ships today & arrives <b>tomorrow</b>",
    )  # fmt: skip
    recorded = await running.until("tracker bot event", lambda: running.rasa.events.get(MARIA_CHAT))
    assert [(e["event"], e["text"], e["metadata"]["agent"]) for e in recorded] == [
        ("bot", "Hi Maria, it ships today & arrives <b>tomorrow</b>", ANA)
    ]
    assert running.case(case.id).first_human_reply_at is not None

    await running.reply(ANA, case, "note: checked the warehouse, parcel is there")
    await running.reply(ANA, case, "Note: the customer is a VIP")
    await running.settled()
    assert len(running.telegram.calls("sendMessage")) == 1
    assert len(running.rasa.events[MARIA_CHAT]) == 1


@pytest.mark.asyncio
async def test_template_in_a_whatsapp_thread_asks_for_the_reopening_template_elsewhere_it_is_a_reply(
    running: Running,
) -> None:
    whatsapp = await claimed_case(running, channel="whatsapp", sender="4915112345678")
    telegram = await claimed_case(running, key="k2", sender="77")

    await running.reply(ANA, whatsapp, "template: invite her back")
    await running.reply(ANA, telegram, "template: a word like any other")
    await running.telegram.wait_for_async("sendMessage", 1)

    sends = {item.case_id: item.payload for item in running.store.outbox.items(kind=messages.KIND_CUSTOMER)}
    assert sends[whatsapp.id] == {"channel": "whatsapp", "sender_id": "4915112345678", "template": True, "agent": ANA}
    assert sends[telegram.id]["text"] == "template: a word like any other"


@pytest.mark.asyncio
async def test_only_the_owner_or_a_lead_answers_the_customer(running: Running) -> None:
    case = await claimed_case(running)
    waiting = await running.card_of(open_case(running.store, key="k2", sender="77").id)

    await running.reply(BEN, case, "I'll take over from here")
    await running.reply(ANA, waiting, "answering an unclaimed case")
    await running.until("2 refusals", lambda: len(running.slack.ephemerals()) == 2)
    await running.reply(LEAD, case, "A lead answering")
    await running.telegram.wait_for_async("sendMessage", 1)
    await running.settled()

    assert sorted((e["user"], e["text"]) for e in running.slack.ephemerals()) == [
        (ANA, f"Claim case #{waiting.id} first: your message was not sent to the customer. Start a message with "
              "`note:` to keep it in the team."),
        (BEN, f"Case #{case.id} is <@{ANA}>'s: only they (or a lead) can do that. Your message was not sent to the "
              "customer. Start a message with `note:` to keep it in the team."),
    ]  # fmt: skip
    assert running.telegram.sent_texts() == ["A lead answering"]


# --- resolve, follow-up, reopen ---------------------------------------------------------


@pytest.mark.asyncio
async def test_resolve_hands_the_conversation_back_to_the_bot_for_the_follow_up(running: Running) -> None:
    case = await claimed_case(running)

    await running.press(BEN, cards.ACTION_RESOLVE, case)
    await running.until("refusal", lambda: running.slack.ephemerals(BEN))
    assert running.case(case.id).status == "claimed"

    await running.press(ANA, cards.ACTION_RESOLVE, case)
    await running.until("trigger", lambda: any(kind == "trigger" for kind, _, _ in running.rasa.requests))

    resolved = running.case(case.id)
    assert (resolved.status, resolved.resolved_by) == ("resolved", ANA)
    assert running.rasa.requests == [
        ("events", MARIA_CHAT, [{"event": "resume"}, {"event": "action", "name": "action_listen"}]),
        ("trigger", MARIA_CHAT, ({"name": messages.INTENT_CASE_RESOLVED, "entities": []}, "latest")),
    ]
    await running.until("card resolved", lambda: f":white_check_mark: *Resolved* by <@{ANA}>" in card_json(running.slack, case))
    assert buttons(running.slack, case) == []
    await running.settled()
    assert [m.text for m in running.slack.thread(QUEUE, str(case.card_ts))][-1] == (
        f":white_check_mark: Resolved by <@{ANA}>. The assistant is back and asks the customer how it went."
    )

    # The customer answers the follow-up (actions/followup.py stores it): the card shows it.
    now = datetime.now(timezone.utc)
    assert running.store.lifecycle.mark_followup_asked(case.id, now)
    running.store.lifecycle.record_followup(case.id, now, solved=True, outbox=[messages.followup_notice(resolved, messages.NOTICE_SOLVED)])
    running.store.lifecycle.record_followup(case.id, now, rating=4, outbox=[messages.followup_notice(resolved, messages.NOTICE_RATED, rating=4)])
    await running.until("card shows rating", lambda: "customer says: solved · rated 4/5" in card_json(running.slack, case))
    await running.settled()
    assert [m.text for m in running.slack.thread(QUEUE, str(case.card_ts))][-2:] == [
        ":tada: The customer says it is solved.", ":star: The customer rated the help 4/5."
    ]
    # Messages after resolve are a new turn with the bot, not the thread's.
    running.customer_writes(MARIA_CHAT, "thanks a lot!")
    await asyncio.sleep(0.4)
    assert not any("thanks a lot" in m.text for m in running.slack.thread(QUEUE, str(case.card_ts)))


@pytest.mark.asyncio
async def test_not_solved_puts_the_case_back_in_the_queue(running: Running) -> None:
    case = await claimed_case(running)
    await running.press(ANA, cards.ACTION_RESOLVE, case)
    await running.until("resolved", lambda: running.case(case.id).status == "resolved")
    now = datetime.now(timezone.utc)
    running.store.lifecycle.mark_followup_asked(case.id, now)

    resolved = running.case(case.id)
    notice = messages.followup_notice(resolved, messages.NOTICE_REOPENED, broadcast=True)
    assert running.store.lifecycle.reopen(case.id, now, outbox=[notice])

    await running.until("card back in the queue", lambda: "reopened 1×" in card_json(running.slack, case))
    assert buttons(running.slack, case) == ["Claim", "Reassign", "Resolve"]
    assert ":hourglass_flowing_sand: *Waiting* for under a minute · reopened 1×" in card_json(running.slack, case)
    await running.settled()
    reopened_note = [c for c in running.slack.calls("chat.postMessage") if "not solved" in str(c.params.get("text"))]
    assert [(c.params["text"], c.params["reply_broadcast"]) for c in reopened_note] == [
        (":leftwards_arrow_with_hook: The customer says it is *not solved*: the case is back in the queue "
         "(reopened 1×). Claim it to pick it up.", True)
    ]  # fmt: skip
    # Anyone on the team can claim it again, and the customer's messages reach the thread again.
    await running.press(BEN, cards.ACTION_CLAIM, case)
    await running.until("claimed again", lambda: running.case(case.id).claimed_by == BEN)
    running.customer_writes(MARIA_CHAT, "it is still broken")
    await running.until("relayed", lambda: any("still broken" in m.text for m in running.slack.thread(QUEUE, str(case.card_ts))))


# --- reassign ------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_the_owner_hands_the_case_to_another_agent(running: Running) -> None:
    case = await claimed_case(running)

    await running.press(ANA, cards.ACTION_REASSIGN, case)
    [opened] = await running.until("modal", lambda: running.slack.calls("views.open"))
    view = opened.params["view"]
    assert (view["callback_id"], json.loads(view["private_metadata"])) == (cards.REASSIGN_VIEW, {"case_id": case.id, "owner": ANA})

    def submission(user: str, chosen: str) -> dict[str, Any]:
        state = {"values": {cards.REASSIGN_BLOCK: {cards.REASSIGN_SELECT: {"type": "users_select", "selected_user": chosen}}}}
        return {"type": "view_submission", "team": {"id": "T0BRAND"}, "user": {"id": user}, "api_app_id": "A0FIRSTREPLY",
                "view": {**view, "id": "V1", "state": state}}  # fmt: skip

    status, body = await running.interaction(submission(ANA, OUTSIDER))
    assert (status, json.loads(body)) == (
        200, {"response_action": "errors", "errors": {cards.REASSIGN_BLOCK: "That person is not on the support team."}},
    )  # fmt: skip
    status, body = await running.interaction(submission(BEN, AGENTS[2]))
    assert json.loads(body)["errors"] == {cards.REASSIGN_BLOCK: "Only the case's owner or a lead can reassign it."}
    assert running.case(case.id).claimed_by == ANA

    status, body = await running.interaction(submission(ANA, BEN))
    assert (status, body) == (200, "")
    await running.until("reassigned", lambda: running.case(case.id).claimed_by == BEN)
    await running.until("notice", lambda: any("handed the case" in m.text for m in running.slack.thread(QUEUE, str(case.card_ts))))
    assert running.slack.thread(QUEUE, str(case.card_ts))[-1].text == f":arrows_counterclockwise: <@{ANA}> handed the case to <@{BEN}>."


# --- queue, Home, shifts -------------------------------------------------------------------


@pytest.mark.asyncio
async def test_queue_home_and_shifts(running: Running) -> None:
    now = datetime.now(timezone.utc)
    later = open_case(running.store, key="k1", promised_by=now + timedelta(hours=2))
    sooner = open_case(running.store, key="k2", sender="77", customer_name="Tom", promised_by=now + timedelta(minutes=5))
    await running.card_of(later.id)
    await running.card_of(sooner.id)

    answer = await running.command(ANA, "/queue")
    assert answer["response_type"] == "ephemeral"
    rows = [block["text"]["text"] for block in answer["blocks"] if block["type"] == "section"]
    assert [row.split(" ", 1)[0] for row in rows] == [f"*#{sooner.id}*", f"*#{later.id}*"]
    assert "Tom (telegram)" in rows[0] and "promise due in 4 min" in rows[0] and f"card in <#{QUEUE}>" in rows[0]
    assert (await running.command(OUTSIDER, "/queue"))["text"] == NOT_AGENT

    assert (await running.command(ANA, "/shift", "on"))["text"] == "You are on shift. Agents on shift now: 1."
    assert (await running.command(BEN, "/shift", "on"))["text"] == "You are on shift. Agents on shift now: 2."
    assert (await running.command(ANA, "/shift", "off"))["text"] == "You are off shift. Agents on shift now: 1."
    assert (await running.command(ANA, "/shift", "maybe"))["text"].startswith("Use `/shift on`")
    assert running.store.desk.agents_on_shift() == 1

    await running.event({"type": "app_home_opened", "user": ANA, "channel": "D0ANA", "tab": "home"})
    [published] = await running.until("home", lambda: running.slack.calls("views.publish"))
    assert published.params["user_id"] == ANA and published.params["view"]["type"] == "home"
    assert f"*#{sooner.id}*" in json.dumps(published.params["view"]["blocks"])


# --- the outbox under failure ----------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_slack_outage_delays_everything_and_loses_and_doubles_nothing(running: Running) -> None:
    running.slack.fail_next(4, status=500)
    running.slack.fail_next(2, status=429, retry_after=1)
    case = open_case(running.store)
    started = time.monotonic()

    carded = await running.card_of(case.id)
    assert time.monotonic() - started >= 0.9  # the Retry-After second was honoured
    for number in range(3):
        running.customer_writes(MARIA_CHAT, f"message {number}")
    running.slack.fail_next(3, status=503)
    await running.until("3 relayed", lambda: len(running.slack.thread(QUEUE, str(carded.card_ts))) == 3)
    await running.settled()

    assert len(running.slack.top_level(QUEUE)) == 1
    assert [m.text.rsplit(">", 1)[-1] for m in running.slack.thread(QUEUE, str(carded.card_ts))] == [
        "message 0", "message 1", "message 2",
    ]  # fmt: skip
    failures = [c.status for c in running.slack.calls(answered=None) if c.status != 200]
    assert sorted(failures) == [429, 429, 500, 500, 500, 500, 503, 503, 503]
    [card_post] = running.store.outbox.items(kind=messages.KIND_CARD_POST)
    assert card_post.attempts == 7 and card_post.delivered_at is not None


@pytest.mark.asyncio
async def test_telegram_and_rasa_failures_are_retried(running: Running) -> None:
    case = await claimed_case(running)
    running.telegram.fail_next(1, status=500, method="sendMessage")
    running.rasa.fail_next = 2

    await running.reply(ANA, case, "We are on it")

    await running.until("sent", lambda: running.telegram.sent_texts() == ["We are on it"])
    await running.until("recorded", lambda: running.rasa.events.get(MARIA_CHAT))
    await running.settled()
    assert running.telegram.sent_texts() == ["We are on it"]
    assert [e["text"] for e in running.rasa.events[MARIA_CHAT]] == ["We are on it"]


@pytest.mark.asyncio
async def test_a_reply_telegram_took_is_not_sent_again_when_recording_it_fails(
    running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    case = await claimed_case(running)
    finish_delivery = running.store.outbox.finish_delivery
    lost = [OperationalError("UPDATE outbox", {}, Exception("server closed the connection unexpectedly"))] * 2

    def connection_lost_twice(item_id: int, *args: Any, **kwargs: Any) -> None:
        [item] = [i for i in running.store.outbox.items() if i.id == item_id]
        if item.kind == messages.KIND_CUSTOMER and lost:
            raise lost.pop()
        finish_delivery(item_id, *args, **kwargs)

    monkeypatch.setattr(running.store.outbox, "finish_delivery", connection_lost_twice)
    await running.reply(ANA, case, "We are on it")

    await running.until("recorded", lambda: running.rasa.events.get(MARIA_CHAT))
    await running.settled()
    assert lost == []
    assert running.telegram.sent_texts() == ["We are on it"]
    [reply] = running.store.outbox.items(kind=messages.KIND_CUSTOMER)
    assert (reply.attempts, reply.delivered_at is not None) == (1, True)


@pytest.mark.asyncio
async def test_a_customer_who_blocked_the_bot_is_reported_in_the_thread(running: Running) -> None:
    case = await claimed_case(running)
    running.telegram.fail_next(1, status=403, method="sendMessage")

    await running.reply(ANA, case, "Are you there?")

    await running.until("notice", lambda: any(m.text.startswith(":x:") for m in running.slack.thread(QUEUE, str(case.card_ts))))
    notice = [m.text for m in running.slack.thread(QUEUE, str(case.card_ts)) if m.text.startswith(":x:")]
    assert notice == [":x: Could not deliver a reply to the customer: Forbidden: bot was blocked by the user"]
    await running.settled()
    assert MARIA_CHAT not in running.rasa.events
    assert running.case(case.id).first_human_reply_at is None

