"""The WhatsApp channel: the real blueprint in Rasa's real Sanic app, the real pywa client
against a local fake Cloud API (``tests/fakes/whatsapp_api.py``).

Rasa's agent is replaced by one that records each ``UserMessage`` and can reply through
the message's output channel, as Rasa does. Webhook bodies are built and signed as Meta
sends them.
"""

from __future__ import annotations

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

from bot.channels.common import ChannelCredentialsError
from bot.channels.meta import SIGNATURE_HEADER, GraphError
from bot.channels.whatsapp import WhatsAppInput
from bot.channels.whatsapp_output import (
    ENV_APP_SECRET,
    ENV_BASE_URL,
    ENV_PHONE_NUMBER_ID,
    ENV_TOKEN,
    ENV_VERIFY_TOKEN,
    WhatsAppOutput,
    WhatsAppSettings,
)
from tests.channel_support import RecordingAgent, credentials_refusal, served_app
from tests.fakes.server import DROP
from tests.fakes.whatsapp_api import (
    APP_SECRET,
    PHONE_NUMBER_ID,
    TOKEN,
    VERIFY_TOKEN,
    FakeWhatsAppAPI,
    batched,
    button_reply,
    choices_of,
    inbound,
    list_reply,
    notification,
    signed,
    status,
    text_message,
)

WEBHOOK = "/webhooks/whatsapp/webhook"
MARIA = "4915112345678"
JOAO = "351912345678"
AIKO = "819012345678"
NAMES = {MARIA: "Maria Keller", JOAO: "João Silva", AIKO: "Aiko"}


def meta(sender: str, name: str | None = None) -> dict[str, Any]:
    found = {"wa_id": sender, "phone_number_id": PHONE_NUMBER_ID}
    return {**found, "customer_name": name} if name else found


@dataclass
class Served:
    channel: WhatsAppInput
    agent: RecordingAgent
    client: httpx.AsyncClient

    async def post(
        self, body: Any, *, headers: dict[str, str] | None = None, raw: bytes | None = None
    ) -> httpx.Response:
        content, signed_headers = signed(raw if raw is not None else body)
        sent_headers = signed_headers if headers is None else headers
        answer = await self.client.post(WEBHOOK, content=content, headers=sent_headers)
        await self.channel.tasks.wait()
        return answer


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in (ENV_TOKEN, ENV_APP_SECRET, ENV_VERIFY_TOKEN, ENV_PHONE_NUMBER_ID, ENV_BASE_URL):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FIRSTREPLY_CHANNEL_DB", str(tmp_path / "channels.db"))


@pytest.fixture
def api() -> Iterator[FakeWhatsAppAPI]:
    with FakeWhatsAppAPI() as fake:
        yield fake


@pytest.fixture
def settings(api: FakeWhatsAppAPI) -> WhatsAppSettings:
    return WhatsAppSettings(TOKEN, APP_SECRET, api.base_url, VERIFY_TOKEN, PHONE_NUMBER_ID)


@asynccontextmanager
async def serve(channel: WhatsAppInput, agent: RecordingAgent) -> AsyncIterator[Served]:
    async with served_app([channel], agent) as (_, client):
        yield Served(channel, agent, client)


@pytest_asyncio.fixture
async def served(settings: WhatsAppSettings) -> AsyncIterator[Served]:
    channel = WhatsAppInput(settings)
    channel.output.backoff_seconds = 0.01
    async with serve(channel, RecordingAgent()) as running:
        yield running


# --- settings ---------------------------------------------------------------------------------


def test_settings_come_from_the_environment_and_name_what_is_missing() -> None:
    environ = {ENV_TOKEN: TOKEN, ENV_APP_SECRET: APP_SECRET, ENV_VERIFY_TOKEN: VERIFY_TOKEN}
    refusal = credentials_refusal(lambda: WhatsAppSettings.from_credentials({}, environ))
    assert ENV_PHONE_NUMBER_ID in refusal

    wrong = credentials_refusal(
        lambda: WhatsAppSettings.from_credentials({}, {**environ, ENV_PHONE_NUMBER_ID: "+1 555 078 3881"})
    )
    assert "numeric Phone number ID" in wrong

    settings = WhatsAppSettings.from_credentials({}, {**environ, ENV_PHONE_NUMBER_ID: PHONE_NUMBER_ID})
    assert (settings.phone_number_id, settings.base_url, settings.source) == (
        PHONE_NUMBER_ID, "https://graph.facebook.com", f"whatsapp:{PHONE_NUMBER_ID}",
    )  # fmt: skip
    # No secret in the repr (logs, tracebacks).
    assert TOKEN not in repr(settings) and APP_SECRET not in repr(settings) and VERIFY_TOKEN not in repr(settings)


def test_a_missing_secret_is_named_never_shown() -> None:
    with pytest.raises(ChannelCredentialsError) as raised:
        WhatsAppSettings.from_credentials({}, {ENV_TOKEN: TOKEN, ENV_PHONE_NUMBER_ID: PHONE_NUMBER_ID})
    assert ENV_APP_SECRET in str(raised.value) and TOKEN not in str(raised.value)


# --- the handshake and the signature --------------------------------------------------------------


@pytest.mark.asyncio
async def test_the_handshake_answers_the_challenge_only_for_the_right_verify_token(served: Served) -> None:
    good = await served.client.get(
        WEBHOOK, params={"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "1158201444"}
    )
    wrong = await served.client.get(
        WEBHOOK, params={"hub.mode": "subscribe", "hub.verify_token": "guess", "hub.challenge": "1158201444"}
    )
    missing = await served.client.get(WEBHOOK, params={"hub.mode": "subscribe", "hub.challenge": "1"})

    assert (good.status_code, good.text) == (200, "1158201444")
    assert (wrong.status_code, missing.status_code) == (403, 403)
    assert "1158201444" not in wrong.text


@pytest.mark.asyncio
async def test_a_missing_or_forged_signature_is_a_401_and_nothing_is_stored(
    served: Served, api: FakeWhatsAppAPI
) -> None:
    body = notification([text_message(MARIA, "hi", message_id="wamid.ONE")], names=NAMES)
    raw, genuine = signed(body)
    for header in (None, "", "sha256=", "sha1=abc", "sha256=" + "0" * 64, "forged", genuine[SIGNATURE_HEADER].upper()):
        headers = {"Content-Type": "application/json"} | ({SIGNATURE_HEADER: header} if header is not None else {})

        answer = await served.post(None, raw=raw, headers=headers)

        assert answer.status_code == 401, header
        assert served.agent.messages == [] and api.calls(answered=None) == []
    # Not remembered: Meta's genuine delivery of the same message still goes through.
    assert (await served.post(body)).status_code == 200
    assert [m.text for m in served.agent.messages] == ["hi"]


@pytest.mark.asyncio
async def test_a_body_signed_with_another_apps_secret_is_refused(served: Served) -> None:
    raw, headers = signed(notification([text_message(MARIA, "hi")]), app_secret="f" * 32)
    answer = await served.post(None, raw=raw, headers=headers)
    assert answer.status_code == 401 and served.agent.messages == []


@pytest.mark.asyncio
async def test_a_signed_malformed_body_is_a_400(served: Served, api: FakeWhatsAppAPI) -> None:
    for raw in (b"{not json", b"", b"[]", b'{"object": "whatsapp_business_account"}', b'{"entry": 5}'):
        answer = await served.post(None, raw=raw)
        assert (answer.status_code, answer.json()) == (400, {"error": "malformed notification"}), raw
    assert served.agent.messages == [] and api.calls(answered=None) == []


# --- messages -------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_text_becomes_one_user_message_with_the_profile_name_and_is_marked_read_with_typing(
    served: Served, api: FakeWhatsAppAPI
) -> None:
    answer = await served.post(notification([text_message(MARIA, "Where is my parcel??", message_id="wamid.A1")],
                                            names=NAMES))  # fmt: skip

    assert (answer.status_code, answer.json()) == (200, {"ok": True, "messages": 1, "duplicate": False})
    [message] = served.agent.messages
    assert (message.text, message.sender_id, message.input_channel, message.message_id) == (
        "Where is my parcel??", MARIA, "whatsapp", "whatsapp-wamid.A1",
    )  # fmt: skip
    assert message.metadata == meta(MARIA, "Maria Keller")
    [read] = api.calls("read")
    assert read.params == {"messaging_product": "whatsapp", "status": "read", "message_id": "wamid.A1",
                           "typing_indicator": {"type": "text"}}  # fmt: skip


@pytest.mark.asyncio
async def test_a_typed_slash_is_not_an_intent(served: Served) -> None:
    await served.post(notification([text_message(MARIA, "/ /affirm")]))
    assert [m.text for m in served.agent.messages] == ["affirm"]


@pytest.mark.asyncio
async def test_one_post_with_three_customers_in_two_entries_hands_each_message_to_rasa(
    served: Served, api: FakeWhatsAppAPI
) -> None:
    served.agent.replies = [{"text": "Thanks, on it."}]
    body = batched(
        notification([text_message(MARIA, "parcel late"), text_message(JOAO, "refund please")], names=NAMES),
        notification([text_message(AIKO, "wrong size")], names=NAMES),
    )
    answer = await served.post(body)

    assert answer.json() == {"ok": True, "messages": 3, "duplicate": False}
    assert sorted(served.agent.seen(), key=lambda seen: seen[1]) == sorted([
        ("parcel late", MARIA, meta(MARIA, "Maria Keller")), ("refund please", JOAO, meta(JOAO, "João Silva")),
        ("wrong size", AIKO, meta(AIKO, "Aiko")),
    ], key=lambda seen: seen[1])  # fmt: skip
    assert sorted(params["to"] for params in api.sent()) == sorted([MARIA, JOAO, AIKO])


@pytest.mark.asyncio
async def test_one_customers_messages_are_handed_over_in_order(served: Served) -> None:
    body = notification([text_message(MARIA, f"part {n}") for n in range(1, 6)], names=NAMES)
    await served.post(body)
    assert [m.text for m in served.agent.messages] == [f"part {n}" for n in range(1, 6)]


@pytest.mark.asyncio
async def test_a_redelivered_message_is_answered_once_also_after_a_restart(
    settings: WhatsAppSettings, api: FakeWhatsAppAPI
) -> None:
    agent = RecordingAgent(replies=[{"text": "On it."}])
    body = notification([text_message(MARIA, "hello", message_id="wamid.SAME")], names=NAMES)
    async with serve(WhatsAppInput(settings), agent) as first_run:
        first = await first_run.post(body)
        again = await first_run.post(body)
    async with serve(WhatsAppInput(settings), agent) as second_run:
        after_restart = await second_run.post(body)

    assert [a.json()["duplicate"] for a in (first, again, after_restart)] == [False, True, True]
    assert [m.text for m in agent.messages] == ["hello"]
    assert api.delivered_texts(MARIA) == ["On it."]


@pytest.mark.asyncio
async def test_statuses_are_acknowledged_not_handed_over_and_failures_are_logged(
    served: Served, api: FakeWhatsAppAPI, caplog: pytest.LogCaptureFixture
) -> None:
    failed = status("wamid.OUT1", MARIA, "failed", [{"code": 131047, "title": "Re-engagement message"}])
    with caplog.at_level(logging.ERROR, logger="bot.channels.whatsapp"):
        answer = await served.post(notification(statuses=[status("wamid.OUT0", MARIA, "read"), failed]))

    assert (answer.status_code, answer.json()) == (200, {"ok": True, "messages": 0})
    assert served.agent.messages == [] and api.calls(answered=None) == []
    assert [r.getMessage() for r in caplog.records] == [
        f"whatsapp: message wamid.OUT1 to {MARIA} was not delivered: code 131047, Re-engagement message"
    ]


@pytest.mark.asyncio
async def test_a_message_to_another_number_of_the_account_is_not_answered_here(served: Served) -> None:
    answer = await served.post(notification([text_message(MARIA, "hi")], phone_number_id="999999999"))
    assert answer.json() == {"ok": True, "messages": 0} and served.agent.messages == []


@pytest.mark.asyncio
async def test_a_reaction_is_no_message(served: Served, api: FakeWhatsAppAPI) -> None:
    await served.post(notification([inbound(MARIA, "reaction", {"message_id": "wamid.OUT1", "emoji": "👍"})]))
    assert served.agent.messages == [] and api.calls("messages") == []


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("kind", "content", "noun", "recorded", "text"),
    [
        ("sticker", {"id": "st-1", "mime_type": "image/webp", "animated": False}, "sticker",
         {"sticker": "st-1", "media": {"id": "st-1", "mime_type": "image/webp"}}, "[sticker]"),
        ("image", {"id": "img-1", "mime_type": "image/jpeg", "caption": "box crushed"}, "photo",
         {"photo": "img-1", "media": {"id": "img-1", "mime_type": "image/jpeg"}}, "box crushed"),
        ("location", {"latitude": 52.52, "longitude": 13.405, "name": "Depot"}, "location",
         {"location": {"latitude": 52.52, "longitude": 13.405, "name": "Depot"}}, "[location]"),
        ("audio", {"id": "au-1", "mime_type": "audio/ogg", "voice": True}, "voice message",
         {"voice": "au-1", "media": {"id": "au-1", "mime_type": "audio/ogg"}}, "[voice message]"),
        ("unsupported", {}, "message", {"attachment": {"type": "unsupported"}}, "[message]"),
    ],
)  # fmt: skip
async def test_what_cannot_be_read_is_answered_clearly_and_noted_for_the_case(
    served: Served, api: FakeWhatsAppAPI, kind: str, content: dict[str, Any], noun: str, recorded: dict[str, Any],
    text: str,
) -> None:
    await served.post(notification([inbound(MARIA, kind, content)], names=NAMES))

    [message] = served.agent.messages
    assert (message.text, message.metadata) == (text, {**meta(MARIA, "Maria Keller"), **recorded})
    [notice] = api.delivered_texts(MARIA)
    assert notice.startswith(f"I can only read text, but I've attached your {noun} to your case")
    assert notice.endswith("what it's about?") == (text.startswith("["))


# --- replies: text, buttons, lists, errors -----------------------------------------------------------


@pytest.mark.asyncio
async def test_long_replies_are_split_at_4096_characters(served: Served, api: FakeWhatsAppAPI) -> None:
    long = ("Our returns policy in full. " * 400).strip()
    served.agent.replies = [{"text": long}]
    await served.post(notification([text_message(MARIA, "returns?")]))

    parts = api.delivered_texts(MARIA)
    assert len(parts) == 3 and all(len(part) <= 4096 for part in parts)
    assert " ".join(parts) == long


@pytest.mark.asyncio
async def test_up_to_three_short_choices_are_reply_buttons_and_a_press_reaches_rasa_as_the_payload(
    served: Served, api: FakeWhatsAppAPI
) -> None:
    payload = '/inform{"delivery_problem": "late"}'
    served.agent.replies = [{"text": "What's happening?", "buttons": [
        {"title": "It's late", "payload": payload}, {"title": "Not moved", "payload": "/stuck"},
        {"title": "Something else", "payload": "/other"},
    ]}]  # fmt: skip
    await served.post(notification([text_message(MARIA, "parcel")]))

    [sent] = api.sent(MARIA)
    assert (sent["type"], sent["interactive"]["type"], sent["interactive"]["body"]["text"]) == (
        "interactive", "button", "What's happening?",
    )  # fmt: skip
    choices = choices_of(sent)
    assert [title for title, _ in choices] == ["It's late", "Not moved", "Something else"]

    await served.post(notification([button_reply(MARIA, choices[0][1], "It's late")]))
    assert served.agent.messages[-1].text == payload
    assert served.agent.messages[-1].metadata == {**meta(MARIA), "button": True}


@pytest.mark.asyncio
async def test_a_long_text_with_buttons_keeps_the_buttons_under_a_part_whatsapp_takes(
    served: Served, api: FakeWhatsAppAPI
) -> None:
    long = ("Here is everything about your order and what happens next. " * 40).strip()
    served.agent.replies = [{"text": long, "buttons": [{"title": "Yes", "payload": "/affirm"}]}]
    await served.post(notification([text_message(MARIA, "status?")]))

    sent = api.sent(MARIA)
    assert [s["type"] for s in sent] == ["text", "text", "interactive"]  # about 2,400 characters
    assert len(sent[-1]["interactive"]["body"]["text"]) <= 1024 and choices_of(sent[-1])[0][0] == "Yes"
    assert " ".join(api.delivered_texts(MARIA)) == long


@pytest.mark.asyncio
async def test_more_choices_or_long_titles_go_as_a_list_message(served: Served, api: FakeWhatsAppAPI) -> None:
    titles = ["Where my order is", "Change an order", "Cancel an order", "Refund or return",
              "A billing question about my last invoice"]  # fmt: skip
    served.agent.replies = [{"text": "Is it one of these?", "buttons": [
        {"title": title, "payload": f"/pick{{\"n\": {n}}}"} for n, title in enumerate(titles)
    ]}]  # fmt: skip
    await served.post(notification([text_message(MARIA, "hmm")]))

    [sent] = api.sent(MARIA)
    assert sent["interactive"]["type"] == "list"
    rows = sent["interactive"]["action"]["sections"][0]["rows"]
    assert [row["title"] for row in rows][:4] == titles[:4]
    assert rows[4]["title"] == "A billing question abou…" and rows[4]["description"] == titles[4]

    await served.post(notification([list_reply(MARIA, rows[4]["id"], rows[4]["title"])]))
    assert served.agent.messages[-1].text == '/pick{"n": 4}'


@pytest.mark.asyncio
async def test_more_than_ten_choices_go_as_several_lists(served: Served, api: FakeWhatsAppAPI) -> None:
    served.agent.replies = [{"text": "Pick a size", "buttons": [{"title": f"EU {n}", "payload": f"/size{n}"}
                                                              for n in range(30, 42)]}]  # fmt: skip
    await served.post(notification([text_message(MARIA, "sizes?")]))

    sent = api.sent(MARIA)
    assert [s["interactive"]["body"]["text"] for s in sent] == ["Pick a size", "More choices:"]
    assert [len(choices_of(s)) for s in sent] == [10, 2]


@pytest.mark.asyncio
async def test_an_unknown_choice_id_is_read_as_its_title_not_as_an_intent(served: Served) -> None:
    await served.post(notification([button_reply(MARIA, "/restart", "/restart")]))
    assert [m.text for m in served.agent.messages] == ["restart"]


@pytest.mark.asyncio
async def test_a_throughput_limit_is_waited_out_and_the_reply_sent_once(served: Served, api: FakeWhatsAppAPI) -> None:
    served.agent.replies = [{"text": "Hi Maria!"}]
    api.fail_with(130429, times=2)
    await served.post(notification([text_message(MARIA, "hi")]))

    assert api.delivered_texts(MARIA) == ["Hi Maria!"]
    assert [c.status for c in api.calls("messages", answered=None)] == [400, 400, 200]


@pytest.mark.asyncio
async def test_a_closed_window_is_refused_for_good_and_not_tried_again(
    served: Served, api: FakeWhatsAppAPI, caplog: pytest.LogCaptureFixture
) -> None:
    served.agent.replies = [{"text": "Hi Maria!"}]
    api.fail_with(131047, times=5)
    with caplog.at_level(logging.ERROR, logger="bot.channels.replies"):
        await served.post(notification([text_message(MARIA, "hi", message_id="wamid.W")]))

    assert len(api.calls("messages", answered=None)) == 1
    assert any("refused for good" in r.getMessage() and "131047" in r.getMessage() for r in caplog.records)


@pytest.mark.asyncio
async def test_a_failed_read_receipt_does_not_keep_the_message_from_rasa(served: Served, api: FakeWhatsAppAPI) -> None:
    api.fault(DROP, method="read")
    await served.post(notification([text_message(MARIA, "hello")]))
    assert [m.text for m in served.agent.messages] == ["hello"]


@pytest.mark.asyncio
async def test_the_sender_raises_graph_errors_with_metas_codes(
    settings: WhatsAppSettings, api: FakeWhatsAppAPI
) -> None:
    from bot.channels.dedupe import ChannelStore
    from bot.channels.whatsapp_output import WhatsAppClients

    clients = WhatsAppClients(settings)
    output = WhatsAppOutput(clients, ChannelStore.from_url(), max_attempts=1)
    try:
        for code, outside, for_good in [(131047, True, True), (131026, False, True), (190, False, False),
                                        (130429, False, False)]:  # fmt: skip
            api.fail_with(code)
            with pytest.raises(GraphError) as raised:
                await output.send_text_message(MARIA, "hello")
            assert (raised.value.code, raised.value.outside_window, output.refused_for_good(raised.value)) == (
                code, outside, for_good,
            )  # fmt: skip
        await output.send_template(MARIA, "reopen_conversation", "en_GB")
        [template] = api.sent(MARIA)
        assert template["template"] == {"name": "reopen_conversation", "language": {"code": "en_GB"}}
    finally:
        await clients.close()


@pytest.mark.asyncio
async def test_a_wrong_access_token_is_a_bad_token_error(settings: WhatsAppSettings, api: FakeWhatsAppAPI) -> None:
    from dataclasses import replace

    from bot.channels.dedupe import ChannelStore
    from bot.channels.whatsapp_output import WhatsAppClients

    clients = WhatsAppClients(replace(settings, token="EAAGexpired"))
    output = WhatsAppOutput(clients, ChannelStore.from_url())
    try:
        with pytest.raises(GraphError) as raised:
            await output.send_text_message(MARIA, "hello")
        assert (raised.value.status, raised.value.code) == (401, 190)
    finally:
        await clients.close()


@pytest.mark.asyncio
async def test_the_webhook_answers_before_rasa_has_finished(served: Served) -> None:
    served.agent.gate = asyncio.Event()
    raw, headers = signed(notification([text_message(MARIA, "hello")]))
    answer = await asyncio.wait_for(served.client.post(WEBHOOK, content=raw, headers=headers), 5)

    assert answer.status_code == 200
    assert len(served.channel.tasks) == 1
    served.agent.gate.set()
    await served.channel.tasks.wait()
    assert [m.text for m in served.agent.messages] == ["hello"]


@pytest.mark.asyncio
async def test_no_secret_reaches_the_log_even_at_debug(
    served: Served, api: FakeWhatsAppAPI, caplog: pytest.LogCaptureFixture
) -> None:
    served.agent.replies = [{"text": "Hi!", "buttons": [{"title": "Yes", "payload": "/affirm"}]}]
    api.fail_with(190)
    with caplog.at_level(logging.DEBUG):
        await served.post(notification([text_message(MARIA, "hi")], names=NAMES))
        await served.post(None, raw=b"{}", headers={SIGNATURE_HEADER: "sha256=" + "1" * 64})
        wrong_token = {"hub.mode": "subscribe", "hub.verify_token": "x", "hub.challenge": "1"}
        await served.client.get(WEBHOOK, params=wrong_token)

    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "whatsapp" in logged  # something was logged, the calls above included
    for secret in (TOKEN, APP_SECRET, VERIFY_TOKEN):
        assert secret not in logged


def test_the_fakes_bodies_are_what_meta_sends() -> None:
    body = notification([text_message(MARIA, "Olá ✓")], names=NAMES)
    raw, headers = signed(body)
    assert json.loads(raw) == body and b"\\u2713" in raw  # escaped unicode, as Meta signs it
    assert headers[SIGNATURE_HEADER].startswith("sha256=")
