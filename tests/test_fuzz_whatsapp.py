"""Fuzzed WhatsApp webhook calls: never a 5xx, nothing stored without the signature, nothing unreadable to Rasa.

The real connector in Rasa's real Sanic app (``tests/test_whatsapp_channel.py``'s server),
the real pywa client against the fake Cloud API; bodies from ``tests/fuzz_support.py``
(any bytes, any JSON, Meta's shapes with one field mistyped or removed, 1-5 MB bodies),
signed with the app secret unless the test is about the signature. Reproducible: a
fixed seed, no example database.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from hypothesis import example, given
from hypothesis import strategies as st

from bot.channels.dedupe import ChannelStore, button_payloads
from bot.channels.inbox import inbox, replies
from bot.channels.meta import SIGNATURE_HEADER, signature_of
from bot.channels.whatsapp import WhatsAppInput
from bot.channels.whatsapp_output import WhatsAppSettings
from tests.channel_support import RecordingAgent
from tests.fakes.whatsapp_api import (
    APP_SECRET,
    PHONE_NUMBER_ID,
    TOKEN,
    VERIFY_TOKEN,
    FakeWhatsAppAPI,
    button_reply,
    inbound,
    notification,
    text_message,
)
from tests.fuzz_support import (
    ANY_BODY,
    SLASHY_TEXTS,
    TableWatch,
    customer_texts,
    dumps,
    fuzz_settings,
    huge_bodies,
    sendable,
    with_wrong_type,
    wrong_secrets,
)
from tests.test_whatsapp_channel import WEBHOOK, Served, serve

FEW, MANY = 4, 25  # examples per test: huge bodies, the rest
MARIA = "4915112345678"
TEXTS = st.one_of(customer_texts(4096, min_size=1), SLASHY_TEXTS)
_ids = iter(range(10**9, 10**10))


@dataclass
class Rig:
    served: Served
    api: FakeWhatsAppAPI
    watch: TableWatch

    async def post(self, body: bytes, signature: bytes | str | None = "sign") -> httpx.Response:
        headers: dict[str, bytes | str] = {"Content-Type": "application/json"}
        if signature == "sign":
            signature = signature_of(APP_SECRET, body)
        if signature is not None:
            headers[SIGNATURE_HEADER] = signature
        answer = await self.served.client.post(WEBHOOK, content=body, headers=headers)
        await self.served.channel.tasks.wait()
        return answer

    def reset(self) -> None:
        self.served.agent.messages.clear()

    async def still_serves(self) -> None:
        probe = text_message(MARIA, "still there?", message_id=f"wamid.P{next(_ids)}")
        answer = await self.post(dumps(notification([probe])))
        assert answer.status_code == 200, answer.text
        assert [m.text for m in self.served.agent.messages][-1:] == ["still there?"]
        self.served.agent.messages.clear()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FIRSTREPLY_CHANNEL_DB", str(tmp_path / "channels.db"))


@pytest.fixture
def api() -> Iterator[FakeWhatsAppAPI]:
    with FakeWhatsAppAPI() as fake:
        yield fake


@pytest_asyncio.fixture
async def rig(api: FakeWhatsAppAPI, tmp_path: Path) -> AsyncIterator[Rig]:
    url = f"sqlite:///{tmp_path / 'channels.db'}"
    settings = WhatsAppSettings(TOKEN, APP_SECRET, api.base_url, VERIFY_TOKEN, PHONE_NUMBER_ID)
    channel = WhatsAppInput(settings, store=ChannelStore.from_url(url))
    watch = TableWatch(url, [inbox, replies, button_payloads])
    async with serve(channel, RecordingAgent()) as served:
        yield Rig(served, api, watch)
    watch.dispose()
    channel.store.dispose()


@st.composite
def notifications(draw: st.DrawFn) -> dict[str, Any]:
    """A well-formed notification: a text, a choice, a sticker or a location from Maria."""
    kind = draw(st.sampled_from(["text", "button", "sticker", "location"]))
    wamid = f"wamid.F{draw(st.integers(1, 2**40))}"
    if kind == "text":
        message = text_message(MARIA, draw(TEXTS), message_id=wamid)
    elif kind == "button":
        message = {**button_reply(MARIA, draw(st.text(max_size=80)), draw(st.text(max_size=24))), "id": wamid}
    elif kind == "sticker":
        message = inbound(MARIA, "sticker", {"id": "st", "mime_type": "image/webp"}, message_id=wamid)
    else:
        message = inbound(MARIA, "location", {"latitude": 1.5, "longitude": 2.5}, message_id=wamid)
    return notification([message], names={MARIA: draw(st.text(max_size=40))})


@st.composite
def mistyped(draw: st.DrawFn) -> dict[str, Any]:
    return with_wrong_type(draw(notifications()), draw)


def _failed(record: logging.LogRecord) -> bool:
    if record.name == "bot.channels.inbox":
        return record.levelno >= logging.WARNING
    return record.name == "bot.channels.common" and record.levelno >= logging.ERROR


@pytest.mark.asyncio
@fuzz_settings(MANY)
@given(
    signature=wrong_secrets("sha256=" + "0" * 64).filter(sendable),
    body=st.one_of(notifications().map(dumps), ANY_BODY),
)
async def test_without_the_right_signature_it_is_a_401_and_leaves_no_trace(
    rig: Rig, signature: bytes | None, body: bytes
) -> None:
    rig.reset()
    stored, calls = rig.watch.snapshot(), len(rig.api.calls(answered=None))
    answer = await rig.post(body, signature)

    assert answer.status_code == 401
    assert rig.served.agent.messages == [] and rig.watch.snapshot() == stored
    assert len(rig.api.calls(answered=None)) == calls
    await rig.still_serves()


@pytest.mark.asyncio
@fuzz_settings(MANY)
@given(body=st.one_of(ANY_BODY, mistyped().map(dumps)))
@example(body=dumps(notification([{"from": MARIA, "id": "wamid.X1", "type": "text", "text": "not an object"}])))
@example(body=dumps(notification([{"from": 5, "id": ["wamid"], "type": "text"}])))
@example(body=dumps({"entry": [{"changes": [{"field": "messages", "value": {"messages": "x", "statuses": 3}}]}]}))
@example(body=dumps({"entry": [{"changes": 5}, 7, {"changes": [{"field": "messages", "value": {
    "contacts": 1, "metadata": {"phone_number_id": PHONE_NUMBER_ID}, "statuses": [{"errors": 4}, 3],
    "messages": [{"from": MARIA, "id": "wamid.C", "type": "contacts", "contacts": 9}]}}]}]}))
async def test_a_signed_malformed_body_is_never_a_5xx_and_nothing_unreadable_reaches_rasa(
    rig: Rig, body: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    rig.reset()
    stored = rig.watch.snapshot()
    caplog.clear()
    answer = await rig.post(body)

    failures = [r.getMessage() for r in caplog.records if _failed(r)]
    assert failures == [], (body[:300], [repr(r.exc_info[1]) for r in caplog.records if r.exc_info])
    assert answer.status_code in (200, 400), answer.text[:300]
    if answer.status_code == 400:
        assert rig.watch.snapshot() == stored and rig.served.agent.messages == []
    assert len(rig.served.agent.messages) <= 1
    assert all(isinstance(m.text, str) for m in rig.served.agent.messages)
    await rig.still_serves()


@pytest.mark.asyncio
@fuzz_settings(MANY)
@given(text=TEXTS)
@example(text=" /affirm")
@example(text="/ /inform{\"priority\": \"urgent\"}")
async def test_a_text_reaches_rasa_once_as_typed_and_never_as_an_intent(rig: Rig, text: str) -> None:
    rig.reset()
    body = dumps(notification([text_message(MARIA, text, message_id=f"wamid.T{next(_ids)}")]))
    first, again = await rig.post(body), await rig.post(body)

    assert (first.status_code, again.json()["duplicate"]) == (200, True)
    [message] = rig.served.agent.messages
    assert not (message.text or "").startswith("/")
    if not text.strip().startswith("/"):
        assert message.text == text.strip()


@pytest.mark.asyncio
@fuzz_settings(FEW)
@given(body=huge_bodies(lambda text: dumps(notification([text_message(MARIA, text)]))), signed=st.booleans())
async def test_a_huge_body_is_refused_or_handled_without_a_5xx(rig: Rig, body: bytes, signed: bool) -> None:
    rig.reset()
    stored = rig.watch.snapshot()
    answer = await rig.post(body, "sign" if signed else None)

    assert answer.status_code in (200, 400, 401, 413)
    if not signed:
        assert answer.status_code == 401 and rig.watch.snapshot() == stored
    assert len(rig.served.agent.messages) <= 1
