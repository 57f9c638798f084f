"""bot/channels/telegram_output.py's BotRequest: python-telegram-bot's calls over aiohttp, against the fake Bot API."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest
from telegram import Bot
from telegram.error import Forbidden, NetworkError, RetryAfter, TimedOut

from bot.channels.sending import SENDING_THREAD
from bot.channels.telegram_output import BotRequest, TelegramSettings, build_bot, close_bot
from tests.fakes.server import HOLD
from tests.fakes.telegram_api import BOT_USER, TOKEN, FakeTelegramAPI


@pytest.fixture
def api() -> Iterator[FakeTelegramAPI]:
    fake = FakeTelegramAPI().start()
    try:
        yield fake
    finally:
        fake.stop()


def test_a_bot_sends_and_reads_the_platforms_answers_over_aiohttp(api: FakeTelegramAPI) -> None:
    async def scenario() -> tuple[int, str]:
        bot = build_bot(TelegramSettings(TOKEN, "secret", api.base_url, None))
        async with bot:
            sent = await bot.send_message(42, "Hi Sam! I'm Northwind's assistant.")
            me = await bot.get_me()
        assert isinstance(bot.request, BotRequest)
        return sent.chat.id, me.username or ""

    assert asyncio.run(scenario()) == (42, BOT_USER["username"])
    assert api.delivered_texts(42) == ["Hi Sam! I'm Northwind's assistant."]


def test_the_platforms_refusals_reach_the_caller_as_ptb_raises_them(api: FakeTelegramAPI) -> None:
    async def scenario() -> list[type]:
        raised: list[type] = []
        async with build_bot(TelegramSettings(TOKEN, "secret", api.base_url, None)) as bot:
            for status in (429, 403):
                api.fail_next(status=status, method="sendMessage")
                try:
                    await bot.send_message(42, "hello")
                except (RetryAfter, Forbidden) as error:
                    raised.append(type(error))
        return raised

    assert asyncio.run(scenario()) == [RetryAfter, Forbidden]


def test_a_call_held_past_its_read_timeout_times_out(api: FakeTelegramAPI) -> None:
    api.fault(HOLD, method="sendMessage", times=1, hold=5)

    async def scenario() -> None:
        request = BotRequest(TOKEN, read_timeout=0.3)
        async with Bot(TOKEN, base_url=api.base_url, request=request) as bot:
            with pytest.raises(TimedOut):
                await bot.send_message(42, "hello")
            await bot.send_message(42, "again")  # the next call goes through

    asyncio.run(scenario())
    assert api.delivered_texts(42)[-1:] == ["again"]


def test_a_network_failure_is_a_network_error_without_the_token(api: FakeTelegramAPI) -> None:
    async def scenario(base_url: str) -> str:
        bot = Bot(TOKEN, base_url=base_url, request=BotRequest(TOKEN))  # where no Bot API can answer
        try:
            with pytest.raises(NetworkError) as raised:
                await bot.get_me()
        finally:
            await bot.request.shutdown()
        return str(raised.value)

    refused = asyncio.run(scenario(api.base_url.replace(f":{api.port}/", ":1/")))
    invalid = asyncio.run(scenario("http://127.0.0.1:99999/bot"))  # aiohttp puts the whole URL in this one
    assert "aiohttp.ClientConnectorError" in refused and "aiohttp.InvalidURL" in invalid
    assert TOKEN not in refused + invalid and "<token>" in invalid


def test_a_file_goes_out_as_multipart(api: FakeTelegramAPI) -> None:
    async def scenario() -> None:
        async with build_bot(TelegramSettings(TOKEN, "secret", api.base_url, None)) as bot:
            await bot.send_document(42, document=b"order 4711: receipt", filename="receipt.txt", caption="Your receipt",
                                    write_timeout=20)  # fmt: skip

    asyncio.run(scenario())
    [call] = api.calls("sendDocument")
    assert str(call.params["chat_id"]) == "42" and call.params["caption"] == "Your receipt"


def test_each_event_loop_gets_its_own_session_and_shutdown_closes_both(api: FakeTelegramAPI) -> None:
    async def scenario() -> None:
        bot = build_bot(TelegramSettings(TOKEN, "secret", api.base_url, None))
        request = bot.request
        assert isinstance(request, BotRequest)
        await bot.initialize()

        async def session_here() -> object:
            await bot.send_message(42, threading.current_thread().name)
            return request._sessions.get()

        mine, own = await session_here(), await SENDING_THREAD.run(session_here())
        assert mine is not own
        await close_bot(bot)
        assert mine.closed and own.closed  # type: ignore[attr-defined]

    asyncio.run(scenario())
    assert sorted(api.delivered_texts(42)) == sorted([threading.current_thread().name, SENDING_THREAD.name])
