"""The X channel: the real blueprint in Rasa's real Sanic app, the real tweepy client against a
local fake X API (``tests/fakes/x_api.py``) that checks its OAuth 1.0a signatures.

Rasa's agent is replaced by one that records each ``UserMessage`` and can reply through
the message's output channel, as Rasa does.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from tweepy.errors import TooManyRequests

from bot.channels.common import ChannelCredentialsError
from bot.channels.dedupe import ChannelStore
from bot.channels.inbox import Inbox
from bot.channels.outbound import Outbound
from bot.channels.x import XInput
from bot.channels.x_client import (
    ENV_ACCESS_TOKEN,
    ENV_ACCESS_TOKEN_SECRET,
    ENV_BASE_URL,
    ENV_BRAND_HANDLE,
    ENV_BRAND_USER_ID,
    ENV_CONSUMER_KEY,
    ENV_CONSUMER_SECRET,
    XSettings,
    build_client,
)
from bot.channels.x_output import XOutput
from bot.ops import PublicReply
from tests.channel_support import RecordingAgent, credentials_refusal, served_app
from bot.channels.inbox import SENT, reply_digest
from bot.channels.x_output import _comparable
from tests.fakes.server import ACCEPT_DROP, DROP, ERROR
from tests.fakes.x_api import (
    ACCESS_TOKEN,
    ACCESS_TOKEN_SECRET,
    BRAND_HANDLE,
    BRAND_ID,
    CONSUMER_KEY,
    CONSUMER_SECRET,
    DM_EVENTS_METHOD,
    DM_METHOD,
    POST_METHOD,
    FakeXAPI,
    activity,
    dm_event,
    photo,
    post,
    signed_headers,
    user,
)

WEBHOOK = "/webhooks/x/webhook"
MARIA_ID = "2244994945"
MARIA = user(MARIA_ID, "Maria Silva", "maria_k")
MARIA_METADATA = {"customer_name": "Maria Silva", "username": "maria_k", "user_id": MARIA_ID}
DM_LINK = f"https://x.com/messages/compose?recipient_id={BRAND_ID}"
REPLY = PublicReply(enabled=True, text="Thanks! Please DM us: {dm_link}", no_dm_text="Please email help@example.com")
ENV = {ENV_CONSUMER_KEY: CONSUMER_KEY, ENV_CONSUMER_SECRET: CONSUMER_SECRET, ENV_ACCESS_TOKEN: ACCESS_TOKEN,
       ENV_ACCESS_TOKEN_SECRET: ACCESS_TOKEN_SECRET, ENV_BRAND_USER_ID: BRAND_ID,
       ENV_BRAND_HANDLE: BRAND_HANDLE}  # fmt: skip


def dm_from_maria(event_id: str, text: str, **options: Any) -> bytes:
    return activity(dms=[dm_event(event_id, MARIA, text, **options)], users=[MARIA])


@dataclass
class Served:
    channel: XInput
    agent: RecordingAgent
    client: httpx.AsyncClient

    async def post(self, body: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
        headers = signed_headers(body) if headers is None else headers
        answer = await self.client.post(WEBHOOK, content=body, headers=headers)
        await self.channel.tasks.wait()
        return answer


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in (*ENV, ENV_BASE_URL):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FIRSTREPLY_CHANNEL_DB", str(tmp_path / "channels.db"))


@pytest.fixture
def api() -> Iterator[FakeXAPI]:
    with FakeXAPI() as fake:
        yield fake


@pytest.fixture
def settings(api: FakeXAPI) -> XSettings:
    return XSettings.from_credentials({"base_url": api.base_url}, ENV)


@asynccontextmanager
async def serve(channel: XInput, agent: RecordingAgent) -> AsyncIterator[Served]:
    """Rasa's Sanic app (``configure_app``) with ``channel`` registered, on a real port."""
    channel.output.backoff_seconds = 0.01
    async with served_app([channel], agent) as (_, client):
        yield Served(channel, agent, client)


@pytest_asyncio.fixture
async def served(settings: XSettings) -> AsyncIterator[Served]:
    async with serve(XInput(settings, REPLY), RecordingAgent()) as running:
        yield running


# --- the webhook's checks -------------------------------------------------------------------


@pytest.mark.asyncio
async def test_the_challenge_is_answered_with_the_hmac_of_the_token(served: Served) -> None:
    answer = await served.client.get(WEBHOOK, params={"crc_token": "challenge-123"})

    # base64(HMAC-SHA256(consumer secret, "challenge-123")), also as a fixed value in case both sides drift.
    assert (answer.status_code, answer.json()) == (
        200, {"response_token": "sha256=" + signed_headers(b"challenge-123")["x-twitter-webhooks-signature"][7:]},
    )  # fmt: skip
    assert answer.json()["response_token"] == "sha256=7W6F22ach0I8NeSBbaYmVxGsFC6pvVzm9w2ktCnP6vw="


@pytest.mark.asyncio
@pytest.mark.parametrize("params", [{}, {"crc_token": ""}, [("crc_token", "a"), ("crc_token", "b")]])
async def test_a_challenge_without_one_token_is_a_400(served: Served, params: Any) -> None:
    answer = await served.client.get(WEBHOOK, params=params)
    assert (answer.status_code, answer.json()) == (400, {"error": "one crc_token is needed"})


@pytest.mark.asyncio
@pytest.mark.parametrize("flaw", ["none", "other secret", "other body", "hex digest", "no prefix"])
async def test_a_forged_or_missing_signature_is_refused_and_nothing_is_stored(
    served: Served, api: FakeXAPI, flaw: str
) -> None:
    body = dm_from_maria("1001", "hello")
    good = signed_headers(body)["x-twitter-webhooks-signature"]
    forged = {
        "none": None, "other secret": signed_headers(body, "another-secret")["x-twitter-webhooks-signature"],
        "other body": signed_headers(body + b" ")["x-twitter-webhooks-signature"],
        "hex digest": "sha256=" + "0" * 64, "no prefix": good[len("sha256="):],
    }[flaw]  # fmt: skip
    headers = {"Content-Type": "application/json", **({"x-twitter-webhooks-signature": forged} if forged else {})}
    served.agent.replies = [{"text": "Hi!"}]
    answer = await served.post(body, headers)

    assert (answer.status_code, answer.json()) == (401, {"error": "unauthorized"})
    assert served.agent.messages == []
    assert api.calls(answered=None) == []
    assert served.channel.inbox.pending() == 0
    # Not even remembered: the genuine delivery of the same event still goes through.
    assert (await served.post(body)).json() == {"ok": True}
    assert [m.text for m in served.agent.messages] == ["hello"]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "body",
    [b"{not json", b"", b"[1, 2]", b'{"direct_message_events": "hi"}',
     b'{"direct_message_events": [{"type": "message_create", "id": "x1", "message_create": {}}]}',
     b'{"tweet_create_events": [{"id_str": "5", "user": "maria"}]}', b'{"for_user_id": "not an id"}'],
)  # fmt: skip
async def test_a_malformed_body_is_a_400_and_reaches_nobody(served: Served, api: FakeXAPI, body: bytes) -> None:
    answer = await served.post(body)

    assert answer.status_code == 400 and answer.json()["error"].startswith("malformed event: ")
    assert served.agent.messages == []
    assert api.calls(answered=None) == []


@pytest.mark.asyncio
async def test_other_activity_is_acknowledged_and_ignored(served: Served, api: FakeXAPI) -> None:
    body = json.dumps({"for_user_id": BRAND_ID, "favorite_events": [{"id": "f1"}],
                       "direct_message_indicate_typing_events": [{"sender_id": MARIA_ID}]}).encode()  # fmt: skip
    answer = await served.post(body)

    assert (answer.status_code, answer.json()) == (200, {"ok": True})
    assert served.agent.messages == [] and api.calls(answered=None) == []


# --- direct messages ---------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_dm_reaches_rasa_with_the_customers_name_and_handle_and_is_answered_by_dm(
    served: Served, api: FakeXAPI
) -> None:
    served.agent.replies = [{"text": "Hi Maria! Which order?"}]
    answer = await served.post(dm_from_maria("1001", "Where is my parcel??"))

    assert (answer.status_code, answer.json()) == (200, {"ok": True})
    [message] = served.agent.messages
    assert (message.text, message.sender_id, message.input_channel, message.message_id, message.metadata) == (
        "Where is my parcel??", MARIA_ID, "x", "x-dm-1001", MARIA_METADATA,
    )  # fmt: skip
    assert api.dms(MARIA_ID) == ["Hi Maria! Which order?"]
    [call] = api.calls(DM_METHOD, answered=201)
    assert call.params == {"text": "Hi Maria! Which order?", "participant_id": MARIA_ID}


@pytest.mark.asyncio
async def test_a_redelivered_dm_is_handled_and_answered_once(served: Served, api: FakeXAPI) -> None:
    served.agent.replies = [{"text": "On it."}]
    first = await served.post(dm_from_maria("1001", "hello"))
    again = await served.post(dm_from_maria("1001", "hello"))

    assert (first.json(), again.json()) == ({"ok": True}, {"ok": True, "duplicate": True})
    assert [m.text for m in served.agent.messages] == ["hello"]
    assert api.dms() == ["On it."]


@pytest.mark.asyncio
async def test_the_brands_own_dms_and_posts_and_reposts_are_ignored(served: Served, api: FakeXAPI) -> None:
    brand = user(BRAND_ID, "Northwind", BRAND_HANDLE)
    body = activity(
        dms=[dm_event("2001", brand, "Our agent's reply", to=MARIA_ID)],
        posts=[post("3001", brand, "New arrivals!"),
               post("3002", MARIA, "RT @NorthwindHelp: New arrivals!", repost=True),
               post("3003", MARIA, "lovely weather", mentions_brand=False)],
        users=[brand, MARIA],
    )  # fmt: skip
    answer = await served.post(body)

    assert (answer.status_code, served.agent.messages, api.calls(answered=None)) == (200, [], [])
    assert served.channel.inbox.pending() == 0


@pytest.mark.asyncio
async def test_buttons_become_numbered_choices_and_a_number_answers_with_the_payload(
    served: Served, api: FakeXAPI
) -> None:
    buttons = [{"title": "Yes, that's right", "payload": "/affirm"}, {"title": "Correct it", "payload": "/deny"}]
    served.agent.replies = [{"text": "Is that right?", "buttons": buttons}]
    await served.post(dm_from_maria("1001", "my order is late"))
    served.agent.replies = []
    await served.post(dm_from_maria("1002", " 2 "))
    await served.post(dm_from_maria("1003", "yes, that's right"))
    await served.post(dm_from_maria("1004", "7"))

    assert api.dms() == ["Is that right?\n\n1. Yes, that's right\n2. Correct it\n\n(Reply with a number.)"]
    assert [(m.text, m.metadata.get("button")) for m in served.agent.messages] == [
        ("my order is late", None), ("/deny", True), ("/affirm", True), ("7", None),
    ]  # fmt: skip


@pytest.mark.asyncio
async def test_a_typed_intent_is_not_injected(served: Served) -> None:
    await served.post(dm_from_maria("1001", '/inform{"priority": "urgent"}'))
    assert [m.text for m in served.agent.messages] == ['inform{"priority": "urgent"}']


@pytest.mark.asyncio
async def test_a_long_reply_is_split_at_ten_thousand_characters(served: Served, api: FakeXAPI) -> None:
    served.agent.replies = [{"text": ("All good here. " * 700).strip()}]
    await served.post(dm_from_maria("1001", "hello"))

    sent = api.dms()
    assert len(sent) == 2 and all(len(part) <= 10_000 for part in sent)
    assert " ".join(sent) == ("All good here. " * 700).strip()


@pytest.mark.asyncio
async def test_a_photo_is_answered_clearly_and_noted_in_the_message(served: Served, api: FakeXAPI) -> None:
    await served.post(dm_from_maria("1001", "https://t.co/ph0t0Link", media=photo()))
    await served.post(dm_from_maria("1002", "box crushed https://t.co/ph0t0Link", media=photo("16")))

    assert api.dms() == [
        "I can only read text, but I've attached your photo to your case for the person who picks it up."
        " Could you also tell me in a few words what it's about?",
        "I can only read text, but I've attached your photo to your case for the person who picks it up.",
    ]
    assert [(m.text, m.metadata.get("photo")) for m in served.agent.messages] == [
        ("[photo]", f"https://ton.x.com/1.1/ton/data/dm/{photo()['id_str']}/photo.jpg"),
        ("box crushed", "https://ton.x.com/1.1/ton/data/dm/16/photo.jpg"),
    ]


@pytest.mark.asyncio
async def test_a_near_rate_limit_is_waited_out(served: Served, api: FakeXAPI) -> None:
    api.fault(ERROR, method=DM_METHOD, status=429, retry_after=1)
    served.agent.replies = [{"text": "On it."}]
    await served.post(dm_from_maria("1001", "hello"))

    assert [c.status for c in api.calls(DM_METHOD, answered=None)] == [429, 201]
    assert api.dms() == ["On it."]


@pytest.mark.asyncio
async def test_a_far_rate_limit_is_raised_so_the_inbox_tries_again_later(settings: XSettings, api: FakeXAPI) -> None:
    output = XOutput(build_client(settings), settings.source, max_retry_after=5)
    api.fault(ERROR, method=DM_METHOD, status=429, retry_after=900)

    with pytest.raises(TooManyRequests) as raised:
        await output.send_text_message(MARIA_ID, "On it.")
    assert raised.value.reset_time is not None and raised.value.reset_time - time.time() > 800
    assert api.dms() == []


# --- a DM in doubt is looked up before it is sent again --------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize(("mode", "status", "lookups"), [(ACCEPT_DROP, 503, 1), (DROP, 503, 1), (ERROR, 503, 1)],
                         ids=["taken-then-dropped", "dropped-before-anything", "503"])  # fmt: skip
async def test_a_dm_whose_answer_was_lost_is_looked_up_and_arrives_once(
    served: Served, api: FakeXAPI, mode: str, status: int, lookups: int
) -> None:
    api.fault(mode, method=DM_METHOD, status=status, times=1)
    served.agent.replies = [{"text": "On it."}]
    await served.post(dm_from_maria("1001", "hello"))

    assert api.dms(MARIA_ID) == ["On it."]
    assert len(api.calls(DM_EVENTS_METHOD)) == lookups  # looked for once before the second try
    # Taken by X without an answer: found, not sent again; otherwise sent on the second try.
    assert len(api.calls(DM_METHOD, answered=None)) == (1 if mode == ACCEPT_DROP else 2)


def _bound(settings: XSettings, inbox: Inbox, since: float) -> XOutput:
    return XOutput(build_client(settings), settings.source, inbox=inbox).for_message("x-dm-1001", since=since)


@pytest.mark.asyncio
@pytest.mark.parametrize("delivered", [True, False], ids=["x-has-it", "x-never-got-it"])
async def test_a_dm_cut_off_by_a_crash_is_sent_again_only_if_x_does_not_have_it(
    settings: XSettings, api: FakeXAPI, tmp_path: Path, delivered: bool
) -> None:
    inbox = Inbox(ChannelStore.from_url(f"sqlite:///{tmp_path / 'c.db'}").engine)
    since = time.time()
    # The process that died had recorded the DM "sending", and X may have taken its call.
    inbox.begin_reply("x-dm-1001", 0, reply_digest("dm", MARIA_ID, "On it."))
    if delivered:
        await XOutput(build_client(settings), settings.source).send_text_message(MARIA_ID, "On it.")

    await _bound(settings, inbox, since).send_text_message(MARIA_ID, "On it.")

    assert api.dms(MARIA_ID) == ["On it."]
    assert len(api.calls(DM_EVENTS_METHOD)) == 1
    assert inbox.reply_states("x-dm-1001") == {0: SENT}


@pytest.mark.asyncio
async def test_the_same_text_sent_before_the_customers_message_is_not_taken_for_the_dm_in_doubt(
    settings: XSettings, api: FakeXAPI, tmp_path: Path
) -> None:
    inbox = Inbox(ChannelStore.from_url(f"sqlite:///{tmp_path / 'c.db'}").engine)
    # The same question, asked before the customer's message (beyond the clocks' margin).
    await XOutput(build_client(settings), settings.source).send_text_message(MARIA_ID, "Which order?")
    inbox.begin_reply("x-dm-1001", 0, reply_digest("dm", MARIA_ID, "Which order?"))

    await _bound(settings, inbox, time.time() + 5).send_text_message(MARIA_ID, "Which order?")

    assert api.dms(MARIA_ID) == ["Which order?", "Which order?"]


@pytest.mark.asyncio
async def test_a_dm_in_doubt_is_found_on_a_later_page_of_the_conversation(
    settings: XSettings, api: FakeXAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inbox = Inbox(ChannelStore.from_url(f"sqlite:///{tmp_path / 'c.db'}").engine)
    since, unbound = time.time(), XOutput(build_client(settings), settings.source)
    await unbound.send_text_message(MARIA_ID, "On it.")
    for number in range(5):  # newer DMs to Maria (an agent's, from the desk) push it to the second page
        await unbound.send_text_message(MARIA_ID, f"note {number}")
    inbox.begin_reply("x-dm-1001", 0, reply_digest("dm", MARIA_ID, "On it."))
    output = _bound(settings, inbox, since)
    pages = output.client.get_direct_message_events

    def small_pages(**params: Any) -> Any:
        return pages(**{**params, "max_results": 3})

    monkeypatch.setattr(output.client, "get_direct_message_events", small_pages)
    await output.send_text_message(MARIA_ID, "On it.")

    assert api.dms(MARIA_ID).count("On it.") == 1
    assert len(api.calls(DM_EVENTS_METHOD)) == 2


@pytest.mark.asyncio
async def test_a_lookup_x_refuses_sends_the_dm_again_rather_than_dropping_it(
    settings: XSettings, api: FakeXAPI, tmp_path: Path
) -> None:
    inbox = Inbox(ChannelStore.from_url(f"sqlite:///{tmp_path / 'c.db'}").engine)
    inbox.begin_reply("x-dm-1001", 0, reply_digest("dm", MARIA_ID, "On it."))
    api.fault(ERROR, method=DM_EVENTS_METHOD, status=403, times=1)  # an access level without DM lookups

    await _bound(settings, inbox, time.time()).send_text_message(MARIA_ID, "On it.")

    assert api.dms(MARIA_ID) == ["On it."]
    assert inbox.reply_states("x-dm-1001") == {0: SENT}


def test_links_are_compared_as_links_since_x_shows_them_shortened() -> None:
    assert _comparable("Track it at https://northwind.example/t/123 ") == _comparable("Track it at https://t.co/AbC1")
    assert _comparable("Track it here") != _comparable("Track it at https://t.co/AbC1")


# --- public posts ----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_mention_goes_to_rasa_as_a_public_post_and_is_answered_in_public_once(
    served: Served, api: FakeXAPI
) -> None:
    served.agent.replies = [{"text": "Hi Maria, sorry about that! What's your order number?"}]
    mention = activity(posts=[post("4001", MARIA, "@NorthwindHelp my parcel is 2 weeks late, useless")])
    await served.post(mention)
    again = await served.post(mention)

    assert again.json() == {"ok": True, "duplicate": True}
    [message] = served.agent.messages
    assert (message.text, message.sender_id, message.message_id) == (
        "my parcel is 2 weeks late, useless", MARIA_ID, "x-post-4001",
    )  # fmt: skip
    assert message.metadata == {**MARIA_METADATA, "public_post": {
        "platform": "x", "id": "4001", "text": "@NorthwindHelp my parcel is 2 weeks late, useless",
        "url": "https://x.com/maria_k/status/4001", "author": "maria_k", "hostile": False}}  # fmt: skip
    # The conversation goes on in a DM; the post gets one public reply, with the DM link.
    assert api.dms(MARIA_ID) == ["Hi Maria, sorry about that! What's your order number?"]
    assert api.public_replies("4001") == [f"Thanks! Please DM us: {DM_LINK}"]
    [call] = api.calls(POST_METHOD, answered=201)
    assert call.params == {"text": f"Thanks! Please DM us: {DM_LINK}", "reply": {"in_reply_to_tweet_id": "4001"}}


@pytest.mark.asyncio
async def test_a_hostile_post_is_marked_hostile(served: Served) -> None:
    await served.post(activity(posts=[post("4001", MARIA, "@NorthwindHelp you useless idiots, I'll sue")]))
    [message] = served.agent.messages
    assert message.metadata["public_post"]["hostile"] is True


@pytest.mark.asyncio
async def test_replies_in_a_thread_the_brand_answered_are_not_answered_again_in_public(
    served: Served, api: FakeXAPI
) -> None:
    await served.post(activity(posts=[post("4001", MARIA, "@NorthwindHelp where is my parcel?")]))
    [brand_reply] = api.calls(POST_METHOD, answered=201)
    reply_id = brand_reply.answer["data"]["id"]
    # Maria answers the brand's public reply, then answers herself further down.
    await served.post(activity(posts=[post("4002", MARIA, "@NorthwindHelp still nothing", reply_to=reply_id,
                                           reply_to_user=BRAND_ID)]))  # fmt: skip
    await served.post(activity(posts=[post("4003", MARIA, "@NorthwindHelp hello??", reply_to="4002")]))
    # A new post of hers, in no thread, is answered.
    await served.post(activity(posts=[post("4004", MARIA, "@NorthwindHelp another question")]))

    assert [m.message_id for m in served.agent.messages] == ["x-post-4001", "x-post-4002", "x-post-4003", "x-post-4004"]
    assert [d.chat for d in api.deliveries() if d.method == POST_METHOD] == ["public:4001", "public:4004"]


@pytest.mark.asyncio
async def test_when_the_customer_does_not_accept_dms_the_public_reply_says_how_to_reach_the_brand(
    served: Served, api: FakeXAPI
) -> None:
    api.refuse_dms(MARIA_ID)
    served.agent.replies = [{"text": "Hi Maria! What's your order number?"}]
    await served.post(activity(posts=[post("4001", MARIA, "@NorthwindHelp my parcel is late")]))

    assert [c.status for c in api.calls(DM_METHOD, answered=None)] == [403]  # refused for good: not retried
    assert api.public_replies("4001") == ["Please email help@example.com"]
    assert served.channel.inbox.pending() == 0


@pytest.mark.asyncio
async def test_public_replies_switched_off_send_none(settings: XSettings, api: FakeXAPI) -> None:
    off = PublicReply(enabled=False, text=REPLY.text, no_dm_text=REPLY.no_dm_text)
    async with serve(XInput(settings, off), RecordingAgent()) as running:
        await running.post(activity(posts=[post("4001", MARIA, "@NorthwindHelp my parcel is late")]))
        assert [m.message_id for m in running.agent.messages] == ["x-post-4001"]
    assert api.public_replies() == []


@pytest.mark.asyncio
async def test_a_public_reply_cut_off_is_sent_once_when_the_event_is_handled_again(
    settings: XSettings, api: FakeXAPI, tmp_path: Path
) -> None:
    store = ChannelStore.from_url(f"sqlite:///{tmp_path / 'shared.db'}")
    inbox = Inbox(store.engine, lease_seconds=0.5)
    agent = RecordingAgent()
    api.fault(ERROR, method=POST_METHOD, status=503, times=4)  # every attempt of the first try
    async with serve(XInput(settings, REPLY, store, inbox), agent) as running:
        running.channel.sweep_seconds = 0.2
        await running.post(activity(posts=[post("4001", MARIA, "@NorthwindHelp my parcel is late")]))
        for _ in range(100):
            if api.public_replies("4001"):
                break
            await asyncio.sleep(0.05)
        await running.channel.tasks.wait()
    assert api.public_replies("4001") == [f"Thanks! Please DM us: {DM_LINK}"]
    assert [m.message_id for m in agent.messages] == ["x-post-4001", "x-post-4001"]  # Rasa's turn replayed, too
    store.dispose()


# --- settings, the client, the desk's sender -------------------------------------------------------


@pytest.mark.parametrize("missing", list(ENV))
def test_each_missing_setting_is_named(missing: str) -> None:
    environ = {key: value for key, value in ENV.items() if key != missing}
    assert missing in credentials_refusal(lambda: XSettings.from_credentials(None, environ))


def test_an_access_token_of_another_account_is_refused() -> None:
    environ = {**ENV, ENV_ACCESS_TOKEN: "999-fakeAccessToken0123"}
    refusal = credentials_refusal(lambda: XSettings.from_credentials(None, environ))
    assert refusal.startswith("X_ACCESS_TOKEN belongs to another account than X_BRAND_USER_ID")


def test_secrets_stay_out_of_the_settings_repr() -> None:
    shown = repr(XSettings.from_credentials(None, ENV))
    assert CONSUMER_SECRET not in shown and ACCESS_TOKEN not in shown and ACCESS_TOKEN_SECRET not in shown


@pytest.mark.asyncio
async def test_a_request_signed_with_another_secret_is_refused_by_the_fake(api: FakeXAPI) -> None:
    wrong = XSettings.from_credentials({"base_url": api.base_url}, {**ENV, ENV_ACCESS_TOKEN_SECRET: "notTheSecret1234"})
    output = XOutput(build_client(wrong), wrong.source)

    with pytest.raises(Exception) as raised:
        await output.send_text_message(MARIA_ID, "hi")
    assert "401" in str(raised.value)
    assert api.dms() == []


@pytest.mark.asyncio
async def test_the_desk_answers_x_customers_by_dm(api: FakeXAPI) -> None:
    outbound = Outbound({**ENV, ENV_BASE_URL: api.base_url})
    sender = outbound.sender_for("x")
    assert isinstance(sender, XOutput) and outbound.can_push("x")
    await sender.send_text_message(MARIA_ID, "Hi Maria, this is Sam from the team.")
    await outbound.close()
    assert api.dms(MARIA_ID) == ["Hi Maria, this is Sam from the team."]


def test_without_settings_the_desk_says_why_it_cannot_answer_x_customers() -> None:
    with pytest.raises(ChannelCredentialsError) as raised:
        Outbound({}).sender_for("x")
    assert str(raised.value).startswith("cannot answer X customers: The x channel needs X_CONSUMER_KEY")


def test_rasa_builds_the_channel_from_credentials_yml_with_support_ymls_public_reply(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bot.ops import load_support_config
    from tests.channel_support import rasa_channels
    from tests.fakes.x_api import CREDENTIALS

    [channel] = rasa_channels(CREDENTIALS, tmp_path, monkeypatch, {**ENV, ENV_BASE_URL: "http://127.0.0.1:9"})

    assert isinstance(channel, XInput) and channel.name() == "x"
    assert (channel.settings.brand_id, channel.settings.base_url) == (BRAND_ID, "http://127.0.0.1:9")
    assert channel.public_reply == load_support_config().public_replies["x"]
    empty = {**ENV, ENV_BASE_URL: "", ENV_BRAND_USER_ID: ""}
    assert ENV_BRAND_USER_ID in credentials_refusal(lambda: rasa_channels(CREDENTIALS, tmp_path, monkeypatch, empty))
