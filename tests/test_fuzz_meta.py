"""The Messenger and Instagram webhooks, fuzzed: never a 5xx, never a trace of an unsigned request.

Property-based (hypothesis, fixed seed; ``tests/fuzz_support.py``) against the real
channels in Rasa's real Sanic app with the fake Graph API, as in
``tests/test_messenger_channel.py``:

- a request without the right ``X-Hub-Signature-256`` (none, near misses, random bytes,
  the old SHA-1 header) is a 401 whatever its body, and leaves no trace: nothing reaches
  Rasa, the inbox is unchanged, Meta's API is not called;
- a signed body that is malformed (random bytes, too deep, a wrong type at any field of
  a DM, a postback or a comment) is a 400 or a 200, handling it in the background never
  fails, and nothing unreadable reaches Rasa;
- a DM with any text up to Messenger's 2,000 characters reaches Rasa exactly once, even
  when Meta sends it twice, its text intact (no intent can be typed in);
- after every example the server still answers a valid request.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from hypothesis import example, given
from hypothesis import strategies as st

from bot.channels.common import typed_text
from bot.channels.inbox import inbox, replies
from bot.channels.messenger import MessengerInput
from bot.channels.meta_output import MessengerSettings
from bot.channels.dedupe import ChannelStore
from tests.fakes.graph_api import (
    APP_SECRET,
    PAGE_ID,
    FakeGraphAPI,
    dm,
    facebook_comment,
    postback,
    signature_of,
    webhook_body,
)
from tests.fuzz_support import (
    ANY_BODY,
    SLASHY_TEXTS,
    TableWatch,
    customer_texts,
    dumps,
    fuzz_settings,
    refused_or_ignored,
    sendable,
    with_wrong_type,
    wrong_secrets,
)
from tests.test_messenger_channel import MARIA, Served, api, clean_env, fast_client, serve, settings_for  # noqa: F401

MESSENGER_CAP = 2000
SOME, MANY = 20, 30
CUSTOMER = "6100000000009999"


@dataclass
class MetaRig:
    served: Served
    watch: TableWatch
    mids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    async def post(self, raw: bytes, signature: bytes | str | None = "sign") -> httpx.Response:
        headers: dict[str, bytes | str] = {"Content-Type": "application/json"}
        if signature == "sign":
            headers["X-Hub-Signature-256"] = signature_of(APP_SECRET, raw)
        elif signature is not None:
            headers["X-Hub-Signature-256"] = signature
        answer = await self.served.client.post(self.served.path, content=raw, headers=headers)
        await self.served.channel.tasks.wait()
        return answer

    def reset(self) -> None:
        self.served.agent.messages.clear()

    async def still_serves(self) -> None:
        before = len(self.served.agent.messages)
        answer = await self.post(dumps(webhook_body("page", PAGE_ID, [dm(CUSTOMER, f"probe-{next(self.mids)}",
                                                                             text="still there?")])))  # fmt: skip
        assert (answer.status_code, answer.json()["ok"]) == (200, True)
        assert [m.text for m in self.served.agent.messages[before:]] == ["still there?"]
        self.served.agent.messages.clear()


@pytest_asyncio.fixture
async def meta(api: FakeGraphAPI, tmp_path: Path) -> AsyncIterator[MetaRig]:
    url = f"sqlite:///{tmp_path / 'channels.db'}"
    for customer in (CUSTOMER, MARIA):
        api.customer_wrote(customer)
    channel = MessengerInput(settings_for(MessengerSettings, api), store=ChannelStore.from_url(url),
                             client=fast_client(api))  # fmt: skip
    watch = TableWatch(url, [inbox, replies])
    async with serve(channel, api, [{"text": "ok"}]) as served:
        yield MetaRig(served, watch)
    watch.dispose()
    channel.store.dispose()


@st.composite
def meta_bodies(draw: st.DrawFn) -> dict[str, Any]:
    """A well-formed Page webhook: a DM (text, quick reply, attachment), a postback or a comment."""
    mid = f"m_{draw(st.integers(1, 2**40))}"
    kind = draw(st.sampled_from(["text", "quick_reply", "attachment", "postback", "comment"]))
    customer = MARIA
    if kind == "comment":
        return webhook_body("page", PAGE_ID, changes=[facebook_comment(mid, customer, "Maria", draw(st.text(max_size=40)))])
    if kind == "postback":
        return webhook_body("page", PAGE_ID, [postback(customer, mid, draw(st.text(max_size=40)))])
    if kind == "quick_reply":
        event = dm(customer, mid, text="Yes", quick_reply={"payload": draw(st.text(max_size=40))})
    elif kind == "attachment":
        event = dm(customer, mid, attachments=[{"type": draw(st.sampled_from(["image", "location", "file", "odd"])),
                                                "payload": {"url": "https://cdn/x"}}])  # fmt: skip
    else:
        event = dm(customer, mid, text=draw(st.text(max_size=80)))
    return webhook_body("page", PAGE_ID, [event])


@st.composite
def mistyped(draw: st.DrawFn) -> dict[str, Any]:
    return with_wrong_type(draw(meta_bodies()), draw)


@pytest.mark.asyncio
@fuzz_settings(MANY)
@given(
    signature=st.one_of(wrong_secrets(signature_of(APP_SECRET, b"{}")), st.just("sha1=" + "0" * 40)).filter(sendable),
    body=st.one_of(meta_bodies().map(dumps), ANY_BODY),
)
async def test_without_the_signature_a_webhook_is_a_401_and_leaves_no_trace(
    meta: MetaRig, api: FakeGraphAPI, signature: bytes | str | None, body: bytes
) -> None:
    meta.reset()
    stored, calls = meta.watch.snapshot(), len(api.calls(answered=None))
    answer = await meta.post(body, signature)

    assert (answer.status_code, answer.json()) == (401, {"ok": False, "error": "unauthorized"})
    assert meta.served.agent.messages == [] and meta.watch.snapshot() == stored
    assert len(api.calls(answered=None)) == calls
    await meta.still_serves()


@pytest.mark.asyncio
@fuzz_settings(MANY)
@given(body=st.one_of(ANY_BODY, mistyped().map(dumps)))
@example(body=dumps(webhook_body("page", PAGE_ID, [dm(MARIA, "m_x", text=5)])))
@example(body=dumps({"object": "page", "entry": [{"id": PAGE_ID, "messaging": {"sender": 1}}]}))
async def test_a_malformed_signed_body_is_a_400_or_a_200_and_nothing_unreadable_reaches_rasa(
    meta: MetaRig, body: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    meta.reset()
    refusal = {"ok": False, "error": "malformed webhook body"}
    await refused_or_ignored(meta.post, body, refusal, meta.watch, meta.served.agent, caplog)

    await meta.still_serves()


@pytest.mark.asyncio
@fuzz_settings(MANY)
@given(text=st.one_of(customer_texts(MESSENGER_CAP, min_size=1), SLASHY_TEXTS))
@example(text=" /affirm")
async def test_a_dm_reaches_rasa_once_with_its_text(meta: MetaRig, text: str) -> None:
    meta.reset()
    body = dumps(webhook_body("page", PAGE_ID, [dm(CUSTOMER, f"m_text_{next(meta.mids)}", text=text)]))

    first, again = await meta.post(body), await meta.post(body)  # Meta's retry of the same POST

    assert (first.status_code, again.status_code) == (200, 200)
    [message] = meta.served.agent.messages
    expected = typed_text(text)
    assert message.text == (expected or "[message]")
    assert not message.text.startswith("/")
