"""The Telegram channel: the real blueprint in Rasa's real Sanic app, the real
python-telegram-bot client against a local fake Bot API (``tests/fakes/telegram_api.py``).

Rasa's agent is replaced by one that records each ``UserMessage`` and can reply through
the message's output channel, as Rasa does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from telegram.error import BadRequest, NetworkError, RetryAfter

from bot.channels import add_telegram_parser
from bot.channels.common import ChannelCredentialsError, split_text
from bot.channels.dedupe import PAYLOAD_TTL_SECONDS, SEEN_TTL_SECONDS, ChannelStore, payload_key
from bot.channels.telegram import EXPIRED_BUTTON, GROUP_REPLY, TelegramInput
from bot.channels.telegram_output import (
    ENV_BASE_URL,
    ENV_BOT_USERNAME,
    ENV_SECRET,
    ENV_TOKEN,
    SECRET_HEADER,
    TelegramOutput,
    TelegramSettings,
    build_bot,
    close_bot,
)
from bot.channels.telegram_poll import poll, set_webhook
from tests.channel_support import RecordingAgent, logged_failure, served_app
from tests.fakes.telegram_api import BOT_USER, TOKEN, FakeTelegramAPI, run_webhook_answer

SECRET = "s3cret-Webhook_token"
WEBHOOK = "/webhooks/telegram/webhook"
MARIA = {"id": 4242, "is_bot": False, "first_name": "Maria", "last_name": "Silva",
         "username": "maria_k", "language_code": "pt"}  # fmt: skip
PRIVATE_CHAT = {"id": 4242, "type": "private", "first_name": "Maria", "username": "maria_k"}
GROUP_CHAT = {"id": -100777, "type": "supergroup", "title": "Brand fans"}
MARIA_METADATA = {"chat_id": 4242, "chat_type": "private", "customer_name": "Maria",
                  "username": "maria_k", "language_code": "pt", "user_id": 4242}  # fmt: skip
DATE = 1714986000


def message_update(
    update_id: int, chat: dict[str, Any] = PRIVATE_CHAT, kind: str = "message", **content: Any
) -> dict[str, Any]:
    """A Bot API update carrying one message from Maria."""
    message = {"message_id": 500 + update_id, "date": DATE, "chat": chat, "from": MARIA, **content}
    return {"update_id": update_id, kind: message}


def callback_update(update_id: int, data: str, chat: dict[str, Any] = PRIVATE_CHAT) -> dict[str, Any]:
    """A Bot API update for Maria pressing an inline button under one of the bot's messages."""
    bot_message = {"message_id": 77, "date": DATE, "chat": chat, "from": BOT_USER, "text": "Which one?"}
    query = {"id": f"cbq-{update_id}", "from": MARIA, "chat_instance": "ci-1", "message": bot_message, "data": data}
    return {"update_id": update_id, "callback_query": query}


@dataclass
class Served:
    channel: TelegramInput
    agent: RecordingAgent
    client: httpx.AsyncClient

    async def post(self, update: Any, secret: str | None = SECRET, *, raw: bytes | None = None) -> httpx.Response:
        headers = {"Content-Type": "application/json"}
        if secret is not None:
            headers[SECRET_HEADER] = secret
        body = raw if raw is not None else json.dumps(update).encode()
        answer = await self.client.post(WEBHOOK, content=body, headers=headers)
        if answer.is_success:  # Telegram runs a method given in the answer
            settings = self.channel.settings
            await asyncio.to_thread(run_webhook_answer, settings.base_url, settings.token, answer.json())
        await self.channel.tasks.wait()
        return answer


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in (ENV_TOKEN, ENV_SECRET, ENV_BASE_URL, ENV_BOT_USERNAME):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FIRSTREPLY_CHANNEL_DB", str(tmp_path / "channels.db"))


@pytest.fixture
def api() -> Iterator[FakeTelegramAPI]:
    with FakeTelegramAPI() as fake:
        yield fake


@pytest.fixture
def settings(api: FakeTelegramAPI) -> TelegramSettings:
    return TelegramSettings(TOKEN, SECRET, api.base_url, "firstreply_test_bot")


@asynccontextmanager
async def serve(channel: TelegramInput, agent: RecordingAgent) -> AsyncIterator[Served]:
    """Rasa's Sanic app (``configure_app``) with ``channel`` registered, on a real port."""
    async with served_app([channel], agent) as (_, client):
        yield Served(channel, agent, client)


@pytest_asyncio.fixture
async def served(settings: TelegramSettings) -> AsyncIterator[Served]:
    async with serve(TelegramInput(settings), RecordingAgent()) as running:
        yield running


# --- authentication and parsing -----------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("secret", [None, "", "wrong", SECRET + "x", SECRET[:-1]])
async def test_a_wrong_or_missing_secret_is_refused_and_nothing_happens(
    served: Served, api: FakeTelegramAPI, secret: str | None
) -> None:
    answer = await served.post(message_update(1, text="hi"), secret=secret)

    assert (answer.status_code, answer.json()) == (401, {"ok": False, "error": "unauthorized"})
    assert served.agent.messages == []
    assert api.calls(answered=None) == []
    # Not even remembered: the genuine delivery of the same update still goes through.
    assert (await served.post(message_update(1, text="hi"))).status_code == 200
    assert served.agent.seen() == [("hi", "4242", MARIA_METADATA)]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "body",
    [b"{not json", b"", b"[1, 2]", b'{"message": {"text": "no update id"}}', b'{"update_id": "7"}',
     b'{"update_id": 7, "message": "text"}', b'{"update_id": 7, "message": {"message_id": 1, "date": 1, "chat": 5}}'],
)  # fmt: skip
async def test_a_malformed_update_is_a_400(served: Served, api: FakeTelegramAPI, body: bytes) -> None:
    answer = await served.post(None, raw=body)

    assert (answer.status_code, answer.json()) == (400, {"ok": False, "error": "malformed update"})
    assert served.agent.messages == []
    assert api.calls(answered=None) == []


@pytest.mark.asyncio
async def test_a_text_message_becomes_one_user_message_with_the_customer_metadata(served: Served) -> None:
    answer = await served.post(message_update(1, text="Where is my parcel??"))

    assert (answer.status_code, answer.json()) == (200, {"ok": True})
    [message] = served.agent.messages
    assert (message.text, message.sender_id, message.input_channel, message.message_id) == (
        "Where is my parcel??", "4242", "telegram", "telegram-1",
    )  # fmt: skip
    assert message.metadata == MARIA_METADATA
    # The channel's sender, bound to this update so its replies are recorded and sent once.
    assert isinstance(message.output_channel, TelegramOutput)
    assert (message.output_channel.bot, message.output_channel.origin) == (served.channel.bot, "telegram-1")


@pytest.mark.asyncio
async def test_the_webhook_answers_before_rasa_has_finished(served: Served) -> None:
    served.agent.gate = asyncio.Event()
    answer = await asyncio.wait_for(
        served.client.post(WEBHOOK, json=message_update(1, text="hello"), headers={SECRET_HEADER: SECRET}), 5
    )

    assert answer.status_code == 200
    assert len(served.channel.tasks) == 1  # still running, and referenced
    served.agent.gate.set()
    await served.channel.tasks.wait()
    assert len(served.channel.tasks) == 0
    assert [m.text for m in served.agent.messages] == ["hello"]


@pytest.mark.asyncio
async def test_a_failure_while_handling_is_logged_with_its_traceback(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    served.agent.error = RuntimeError("tracker store down")
    answer, record = await logged_failure(caplog, served.post(message_update(1, text="hello")))

    assert answer.status_code == 200
    assert record.getMessage() == "telegram:123456 update 1: attempt 1 failed; retrying in 2s"
    assert record.exc_info is not None and str(record.exc_info[1]) == "tracker store down"


@pytest.mark.asyncio
async def test_rasa_replies_go_back_to_the_chat_as_plain_text(served: Served, api: FakeTelegramAPI) -> None:
    served.agent.replies = [{"text": "Hi Maria! *Sorry* about that."}, {"text": "Which order?"}]
    await served.post(message_update(1, text="hello"))

    calls = api.calls("sendMessage")
    assert [(c.params["chat_id"], c.params["text"]) for c in calls] == [
        ("4242", "Hi Maria! *Sorry* about that."), ("4242", "Which order?"),
    ]  # fmt: skip
    assert [sorted(c.params) for c in calls] == [["chat_id", "text"]] * 2  # no parse_mode


@pytest.mark.asyncio
async def test_the_health_route_answers(served: Served) -> None:
    answer = await served.client.get("/webhooks/telegram/")
    assert (answer.status_code, answer.json()) == (200, {"status": "ok"})


# --- retried updates ------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_the_same_update_twice_is_handled_once(served: Served, api: FakeTelegramAPI) -> None:
    served.agent.replies = [{"text": "On it."}]
    first = await served.post(message_update(1, text="hello"))
    second = await served.post(message_update(1, text="hello"))

    assert (first.json(), second.json()) == ({"ok": True}, {"ok": True, "duplicate": True})
    assert [m.text for m in served.agent.messages] == ["hello"]
    assert api.sent_texts() == ["On it."]


@pytest.mark.asyncio
async def test_a_retried_update_after_a_restart_is_still_handled_once(
    settings: TelegramSettings, api: FakeTelegramAPI
) -> None:
    agent = RecordingAgent(replies=[{"text": "On it."}])
    async with serve(TelegramInput(settings), agent) as first_run:
        await first_run.post(message_update(1, text="hello"))
    async with serve(TelegramInput(settings), agent) as second_run:
        answer = await second_run.post(message_update(1, text="hello"))
        await second_run.post(message_update(2, text="still there?"))

    assert answer.json() == {"ok": True, "duplicate": True}
    assert [m.text for m in agent.messages] == ["hello", "still there?"]
    assert api.sent_texts() == ["On it.", "On it."]


@pytest.mark.asyncio
async def test_an_edited_message_is_passed_once_and_marked_edited(served: Served) -> None:
    await served.post(message_update(1, text="my order is A-1001"))
    edit = message_update(2, kind="edited_message", text="my order is A-1002", edit_date=DATE + 30)
    await served.post(edit)
    await served.post(edit)

    assert served.agent.seen() == [
        ("my order is A-1001", "4242", MARIA_METADATA),
        ("my order is A-1002", "4242", {**MARIA_METADATA, "edited": True}),
    ]


@pytest.mark.asyncio
async def test_an_edited_photo_caption_gets_no_second_notice(served: Served, api: FakeTelegramAPI) -> None:
    await served.post(message_update(1, photo=PHOTO_SIZES, caption="box crushed"))
    edit = message_update(2, kind="edited_message", photo=PHOTO_SIZES, caption="box crushed, wet", edit_date=DATE)
    await served.post(edit)

    assert len(api.sent_texts()) == 1
    assert [(m.text, m.metadata) for m in served.agent.messages] == [
        ("box crushed", {**MARIA_METADATA, "photo": "photo-l"}),
        ("box crushed, wet", {**MARIA_METADATA, "photo": "photo-l", "edited": True}),
    ]


# --- commands ---------------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("typed", "text", "extra"),
    [
        ("/start", "/greet", {}),
        ("/start from_group", "/greet", {"start_payload": "from_group"}),
        ("/start@firstreply_test_bot", "/greet", {}),
        ("/affirm", "affirm", {}),
        ("//affirm", "affirm", {}),
        ("/help me please", "help me please", {}),
    ],
)
async def test_commands_greet_or_lose_their_slash(served: Served, typed: str, text: str, extra: dict[str, Any]) -> None:
    await served.post(message_update(1, text=typed))
    assert served.agent.seen() == [(text, "4242", {**MARIA_METADATA, **extra})]


# --- what the assistant cannot read -----------------------------------------------------------

PHOTO_SIZES = [
    {"file_id": "photo-m", "file_unique_id": "m", "width": 320, "height": 240, "file_size": 9000},
    {"file_id": "photo-l", "file_unique_id": "l", "width": 1280, "height": 960, "file_size": 90000},
    {"file_id": "photo-s", "file_unique_id": "s", "width": 90, "height": 67, "file_size": 900},
]
NON_TEXT = [
    ("photo", {"photo": PHOTO_SIZES}, "photo", {"photo": "photo-l"}),
    ("sticker", {"sticker": {"file_id": "stk-1", "file_unique_id": "u", "width": 512, "height": 512,
                             "is_animated": False, "is_video": False, "type": "regular", "emoji": "😡"}},
     "sticker", {"sticker": "stk-1", "sticker_emoji": "😡"}),
    ("voice message", {"voice": {"file_id": "voice-1", "file_unique_id": "u", "duration": 12}},
     "voice", {"voice": "voice-1"}),
    ("file", {"document": {"file_id": "doc-1", "file_unique_id": "u", "file_name": "receipt.pdf",
                           "mime_type": "application/pdf"}},
     "document", {"document": "doc-1", "document_name": "receipt.pdf", "document_mime_type": "application/pdf"}),
    ("location", {"location": {"latitude": 38.7223, "longitude": -9.1393}},
     "location", {"location": {"latitude": 38.7223, "longitude": -9.1393}}),
    ("contact", {"contact": {"phone_number": "+351900000000", "first_name": "Rui", "user_id": 99}},
     "contact", {"contact": {"phone_number": "+351900000000", "first_name": "Rui", "user_id": 99}}),
    ("video", {"video": {"file_id": "vid-1", "file_unique_id": "u", "width": 1, "height": 1, "duration": 3}},
     "attachment", {"attachment": {"type": "video", "file_id": "vid-1"}}),
]  # fmt: skip


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("noun", "content", "key", "recorded"), NON_TEXT, ids=[case[2] + "-" + case[0] for case in NON_TEXT]
)
async def test_non_text_gets_a_clear_reply_and_still_reaches_rasa(
    served: Served, api: FakeTelegramAPI, noun: str, content: dict[str, Any], key: str, recorded: dict[str, Any]
) -> None:  # fmt: skip
    await served.post(message_update(1, **content))

    assert api.sent_texts("4242") == [
        f"I can only read text, but I've attached your {noun} to your case for the person who picks it up."
        " Could you also tell me in a few words what it's about?"
    ]
    assert served.agent.seen() == [(f"[{noun}]", "4242", {**MARIA_METADATA, **recorded})]


@pytest.mark.asyncio
async def test_a_photo_with_a_caption_passes_the_caption_as_the_text(served: Served, api: FakeTelegramAPI) -> None:
    await served.post(message_update(1, photo=PHOTO_SIZES, caption="The box arrived crushed"))

    assert api.sent_texts("4242") == [
        "I can only read text, but I've attached your photo to your case for the person who picks it up."
    ]
    assert served.agent.seen() == [("The box arrived crushed", "4242", {**MARIA_METADATA, "photo": "photo-l"})]


@pytest.mark.asyncio
async def test_a_photo_still_reaches_rasa_when_the_notice_cannot_be_sent(served: Served, api: FakeTelegramAPI) -> None:
    api.fail_next(1, status=400, method="sendMessage")
    await served.post(message_update(1, photo=PHOTO_SIZES))

    assert api.sent_texts() == []
    assert served.agent.seen() == [("[photo]", "4242", {**MARIA_METADATA, "photo": "photo-l"})]


@pytest.mark.asyncio
async def test_a_service_message_is_ignored(served: Served, api: FakeTelegramAPI) -> None:
    answer = await served.post(message_update(1, new_chat_title="renamed"))
    assert answer.json() == {"ok": True}
    assert (served.agent.messages, api.calls(answered=None)) == ([], [])


# --- buttons ------------------------------------------------------------------------------------

SHORT_PAYLOAD = "/affirm"
LONG_PAYLOAD = '/inform{"order_number": "A-1001-2024-PT-LISBON", "delivery_problem": "arrived damaged, box crushed"}'


@pytest.mark.asyncio
@pytest.mark.parametrize("payload", [SHORT_PAYLOAD, LONG_PAYLOAD], ids=["short", "long"])
async def test_a_pressed_button_is_answered_and_its_payload_becomes_the_message(
    served: Served, api: FakeTelegramAPI, payload: str
) -> None:
    assert len(LONG_PAYLOAD.encode()) > 64
    await served.channel.output.send_text_with_buttons(
        "4242", "Is that right?", [{"title": "Yes", "payload": payload}, {"title": "No", "payload": "/deny"}]
    )
    [sent] = api.calls("sendMessage")
    keyboard = sent.params["reply_markup"]["inline_keyboard"]
    assert [[button["text"] for button in row] for row in keyboard] == [["Yes"], ["No"]]
    data = keyboard[0][0]["callback_data"]
    assert len(data.encode()) <= 64

    await served.post(callback_update(9, data))

    assert [c.params for c in api.calls("answerCallbackQuery")] == [{"callback_query_id": "cbq-9"}]
    assert served.agent.seen() == [(payload, "4242", {**MARIA_METADATA, "button": True})]


@pytest.mark.asyncio
async def test_buttons_survive_a_restart(settings: TelegramSettings, api: FakeTelegramAPI) -> None:
    agent = RecordingAgent()
    async with serve(TelegramInput(settings), agent) as first_run:
        buttons = [{"title": "Yes", "payload": LONG_PAYLOAD}]
        await first_run.channel.output.send_text_with_buttons("4242", "Sure?", buttons)
    data = api.calls("sendMessage")[0].params["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    async with serve(TelegramInput(settings), agent) as second_run:
        await second_run.post(callback_update(3, data))

    assert [m.text for m in agent.messages] == [LONG_PAYLOAD]


@pytest.mark.asyncio
@pytest.mark.parametrize("data", ["/affirm", "p:unknown-key", ""])
async def test_an_unknown_button_is_answered_as_expired_and_not_passed_on(
    served: Served, api: FakeTelegramAPI, data: str
) -> None:
    await served.post(callback_update(4, data))

    assert [c.params for c in api.calls("answerCallbackQuery")] == [
        {"callback_query_id": "cbq-4", "text": EXPIRED_BUTTON}
    ]
    assert served.agent.messages == []


@pytest.mark.asyncio
async def test_url_buttons_open_the_link(served: Served, api: FakeTelegramAPI) -> None:
    await served.channel.output.send_text_with_buttons(
        "4242", "Track it here", [{"title": "Tracking", "url": "https://example.com/t/1", "type": "web_url"}]
    )
    [sent] = api.calls("sendMessage")
    keyboard = [[{"text": "Tracking", "url": "https://example.com/t/1"}]]
    assert sent.params["reply_markup"] == {"inline_keyboard": keyboard}


# --- groups ------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_mention_in_a_group_gets_a_short_public_reply_and_nothing_reaches_rasa(
    served: Served, api: FakeTelegramAPI
) -> None:
    await served.post(message_update(5, chat=GROUP_CHAT, text="@firstreply_test_bot my card was charged twice!"))

    [reply] = api.calls("sendMessage")
    assert reply.params == {
        "chat_id": "-100777",
        "text": "Thanks! I'll help you privately so we can look into it. "
        "Tap here to open our chat: https://t.me/firstreply_test_bot?start=from_group",
        "reply_parameters": {"message_id": 505, "allow_sending_without_reply": True},
    }
    assert served.agent.messages == []


@pytest.mark.asyncio
async def test_group_chatter_not_meant_for_the_bot_is_left_alone(served: Served, api: FakeTelegramAPI) -> None:
    await served.post(message_update(5, chat=GROUP_CHAT, text="anyone watching the game?"))
    await served.post(message_update(6, chat=GROUP_CHAT, photo=PHOTO_SIZES))
    mention_edited = message_update(
        7, chat=GROUP_CHAT, kind="edited_message", text="@firstreply_test_bot hi", edit_date=DATE
    )
    await served.post(mention_edited)
    assert (served.agent.messages, api.calls(answered=None)) == ([], [])


@pytest.mark.asyncio
async def test_without_a_bot_username_every_group_message_received_gets_the_plain_reply(
    api: FakeTelegramAPI,
) -> None:
    settings = TelegramSettings(TOKEN, SECRET, api.base_url, None)
    async with serve(TelegramInput(settings), RecordingAgent()) as running:
        await running.post(message_update(5, chat=GROUP_CHAT, text="hello?"))
        assert running.agent.messages == []
    assert api.sent_texts("-100777") == [GROUP_REPLY]


# --- the sender ----------------------------------------------------------------------------------


@pytest_asyncio.fixture
async def output(settings: TelegramSettings, tmp_path: Path) -> AsyncIterator[TelegramOutput]:
    bot = build_bot(settings)
    store = ChannelStore.from_url(f"sqlite:///{tmp_path / 'out.db'}")
    yield TelegramOutput(bot, store, backoff_seconds=0.01)
    await close_bot(bot)
    store.dispose()


@pytest.mark.asyncio
async def test_a_5000_character_text_arrives_as_two_messages_cut_between_paragraphs(
    output: TelegramOutput, api: FakeTelegramAPI
) -> None:
    first = ("The first paragraph. " * 150).strip()  # 3149 characters
    second = ("Then the second one, a bit shorter. " * 52).strip()  # 1871
    text = first + "\n\n" + second
    assert len(text) > 5000

    await output.send_text_message("4242", text)

    assert api.sent_texts("4242") == [first, second]


@pytest.mark.asyncio
async def test_a_429_is_waited_out_and_the_message_arrives_once(output: TelegramOutput, api: FakeTelegramAPI) -> None:
    api.fail_next(1, status=429, retry_after=1)
    started = asyncio.get_running_loop().time()
    await output.send_text_message("4242", "Your case is with the team.")

    assert asyncio.get_running_loop().time() - started >= 1.0
    assert [(c.method, c.status) for c in api.calls(answered=None)] == [("sendMessage", 429), ("sendMessage", 200)]
    assert api.sent_texts("4242") == ["Your case is with the team."]


@pytest.mark.asyncio
async def test_server_errors_are_retried_then_given_up(output: TelegramOutput, api: FakeTelegramAPI) -> None:
    api.fail_next(2, status=500)
    await output.send_text_message("4242", "one")
    assert api.sent_texts() == ["one"]

    api.fail_next(4, status=500)
    with pytest.raises(NetworkError):
        await output.send_text_message("4242", "two")
    assert [c.status for c in api.calls("sendMessage", answered=None)] == [500, 500, 200, 500, 500, 500, 500]


@pytest.mark.asyncio
async def test_flood_control_longer_than_the_cap_is_not_waited_for(
    output: TelegramOutput, api: FakeTelegramAPI
) -> None:
    api.fail_next(1, status=429, retry_after=3600)
    with pytest.raises(RetryAfter):
        await output.send_text_message("4242", "hello")
    assert len(api.calls(answered=None)) == 1


@pytest.mark.asyncio
async def test_a_bad_request_is_not_retried(output: TelegramOutput, api: FakeTelegramAPI) -> None:
    api.fail_next(1, status=400)
    with pytest.raises(BadRequest):
        await output.send_text_message("4242", "hello")
    assert len(api.calls(answered=None)) == 1


@pytest.mark.asyncio
async def test_a_long_text_with_buttons_puts_the_keyboard_under_the_last_part(
    output: TelegramOutput, api: FakeTelegramAPI
) -> None:
    await output.send_text_with_buttons("4242", "x" * 5000, [{"title": "Yes", "payload": "/affirm"}])

    calls = api.calls("sendMessage")
    assert [len(c.params["text"]) for c in calls] == [4096, 904]
    assert ["reply_markup" in c.params for c in calls] == [False, True]


@pytest.mark.asyncio
async def test_images_and_custom_payloads(output: TelegramOutput, api: FakeTelegramAPI) -> None:
    await output.send_response("4242", {"text": "Here it is", "image": "https://example.com/label.png"})
    await output.send_custom_json("4242", {"location": {"latitude": 1.5, "longitude": 2.5}, "poll": {}})

    assert [(c.method, c.params) for c in api.calls()] == [
        ("sendMessage", {"chat_id": "4242", "text": "Here it is"}),
        ("sendPhoto", {"chat_id": "4242", "photo": "https://example.com/label.png"}),
        ("sendLocation", {"chat_id": "4242", "latitude": "1.5", "longitude": "2.5"}),
    ]


# --- polling and the webhook registration --------------------------------------------------------


@pytest.mark.asyncio
async def test_polling_forwards_each_update_to_the_webhook_once(
    served: Served, api: FakeTelegramAPI, settings: TelegramSettings
) -> None:
    api.queue_update(message_update(11, text="first"))
    api.queue_update(message_update(12, photo=PHOTO_SIZES))
    bot = build_bot(settings)
    stop = asyncio.Event()
    poller = asyncio.create_task(
        poll(bot, str(served.client.base_url) + WEBHOOK, SECRET, stop, client=served.client, long_poll_seconds=1)
    )
    try:
        for _ in range(250):
            if len(served.agent.messages) == 2 and len(api.calls("getUpdates")) >= 2:
                break
            await asyncio.sleep(0.02)
        stop.set()
        await asyncio.wait_for(poller, 5)
    finally:
        await close_bot(bot)
    await served.channel.tasks.wait()

    assert [m.text for m in served.agent.messages] == ["first", "[photo]"]
    offsets = [c.params.get("offset") for c in api.calls("getUpdates")]
    assert offsets[0] is None and offsets[1] == "13"
    assert api.calls("getUpdates")[0].params["allowed_updates"] == ["message", "edited_message", "callback_query"]


@pytest.mark.asyncio
async def test_set_webhook_registers_the_url_and_the_secret(api: FakeTelegramAPI, settings: TelegramSettings) -> None:
    await set_webhook(settings, "https://bot.example.com/webhooks/telegram/webhook")

    assert [c.params for c in api.calls("setWebhook")] == [
        {
            "url": "https://bot.example.com/webhooks/telegram/webhook",
            "secret_token": SECRET,
            "allowed_updates": ["message", "edited_message", "callback_query"],
        }
    ]


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    add_telegram_parser(parser.add_subparsers(dest="area", required=True))
    args = parser.parse_args(argv)
    return int(args.handler(args))


def test_the_set_webhook_command_uses_the_environment(
    api: FakeTelegramAPI, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(ENV_TOKEN, TOKEN)
    monkeypatch.setenv(ENV_SECRET, SECRET)
    monkeypatch.setenv(ENV_BASE_URL, api.base_url)

    assert _cli(["telegram", "set-webhook", "https://bot.example.com/webhooks/telegram/webhook"]) == 0
    assert capsys.readouterr().out == "Webhook set to https://bot.example.com/webhooks/telegram/webhook\n"
    assert [c.params["secret_token"] for c in api.calls("setWebhook")] == [SECRET]


def test_a_command_with_a_token_telegram_refuses_says_so(
    api: FakeTelegramAPI, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(ENV_TOKEN, "999:revoked")
    monkeypatch.setenv(ENV_SECRET, SECRET)
    monkeypatch.setenv(ENV_BASE_URL, api.base_url)

    assert _cli(["telegram", "set-webhook", "https://bot.example.com/webhooks/telegram/webhook"]) == 1
    assert capsys.readouterr().err == "error: Telegram answered: Unauthorized\n"
    assert [c.status for c in api.calls(answered=None)] == [401]


def test_a_command_without_a_token_names_the_variable(capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli(["telegram", "delete-webhook"]) == 2
    assert capsys.readouterr().err == (
        "error: The telegram channel needs TELEGRAM_BOT_TOKEN: set that environment variable "
        "(credentials.yml: `token: ${TELEGRAM_BOT_TOKEN}`).\n"
    )


# --- credentials ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("credentials", "message"),
    [
        ({"token": "not-a-token", "webhook_secret": SECRET},
         "TELEGRAM_BOT_TOKEN does not look like a bot token from @BotFather (digits:letters)."),
        ({"token": TOKEN, "webhook_secret": "has spaces and $ymbols"},
         "TELEGRAM_WEBHOOK_SECRET must be 1-256 characters of A-Z, a-z, 0-9, _ and - only."),
    ],
)  # fmt: skip
def test_malformed_credentials_are_refused_without_echoing_them(credentials: dict[str, Any], message: str) -> None:
    with pytest.raises(ChannelCredentialsError) as raised:
        TelegramInput.from_credentials(credentials)
    assert str(raised.value) == message


def test_credentials_fall_back_to_the_environment_and_stay_out_of_repr() -> None:
    settings = TelegramSettings.from_credentials(
        {"token": TOKEN, "bot_username": "@firstreply_test_bot"},
        {ENV_SECRET: SECRET, ENV_BASE_URL: "http://127.0.0.1:6399/bot"},
    )
    assert (settings.token, settings.webhook_secret, settings.base_url, settings.bot_username) == (
        TOKEN, SECRET, "http://127.0.0.1:6399/bot", "firstreply_test_bot",
    )  # fmt: skip
    assert repr(settings) == (
        "TelegramSettings(base_url='http://127.0.0.1:6399/bot', bot_username='firstreply_test_bot')"
    )
    assert settings.source == "telegram:123456"


@pytest.mark.asyncio
async def test_the_token_never_reaches_the_log(
    output: TelegramOutput, api: FakeTelegramAPI, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        await output.send_text_message("4242", "hello")
    assert any("sendMessage" in record.getMessage() for record in caplog.records)
    assert [r.getMessage() for r in caplog.records if TOKEN in r.getMessage()] == []


# --- the pieces ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "limit", "parts"),
    [
        ("short", 10, ["short"]),
        ("", 10, []),
        ("One. Two. Three.", 10, ["One. Two.", "Three."]),
        ("aaaa bbbb cccc", 9, ["aaaa bbbb", "cccc"]),
        ("abcdefghij", 4, ["abcd", "efgh", "ij"]),
        ("Para one.\n\nPara two is here.", 20, ["Para one.", "Para two is here."]),
        ("Line one\nline two\nline three", 18, ["Line one\nline two", "line three"]),
    ],
)
def test_split_text(text: str, limit: int, parts: list[str]) -> None:
    assert split_text(text, limit) == parts
    assert all(len(part) <= limit for part in parts)


def test_the_store_remembers_updates_and_payloads_until_they_are_old(tmp_path: Path) -> None:
    now = [1_700_000_000.0]
    url = f"sqlite:///{tmp_path / 'store.db'}"
    store = ChannelStore.from_url(url, clock=lambda: now[0])

    assert [store.first_time("telegram:1", "5"), store.first_time("telegram:1", "5")] == [True, False]
    assert store.first_time("telegram:2", "5") is True  # another bot's update 5
    [key] = store.store_payloads([LONG_PAYLOAD])
    assert key == payload_key(LONG_PAYLOAD) and len(key.encode()) <= 64
    assert ChannelStore.from_url(url, clock=lambda: now[0]).payload_for(key) == LONG_PAYLOAD

    now[0] += SEEN_TTL_SECONDS + 1
    assert store.prune() == 2
    assert store.first_time("telegram:1", "5") is True
    assert store.payload_for(key) == LONG_PAYLOAD
    now[0] += PAYLOAD_TTL_SECONDS
    store.prune()
    assert store.payload_for(key) is None
    store.dispose()
