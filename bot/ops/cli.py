"""``python -m bot ops check [FILE]``: check support.yml and say what is wrong, with file and line.

It also names every response (in ``domain/`` or the support file) that a switched-on
channel cannot show as written (``bot.ops.channel_limits``): warnings, unless ``--strict``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from bot import clock
from bot.ops.channel_limits import LIMITS, check_responses, switched_on
from bot.ops.config import SupportConfig
from bot.ops.errors import OpsConfigError
from bot.ops.hours import open_hours_per_week
from bot.ops.responses import missing_responses
from bot.ops.support import DEFAULT_DOMAIN_DIR, SUPPORT_FILE_ENV, default_support_path, load_support_config




def add_ops_parser(subparsers: Any) -> None:
    """Register ``ops check`` on the top-level command line (``python -m bot``)."""
    ops = subparsers.add_parser("ops", help="check the support-operations file (hours, targets, routing)")
    ops_sub = ops.add_subparsers(dest="ops_command", required=True)
    check = ops_sub.add_parser("check", help="validate support.yml (or FILE); errors name the file and line")
    _add_arguments(check)
    check.set_defaults(handler=_run_check)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "file", nargs="?", help=f"the file to check (default: ${SUPPORT_FILE_ENV}, else support.yml in the repo)"
    )
    parser.add_argument(
        "--channels",
        help=f"comma-separated channels whose button limits to check the responses against ({', '.join(LIMITS)}, "
        "or none); default: those switched on in the environment",
    )
    parser.add_argument("--domain", help="the domain file or directory whose responses are checked: every switched-on "
                        "language present (languages.answer_in), shown on every switched-on channel (default: domain/)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a response cannot be shown as written")


def _run_check(args: argparse.Namespace) -> int:
    argv = [args.file] if args.file else []
    argv += ["--channels", args.channels] if args.channels is not None else []
    argv += ["--domain", args.domain] if args.domain else []
    return check_main(argv + (["--strict"] if args.strict else []))


def summarize(config: SupportConfig) -> str:
    """Return a one-line summary of a checked configuration, for ``ops check``.

    Args:
        config: The configuration.
    """
    routes = len(config.routing.case_types) + len(config.routing.priorities) + len(config.routing.languages)
    return (
        f"{config.brand.name}, {config.calendar.timezone.key}, "
        f"open {open_hours_per_week(config.calendar):g} hours a week, "
        f"{len(config.calendar.holidays)} holidays, {routes} routing rules, "
        f"answers in {', '.join(config.languages.answer_in)}"
    )


# How many of the coming closed days ``ops check`` lists.
NEXT_CLOSED_DAYS = 5


def next_closed_days(config: SupportConfig, count: int = NEXT_CLOSED_DAYS) -> str:
    """Return the next holidays the calendar will close on, from today (``FIRSTREPLY_NOW`` pins it).

    Args:
        config: The configuration.
        count: How many to list.
    """
    calendar = config.calendar
    today = clock.now().astimezone(calendar.timezone).date()
    coming = sorted(day for day in calendar.holidays if day >= today)[:count]
    if not coming:
        return "Next closed days: none listed from today"
    shown = "; ".join(f"{day:%a} {day.isoformat()} {calendar.holidays[day]}" for day in coming)
    return f"Next closed days: {shown}"


def check_main(argv: list[str] | None = None) -> int:
    """Check a support.yml: ``python -m bot ops check [FILE]``.

    Prints ``<file>: OK (<summary>)`` and the next closed days to stdout, or the
    mistake to stderr.

    Args:
        argv: Arguments after ``ops check``; None means ``sys.argv[1:]``.

    Returns:
        0 if the file is fine, 1 if not.
    """
    parser = argparse.ArgumentParser(
        prog="python -m bot ops check",
        description="Check support.yml and say what is wrong, with file and line.",
    )
    _add_arguments(parser)
    arguments = parser.parse_args(sys.argv[1:] if argv is None else argv)
    path = Path(arguments.file) if arguments.file else default_support_path()
    try:
        config = load_support_config(path)
    except OpsConfigError as error:
        print(error, file=sys.stderr)
        return 1
    domain = Path(arguments.domain) if arguments.domain else DEFAULT_DOMAIN_DIR
    missing = missing_responses(domain, config.languages.answer_in) if domain.exists() else []
    for response in missing:
        print(response, file=sys.stderr)
    if missing:
        print(f"{len(missing)} responses missing a language switched on in {path} (languages.answer_in)", file=sys.stderr)
        return 1
    print(f"{path}: OK ({summarize(config)})")
    print(next_closed_days(config))
    return _check_buttons(arguments, path)


def _check_buttons(arguments: argparse.Namespace, support_path: Path) -> int:
    """Name the responses a switched-on channel cannot show as written; return the exit status."""
    if arguments.channels is None:
        channels = switched_on(os.environ)
    else:
        channels = [name.strip() for name in arguments.channels.split(",") if name.strip() not in ("", "none")]
    unknown = [name for name in channels if name not in LIMITS]
    if unknown:
        print(f"--channels: unknown channel(s) {', '.join(unknown)}; known: {', '.join(LIMITS)}", file=sys.stderr)
        return 1
    if not channels:
        return 0
    domain = Path(arguments.domain) if arguments.domain else default_support_path().parent / "domain"
    files = [*sorted(domain.glob("*.yml")), support_path] if domain.is_dir() else [domain, support_path]
    findings = check_responses(files, channels)
    for finding in findings:
        print(f"{'error' if arguments.strict else 'warning'}: {finding}", file=sys.stderr)
    shown = "cannot show as written" if findings else "can show every response"
    print(f"{', '.join(channels)}: {len(findings)} finding(s); the channel(s) {shown}")
    return 1 if findings and arguments.strict else 0
