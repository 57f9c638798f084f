"""The desk's pure parts: text, card wording, settings, the outbound registry and the relay's reading."""

from __future__ import annotations

import sys
import time
import warnings
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from bot.cases import CaseStore, NewCase, TranscriptLine
from bot.channels.outbound import Outbound, OutboundUnavailable
from bot.desk import cards, messages
from bot.desk.relay import CURSOR, CustomerMessages
from bot.desk.settings import DeskSettings, DeskSettingsError
from bot.desk.text import countdown_words, duration_words, escape, is_note, plain_from_slack
from tests.fakes.slack_web_api import TOKEN as SLACK_TOKEN
from tests.fakes.telegram_api import TOKEN as TELEGRAM_TOKEN

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=timezone.utc)


# --- text --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "escaped"),
    [
        ("<!channel> hi", "&lt;!channel&gt; hi"),
        ("<@U123> & <https://x.example|click>", "&lt;@U123&gt; &amp; &lt;https://x.example|click&gt;"),
        ("&amp; already", "&amp;amp; already"),
        ("plain *bold* text", "plain *bold* text"),
    ],
)
def test_customer_text_is_escaped(text: str, escaped: str) -> None:
    assert escape(text) == escaped


@pytest.mark.parametrize(
    ("slack_text", "plain"),
    [
        ("see <https://track.example/1|the tracking page>", "see the tracking page"),
        ("mail <mailto:help@brand.example|help@brand.example>", "mail help@brand.example"),
        ("bare <https://brand.example>", "bare https://brand.example"),
        ("ask <@U0BEN|ben> or <#C0QUEUE|support-queue>", "ask @ben or #support-queue"),
        ("2 &lt; 3 &amp;&amp; 4 &gt; 1", "2 < 3 && 4 > 1"),
        ("  spaced  ", "spaced"),
    ],
)
def test_agent_text_becomes_what_the_customer_reads(slack_text: str, plain: str) -> None:
    assert plain_from_slack(slack_text) == plain


@pytest.mark.parametrize(
    ("text", "note"),
    [("note: internal", True), ("  NOTE: x", True), ("Note:x", True), ("notes are great", False), ("a note: x", False)],
)
def test_notes_start_with_note(text: str, note: bool) -> None:
    assert is_note(text) is note


@pytest.mark.parametrize(
    ("span", "words"),
    [
        (timedelta(seconds=20), "under a minute"),
        (timedelta(minutes=7, seconds=59), "7 min"),
        (timedelta(minutes=65), "1 h 5 min"),
        (timedelta(hours=2), "2 h"),
        (timedelta(hours=7, minutes=30), "7 h"),
        (timedelta(hours=30), "1 day"),
        (timedelta(days=3, hours=1), "3 days"),
    ],
)
def test_durations_in_words(span: timedelta, words: str) -> None:
    assert duration_words(span) == words


@pytest.mark.parametrize(
    ("until", "words"),
    [
        (timedelta(minutes=12, seconds=30), "due in 12 min"),
        (timedelta(seconds=10), "due now"),
        (timedelta(seconds=-10), "due now"),
        (timedelta(minutes=-5), "overdue by 5 min"),
        (timedelta(hours=-2), "overdue by 2 h"),
    ],
)
def test_the_promise_counts_down_in_words(until: timedelta, words: str) -> None:
    assert countdown_words(until) == words


# --- card wording ---------------------------------------------------------------------------


def _case(store: CaseStore, **overrides: Any) -> Any:
    fields: dict[str, Any] = dict(
        channel="telegram", sender_id="4242", customer_name="Maria", case_type="refund_return", intent_confidence=0.9,
        answers={"order_number": "AC-1"}, summary="Wants a refund.", language="de", priority="normal",
        transcript=tuple(TranscriptLine("customer", f"line {n}", NOW) for n in range(8)),
        complaint_score=0.0, promised_by=NOW + timedelta(minutes=30), promise_wording="by 10:30",
        handoff_key="k", metadata={"route": "#support-queue"},
    )  # fmt: skip
    fields.update(overrides)
    return store.lifecycle.open_case(NewCase(**fields), NOW)


@pytest.fixture
def store(tmp_path: Path) -> Any:
    opened = CaseStore.from_url(f"sqlite:///{tmp_path / 'cases.db'}")
    yield opened
    opened.dispose()


def test_the_card_of_a_plain_case(store: CaseStore) -> None:
    case = _case(store)

    text, blocks = cards.card(case, [], NOW + timedelta(minutes=10))

    assert text == f"Case #{case.id} · normal · Refund return · Maria (telegram)"
    assert blocks[1]["text"]["text"] == "Normal priority\n:hourglass_flowing_sand: *Waiting* for 10 min"
    assert blocks[2]["fields"][1]["text"] == "*Language*\nGerman (de)"
    assert blocks[3]["text"]["text"] == ":alarm_clock: Promise due in 20 min (the customer was told “by 10:30”)"
    # Only the last six lines of the transcript.
    assert blocks[6]["text"]["text"].splitlines()[1:] == [f"*Customer:* line {n}" for n in range(2, 8)]
    assert blocks[7]["elements"][0]["text"] == "First case of this customer."
    assert cards.digest(text, blocks) != cards.digest(*cards.card(case, [], NOW + timedelta(minutes=11)))
    # The same words, the same digest: the card is not updated again.
    later = NOW + timedelta(minutes=10, seconds=5)
    assert cards.digest(*cards.card(case, [], later)) == cards.digest(*cards.card(case, [], later + timedelta(seconds=20)))


@pytest.mark.parametrize(
    ("priority", "score", "case_type", "line"),
    [
        ("urgent", 0.2, "billing", ":rotating_light: *URGENT*"),
        ("high", 0.2, "billing", ":warning: *High priority*"),
        ("high", 0.6, "billing", ":warning: *High priority* · :anger: *Complaint* (score 0.60)"),
        ("normal", 0.1, "complaint", "Normal priority · :anger: *Complaint* (score 0.10)"),
        ("low", 0.0, "product_question", "Low priority"),
    ],
)
def test_urgent_and_complaints_stand_out(store: CaseStore, priority: str, score: float, case_type: str, line: str) -> None:
    case = _case(store, priority=priority, complaint_score=score, case_type=case_type)
    assert cards.priority_line(case) == line


def test_notices_are_worded_and_escaped() -> None:
    assert cards.notice_text({"notice": messages.NOTICE_CLAIMED, "by": "U0ANA"}, None) == ":raising_hand: Claimed by <@U0ANA>."
    assert cards.notice_text({"notice": messages.NOTICE_CLAIMED, "by": "<!channel>"}, None) == (
        ":raising_hand: Claimed by &lt;!channel&gt;."
    )
    assert cards.notice_text({"notice": messages.NOTICE_RATED, "rating": 5}, None) == ":star: The customer rated the help 5/5."
    assert cards.notice_text({"notice": messages.NOTICE_NOT_PUSHED, "channel": "rest"}, None).startswith(
        ":information_source: The customer's channel (rest) cannot receive"
    )


# --- settings ----------------------------------------------------------------------------------


BASE_ENV = {"SLACK_DESK_BOT_TOKEN": SLACK_TOKEN, "SLACK_DESK_SIGNING_SECRET": "s", "FIRSTREPLY_DESK_AGENTS": "S0AGENTS"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"SLACK_DESK_BOT_TOKEN": ""}, "needs SLACK_DESK_BOT_TOKEN"),
        ({"SLACK_DESK_BOT_TOKEN": "xapp-1-wrong-kind"}, "needs SLACK_DESK_BOT_TOKEN"),
        ({"SLACK_DESK_SIGNING_SECRET": ""}, "needs SLACK_DESK_SIGNING_SECRET"),
        ({"FIRSTREPLY_DESK_AGENTS": ""}, "needs FIRSTREPLY_DESK_AGENTS"),
        ({"FIRSTREPLY_DESK_AGENTS": "support-team"}, "needs FIRSTREPLY_DESK_AGENTS"),
        ({"FIRSTREPLY_DESK_LEADS": "U0LEAD, bob"}, r"FIRSTREPLY_DESK_LEADS must list Slack user ids .*'bob'"),
        ({"FIRSTREPLY_DESK_PORT": "http"}, "FIRSTREPLY_DESK_PORT must be a number"),
        ({"FIRSTREPLY_DESK_POLL_SECONDS": "0"}, "FIRSTREPLY_DESK_POLL_SECONDS must be at least"),
        ({"FIRSTREPLY_DESK_UNCHECKED_SENDS": "0"}, "FIRSTREPLY_DESK_UNCHECKED_SENDS must be at least"),
        ({"FIRSTREPLY_DESK_UNCHECKED_SENDS": "two"}, "FIRSTREPLY_DESK_UNCHECKED_SENDS must be a number"),
    ],
)
def test_a_wrong_setting_is_named(change: dict[str, str], message: str) -> None:
    with pytest.raises(DeskSettingsError, match=message):
        DeskSettings.from_env({**BASE_ENV, **change})


def test_settings_defaults_and_secrets_kept_out_of_repr() -> None:
    settings = DeskSettings.from_env({**BASE_ENV, "FIRSTREPLY_DESK_LEADS": "U0LEAD,U0BOSS", "RASA_URL": "http://rasa:5005/"})

    assert (settings.socket_mode, settings.port, settings.rasa_url, settings.leads, settings.unchecked_sends) == (
        False, 3000, "http://rasa:5005", frozenset({"U0LEAD", "U0BOSS"}), 1,
    )  # fmt: skip
    assert DeskSettings.from_env({**BASE_ENV, "FIRSTREPLY_DESK_UNCHECKED_SENDS": "3"}).unchecked_sends == 3
    assert settings.events_db.startswith("sqlite:///") and settings.events_db.endswith("/var/events.db")
    assert SLACK_TOKEN not in repr(settings) and "signing_secret" not in repr(settings)


# --- the outbound registry --------------------------------------------------------------------


def test_the_registry_finds_each_customer_sender(tmp_path: Path) -> None:
    from bot.channels.slack import SlackDMOutput
    from bot.channels.telegram import TelegramOutput

    env = {"TELEGRAM_BOT_TOKEN": TELEGRAM_TOKEN, "SLACK_BOT_TOKEN": "xoxb-1-2-customer",
           "FIRSTREPLY_CHANNEL_DB": str(tmp_path / "channels.db")}  # fmt: skip
    outbound = Outbound(env)

    assert isinstance(outbound.sender_for("telegram"), TelegramOutput)
    assert outbound.sender_for("telegram") is outbound.sender_for("telegram")
    assert isinstance(outbound.sender_for("slack_dm"), SlackDMOutput)
    assert outbound.sender_for("rest") is None
    assert not outbound.can_push("rest") and outbound.can_push("telegram") and outbound.can_push("webchat")


@pytest.mark.asyncio
async def test_an_agent_reply_to_a_web_chat_customer_lands_in_their_history(tmp_path: Path) -> None:
    from bot.channels.webchat import WebChatOutput, WebChatStore

    db = tmp_path / "channels.db"
    outbound = Outbound({"FIRSTREPLY_CHANNEL_DB": str(db)})
    sender = outbound.sender_for("webchat")
    assert isinstance(sender, WebChatOutput)

    await sender.send_text_message("web-abc", "Hi Maria, Sam here — your parcel left the depot today.")
    page = WebChatStore.from_url(f"sqlite:///{db}")
    texts = [message.get("text") for message in page.history("web-abc")]
    page.dispose()
    await outbound.close()

    assert texts == ["Hi Maria, Sam here — your parcel left the depot today."]


@pytest.mark.asyncio
async def test_a_sender_that_cannot_be_built_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    outbound = Outbound({"FIRSTREPLY_CHANNEL_DB": str(tmp_path / "channels.db")})
    with pytest.raises(OutboundUnavailable, match="cannot answer Telegram customers: .*TELEGRAM_BOT_TOKEN"):
        outbound.sender_for("telegram")
    monkeypatch.setitem(sys.modules, "bot.channels.slack", None)
    with pytest.raises(OutboundUnavailable, match=r"the Slack DM channel \(bot/channels/slack.py\) is not installed"):
        Outbound({"SLACK_BOT_TOKEN": "xoxb-1-2-x"}).sender_for("slack_dm")
    await outbound.close()


# --- reading Rasa's event broker ---------------------------------------------------------


def test_the_relay_reads_forward_and_starts_again_on_a_new_event_database(tmp_path: Path, store: CaseStore) -> None:
    from rasa.core.brokers.sql import SQLEventBroker

    relay = CustomerMessages(store, f"sqlite:///{tmp_path / 'events.db'}")
    assert relay.poll_once(NOW) == 0 and not (tmp_path / "events.db").exists()  # Rasa wrote nothing yet
    case = store.lifecycle.open_case(
        NewCase(channel="telegram", sender_id="4242", customer_name=None, case_type="general", intent_confidence=None,
                answers={}, summary="s", transcript=(), language="en", priority="normal", complaint_score=0.0,
                promised_by=NOW, promise_wording="soon", handoff_key="k"),  # fmt: skip
        datetime.now(timezone.utc) - timedelta(seconds=5),
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Calling URL\\(\\) directly is deprecated")
        broker = SQLEventBroker(dialect="sqlite", db=str(tmp_path / "events.db"))

    def publish(text: str, sender: str = "4242", kind: str = "user", at: float | None = None, **extra: Any) -> None:
        broker.publish({"sender_id": sender, "event": kind, "text": text, "timestamp": at or time.time(),
                        "input_channel": "telegram", **extra})  # fmt: skip

    publish("before the hand-off", at=time.time() - 60)
    publish("a photo", metadata={"photo": "file-1"})
    publish("bot text", kind="bot")
    publish("another customer", sender="99")
    publish("/affirm")
    assert relay.poll_once(NOW) == 2
    assert relay.poll_once(NOW) == 0
    assert [dict(item.payload)["text"] for item in store.outbox.items(case_id=case.id)] == [
        ":speech_balloon: *4242* wrote:\n>a photo [photo sent]",
        ":speech_balloon: *4242* wrote:\n>[pressed: affirm]",
    ]
    assert store.desk.cursor(CURSOR) == 5
    # A new, empty event database (ids start again): the reader starts from its beginning.
    broker.engine.dispose()
    relay.dispose()
    (tmp_path / "events.db").unlink()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Calling URL\\(\\) directly is deprecated")
        broker = SQLEventBroker(dialect="sqlite", db=str(tmp_path / "events.db"))
    publish("after the restart")
    assert relay.poll_once(NOW) == 0 and store.desk.cursor(CURSOR) == 0
    assert relay.poll_once(NOW) == 1
    broker.engine.dispose()
    relay.dispose()


def test_a_case_that_began_as_a_public_post_says_so_on_its_card(store: CaseStore) -> None:
    post = {"platform": "x", "id": "4001", "text": "@NorthwindHelp my parcel is late <b>", "hostile": True,
            "url": "https://x.com/maria_k/status/4001", "author": "maria_k"}  # fmt: skip
    metadata = {"route": "#support-queue", "customer_handle": "@maria_k", "origin": "public post", "public_post": post}
    case = _case(store, channel="x", metadata=metadata)

    _, blocks = cards.card(case, [], NOW)

    assert blocks[2]["fields"][0]["text"] == "*Customer*\nMaria (x) · @maria_k"
    assert blocks[3]["text"]["text"] == (
        ":loudspeaker: *Started as a public post on X* · :anger: hostile · <https://x.com/maria_k/status/4001|open the "
        "post>\nAnswered in public with an invitation to a private message; reply here as usual (it goes by DM).\n"
        ">@NorthwindHelp my parcel is late &lt;b&gt;"
    )
    # A private conversation's card has no such line, and a link that is not https is not linked.
    assert not any("public post" in str(block) for block in cards.card(_case(store, handoff_key="k2"), [], NOW)[1])
    odd = _case(store, handoff_key="k3", metadata={"public_post": {**post, "url": "javascript:alert(1)", "hostile": False}})
    assert "open the post" not in cards.public_post_section(odd)  # type: ignore[operator]
