"""``python -m bot cases ...``: look at the case queue from a terminal.

Useful on one machine without Slack, and for ops people checking what the assistant
handed over. Read-only.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import ArgumentError, OperationalError

from bot.cases.schema import SchemaTooNewError
from bot.cases.base import ENV_CASE_DB
from bot.cases.store import CaseStore
from bot.constants import OPEN_STATUSES, STATUS_CLOSED, STATUS_RESOLVED

if TYPE_CHECKING:
    from collections.abc import Callable

    from bot.cases.records import Case

STATUSES: tuple[str, ...] = (*OPEN_STATUSES, STATUS_RESOLVED, STATUS_CLOSED)
_TABLE_COLUMNS: tuple[str, ...] = (
    "ID", "CREATED (UTC)", "STATUS", "PRIORITY", "CHANNEL", "CUSTOMER", "CASE TYPE", "PROMISED BY",
)


def add_cases_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the ``cases`` command and its subcommands on the top-level parser."""
    db = argparse.ArgumentParser(add_help=False)
    db.add_argument(
        "--db",
        metavar="URL",
        help=f"SQLAlchemy URL of the case database (default: ${ENV_CASE_DB}, else var/cases.db)",
    )

    cases = subparsers.add_parser("cases", help="look at the cases handed to the team")
    commands = cases.add_subparsers(dest="cases_command", required=True, metavar="COMMAND")

    list_cmd = commands.add_parser("list", parents=[db], help="list cases, oldest first")
    list_cmd.add_argument("--status", choices=STATUSES, help="only cases with this status")
    list_cmd.add_argument("--json", action="store_true", help="print a JSON array of cases")
    list_cmd.set_defaults(handler=_with_store(_list))

    show_cmd = commands.add_parser("show", parents=[db], help="show one case in full")
    show_cmd.add_argument("case_id", type=int, metavar="ID", help="the case number")
    show_cmd.set_defaults(handler=_with_store(_show))


def _with_store(
    command: Callable[[CaseStore, argparse.Namespace], int],
) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            store = CaseStore.from_url(args.db)
        except (ArgumentError, ValueError) as error:
            print(f"Bad case database URL: {error}", file=sys.stderr)
            return 2
        except OperationalError as error:
            print(f"Cannot open the case database: {error.orig}", file=sys.stderr)
            return 1
        except SchemaTooNewError as error:
            print(error, file=sys.stderr)
            return 1
        try:
            return command(store, args)
        finally:
            store.dispose()

    return run


def _list(store: CaseStore, args: argparse.Namespace) -> int:
    found = store.lookup.list_cases(status=args.status)
    if args.json:
        json.dump([case.to_dict() for case in found], sys.stdout, ensure_ascii=False, indent=2)
        sys.stdout.write("\n")
        return 0
    if not found:
        print("No cases." if args.status is None else f"No {args.status} cases.")
        return 0
    rows = [_TABLE_COLUMNS] + [
        (
            str(case.id),
            _when(case.created_at),
            case.status,
            case.priority,
            case.channel,
            _customer(case),
            case.case_type,
            _when(case.promised_by),
        )
        for case in found
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_TABLE_COLUMNS))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    return 0


def _show(store: CaseStore, args: argparse.Namespace) -> int:
    case = store.lookup.get(args.case_id)
    if case is None:
        print(f"No case with id {args.case_id}.", file=sys.stderr)
        return 1
    fields: list[tuple[str, Any]] = [
        ("Status", case.status),
        ("Priority", case.priority),
        ("Case type", case.case_type),
        ("Intent confidence", case.intent_confidence),
        ("Channel", case.channel),
        ("Sender id", case.sender_id),
        ("Customer", case.customer_name),
        ("Language", case.language),
        ("Complaint score", case.complaint_score),
        ("Previous cases", ", ".join(str(i) for i in case.previous_cases) or None),
        ("Promised by", _when(case.promised_by)),
        ("Promise wording", case.promise_wording),
        ("Created", _when(case.created_at)),
        ("Updated", _when(case.updated_at)),
        ("Claimed by", case.claimed_by),
        ("Claimed at", _when(case.claimed_at)),
        ("First human reply", _when(case.first_human_reply_at)),
        ("Resolved at", _when(case.resolved_at)),
        ("Handoff key", case.handoff_key),
    ]
    print(f"Case {case.id}")
    for label, value in fields:
        print(f"{label}: {'-' if value is None else value}")
    print(f"Summary: {case.summary}")
    _print_block("Answers", [f"{slot}: {value}" for slot, value in case.answers.items()])
    _print_block(
        "Transcript (UTC)",
        [
            f"[{line.at.astimezone(timezone.utc):%H:%M}] {line.who}: {line.text}"
            for line in case.transcript
        ],
    )
    _print_block(
        "Metadata",
        [f"{key}: {json.dumps(value, ensure_ascii=False)}" for key, value in case.metadata.items()],
    )
    return 0


def _print_block(title: str, lines: list[str]) -> None:
    print(f"{title}:" if lines else f"{title}: -")
    for line in lines:
        print(f"  {line}")


def _when(value: datetime | None) -> str | None:
    return None if value is None else f"{value.astimezone(timezone.utc):%Y-%m-%d %H:%M} UTC"


def _customer(case: Case) -> str:
    return case.customer_name if case.customer_name else case.sender_id
