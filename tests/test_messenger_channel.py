"""The Messenger and Instagram channels: the real blueprints in Rasa's real Sanic app, the
Graph client against a local fake Graph API (``tests/fakes/graph_api.py``).

Rasa's agent is replaced by one that records each ``UserMessage`` and replies through the
message's output channel, as Rasa does.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from rasa.core.channels.channel import UserMessage
from sqlalchemy.exc import OperationalError

from bot.channels.dedupe import ChannelStore
from bot.channels.graph_client import GraphClient
from bot.channels.edge import Greeting, greet_at_edge
from bot.channels.inbox import SENT, Inbox, InboxEntry
from bot.channels.instagram import InstagramInput
from bot.channels.meta import GraphError, signature_of
from bot.channels.outbound import Outbound
from bot.channels.meta_output import (
    HUMAN_AGENT_TAG,
    INSTAGRAM_PLATFORM,
    MESSENGER_PLATFORM,
    InstagramSettings,
    MessengerSettings,
    MetaOutput,
    MetaSettings,
)
from bot.channels.messenger import MessengerInput, MetaDMInput
from bot.channels.replies import EDGE_GREETING_SEQ, HOLDING_REPLY
from bot.ops.config import PublicReply
from bot.ops.errors import OpsConfigError
from bot.ops.support import load_support_config
from tests.channel_support import RecordingAgent, credentials_refusal, rasa_channels, served_app
from tests.fakes.graph_api import (
    APP_SECRET,
    IG_ID,
    PAGE_ID,
    RASA_CREDENTIALS,
    TOKEN,
    VERIFY_TOKEN,
    FakeGraphAPI,
    dm,
    echo,
    encoded,
    facebook_comment,
    instagram_comment,
    postback,
    rasa_environment,
    signed_headers,
    webhook_body,
)
from tests.fakes.server import ACCEPT_DROP, DROP, ERROR

MARIA, JOAO, ANA = "6100000000000001", "6100000000000002", "6100000000000003"
GREETING = [{"text": "Hi! I'm Northwind's assistant."}, {"text": "What's your order number?"}]
HOSTILE = "You are a SCAM company, useless idiots!!! Where is my parcel"
PUBLIC = PublicReply(True, "Sorry to hear this — we've sent you a message.", "Thank you!")


@dataclass
class Served:
    channel: MetaDMInput
    agent: RecordingAgent
    client: httpx.AsyncClient
    api: FakeGraphAPI

    @property
    def path(self) -> str:
        return f"/webhooks/{self.channel.name()}/webhook"

    async def post(self, body: Any, headers: dict[str, str] | None = None, *, raw: bytes | None = None) -> httpx.Response:
        """POST a webhook as Meta does (signed, unless ``headers`` say otherwise); wait for its handling."""
        content = raw if raw is not None else encoded(body)
        answer = await self.client.post(self.path, content=content, headers=headers or signed_headers(content))
        await self.channel.tasks.wait()
        return answer

    async def dms(self, *events: dict[str, Any]) -> httpx.Response:
        obj = self.channel.platform.webhook_object
        for event in events:
            self.api.customer_wrote(event["sender"]["id"])
        return await self.post(webhook_body(obj, self.channel.settings.account_id, list(events)))

    def sent(self, method: str = "messages") -> list[tuple[str, str]]:
        return [(d.chat, d.text) for d in self.api.deliveries() if d.method == method]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FIRSTREPLY_CHANNEL_DB", str(tmp_path / "channels.db"))


@pytest.fixture
def api() -> Iterator[FakeGraphAPI]:
    with FakeGraphAPI() as fake:
        fake.profiles.update({MARIA: {"first_name": "Maria", "last_name": "Silva"},
                              JOAO: {"first_name": "João"}, ANA: {"first_name": "Ana", "name": "Ana K",
                                                                  "username": "ana.k"}})  # fmt: skip
        yield fake


def settings_for(cls: type[MetaSettings], api: FakeGraphAPI) -> MetaSettings:
    account = PAGE_ID if cls is MessengerSettings else IG_ID
    return cls(TOKEN, APP_SECRET, api.base_url, account, VERIFY_TOKEN)


def fast_client(api: FakeGraphAPI) -> GraphClient:
    return GraphClient(TOKEN, api.base_url, backoff_seconds=0.01)


@asynccontextmanager
async def serve(channel: MetaDMInput, api: FakeGraphAPI, replies: list[dict[str, Any]]) -> AsyncIterator[Served]:
    agent = RecordingAgent(replies=replies)
    async with served_app([channel], agent) as (_, client):
        yield Served(channel, agent, client, api)


@pytest_asyncio.fixture
async def messenger(api: FakeGraphAPI) -> AsyncIterator[Served]:
    channel = MessengerInput(settings_for(MessengerSettings, api), PUBLIC, client=fast_client(api))
    async with serve(channel, api, GREETING) as running:
        yield running


@pytest_asyncio.fixture
async def instagram(api: FakeGraphAPI) -> AsyncIterator[Served]:
    channel = InstagramInput(settings_for(InstagramSettings, api), PUBLIC, client=fast_client(api))
    async with serve(channel, api, GREETING) as running:
        yield running


# --- the handshake and authentication -------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("query", "expected"),
    [({"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "1158201444"}, (200, "1158201444")),
     ({"hub.mode": "subscribe", "hub.verify_token": "wrong-token-0123456789", "hub.challenge": "1"}, (403, None)),
     ({"hub.mode": "unsubscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "1"}, (403, None)),
     ({"hub.mode": "subscribe", "hub.challenge": "1"}, (403, None))],
)  # fmt: skip
async def test_the_handshake_answers_the_challenge_only_to_the_right_verify_token(
    messenger: Served, query: dict[str, str], expected: tuple[int, str | None]
) -> None:
    answer = await messenger.client.get(messenger.path, params=query)

    assert answer.status_code == expected[0]
    if expected[1] is not None:
        assert answer.text == expected[1]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "headers",
    [{}, {"X-Hub-Signature-256": ""}, {"X-Hub-Signature-256": "sha256=" + "0" * 64},
     {"X-Hub-Signature-256": signature_of("another-app-secret", b"x")},
     {"X-Hub-Signature": "sha1=0123456789abcdef0123456789abcdef01234567"}],
)  # fmt: skip
async def test_a_missing_or_forged_signature_is_refused_and_nothing_is_stored(
    messenger: Served, api: FakeGraphAPI, headers: dict[str, str]
) -> None:
    api.customer_wrote(MARIA)
    raw = encoded(webhook_body("page", PAGE_ID, [dm(MARIA, "m_1", text="hi")]))

    answer = await messenger.post(None, {"Content-Type": "application/json", **headers}, raw=raw)

    assert (answer.status_code, answer.json()) == (401, {"ok": False, "error": "unauthorized"})
    assert messenger.agent.messages == [] and api.calls(answered=None) == []
    # Nothing was stored: Meta's genuine delivery of the same message still goes through.
    assert (await messenger.post(None, raw=raw)).status_code == 200
    assert [m.text for m in messenger.agent.messages] == ["hi"]


@pytest.mark.asyncio
async def test_a_signature_over_a_re_serialised_body_does_not_match(messenger: Served) -> None:
    body = webhook_body("page", PAGE_ID, [dm(MARIA, "m_1", text="olá / é")])
    signed_as_parsed = signed_headers(json.dumps(body, ensure_ascii=False).encode())

    answer = await messenger.post(None, signed_as_parsed, raw=encoded(body))

    assert answer.status_code == 401


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "raw", [b"", b"{not json", b"[]", b'{"object": "page"}', b'{"object": "page", "entry": {}}',
            b'{"object": "instagram", "entry": []}', b'{"object": "page", "entry": [1, "x", null]}'],
)  # fmt: skip
async def test_a_signed_body_in_a_shape_meta_never_sends_is_answered_clearly(messenger: Served, raw: bytes) -> None:
    answer = await messenger.post(None, raw=raw)

    assert answer.status_code in (200, 400)
    assert answer.json()["ok"] is (answer.status_code == 200)
    assert messenger.agent.messages == []


# --- receiving ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_every_event_of_a_batch_is_answered_each_customer_by_name(messenger: Served, api: FakeGraphAPI) -> None:
    for customer in (MARIA, JOAO, ANA):
        api.customer_wrote(customer)
    body = webhook_body("page", PAGE_ID, [dm(MARIA, "m_1", text="where is my parcel"), dm(JOAO, "m_2", text="olá")])
    body["entry"].append(webhook_body("page", PAGE_ID, [dm(ANA, "m_3", text="refund please")])["entry"][0])

    answer = await messenger.post(body)

    assert (answer.status_code, answer.json()) == (200, {"ok": True, "events": 3, "skipped": 0})
    seen = {(m.sender_id, m.text, m.metadata["customer_name"]) for m in messenger.agent.messages}
    assert seen == {(MARIA, "where is my parcel", "Maria"), (JOAO, "olá", "João"), (ANA, "refund please", "Ana")}
    assert sorted(messenger.sent()) == sorted((c, r["text"]) for c in (MARIA, JOAO, ANA) for r in GREETING)
    actions = [(c.params["recipient"]["id"], c.params["sender_action"]) for c in api.calls("sender_action")]
    for customer in (MARIA, JOAO, ANA):
        assert [a for c, a in actions if c == customer] == ["mark_seen", "typing_on"]


@pytest.mark.asyncio
async def test_a_redelivered_message_is_answered_once(messenger: Served) -> None:
    event = dm(MARIA, "m_same", text="hello")

    first, again = await messenger.dms(event), await messenger.dms(event)

    assert (first.status_code, again.status_code) == (200, 200)
    assert [m.text for m in messenger.agent.messages] == ["hello"]
    assert messenger.sent() == [(MARIA, r["text"]) for r in GREETING]


@pytest.mark.asyncio
async def test_a_batch_not_wholly_stored_is_refused_and_meta_s_resend_answers_each_once(
    messenger: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    accept_many = messenger.channel.inbox.accept_many
    calls: list[str] = []

    def database_down_on_the_second(updates: list[tuple[str, str, str, str]]) -> Any:
        calls.extend(update.update_id for update in updates)
        if len(calls) == 2:
            raise OperationalError("INSERT INTO channel_inbox", {}, Exception("database is locked"))
        return accept_many(updates)

    events = (dm(MARIA, "m_1", text="first"), dm(JOAO, "m_2", text="second"))
    with monkeypatch.context() as patched:
        patched.setattr(messenger.channel.inbox, "accept_many", database_down_on_the_second)
        refused = await messenger.dms(*events)
    resent = await messenger.dms(*events)

    assert (refused.status_code, refused.json()) == (503, {"ok": False, "error": "temporarily unavailable"})
    assert resent.status_code == 200
    assert sorted(m.text for m in messenger.agent.messages) == ["first", "second"]
    assert sorted(messenger.sent()) == sorted((c, r["text"]) for c in (MARIA, JOAO) for r in GREETING)


@pytest.mark.asyncio
async def test_echoes_deliveries_reads_reactions_and_standby_are_ignored(messenger: Served, api: FakeGraphAPI) -> None:
    base = {"sender": {"id": MARIA}, "recipient": {"id": PAGE_ID}, "timestamp": 1}
    body = webhook_body("page", PAGE_ID, [
        echo(PAGE_ID, MARIA, "m_echo", "our own reply"),
        {**base, "delivery": {"mids": ["m_echo"], "watermark": 1}},
        {**base, "read": {"watermark": 1}},
        {**base, "reaction": {"mid": "m_echo", "action": "react", "emoji": "❤"}},
    ])  # fmt: skip
    body["entry"].append({"id": PAGE_ID, "time": 1, "standby": [dm(MARIA, "m_standby", text="for the inbox app")]})

    answer = await messenger.post(body)

    assert answer.json() == {"ok": True, "events": 0, "skipped": 0}
    assert messenger.agent.messages == [] and api.calls(answered=None) == []


@pytest.mark.asyncio
async def test_quick_replies_and_postbacks_reach_rasa_as_payloads(messenger: Served) -> None:
    await messenger.dms(dm(MARIA, "m_q", text="It's late", quick_reply={"payload": '/inform{"problem": "late"}'}),
                        postback(MARIA, "m_p", "/affirm", "Yes, that's right"))  # fmt: skip

    assert [(m.text, m.metadata["button"]) for m in messenger.agent.messages] == [
        ('/inform{"problem": "late"}', True), ("/affirm", True),
    ]  # fmt: skip


@pytest.mark.asyncio
async def test_typed_text_cannot_inject_an_intent(messenger: Served) -> None:
    await messenger.dms(dm(MARIA, "m_1", text=' / /inform{"priority": "urgent"}'))

    assert [m.text for m in messenger.agent.messages] == ['inform{"priority": "urgent"}']


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("attachments", "text", "noun", "metadata"),
    [([{"type": "image", "payload": {"url": "https://cdn/p.jpg"}}], "[photo]", "photo", {"photo": "https://cdn/p.jpg"}),
     ([{"type": "image", "payload": {"url": "https://cdn/s.png", "sticker_id": 369239263222822}}], "[sticker]",
      "sticker", {"sticker": "369239263222822"}),
     ([{"type": "location", "payload": {"coordinates": {"lat": 38.7, "long": -9.1}}}], "[location]", "location",
      {"location": {"latitude": 38.7, "longitude": -9.1}}),
     ([{"type": "audio", "payload": {"url": "https://cdn/a.mp4"}}], "[voice message]", "voice message",
      {"voice": "https://cdn/a.mp4"})],
)  # fmt: skip
async def test_attachments_are_answered_clearly_and_noted_for_the_case(
    messenger: Served, attachments: list[dict[str, Any]], text: str, noun: str, metadata: dict[str, Any]
) -> None:
    await messenger.dms(dm(MARIA, "m_a", attachments=attachments))

    [message] = messenger.agent.messages
    assert message.text == text
    assert {k: message.metadata[k] for k in metadata} == metadata
    notice = (f"I can only read text, but I've attached your {noun} to your case for the person who picks it up."
              " Could you also tell me in a few words what it's about?")  # fmt: skip
    assert messenger.sent()[0] == (MARIA, notice)


@pytest.mark.asyncio
async def test_instagram_story_mentions_and_story_replies_are_noted_for_the_case(instagram: Served) -> None:
    story = {"type": "story_mention", "payload": {"url": "https://lookaside/story"}}
    await instagram.dms(dm(ANA, "aWdf_1", IG_ID, attachments=[story]),
                        dm(ANA, "aWdf_2", IG_ID, text="is this in stock?",
                           reply_to={"story": {"id": "1799", "url": "https://lookaside/s2"}}))  # fmt: skip

    mention, reply = instagram.agent.messages
    assert (mention.text, mention.metadata["attachment"]) == (
        "[story mention]", {"type": "story_mention", "url": "https://lookaside/story"})
    assert (reply.text, reply.metadata["story_reply"]) == ("is this in stock?", {"id": "1799", "url": "https://lookaside/s2"})
    assert instagram.sent()[0][1].startswith("I can only read text, but I've attached your story mention")
    assert mention.metadata["customer_name"] == "Ana K" and mention.input_channel == "instagram"


@pytest.mark.asyncio
async def test_a_very_long_instagram_mid_is_deduplicated_too(instagram: Served) -> None:
    mid = "aWdfZAG1faXRlbToxOklHTWVzc2FnZAUlEOjE3ODQxNDA" * 4
    await instagram.dms(dm(ANA, mid, IG_ID, text="hi"))
    await instagram.dms(dm(ANA, mid, IG_ID, text="hi"))

    assert [m.text for m in instagram.agent.messages] == ["hi"]


@pytest.mark.asyncio
async def test_no_profile_permission_and_the_conversation_goes_on_without_a_name(
    messenger: Served, api: FakeGraphAPI, caplog: pytest.LogCaptureFixture
) -> None:
    api.profiles.pop(MARIA)
    with caplog.at_level(logging.WARNING):
        await messenger.dms(dm(MARIA, "m_1", text="hi"))

    [message] = messenger.agent.messages
    assert "customer_name" not in message.metadata and message.metadata["user_id"] == MARIA
    assert any("profile for 6100000000000001 failed" in r.getMessage() for r in caplog.records)
    assert messenger.sent() == [(MARIA, r["text"]) for r in GREETING]


# --- sending -----------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize(("platform", "account", "limit"), [(MESSENGER_PLATFORM, PAGE_ID, 2000),
                                                           (INSTAGRAM_PLATFORM, IG_ID, 1000)])  # fmt: skip
async def test_long_texts_are_split_at_the_platform_limit(api: FakeGraphAPI, platform: Any, account: str, limit: int) -> None:
    api.customer_wrote(MARIA)
    output = MetaOutput(fast_client(api), platform, account)
    text = ("A sentence that keeps going. " * 200).strip()

    await output.send_text_message(MARIA, text)

    parts = [t for _, t in [(d.chat, d.text) for d in api.deliveries()]]
    assert len(parts) > 1 and all(len(part) <= limit for part in parts)
    assert " ".join(parts) == text
    await output.client.close()


@pytest.mark.asyncio
async def test_buttons_become_quick_replies_within_meta_limits(api: FakeGraphAPI) -> None:
    api.customer_wrote(MARIA)
    output = MetaOutput(fast_client(api), MESSENGER_PLATFORM, PAGE_ID)
    buttons = [{"title": f"Choice number {n} with a long title", "payload": f"/choose{{\"n\": {n}}}"} for n in range(15)]

    await output.send_text_with_buttons(MARIA, "Which one?", buttons)

    [call] = api.calls("messages")
    quick = call.params["message"]["quick_replies"]
    assert len(quick) == 13 and all(len(q["title"]) <= 20 for q in quick)
    assert (quick[0]["title"], quick[0]["payload"]) == ("Choice number 0 wit…", '/choose{"n": 0}')
    await output.client.close()


@pytest.mark.asyncio
async def test_a_link_button_goes_in_a_button_template_of_at_most_three(api: FakeGraphAPI) -> None:
    api.customer_wrote(MARIA)
    output = MetaOutput(fast_client(api), MESSENGER_PLATFORM, PAGE_ID)
    buttons = [{"title": "Track it", "url": "https://northwind.example/track"}, {"title": "Yes", "payload": "/affirm"},
               {"title": "No", "payload": "/deny"}, {"title": "Maybe", "payload": "/maybe"}]  # fmt: skip

    await output.send_text_with_buttons(MARIA, "Here's your parcel.", buttons)

    [call] = api.calls("messages")
    payload = call.params["message"]["attachment"]["payload"]
    assert payload["template_type"] == "button" and payload["text"] == "Here's your parcel."
    assert [b["type"] for b in payload["buttons"]] == ["web_url", "postback", "postback"]
    await output.client.close()


@pytest.mark.asyncio
async def test_an_agent_reply_after_24_hours_needs_the_human_agent_tag_and_fails_after_7_days(api: FakeGraphAPI) -> None:
    output = MetaOutput(fast_client(api), MESSENGER_PLATFORM, PAGE_ID)
    api.customer_wrote(MARIA, hours_ago=30)
    api.customer_wrote(JOAO, hours_ago=8 * 24)

    with pytest.raises(GraphError) as untagged:
        await output.send_text_message(MARIA, "Sorry for the wait, here's what happened.")
    await output.send_text_message(MARIA, "Sorry for the wait, here's what happened.", tag=HUMAN_AGENT_TAG)
    with pytest.raises(GraphError) as too_late:
        await output.send_text_with_buttons(JOAO, "Still there?", [{"title": "Yes", "payload": "/affirm"}],
                                            tag=HUMAN_AGENT_TAG)  # fmt: skip

    assert (untagged.value.code, untagged.value.subcode, untagged.value.outside_window) == (10, 2018278, True)
    assert too_late.value.outside_window and output.refused_for_good(too_late.value)
    [sent] = api.calls("messages")
    assert (sent.params["messaging_type"], sent.params["tag"]) == ("MESSAGE_TAG", "HUMAN_AGENT")
    assert api.delivered_texts() == ["Sorry for the wait, here's what happened."]
    await output.client.close()


@pytest.mark.asyncio
async def test_the_bot_never_sends_the_human_agent_tag(messenger: Served, api: FakeGraphAPI) -> None:
    await messenger.dms(dm(MARIA, "m_1", text="hi"))

    assert {c.params["messaging_type"] for c in api.calls("messages")} == {"RESPONSE"}
    assert all("tag" not in c.params for c in api.calls("messages"))


@pytest.mark.asyncio
@pytest.mark.parametrize("code", ["4", "613"])
async def test_rate_limits_are_retried(messenger: Served, api: FakeGraphAPI, code: str) -> None:
    api.fault(ERROR, method="messages", status=400, error=code, times=2)

    await messenger.dms(dm(MARIA, "m_1", text="hi"))

    assert messenger.sent() == [(MARIA, r["text"]) for r in GREETING]
    assert [c.status for c in api.calls("messages", answered=None)][:3] == [400, 400, 200]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("code", "pending", "logged"),
    [("551", 0, "refused for good (HTTP 400, code 551"),  # the person is gone: no retry can reach them
     ("190", 1, "refused the access token (code 190): replace MESSENGER_PAGE_TOKEN")],  # kept until it is fixed
)  # fmt: skip
async def test_a_person_gone_is_given_up_on_and_a_bad_token_keeps_the_message_for_a_retry(
    messenger: Served, api: FakeGraphAPI, caplog: pytest.LogCaptureFixture, code: str, pending: int, logged: str
) -> None:
    api.fault(ERROR, method="messages", status=400, error=code, times=None, seconds=30)
    with caplog.at_level(logging.ERROR):
        await messenger.dms(dm(MARIA, "m_1", text="hi"))

    assert [m.text for m in messenger.agent.messages] == ["hi"]
    assert messenger.channel.inbox.pending() == pending
    assert messenger.sent() == []
    assert any(logged in r.getMessage() for r in caplog.records), [r.getMessage() for r in caplog.records]


# --- a text reply in doubt is looked up before it is sent again -----------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("mode", [ACCEPT_DROP, DROP], ids=["taken-then-dropped", "dropped-before-anything"])
async def test_a_reply_whose_answer_was_lost_is_looked_up_and_arrives_once(
    messenger: Served, api: FakeGraphAPI, mode: str
) -> None:
    api.fault(mode, method="messages", times=1)

    await messenger.dms(dm(MARIA, "m_1", text="hi"))

    assert messenger.sent() == [(MARIA, r["text"]) for r in GREETING]
    assert len(api.calls("conversation_messages")) == 1  # looked for once before the second try
    # Taken by Meta without an answer: found, not sent again; dropped before: sent on the second try.
    assert len(api.calls("messages", answered=None)) == len(GREETING) + (0 if mode == ACCEPT_DROP else 1)


def _bound(api: FakeGraphAPI, platform: Any, account: str, inbox: Inbox, since: float) -> MetaOutput:
    return MetaOutput(fast_client(api), platform, account, inbox=inbox).for_message("m-1", since=since)


@pytest.mark.asyncio
@pytest.mark.parametrize(("platform", "account"), [(MESSENGER_PLATFORM, PAGE_ID), (INSTAGRAM_PLATFORM, IG_ID)],
                         ids=["messenger", "instagram"])  # fmt: skip
@pytest.mark.parametrize("delivered", [True, False], ids=["meta-has-it", "meta-never-got-it"])
async def test_a_reply_cut_off_by_a_crash_is_sent_again_only_if_meta_does_not_have_it(
    api: FakeGraphAPI, tmp_path: Path, platform: Any, account: str, delivered: bool
) -> None:
    inbox = Inbox(ChannelStore.from_url(f"sqlite:///{tmp_path / 'c.db'}").engine)
    api.customer_wrote(MARIA)
    since = time.time()
    # The process that died had recorded the reply "sending", and Meta may have taken its call.
    inbox.begin_reply("m-1", 0, "digest")
    unbound, bound = MetaOutput(fast_client(api), platform, account), _bound(api, platform, account, inbox, since)
    if delivered:
        await unbound.send_text_message(MARIA, "On it.")

    await bound.send_text_message(MARIA, "On it.")

    assert [d.text for d in api.deliveries() if d.chat == MARIA] == ["On it."]
    assert len(api.calls("conversation_messages")) == 1
    assert inbox.reply_states("m-1") == {0: SENT}
    await unbound.client.close()
    await bound.client.close()


class _Words:
    """The greeting's wording: one text for everyone."""

    def for_message(self, text: str | None, metadata: Any) -> Greeting:
        return Greeting("utter_greeting", GREETING[0]["text"], "en")


@pytest.mark.asyncio
@pytest.mark.parametrize("delivered", [True, False], ids=["meta-has-it", "meta-never-got-it"])
async def test_a_greeting_cut_off_by_a_crash_is_sent_again_only_if_meta_does_not_have_it(
    api: FakeGraphAPI, tmp_path: Path, delivered: bool
) -> None:
    inbox = Inbox(ChannelStore.from_url(f"sqlite:///{tmp_path / 'c.db'}").engine)
    api.customer_wrote(MARIA)
    since = time.time()
    # The process that died had recorded the edge greeting "sending", and Meta may have taken its call.
    inbox.begin_reply("m-1", EDGE_GREETING_SEQ, "digest")
    unbound, bound = MetaOutput(fast_client(api), MESSENGER_PLATFORM, PAGE_ID), _bound(
        api, MESSENGER_PLATFORM, PAGE_ID, inbox, since
    )
    if delivered:
        await unbound.send_text_message(MARIA, GREETING[0]["text"])
    entry = InboxEntry("messenger:" + PAGE_ID, "m_1", MARIA, "{}", 1, replay=True)
    message = UserMessage("hi", bound, MARIA, input_channel="messenger", message_id="m-1")

    greeting = await greet_at_edge(message, entry, inbox, _Words, 3600)

    assert greeting is not None and greeting.text == GREETING[0]["text"]
    assert [d.text for d in api.deliveries() if d.chat == MARIA] == [GREETING[0]["text"]]  # once, either way
    assert len(api.calls("conversation_messages")) == 1
    assert inbox.reply_states("m-1")[EDGE_GREETING_SEQ] == SENT
    await unbound.client.close()
    await bound.client.close()


@pytest.mark.asyncio
async def test_the_same_text_sent_before_the_customers_message_is_not_taken_for_the_reply_in_doubt(
    api: FakeGraphAPI, tmp_path: Path
) -> None:
    inbox = Inbox(ChannelStore.from_url(f"sqlite:///{tmp_path / 'c.db'}").engine)
    api.customer_wrote(MARIA)
    unbound = MetaOutput(fast_client(api), MESSENGER_PLATFORM, PAGE_ID)
    await unbound.send_text_message(MARIA, "Which order?")
    inbox.begin_reply("m-1", 0, "digest")
    bound = _bound(api, MESSENGER_PLATFORM, PAGE_ID, inbox, time.time() + 5)

    await bound.send_text_message(MARIA, "Which order?")

    assert [d.text for d in api.deliveries() if d.chat == MARIA] == ["Which order?", "Which order?"]
    await unbound.client.close()
    await bound.client.close()


@pytest.mark.asyncio
@pytest.mark.parametrize("refused", ["conversations", "conversation_messages"])
async def test_a_lookup_meta_refuses_sends_the_reply_again_rather_than_dropping_it(
    api: FakeGraphAPI, tmp_path: Path, refused: str
) -> None:
    inbox = Inbox(ChannelStore.from_url(f"sqlite:///{tmp_path / 'c.db'}").engine)
    api.customer_wrote(MARIA)
    inbox.begin_reply("m-1", 0, "digest")
    api.fault(ERROR, method=refused, status=403, error="10", times=1)  # no permission to read conversations

    bound = _bound(api, MESSENGER_PLATFORM, PAGE_ID, inbox, time.time())

    await bound.send_text_message(MARIA, "On it.")

    assert [d.text for d in api.deliveries() if d.chat == MARIA] == ["On it."]
    assert inbox.reply_states("m-1") == {0: SENT}
    await bound.client.close()


# --- public comments ---------------------------------------------------------------------


async def comment(served: Served, change: dict[str, Any], author: str, *, days_ago: float = 0.0) -> httpx.Response:
    value = change["value"]
    served.api.comment_posted(value.get("comment_id") or value["id"], author, days_ago=days_ago)
    obj, account = served.channel.platform.webhook_object, served.channel.settings.account_id
    return await served.post(webhook_body(obj, account, changes=[change]))


@pytest.mark.asyncio
async def test_a_facebook_complaint_gets_a_public_reply_and_one_private_reply_that_opens_the_dm(
    messenger: Served, api: FakeGraphAPI
) -> None:
    change = facebook_comment("555_901", MARIA, "Maria Silva", HOSTILE)

    answer = await comment(messenger, change, MARIA)
    await comment(messenger, change, MARIA)  # Meta sends it again

    assert answer.json() == {"ok": True, "events": 1, "skipped": 0}
    assert messenger.sent("comments") == [("555_901", PUBLIC.text)]
    assert messenger.sent("private_reply") == [(MARIA, "Hi! I'm Northwind's assistant.\n\nWhat's your order number?")]
    [message] = messenger.agent.messages
    assert (message.sender_id, message.text, message.input_channel) == (
        MARIA, HOSTILE, "messenger")
    assert message.metadata["public_post"] == {
        "platform": "facebook", "id": "555_901", "text": HOSTILE,
        "url": f"https://www.facebook.com/northwind/posts/{PAGE_ID}_555", "author": "Maria Silva", "hostile": True,
    }  # fmt: skip
    assert message.metadata["customer_name"] == "Maria"


@pytest.mark.asyncio
async def test_praise_gets_a_public_thanks_only(messenger: Served) -> None:
    await comment(messenger, facebook_comment("555_902", JOAO, "João", "Love the new jackets! ❤"), JOAO)

    assert messenger.sent("comments") == [("555_902", PUBLIC.thanks)]
    assert messenger.sent("private_reply") == [] and messenger.agent.messages == []


@pytest.mark.asyncio
async def test_the_pages_own_comments_and_other_feed_changes_are_ignored(messenger: Served, api: FakeGraphAPI) -> None:
    own = facebook_comment("555_903", PAGE_ID, "Northwind Goods", "Sorry to hear this — we've sent you a message.")
    edited = facebook_comment("555_904", MARIA, "Maria", "edited text", verb="edited")
    reaction = {"field": "feed", "value": {"item": "reaction", "verb": "add", "from": {"id": MARIA}, "post_id": "1_2"}}

    answer = await messenger.post(webhook_body("page", PAGE_ID, changes=[own, edited, reaction]))

    assert answer.json() == {"ok": True, "events": 0, "skipped": 0}
    assert api.calls(answered=None) == [] and messenger.agent.messages == []


@pytest.mark.asyncio
async def test_a_private_reply_already_sent_is_not_retried(messenger: Served, api: FakeGraphAPI) -> None:
    api.fault(ERROR, method="private_reply", status=400, error="10900")

    await comment(messenger, facebook_comment("555_905", MARIA, "Maria", "Where is my order?"), MARIA)

    assert [c.status for c in api.calls("private_reply", answered=None)] == [400]
    assert messenger.channel.inbox.pending() == 0


@pytest.mark.asyncio
async def test_no_private_reply_to_a_comment_older_than_seven_days(messenger: Served, api: FakeGraphAPI) -> None:
    change = facebook_comment("555_906", MARIA, "Maria", "Where is my order?")
    change["value"]["created_time"] -= 8 * 86_400

    await comment(messenger, change, MARIA, days_ago=8)

    assert [m.metadata["public_post"]["id"] for m in messenger.agent.messages] == ["555_906"]
    assert api.calls("private_reply", answered=None) == []


@pytest.mark.asyncio
async def test_public_replies_can_be_switched_off(api: FakeGraphAPI) -> None:
    quiet = PublicReply(enabled=False)
    channel = InstagramInput(settings_for(InstagramSettings, api), quiet, client=fast_client(api))
    api.permalinks["1790001"] = "https://www.instagram.com/p/C0ffee/"
    async with serve(channel, api, GREETING) as served:
        await comment(served, instagram_comment("1801", ANA, "ana.k", "my order never came"), ANA)

        assert served.sent("replies") == []
        assert served.sent("private_reply") == [(ANA, "Hi! I'm Northwind's assistant.\n\nWhat's your order number?")]
        [message] = served.agent.messages
        assert message.metadata["public_post"] == {
            "platform": "instagram", "id": "1801", "text": "my order never came",
            "url": "https://www.instagram.com/p/C0ffee/", "author": "ana.k", "hostile": False,
        }  # fmt: skip


@pytest.mark.asyncio
async def test_an_instagram_comment_is_answered_in_public_under_it(instagram: Served) -> None:
    await comment(instagram, instagram_comment("1802", ANA, "ana.k", "Where is my order??"), ANA)

    assert instagram.sent("replies") == [("1802", PUBLIC.text)]
    assert len(instagram.sent("private_reply")) == 1


# --- settings ----------------------------------------------------------------------------


def test_settings_name_what_is_missing_and_never_show_secrets() -> None:
    env = {"MESSENGER_PAGE_ID": PAGE_ID, "MESSENGER_PAGE_TOKEN": TOKEN, "META_APP_SECRET": APP_SECRET}

    missing = credentials_refusal(lambda: MessengerSettings.from_credentials({}, env))
    short = credentials_refusal(lambda: MessengerSettings.from_credentials({}, {**env, "META_VERIFY_TOKEN": "short"}))
    not_an_id = credentials_refusal(
        lambda: InstagramSettings.from_credentials({}, {"INSTAGRAM_ACCOUNT_ID": "@northwind"})
    )
    settings = MessengerSettings.from_credentials({}, {**env, "META_VERIFY_TOKEN": VERIFY_TOKEN})

    assert "META_VERIFY_TOKEN" in missing and "at least 16" in short and "INSTAGRAM_ACCOUNT_ID" in not_an_id
    assert (settings.account_id, settings.source) == (PAGE_ID, f"messenger:{PAGE_ID}")
    assert TOKEN not in repr(settings) and APP_SECRET not in repr(settings)


@pytest.mark.asyncio
@pytest.mark.parametrize(("channel", "account"), [("messenger", PAGE_ID), ("instagram", IG_ID)])
async def test_the_desk_sender_reaches_customers_inside_each_window_and_is_refused_outside(
    api: FakeGraphAPI, channel: str, account: str
) -> None:
    outbound = Outbound(rasa_environment(api.base_url))
    sender = outbound.sender_for(channel)
    assert isinstance(sender, MetaOutput) and sender.account_id == account and sender.name() == channel
    api.customer_wrote(MARIA, hours_ago=2)
    api.customer_wrote(JOAO, hours_ago=6 * 24)
    api.customer_wrote(ANA, hours_ago=7 * 24 + 1)

    await sender.send_text_message(MARIA, "Your refund is on its way.")
    await sender.send_text_message(JOAO, "Sorry for the wait: your refund is on its way.", tag=HUMAN_AGENT_TAG)
    with pytest.raises(GraphError) as closed:
        await sender.send_text_message(ANA, "Are you still there?", tag=HUMAN_AGENT_TAG)

    assert [(d.chat, d.params.get("tag")) for d in api.deliveries()] == [(MARIA, None), (JOAO, HUMAN_AGENT_TAG)]
    assert closed.value.outside_window
    # One try per call: the desk's outbox does the retrying.
    assert len(api.calls("messages", answered=None)) == 3
    await outbound.close()


def test_rasa_builds_both_channels_from_credentials_yml_and_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = rasa_environment("https://graph.facebook.com")

    messenger_channel, instagram_channel = rasa_channels(RASA_CREDENTIALS, tmp_path, monkeypatch, env)

    assert (messenger_channel.name(), messenger_channel.settings.account_id) == ("messenger", PAGE_ID)
    assert (instagram_channel.name(), instagram_channel.settings.account_id) == ("instagram", IG_ID)
    assert instagram_channel.public_reply.text.startswith("Sorry to hear this")


@pytest.mark.parametrize(
    ("section", "message"),
    [("public_replies:\n  facebok: {enabled: true}\n",
      "unknown key in public_replies; did you mean 'facebook'? (got 'facebok')"),
     ("public_replies:\n  instagram:\n    enabled: yes please\n",
      "public_replies.instagram.enabled must be true or false"),
     ("public_replies:\n  facebook:\n    txt: Sorry!\n",
      "unknown key in public_replies.facebook; did you mean 'text'? (got 'txt')")],
)  # fmt: skip
def test_a_mistake_in_public_replies_names_the_line(tmp_path: Path, section: str, message: str) -> None:
    minimal = Path(__file__).resolve().parent / "fixtures" / "ops" / "minimal.yml"
    text = minimal.read_text(encoding="utf-8").rstrip("\n") + "\n"
    path = tmp_path / "support.yml"
    path.write_text(text + section, encoding="utf-8")

    with pytest.raises(OpsConfigError) as caught:
        load_support_config(path)

    assert message in str(caught.value)
    assert caught.value.line == text.count("\n") + section.count("\n")


def test_public_replies_left_out_take_the_defaults() -> None:
    shipped = load_support_config(Path(__file__).resolve().parent.parent / "support.yml")
    minimal = load_support_config(Path(__file__).resolve().parent / "fixtures" / "ops" / "minimal.yml")

    assert shipped.public_reply("facebook").text.startswith("Sorry to hear this")
    assert minimal.public_reply("instagram") == PublicReply()


@pytest.mark.asyncio
async def test_rasa_s_buttons_and_custom_text_ride_on_the_one_private_reply(api: FakeGraphAPI) -> None:
    replies = [{"text": "Hi Maria!"}, {"custom": {"text": "Which order is it about?", "attachment": {"x": 1}}},
               {"text": "Or choose:", "buttons": [{"title": "The jacket", "payload": "/inform"}]}]  # fmt: skip
    channel = MessengerInput(settings_for(MessengerSettings, api), PUBLIC, client=fast_client(api))
    async with serve(channel, api, replies) as served:
        await comment(served, facebook_comment("555_907", MARIA, "Maria", "Wrong size delivered"), MARIA)

        [call] = api.calls("private_reply")
        assert call.params["message"] == {
            "text": "Hi Maria!\n\nWhich order is it about?\n\nOr choose:",
            "quick_replies": [{"content_type": "text", "title": "The jacket", "payload": "/inform"}],
        }


@pytest.mark.asyncio
async def test_when_rasa_fails_a_dm_customer_hears_their_message_is_kept_and_a_commenter_is_not_messaged(
    api: FakeGraphAPI,
) -> None:
    channel = MessengerInput(settings_for(MessengerSettings, api), PUBLIC, client=fast_client(api))
    async with serve(channel, api, GREETING) as served:
        served.agent.error = RuntimeError("the action server is down")
        await served.dms(dm(JOAO, "m_1", text="where is my parcel"))
        await comment(served, facebook_comment("555_908", MARIA, "Maria", "Where is my order?"), MARIA)

        assert served.sent() == [(JOAO, HOLDING_REPLY)]
        assert served.sent("comments") == [("555_908", PUBLIC.text)]  # the public reply went before Rasa
        assert served.sent("private_reply") == [] and channel.inbox.pending() == 2
        tried = [c.params["recipient"] for c in api.calls("messages", answered=None)]
        assert {"id": MARIA} not in tried  # not even tried: a commenter has no DM conversation yet
