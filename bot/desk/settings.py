"""The desk's settings: read once from the environment and checked, naming what is missing."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bot.channels.common import ChannelCredentialsError

ENV_BOT_TOKEN = "SLACK_DESK_BOT_TOKEN"
ENV_SIGNING_SECRET = "SLACK_DESK_SIGNING_SECRET"
ENV_APP_TOKEN = "SLACK_APP_TOKEN"
ENV_BASE_URL = "SLACK_API_BASE_URL"
ENV_AGENTS = "FIRSTREPLY_DESK_AGENTS"
ENV_LEADS = "FIRSTREPLY_DESK_LEADS"
ENV_RASA_URL = "RASA_URL"
ENV_API_TOKEN = "FIRSTREPLY_API_TOKEN"
ENV_EVENTS_DB = "FIRSTREPLY_EVENTS_DB"
ENV_HOST = "FIRSTREPLY_DESK_HOST"
ENV_PORT = "FIRSTREPLY_DESK_PORT"
ENV_POLL = "FIRSTREPLY_DESK_POLL_SECONDS"
ENV_RETRY_BASE = "FIRSTREPLY_DESK_RETRY_SECONDS"
ENV_RETRY_MAX = "FIRSTREPLY_DESK_RETRY_MAX_SECONDS"
ENV_WATCHDOG = "FIRSTREPLY_WATCHDOG_SECONDS"
ENV_LEADER = "FIRSTREPLY_DESK_LEADER_SECONDS"
ENV_UNCHECKED_SENDS = "FIRSTREPLY_DESK_UNCHECKED_SENDS"
DEFAULT_BASE_URL = "https://slack.com/api/"
DEFAULT_RASA_URL = "http://127.0.0.1:5005"
DEFAULT_PORT = 3000
EVENTS_PATH = "/slack/events"
_BOT_TOKEN = re.compile(r"xoxb-[A-Za-z0-9-]+")
_APP_TOKEN = re.compile(r"xapp-[A-Za-z0-9-]+")
_AGENTS = re.compile(r"[SCG][A-Z0-9]{2,}")
_USER = re.compile(r"[UW][A-Z0-9]{2,}")


class DeskSettingsError(ChannelCredentialsError):
    """A desk setting is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class DeskSettings:
    """Everything the desk needs from the environment. Secrets never appear in ``repr``.

    Attributes:
        bot_token: The desk app's bot token (xoxb-).
        signing_secret: Verifies Slack's requests in HTTP mode.
        app_token: The app-level token (xapp-): with it the desk uses Socket Mode.
        base_url: Slack's Web API (the tests' fake in tests).
        agents: A user group (S...) or channel (C.../G...) id: its members may act.
        leads: User ids that may act on any case.
        rasa_url: Rasa's HTTP API.
        rasa_token: Rasa's ``--auth-token``, if it has one.
        events_db: SQLAlchemy URL of Rasa's SQL event broker database.
        host: Where HTTP mode listens.
        port: The port HTTP mode listens on (0: any free one).
        poll_seconds: How often the desk looks for new cases, customer messages and card changes.
        retry_seconds: The first wait before a failed delivery is tried again (doubling).
        retry_max_seconds: The longest wait between two tries.
        watchdog_seconds: How often the watchdog looks at the open cases' promises and silences.
        leader_seconds: How often a desk process that does not lead tries to become the leader
            (the one that runs the loops); the leader checks twice as often that it still is
            (``bot.election``).
        unchecked_sends: How many messages to customers the outbox sends at once on channels
            where nothing can be looked up afterwards (all but Slack DMs); each may be seen
            twice if the desk dies during its call.
    """

    bot_token: str = field(repr=False)
    signing_secret: str | None = field(repr=False)
    agents: str
    leads: frozenset[str] = frozenset()
    app_token: str | None = field(default=None, repr=False)
    base_url: str = DEFAULT_BASE_URL
    rasa_url: str = DEFAULT_RASA_URL
    rasa_token: str | None = field(default=None, repr=False)
    events_db: str = ""
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    poll_seconds: float = 2.0
    retry_seconds: float = 1.0
    retry_max_seconds: float = 300.0
    watchdog_seconds: float = 30.0
    leader_seconds: float = 5.0
    unchecked_sends: int = 1

    @property
    def watchdog_lease_seconds(self) -> float:
        """Return how long the watchdog's lease lasts: a few ticks, so one slow tick does not lose it."""
        return max(3 * self.watchdog_seconds, 10.0)

    @property
    def socket_mode(self) -> bool:
        """Return whether the desk connects over Socket Mode (an app token is set)."""
        return self.app_token is not None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DeskSettings:
        """Read and check the settings.

        Raises:
            DeskSettingsError: a setting is missing or malformed; the message says which and how to fix it.
        """
        env = os.environ if environ is None else environ

        def value(name: str) -> str | None:
            found = (env.get(name) or "").strip()
            return found or None

        bot_token = value(ENV_BOT_TOKEN)
        if bot_token is None or not _BOT_TOKEN.fullmatch(bot_token):
            raise DeskSettingsError(
                f"The agent desk needs {ENV_BOT_TOKEN}: the desk app's bot token (xoxb-...), "
                "from OAuth & Permissions in the app settings."
            )
        app_token = value(ENV_APP_TOKEN)
        if app_token is not None and not _APP_TOKEN.fullmatch(app_token):
            raise DeskSettingsError(f"{ENV_APP_TOKEN} must be an app-level token (xapp-...) with connections:write.")
        signing_secret = value(ENV_SIGNING_SECRET)
        if signing_secret is None and app_token is None:
            raise DeskSettingsError(
                f"The agent desk needs {ENV_SIGNING_SECRET} (Basic Information > Signing Secret) to verify "
                f"Slack's requests, or {ENV_APP_TOKEN} to use Socket Mode instead."
            )
        agents = value(ENV_AGENTS)
        if agents is None or not _AGENTS.fullmatch(agents):
            raise DeskSettingsError(
                f"The agent desk needs {ENV_AGENTS}: the id of the Slack user group (S...) or channel "
                "(C... or G...) whose members are agents."
            )
        leads = frozenset(part for part in re.split(r"[\s,]+", value(ENV_LEADS) or "") if part)
        wrong = sorted(lead for lead in leads if not _USER.fullmatch(lead))
        if wrong:
            raise DeskSettingsError(f"{ENV_LEADS} must list Slack user ids (U...), separated by commas; got {wrong}.")
        return cls(
            bot_token=bot_token,
            signing_secret=signing_secret,
            app_token=app_token,
            base_url=(value(ENV_BASE_URL) or DEFAULT_BASE_URL).rstrip("/") + "/",
            agents=agents,
            leads=leads,
            rasa_url=(value(ENV_RASA_URL) or DEFAULT_RASA_URL).rstrip("/"),
            rasa_token=value(ENV_API_TOKEN),
            events_db=events_db_url(value(ENV_EVENTS_DB)),
            host=value(ENV_HOST) or "127.0.0.1",
            port=_number(env, ENV_PORT, DEFAULT_PORT, int, minimum=0),
            poll_seconds=_number(env, ENV_POLL, 2.0, float, minimum=0.05),
            retry_seconds=_number(env, ENV_RETRY_BASE, 1.0, float, minimum=0.01),
            retry_max_seconds=_number(env, ENV_RETRY_MAX, 300.0, float, minimum=0.01),
            watchdog_seconds=_number(env, ENV_WATCHDOG, 30.0, float, minimum=0.05),
            leader_seconds=_number(env, ENV_LEADER, 5.0, float, minimum=0.05),
            unchecked_sends=_number(env, ENV_UNCHECKED_SENDS, 1, int, minimum=1),
        )


def _number(env: Mapping[str, str], name: str, default: float, kind: type, minimum: float) -> Any:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        parsed = kind(raw)
    except ValueError:
        raise DeskSettingsError(f"{name} must be a number, got {raw!r}.") from None
    if parsed < minimum:
        raise DeskSettingsError(f"{name} must be at least {minimum}, got {raw!r}.")
    return parsed


def events_db_url(value: str | None) -> str:
    """Turn ``$FIRSTREPLY_EVENTS_DB`` (a file path or a SQLAlchemy URL) into a URL.

    The default is ``var/events.db`` under the repository root: what ``endpoints.yml``'s
    SQL event broker writes when Rasa runs from the repository root.
    """
    from pathlib import Path

    if not value:
        return f"sqlite:///{Path(__file__).resolve().parents[2] / 'var' / 'events.db'}"
    if "://" in value:
        return value
    return f"sqlite:///{Path(value).resolve()}"
