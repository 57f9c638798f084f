"""``python -m bot ops check [FILE]``: check support.yml and say what is wrong, with file and line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

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
    check.add_argument("file", nargs="?", help="the file to check (default: FIRSTREPLY_SUPPORT_FILE or support.yml)")
    check.add_argument("--domain", help="the domain whose responses must cover every switched-on language (default: domain/)")
    check.set_defaults(handler=_run_check)


def _run_check(args: argparse.Namespace) -> int:
    return check_main([*([args.file] if args.file else []), *(["--domain", args.domain] if args.domain else [])])


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


def check_main(argv: list[str] | None = None) -> int:
    """Check a support.yml: ``python -m bot ops check [FILE]``.

    Prints ``<file>: OK (<summary>)`` to stdout, or the mistake to stderr.

    Args:
        argv: Arguments after ``ops check``; None means ``sys.argv[1:]``.

    Returns:
        0 if the file is fine, 1 if not.
    """
    parser = argparse.ArgumentParser(
        prog="python -m bot ops check",
        description="Check support.yml and say what is wrong, with file and line.",
    )
    parser.add_argument(
        "file",
        nargs="?",
        help=f"the file to check (default: ${SUPPORT_FILE_ENV}, else support.yml in the repo)",
    )
    parser.add_argument(
        "--domain",
        help="the domain file or directory whose responses must cover every language in languages.answer_in "
        "(default: domain/ in the repo)",
    )
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
    return 0
