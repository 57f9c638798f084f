"""Channel connectors: one module per platform (input channel and sender together).

This package stays light to import (``python -m bot`` loads it): the connectors, which
pull in Rasa and the platform clients, are imported only when a command runs.
"""

from __future__ import annotations

import argparse
import os

ENV_RASA_URL = "FIRSTREPLY_RASA_URL"


def _default_rasa_url() -> str:
    port = os.environ.get("FIRSTREPLY_RASA_PORT", "5005")
    return os.environ.get(ENV_RASA_URL) or f"http://127.0.0.1:{port}"


def add_telegram_parser(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Register ``python -m bot telegram {set-webhook,delete-webhook,poll}``."""
    telegram = subparsers.add_parser(
        "telegram",
        help="Telegram: register the webhook, or poll for updates without a public URL",
        description="Reads TELEGRAM_BOT_TOKEN and TELEGRAM_WEBHOOK_SECRET (and TELEGRAM_API_BASE_URL) "
        "from the environment.",
    )
    commands = telegram.add_subparsers(dest="telegram_command", required=True)

    set_hook = commands.add_parser("set-webhook", help="tell Telegram to POST updates to URL, with the secret")
    set_hook.add_argument("url", help="public HTTPS URL ending in /webhooks/telegram/webhook")
    set_hook.set_defaults(handler=_run_set_webhook)

    delete_hook = commands.add_parser("delete-webhook", help="stop webhook delivery (needed before polling)")
    delete_hook.set_defaults(handler=_run_delete_webhook)

    poll = commands.add_parser(
        "poll", help="fetch updates (getUpdates) and post each to the local Rasa webhook; Ctrl-C stops"
    )
    poll.add_argument(
        "--rasa-url",
        help=f"where Rasa runs (default: ${ENV_RASA_URL}, else http://127.0.0.1:$FIRSTREPLY_RASA_PORT or :5005)",
    )
    poll.add_argument("--delete-webhook", action="store_true", help="remove a webhook that blocks polling first")
    poll.set_defaults(handler=_run_poll)


def _run_set_webhook(args: argparse.Namespace) -> int:
    from bot.channels.telegram_poll import run_command

    return run_command("set-webhook", args.url)


def _run_delete_webhook(args: argparse.Namespace) -> int:
    from bot.channels.telegram_poll import run_command

    return run_command("delete-webhook")


def _run_poll(args: argparse.Namespace) -> int:
    from bot.channels.telegram_poll import run_command

    return run_command("poll", args.rasa_url or _default_rasa_url(), drop_webhook=args.delete_webhook)
