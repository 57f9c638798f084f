"""The agent desk end to end: real ``rasa run``, ``rasa run actions`` and ``python -m bot desk`` processes.

A customer writes on the fake Telegram Bot API; Rasa logs every event to its SQL event
broker; the desk (HTTP mode) posts the case card on the fake Slack Web API, takes signed
button presses and thread replies, and answers through Telegram. The model is
``$FIRSTREPLY_TEST_MODEL`` if set, else ``models/firstreply.tar.gz`` (``make train``).

The last test kills the desk with SIGKILL in the middle of Slack deliveries and restarts
it: every message arrives, none twice.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from bot.cases import CaseStore, NewCase, TranscriptLine
from tests.integration.desk_stack import ANA, API_TOKEN, BEN, CREDENTIALS, MODEL, QUEUE, Stack, desk_env, desk_fakes
from tests.integration.telegram_customer import button
from tests.processes import answers, free_ports, start_action_server, start_rasa_server, wait_until, write_endpoints

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    assert MODEL.exists(), f"train the model first (make train, or set FIRSTREPLY_TEST_MODEL): {MODEL}"
    tmp = tmp_path_factory.mktemp("desk-e2e")
    telegram, slack = desk_fakes()
    rasa_port, actions_port, desk_port = free_ports(3)
    rasa_url = f"http://127.0.0.1:{rasa_port}"
    (tmp / "credentials.yml").write_text(CREDENTIALS)
    endpoints = write_endpoints(
        tmp, actions_port,
        f"tracker_store:\n  type: SQL\n  dialect: sqlite\n  db: {tmp / 'trackers.db'}\n"
        f"event_broker:\n  type: SQL\n  dialect: sqlite\n  db: {tmp / 'events.db'}\n",
    )  # fmt: skip
    env = desk_env(tmp, telegram, slack, rasa_url, desk_port)
    running = Stack(tmp, telegram, slack, env, rasa_url, f"http://127.0.0.1:{desk_port}/slack/events", env["FIRSTREPLY_CASE_DB"])
    try:
        running.add(start_action_server("actions", actions_port, env, tmp / "actions.log"))
        running.add(
            start_rasa_server(
                "rasa", rasa_port, endpoints, env, tmp / "rasa.log", API_TOKEN, tmp / "credentials.yml", model=MODEL,
                launcher=False,
            )  # fmt: skip
        )
        running.start_desk()
        wait_until("action server up", lambda: answers(f"http://127.0.0.1:{actions_port}/health"), 180, running.alive)
        wait_until("Rasa up", lambda: answers(f"{rasa_url}/webhooks/telegram/"), 300, running.alive)
        yield running
    finally:
        running.stop_all()
        telegram.stop()
        slack.stop()


def _hand_off(stack: Stack, chat: int, name: str) -> int:
    """Take a customer from the first message to an open case; return the case id."""
    stack.step(chat, name, 3, text="Where is my parcel? Can you check it for me")
    [question] = stack.step(chat, name, 1, text="AC-2291734")
    [summary] = stack.step(chat, name, 1, callback_data=button(question, "It's late"))
    [handoff] = stack.step(chat, name, 1, callback_data=button(summary, "Yes, that's right"))
    assert handoff["text"].startswith(f"Thanks, {name}! I've passed this to our team as case #")
    return int(handoff["text"].split("case #", 1)[1].split(".", 1)[0])


def test_claim_talk_resolve_and_follow_up(stack: Stack) -> None:
    maria = 4242
    case_id = _hand_off(stack, maria, "Maria")
    case = wait_until("card", lambda: (c := stack.case(case_id)).card_ts and c, 30, stack.alive)
    assert case.card_channel == QUEUE
    assert f"Case #{case_id} · Order status" in stack.card_text(case) and "Maria (telegram)" in stack.card_text(case)
    assert "• *Order number:* AC-2291734" in stack.card_text(case)

    stack.press(ANA, "desk_claim", case)
    wait_until("claimed", lambda: stack.case(case_id).claimed_by == ANA, 30, stack.alive)

    # The customer writes while a person holds the case: the bot stays quiet, the thread shows it.
    stack.send(maria, "Maria", text="Any news? <!channel>")
    wait_until("relayed", lambda: any("Any news?" in text for text in stack.thread(case)), 30, stack.alive)
    assert ":speech_balloon: *Maria* wrote:\n>Any news? &lt;!channel&gt;" in stack.thread(case)
    before = len(stack.telegram.sent_texts(maria))

    stack.reply(ANA, case, "Hi Maria, your parcel is out for delivery today.")
    stack.reply(ANA, case, "note: courier confirmed by phone")
    wait_until("agent reply sent", lambda: len(stack.telegram.sent_texts(maria)) > before, 30, stack.alive)
    time.sleep(1.5)
    assert stack.telegram.sent_texts(maria)[before:] == ["Hi Maria, your parcel is out for delivery today."]
    bot_texts = wait_until(
        "reply in the tracker",
        lambda: [e["text"] for e in stack.tracker(str(maria)) if e["event"] == "bot" and (e.get("metadata") or {}).get("agent")],
        30, stack.alive,
    )  # fmt: skip
    assert bot_texts == ["Hi Maria, your parcel is out for delivery today."]
    assert stack.case(case_id).first_human_reply_at is not None

    stack.press(ANA, "desk_resolve", case)
    [ask] = stack.replies(maria, len(stack.telegram.sent_texts(maria)), 1)
    assert ask["text"] == f"Hi again! Our team has marked case #{case_id} as resolved. Did that solve it?"
    [rate] = stack.step(maria, "Maria", 1, callback_data=button(ask, "Yes, it's solved"))
    assert rate["text"].startswith("Great to hear! How would you rate our help")
    [thanks] = stack.step(maria, "Maria", 1, callback_data=button(rate, "4"))
    assert thanks["text"] == "Thank you for telling us! Is there anything else we can help you with? Just write it here."

    done = stack.case(case_id)
    assert (done.status, done.resolved_by, done.solved, done.rating) == ("resolved", ANA, True, 4)
    wait_until("card shows the rating", lambda: "customer says: solved · rated 4/5" in stack.card_text(case), 30, stack.alive)
    assert stack.thread(case)[-2:] == [":tada: The customer says it is solved.", ":star: The customer rated the help 4/5."]
    # After the follow-up the customer talks to the bot again; nothing goes to the old thread.
    [greeting] = stack.step(maria, "Maria", 1, text="thanks!")
    assert greeting["text"]
    assert not any("thanks!" in text for text in stack.thread(case))


def test_not_solved_reopens_the_case_and_hands_the_customer_back(stack: Stack) -> None:
    tom = 5151
    case_id = _hand_off(stack, tom, "Tom")
    case = wait_until("card", lambda: (c := stack.case(case_id)).card_ts and c, 30, stack.alive)
    stack.press(BEN, "desk_claim", case)
    wait_until("claimed", lambda: stack.case(case_id).claimed_by == BEN, 30, stack.alive)
    stack.press(BEN, "desk_resolve", case)
    [ask] = stack.replies(tom, len(stack.telegram.sent_texts(tom)), 1)

    [sorry] = stack.step(tom, "Tom", 1, callback_data=button(ask, "No, not yet"))

    assert sorry["text"].startswith(f"I'm sorry it isn't sorted yet. I've reopened case #{case_id}")
    reopened = stack.case(case_id)
    assert (reopened.status, reopened.reopened_count, reopened.solved, reopened.claimed_by) == ("waiting", 1, False, None)
    wait_until("note", lambda: any("*not solved*" in text for text in stack.thread(case)), 30, stack.alive)
    wait_until("card back in the queue", lambda: '"text": "Claim"' in stack.card_text(case), 30, stack.alive)
    # Paused again: what Tom writes goes to the thread, and the bot says nothing.
    sent = len(stack.telegram.sent_texts(tom))
    stack.send(tom, "Tom", text="it still has not arrived")
    wait_until("relayed", lambda: any("still has not arrived" in text for text in stack.thread(case)), 30, stack.alive)
    time.sleep(1.5)
    assert len(stack.telegram.sent_texts(tom)) == sent


# --- a crash in the middle of deliveries ---------------------------------------------------------


def test_a_desk_killed_mid_delivery_loses_nothing_and_doubles_nothing(tmp_path: Path) -> None:
    from rasa.core.brokers.sql import SQLEventBroker

    telegram, slack = desk_fakes()
    desk_port, closed_port = free_ports(2)
    env = desk_env(tmp_path, telegram, slack, f"http://127.0.0.1:{closed_port}", desk_port)
    stack = Stack(tmp_path, telegram, slack, env, "", f"http://127.0.0.1:{desk_port}/slack/events", env["FIRSTREPLY_CASE_DB"])
    store = CaseStore.from_url(stack.case_db)
    now = datetime.now(timezone.utc)
    case = store.lifecycle.open_case(
        NewCase(
            channel="telegram", sender_id="4242", customer_name="Maria", case_type="order_status", intent_confidence=0.9,
            answers={}, summary="Parcel late.", transcript=(TranscriptLine("customer", "late", now),), language="en",
            priority="normal", complaint_score=0.0, promised_by=now + timedelta(minutes=20),
            promise_wording="within about 20 minutes", handoff_key="crash:1", metadata={"route": "#support-queue"},
        ),  # fmt: skip
        now - timedelta(seconds=5),
    )
    store.dispose()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Calling URL\\(\\) directly is deprecated")
        broker = SQLEventBroker(dialect="sqlite", db=str(tmp_path / "events.db"))
    for number in range(4):
        broker.publish({"sender_id": "4242", "event": "user", "timestamp": time.time(), "text": f"message {number}",
                        "input_channel": "telegram", "metadata": {}})  # fmt: skip
    broker.engine.dispose()
    try:
        # Slack takes the card, but the desk dies before it hears back.
        slack.delay_next(1, 30.0, method="chat.postMessage")
        stack.start_desk()
        wait_until("card taken", lambda: slack.calls("chat.postMessage"), 30, stack.alive)
        stack.kill("desk")
        # Restarted: the card is found by its key, not posted again; then the second thread post hangs: kill again.
        slack.delay_next(1, 30.0, method="chat.postMessage")
        stack.start_desk()
        wait_until("thread post taken", lambda: len(slack.calls("chat.postMessage")) >= 2, 30, stack.alive)
        time.sleep(0.5)
        stack.kill("desk")
        stack.start_desk()
        wait_until("all four relayed", lambda: len(slack.calls("chat.postMessage")) >= 5 and (
            c := stack.case(case.id)).card_ts and len(stack.thread(c)) >= 4, 60, stack.alive)  # fmt: skip
        time.sleep(1.0)

        carded = stack.case(case.id)
        assert [m.ts for m in slack.top_level(QUEUE)] == [carded.card_ts]
        assert [text.rsplit(">", 1)[-1] for text in stack.thread(carded)] == [f"message {n}" for n in range(4)]
        keys = [c.params["metadata"]["event_payload"]["key"] for c in slack.calls("chat.postMessage")]
        assert len(keys) == len(set(keys)) == 5
        assert len(slack.calls("conversations.history")) >= 1 and len(slack.calls("conversations.replies")) >= 1
        store = CaseStore.from_url(stack.case_db)
        pending = [i.key for i in store.outbox.items() if i.delivered_at is None]
        store.dispose()
        assert pending == []
    finally:
        stack.stop_all()
        telegram.stop()
        slack.stop()
