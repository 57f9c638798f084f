"""``python -m bot telegram ...``: register the webhook, or poll without a public URL.

``poll`` fetches updates with ``getUpdates`` and posts each to Rasa's own Telegram webhook
(``bot.channels.telegram``), with the secret, so they take the same path as pushed ones.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Mapping
from typing import Any

import httpx
from telegram import Bot
from telegram.error import BadRequest, Conflict, NetworkError, RetryAfter, TelegramError

from bot.channels.common import ChannelCredentialsError
from bot.channels.telegram_output import (
    ALLOWED_UPDATES,
    ENV_SECRET,
    SECRET_HEADER,
    WEBHOOK_PATH,
    TelegramSettings,
    build_bot,
    close_bot,
)

log = logging.getLogger(__name__)


async def set_webhook(settings: TelegramSettings, url: str) -> None:
    """Register ``url`` as the bot's webhook, with the secret Telegram will send back."""
    bot = build_bot(settings)
    try:
        await bot.set_webhook(url, secret_token=settings.webhook_secret, allowed_updates=list(ALLOWED_UPDATES))
    finally:
        await close_bot(bot)


async def delete_webhook(settings: TelegramSettings) -> None:
    """Remove the bot's webhook (``getUpdates`` refuses to work while one is set)."""
    bot = build_bot(settings)
    try:
        await bot.delete_webhook()
    finally:
        await close_bot(bot)


class WebhookRefused(RuntimeError):
    """Rasa's webhook refused a forwarded update for good (wrong secret)."""


async def run_answer(bot: Bot, answer: httpx.Response) -> None:
    """Do what Telegram does with a webhook's answer: run the Bot API method it names (the typing indicator).

    A failure is logged, not raised: like Telegram, nobody waits for that call's result.
    """
    try:
        body = answer.json()
    except ValueError:
        return
    if not isinstance(body, dict) or "method" not in body:
        return
    if body["method"] != "sendChatAction":  # the only one the connector answers with
        log.warning("telegram poll: Rasa's answer names %r, which the poller does not run", body["method"])
        return
    try:
        await bot.send_chat_action(body["chat_id"], body["action"])
    except (TelegramError, KeyError) as error:
        log.warning("telegram poll: the typing indicator from Rasa's answer failed: %r", error)


async def forward_update(
    client: httpx.AsyncClient, webhook_url: str, secret: str, update: Mapping[str, Any], stop: asyncio.Event,
    retry_seconds: float = 2.0, bot: Bot | None = None,
) -> bool:  # fmt: skip
    """POST one update to Rasa's webhook until it is taken; return False if stopped first.

    With ``bot``, a method in Rasa's answer is run as Telegram would run it (``run_answer``).
    """
    while not stop.is_set():
        try:
            answer = await client.post(webhook_url, json=dict(update), headers={SECRET_HEADER: secret})
        except httpx.HTTPError as error:
            log.warning("telegram poll: Rasa not reachable at %s (%s), retrying", webhook_url, error)
        else:
            if answer.status_code == 401:
                raise WebhookRefused(f"Rasa refused the secret: is {ENV_SECRET} the same for Rasa and the poller?")
            if answer.status_code == 400:
                log.error("telegram poll: Rasa rejected update %s as malformed", update.get("update_id"))
                return True
            if answer.is_success:
                if bot is not None:
                    await run_answer(bot, answer)
                return True
            log.warning("telegram poll: Rasa answered %s, retrying", answer.status_code)
        await asyncio.sleep(retry_seconds)
    return False


async def poll(
    bot: Bot, webhook_url: str, secret: str, stop: asyncio.Event, *,
    client: httpx.AsyncClient, long_poll_seconds: int = 25, retry_seconds: float = 2.0,
) -> None:  # fmt: skip
    """Fetch updates with ``getUpdates`` and forward each to Rasa's webhook, until ``stop``."""
    offset: int | None = None
    while not stop.is_set():
        try:
            updates = await bot.get_updates(
                offset=offset, timeout=long_poll_seconds, allowed_updates=list(ALLOWED_UPDATES)
            )
        except Conflict as error:
            raise WebhookRefused(
                "Telegram refuses getUpdates while a webhook is set: run "
                "`python -m bot telegram delete-webhook` or poll with --delete-webhook"
            ) from error
        except RetryAfter as error:
            await asyncio.sleep(float(error.retry_after))
            continue
        except BadRequest:
            raise
        except NetworkError as error:
            log.warning("telegram poll: getUpdates failed (%s), retrying", error)
            await asyncio.sleep(retry_seconds)
            continue
        for update in updates:
            if not await forward_update(client, webhook_url, secret, update.to_dict(), stop, retry_seconds, bot):
                return
            # Telegram forgets an update once a later offset is asked for.
            offset = update.update_id + 1


async def run_poll(settings: TelegramSettings, rasa_url: str, drop_webhook: bool) -> None:
    """``python -m bot telegram poll``: forward updates to Rasa until interrupted."""
    bot = build_bot(settings)
    webhook_url = rasa_url.rstrip("/") + WEBHOOK_PATH
    try:
        if drop_webhook:
            await bot.delete_webhook()
        log.info("telegram poll: forwarding updates to %s", webhook_url)
        async with httpx.AsyncClient(timeout=30.0) as client:
            await poll(bot, webhook_url, settings.webhook_secret, asyncio.Event(), client=client)
    finally:
        await close_bot(bot)


def run_command(command: str, argument: str | None = None, drop_webhook: bool = False) -> int:
    """Run a ``python -m bot telegram`` command; return its exit code."""
    try:
        settings = TelegramSettings.from_credentials(None)
        if command == "set-webhook":
            assert argument is not None
            if not argument.rstrip("/").endswith(WEBHOOK_PATH):
                print(f"note: Rasa serves the Telegram webhook at <public URL>{WEBHOOK_PATH}")
            asyncio.run(set_webhook(settings, argument))
            print(f"Webhook set to {argument}")
        elif command == "delete-webhook":
            asyncio.run(delete_webhook(settings))
            print("Webhook deleted")
        elif command == "poll":
            asyncio.run(run_poll(settings, argument or "http://127.0.0.1:5005", drop_webhook))
        else:
            raise ValueError(f"unknown telegram command {command!r}")
    except (ChannelCredentialsError, WebhookRefused, TelegramError) as error:
        return _failed(error)
    except KeyboardInterrupt:
        return 0
    return 0


def _failed(error: Exception) -> int:
    """Say on stderr why a command failed; return its exit code (1: Telegram refused, 2: our setup)."""
    refused_by_telegram = isinstance(error, TelegramError)
    print(f"error: Telegram answered: {error}" if refused_by_telegram else f"error: {error}", file=sys.stderr)
    return 1 if refused_by_telegram else 2
