"""The desk over Socket Mode: the real bolt ``AsyncSocketModeHandler`` against the fake's WebSocket."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bot.cases import CaseStore
from bot.channels.outbound import Outbound
from bot.desk import cards
from bot.desk.app import Desk
from bot.desk.server import serve
from bot.desk.settings import DeskSettings, DeskSettingsError
from bot.ops import load_support_config
from tests.desk_support import open_case
from tests.fakes.slack_web_api import TOKEN, FakeDeskSlackAPI
from tests.test_desk_app import AGENTS, AGENTS_GROUP, QUEUE
from tests.polling import until as poll_until

ROOT = Path(__file__).resolve().parent.parent
APP_TOKEN = "xapp-1-A0FIRSTREPLY-1-fakeAppTokenForTests"
ANA, OUTSIDER = AGENTS[0], "U0OUTSIDER"


async def until(what: str, probe: Callable[[], Any], timeout: float = 15.0) -> Any:
    return await poll_until(what, probe, timeout)


def settings(slack: FakeDeskSlackAPI, tmp_path: Path, **extra: str) -> DeskSettings:
    env = {
        "SLACK_DESK_BOT_TOKEN": TOKEN, "SLACK_APP_TOKEN": APP_TOKEN, "SLACK_API_BASE_URL": slack.base_url,
        "FIRSTREPLY_DESK_AGENTS": AGENTS_GROUP, "RASA_URL": "http://127.0.0.1:9",
        "FIRSTREPLY_EVENTS_DB": str(tmp_path / "events.db"), "FIRSTREPLY_DESK_POLL_SECONDS": "0.05",
        **extra,
    }  # fmt: skip
    return DeskSettings.from_env(env)


def test_socket_mode_needs_no_signing_secret_but_http_mode_does(tmp_path: Path) -> None:
    slack = FakeDeskSlackAPI()
    assert settings(slack, tmp_path).socket_mode
    with pytest.raises(DeskSettingsError, match="SLACK_DESK_SIGNING_SECRET"):
        settings(slack, tmp_path, SLACK_APP_TOKEN="")
    with pytest.raises(DeskSettingsError, match="SLACK_APP_TOKEN must be an app-level token"):
        settings(slack, tmp_path, SLACK_APP_TOKEN="xoxb-not-an-app-token")


@pytest.mark.asyncio
async def test_the_desk_works_over_socket_mode(tmp_path: Path) -> None:
    slack = FakeDeskSlackAPI(app_token=APP_TOKEN).start()
    slack.add_group(AGENTS_GROUP, AGENTS)
    slack.add_channel(QUEUE, "support-queue")
    store = CaseStore.from_url(f"sqlite:///{tmp_path / 'cases.db'}")
    desk = Desk(settings(slack, tmp_path), store, load_support_config(ROOT / "support.yml"), outbound=Outbound({}))
    stop = asyncio.Event()
    served = asyncio.create_task(serve(desk, stop))
    try:
        await until("connected", lambda: slack.connected)
        case = open_case(store)
        carded = await until("card", lambda: (c := store.lookup.get(case.id)) is not None and c.card_ts and c)

        press = {"type": "block_actions", "team": {"id": "T0BRAND"}, "api_app_id": "A0FIRSTREPLY",
                 "user": {"id": ANA, "team_id": "T0BRAND"}, "trigger_id": "t1",
                 "container": {"type": "message", "message_ts": carded.card_ts, "channel_id": QUEUE},
                 "channel": {"id": QUEUE}, "message": {"ts": carded.card_ts, "text": "card"},
                 "actions": [{"action_id": cards.ACTION_CLAIM, "type": "button", "value": str(case.id), "action_ts": "1"}]}  # fmt: skip
        await asyncio.to_thread(slack.send_envelope, "interactive", press, "env-claim")
        await until("claimed", lambda: (c := store.lookup.get(case.id)) is not None and c.claimed_by == ANA)
        assert await until("ack", lambda: slack.ack("env-claim")) == {"envelope_id": "env-claim"}

        command = {"command": "/queue", "text": "", "user_id": ANA, "channel_id": QUEUE, "team_id": "T0BRAND",
                   "api_app_id": "A0FIRSTREPLY", "trigger_id": "t2"}  # fmt: skip
        await asyncio.to_thread(slack.send_envelope, "slash_commands", command, "env-queue")
        answer = await until("queue answer", lambda: slack.ack("env-queue"))
        assert answer["payload"]["response_type"] == "ephemeral"
        assert f"*#{case.id}*" in json.dumps(answer["payload"]["blocks"])

        outsider = {**command, "user_id": OUTSIDER}
        await asyncio.to_thread(slack.send_envelope, "slash_commands", outsider, "env-outsider")
        refused = await until("refusal", lambda: slack.ack("env-outsider"))
        assert refused["payload"]["text"].startswith("Only the support team can use the desk.")

        shift = {**command, "command": "/shift", "text": "on"}
        await asyncio.to_thread(slack.send_envelope, "slash_commands", shift, "env-shift")
        await until("shift", lambda: slack.ack("env-shift"))
        assert store.desk.agents_on_shift() == 1 and slack.calls("apps.connections.open")
    finally:
        stop.set()
        await served
        store.dispose()
        slack.stop()
