"""The connectors' credentials: a missing one is named (never echoed), and what ``rasa run``
does with the entries in ``credentials.yml``: builds each channel from the file and the
environment, and stops with the variable's name when one is empty.
"""

from __future__ import annotations

from operator import attrgetter
from pathlib import Path
from typing import Any

import pytest

from bot.channels import slack_client, telegram_output
from bot.channels.slack import SlackDMInput
from bot.channels.slack_client import SlackSettings
from bot.channels.telegram import TelegramInput
from bot.channels.telegram_output import TelegramSettings
from tests.channel_support import credentials_refusal, rasa_channels
from tests.fakes.slack_api import TOKEN as SLACK_TOKEN
from tests.fakes.telegram_api import TOKEN as TELEGRAM_TOKEN

TELEGRAM_SECRET = "s3cret-Webhook_token"
SLACK_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
TELEGRAM_YML = """\
bot.channels.telegram.TelegramInput:
  token: ${TELEGRAM_BOT_TOKEN}
  webhook_secret: ${TELEGRAM_WEBHOOK_SECRET}
"""
SLACK_YML = """\
bot.channels.slack.SlackDMInput:
  token: ${SLACK_BOT_TOKEN}
  signing_secret: ${SLACK_SIGNING_SECRET}
"""
TELEGRAM_ENV = {telegram_output.ENV_TOKEN: TELEGRAM_TOKEN, telegram_output.ENV_SECRET: TELEGRAM_SECRET}
SLACK_ENV = {slack_client.ENV_TOKEN: SLACK_TOKEN, slack_client.ENV_SIGNING_SECRET: SLACK_SECRET}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for module in (telegram_output, slack_client):
        for name in dir(module):
            if name.startswith("ENV_"):
                monkeypatch.delenv(getattr(module, name), raising=False)
    monkeypatch.setenv("FIRSTREPLY_CHANNEL_DB", str(tmp_path / "channels.db"))


@pytest.mark.parametrize(
    ("credentials_yml", "environ", "kind", "built"),
    [
        pytest.param(TELEGRAM_YML, TELEGRAM_ENV, TelegramInput, {
            "name()": "telegram", "settings.token": TELEGRAM_TOKEN, "settings.webhook_secret": TELEGRAM_SECRET,
            "settings.base_url": "https://api.telegram.org/bot",
        }, id="telegram"),
        pytest.param(SLACK_YML, SLACK_ENV, SlackDMInput, {
            "name()": "slack_dm", "settings.token": SLACK_TOKEN, "settings.signing_secret": SLACK_SECRET,
            "client.token": SLACK_TOKEN, "client.base_url": "https://slack.com/api/",
        }, id="slack_dm"),
    ],
)  # fmt: skip
def test_rasa_builds_the_channel_from_credentials_yml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, credentials_yml: str, environ: dict[str, str], kind: type,
    built: dict[str, Any],
) -> None:  # fmt: skip
    [channel] = rasa_channels(credentials_yml, tmp_path, monkeypatch, environ)

    assert isinstance(channel, kind)
    seen = {path: channel.name() if path == "name()" else attrgetter(path)(channel) for path in built}
    assert seen == built
    assert (tmp_path / "channels.db").exists()  # FIRSTREPLY_CHANNEL_DB, set by clean_env


@pytest.mark.parametrize(
    ("credentials_yml", "environ", "refusal"),
    [
        pytest.param(
            TELEGRAM_YML, {**TELEGRAM_ENV, telegram_output.ENV_SECRET: ""},
            "The telegram channel needs TELEGRAM_WEBHOOK_SECRET: set that environment variable "
            "(credentials.yml: `webhook_secret: ${TELEGRAM_WEBHOOK_SECRET}`).",
            id="telegram",
        ),
        pytest.param(
            SLACK_YML, {**SLACK_ENV, slack_client.ENV_SIGNING_SECRET: ""},
            "The slack_dm channel needs SLACK_SIGNING_SECRET: set that environment variable "
            "(credentials.yml: `signing_secret: ${SLACK_SIGNING_SECRET}`).",
            id="slack_dm",
        ),
    ],
)  # fmt: skip
def test_an_empty_secret_variable_stops_rasa_with_its_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, credentials_yml: str, environ: dict[str, str], refusal: str
) -> None:
    assert credentials_refusal(lambda: rasa_channels(credentials_yml, tmp_path, monkeypatch, environ)) == refusal


def _missing(token_env: str, secret_key: str, secret_env: str, token: str, secret: str) -> list[tuple[Any, ...]]:
    """Credentials (file, environment) with one value missing or blank, and the variable to name."""
    return [
        (None, {}, token_env),
        ({"token": "", secret_key: secret}, {}, token_env),
        ({"token": token}, {}, secret_env),
        ({"token": token, secret_key: "  "}, {}, secret_env),
        ({}, {token_env: token}, secret_env),
    ]


@pytest.mark.parametrize(
    ("settings", "credentials", "environ", "named"),
    [(TelegramSettings, *case) for case in _missing(
        telegram_output.ENV_TOKEN, "webhook_secret", telegram_output.ENV_SECRET, TELEGRAM_TOKEN, TELEGRAM_SECRET
    )] + [(SlackSettings, *case) for case in _missing(
        slack_client.ENV_TOKEN, "signing_secret", slack_client.ENV_SIGNING_SECRET, SLACK_TOKEN, SLACK_SECRET
    )],
)  # fmt: skip
def test_missing_credentials_name_the_variable(
    settings: Any, credentials: dict[str, Any] | None, environ: dict[str, str], named: str
) -> None:
    refusal = credentials_refusal(lambda: settings.from_credentials(credentials, environ))
    assert named in refusal
    assert all(secret not in refusal for secret in (TELEGRAM_TOKEN, TELEGRAM_SECRET, SLACK_TOKEN, SLACK_SECRET))
