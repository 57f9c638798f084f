"""``python -m bot``: FirstReply's command line.

Each area of the plugin registers its own command (``add_<area>_parser``), giving every
leaf command a ``handler(args) -> exit code``. Keep imports here light: no Rasa, no
TensorFlow, so the command line starts fast.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from bot.cases.cli import add_cases_parser
from bot.channels import add_telegram_parser
from bot.datacheck import add_data_parser
from bot.report import add_report_parser
from bot.desk.cli import add_desk_parser
from bot.ops.cli import add_ops_parser


# The data check loads Rasa, which loads TensorFlow: keep their start-up chatter quiet.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("SQLALCHEMY_SILENCE_UBER_WARNING", "1")


def build_parser() -> argparse.ArgumentParser:
    """Return the top-level parser with every area's commands registered."""
    parser = argparse.ArgumentParser(
        prog="python -m bot", description="FirstReply command line."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    areas = parser.add_subparsers(dest="area", required=True, metavar="COMMAND")
    add_cases_parser(areas)
    add_data_parser(areas)
    add_desk_parser(areas)
    add_telegram_parser(areas)
    add_ops_parser(areas)
    add_report_parser(areas)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen command; return its exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
