"""Which sender reaches a customer, given the channel their case came in on.

The agent desk answers customers through the same senders Rasa uses, built here from the
environment (the same variables Rasa's connectors read):

- ``telegram``: ``bot.channels.telegram_output.TelegramOutput`` (``TELEGRAM_BOT_TOKEN``,
  ``TELEGRAM_API_BASE_URL``);
- ``slack_dm``: ``bot.channels.slack_output.SlackDMOutput`` (``SLACK_BOT_TOKEN``,
  ``SLACK_API_BASE_URL``), imported only when a Slack DM case needs it;
- ``whatsapp``: ``bot.channels.whatsapp_output.WhatsAppOutput`` (``WHATSAPP_ACCESS_TOKEN``,
  ``WHATSAPP_PHONE_NUMBER_ID``, ``WHATSAPP_API_BASE_URL``); it also sends the template that
  reopens a conversation past 24 hours (``send_template``);
- ``messenger`` / ``instagram``: ``bot.channels.meta_output.MetaOutput`` (``MESSENGER_PAGE_ID``,
  ``MESSENGER_PAGE_TOKEN`` / ``INSTAGRAM_ACCOUNT_ID``, ``INSTAGRAM_TOKEN``; ``META_GRAPH_BASE_URL``);
  a person's reply 24 hours to 7 days after the customer's last message passes ``tag="HUMAN_AGENT"``;
- ``x``: ``bot.channels.x_output.XOutput``, by DM (``X_CONSUMER_KEY``, ``X_CONSUMER_SECRET``,
  ``X_ACCESS_TOKEN``, ``X_ACCESS_TOKEN_SECRET``, ``X_BRAND_USER_ID``, ``X_BRAND_HANDLE``,
  ``X_API_BASE_URL``), also for a case that began as a public post;
- ``webchat``: ``bot.channels.webchat.WebChatOutput``, which stores the message in the web
  chat's table (``FIRSTREPLY_CHANNEL_DB``, shared with Rasa); the customer's page fetches it;
- anything else (``rest``, ...): no message can be pushed to the customer later, so the
  desk records the reply in the conversation only (``sender_for`` returns None).

Senders are built once per channel and reused. The desk's outbox is their retry loop (it
keeps every message until it is delivered, backs off, and knows which tries may have
gone through), so the Telegram sender tries each call once and lets the outbox retry;
the Slack DM sender keeps its client's retries, which never repeat a post blindly.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Any, Callable

from bot.channels.common import ChannelCredentialsError

if TYPE_CHECKING:
    from rasa.core.channels.channel import OutputChannel
    from slack_sdk.web.async_client import AsyncWebClient
    from telegram import Bot

    from bot.channels.telegram_output import TelegramSettings

log = logging.getLogger(__name__)

TELEGRAM = "telegram"
SLACK_DM = "slack_dm"
WEBCHAT = "webchat"
WHATSAPP = "whatsapp"
MESSENGER = "messenger"
INSTAGRAM = "instagram"
X = "x"
PUSH_CHANNELS: tuple[str, ...] = (TELEGRAM, SLACK_DM, WEBCHAT, WHATSAPP, MESSENGER, INSTAGRAM, X)
# Connector settings check the secret that authenticates *incoming* webhooks too; a sender
# never receives anything, so it is built with a stand-in that passes the format check.
_SENDER_ONLY_SECRET = "sender-only-no-webhook"


class OutboundUnavailable(ChannelCredentialsError):
    """The sender for a channel cannot be built (missing settings or module); the message says why."""


class Outbound:
    """Builds and keeps the customer senders, one per channel."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        """Read settings from ``environ`` (default: the process environment) when a sender is first needed."""
        self._env = os.environ if environ is None else environ
        self._senders: dict[str, OutputChannel] = {}
        self._closers: list[Callable[[], Any]] = []

    def can_push(self, channel: str) -> bool:
        """Return whether messages can be pushed to customers of ``channel``."""
        return channel in PUSH_CHANNELS

    def sender_for(self, channel: str) -> OutputChannel | None:
        """Return the sender for customers of ``channel``, or None where nothing can be pushed.

        Raises:
            OutboundUnavailable: the channel can push, but its sender cannot be built.
        """
        if not self.can_push(channel):
            return None
        known = self._senders.get(channel)
        if known is None:
            builders = {TELEGRAM: self._build_telegram, SLACK_DM: self._build_slack_dm, WEBCHAT: self._build_webchat,
                        WHATSAPP: self._build_whatsapp,
                        MESSENGER: lambda: self._build_meta(MESSENGER),
                        INSTAGRAM: lambda: self._build_meta(INSTAGRAM),
                        X: self._build_x}  # fmt: skip
            known = builders[channel]()
            self._senders[channel] = known
        return known

    async def close(self) -> None:
        """Close the senders' connections."""
        for close in self._closers:
            result = close()
            if hasattr(result, "__await__"):
                await result
        self._closers.clear()
        self._senders.clear()

    def _build_telegram(self) -> OutputChannel:
        from bot.channels.dedupe import ENV_CHANNEL_DB, ChannelStore, url_from_env
        from bot.channels.telegram_output import TelegramOutput, TelegramSettings, close_bot

        try:
            settings = TelegramSettings.from_credentials({"webhook_secret": _SENDER_ONLY_SECRET}, self._env)
        except ChannelCredentialsError as error:
            raise OutboundUnavailable(f"cannot answer Telegram customers: {error}") from error
        bot = self._telegram_bot(settings)
        store = ChannelStore.from_url(url_from_env(self._env.get(ENV_CHANNEL_DB) or ""))
        self._closers.extend([lambda: close_bot(bot), store.dispose])
        # One try per call: a retry here would resend a message whose answer was lost
        # without the outbox knowing, so it could neither warn nor count it.
        return TelegramOutput(bot, store, max_attempts=1)

    def _build_x(self) -> OutputChannel:
        from bot.channels.x_client import XSettings, build_client, close_client
        from bot.channels.x_output import XOutput

        try:
            settings = XSettings.from_credentials(None, self._env)
        except ChannelCredentialsError as error:
            raise OutboundUnavailable(f"cannot answer X customers: {error}") from error
        client = build_client(settings)
        self._closers.append(lambda: close_client(client))
        # One try per call, as for Telegram: the outbox retries and knows what may have gone through.
        return XOutput(client, settings.source, max_attempts=1)

    def _telegram_bot(self, settings: TelegramSettings) -> Bot:
        """Return the Bot the Telegram sender uses (tests give it shorter time-outs)."""
        from bot.channels.telegram_output import build_bot

        return build_bot(settings)

    def _slack_client(self, slack: ModuleType, settings: Any) -> AsyncWebClient:
        """Return the Web API client the Slack DM sender uses (tests give it shorter time-outs)."""
        return slack.build_client(settings)  # type: ignore[no-any-return]

    def _build_whatsapp(self) -> OutputChannel:
        from bot.channels.dedupe import ENV_CHANNEL_DB, ChannelStore, url_from_env
        from bot.channels.whatsapp_output import WhatsAppClients, WhatsAppOutput, WhatsAppSettings

        # The verify token and the app secret authenticate incoming webhooks: a sender needs neither.
        stand_ins = {"app_secret": _SENDER_ONLY_SECRET.replace("-", ""), "verify_token": _SENDER_ONLY_SECRET}
        try:
            settings = WhatsAppSettings.from_credentials(stand_ins, self._env)
        except ChannelCredentialsError as error:
            raise OutboundUnavailable(f"cannot answer WhatsApp customers: {error}") from error
        clients = WhatsAppClients(settings)
        store = ChannelStore.from_url(url_from_env(self._env.get(ENV_CHANNEL_DB) or ""))
        self._closers.extend([clients.close, store.dispose])
        # One try per call: the outbox retries, and knows which tries may have gone through.
        return WhatsAppOutput(clients, store, max_attempts=1)

    def _build_webchat(self) -> OutputChannel:
        from bot.channels.dedupe import ENV_CHANNEL_DB, url_from_env
        from bot.channels.webchat import WebChatOutput
        from bot.channels.webchat_store import WebChatStore

        store = WebChatStore.from_url(url_from_env(self._env.get(ENV_CHANNEL_DB) or ""))
        self._closers.append(store.dispose)
        return WebChatOutput(store)

    def _build_slack_dm(self) -> OutputChannel:
        try:
            slack = importlib.import_module("bot.channels.slack")
        except ModuleNotFoundError as error:
            if error.name != "bot.channels.slack":
                raise  # the module is there but one of its dependencies is not: a real error
            raise OutboundUnavailable(
                "cannot answer Slack DM customers: the Slack DM channel (bot/channels/slack.py) is not installed"
            ) from error
        try:
            settings = slack.SlackSettings.from_credentials({"signing_secret": _SENDER_ONLY_SECRET}, self._env)
        except ChannelCredentialsError as error:
            raise OutboundUnavailable(f"cannot answer Slack DM customers: {error}") from error
        return slack.SlackDMOutput(self._slack_client(slack, settings))  # type: ignore[no-any-return]

    def _build_meta(self, channel: str) -> OutputChannel:
        from bot.channels.meta_output import InstagramSettings, MessengerSettings, MetaOutput, build_client

        settings_class = MessengerSettings if channel == MESSENGER else InstagramSettings
        stand_in = {"app_secret": _SENDER_ONLY_SECRET, "verify_token": _SENDER_ONLY_SECRET}
        try:
            settings = settings_class.from_credentials(stand_in, self._env)
        except ChannelCredentialsError as error:
            raise OutboundUnavailable(f"cannot answer {channel} customers: {error}") from error
        # One try per call, as for Telegram: the outbox retries and knows what may have gone through.
        client = build_client(settings, max_attempts=1)
        self._closers.append(client.close)
        return MetaOutput(client, settings.platform, settings.account_id)
