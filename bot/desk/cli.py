"""``python -m bot desk``: run the agent desk (the Slack app) as its own process."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any


def add_desk_parser(subparsers: Any) -> None:
    """Register the ``desk`` command on the top-level parser."""
    desk = subparsers.add_parser(
        "desk",
        help="run the agent desk: case cards, claim, relay and resolve in Slack",
        description="Run the agent desk. Settings come from the environment; see docs/agent-guide.md.",
    )
    desk.add_argument("--check", action="store_true", help="check the settings, the case store and support.yml, then exit")
    desk.set_defaults(handler=run_desk)


def run_desk(args: argparse.Namespace) -> int:
    """Check the settings and run the desk until SIGTERM or Ctrl-C; return the exit code."""
    from sqlalchemy.exc import ArgumentError, OperationalError

    from bot.cases import CaseStore
    from bot.cases.schema import SchemaTooNewError
    from bot.cases.base import ENV_CASE_DB, default_url
    from bot.desk.app import LEADER_ELECTION
    from bot.desk.settings import DeskSettings, DeskSettingsError
    from bot.election import Election
    from bot.ops import OpsConfigError, load_support_config

    try:
        settings = DeskSettings.from_env()
        support = load_support_config()
        case_db = os.environ.get(ENV_CASE_DB) or default_url()
        store = CaseStore.from_url(case_db)
        # Elected on the case store itself: the desks that share it elect one leader.
        election = Election.for_database(case_db, LEADER_ELECTION, period_seconds=settings.leader_seconds)
    except (DeskSettingsError, OpsConfigError, SchemaTooNewError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (ArgumentError, ValueError, OperationalError) as error:
        print(f"error: cannot open the case store: {error}", file=sys.stderr)
        return 2
    try:
        if args.check:
            mode = "Socket Mode" if settings.socket_mode else f"HTTP on {settings.host}:{settings.port}"
            watchdog = f"watchdog every {settings.watchdog_seconds:g} s" if support.watchdog.enabled else "watchdog off"
            print(f"desk settings OK ({mode}, agents {settings.agents}, {len(settings.leads)} lead(s), {watchdog})")
            print(f"leader election: {election.lock.description}, every {settings.leader_seconds:g} s")
            return 0
        from bot.desk.server import main_async

        asyncio.run(main_async(settings, store, support, election))
    except KeyboardInterrupt:
        pass
    finally:
        store.dispose()
    return 0
