"""``python -m bot report``: how fast customers got a person, and how promises held.

Figures for the cases opened in a period, overall, per channel and per case type:

- time to case: from the customer's first message (the transcript) to the case being
  opened; the bot's greeting is instant, so this is the time the assistant spent
  understanding the request;
- time to claim and time to human: from the case being opened to an agent claiming it
  and to a person's first reply (p50 and p90, nearest rank, wall-clock minutes);
- answered within 15 minutes, and within the promise (``first_human_reply_at <=
  promised_by``), both as a share of all cases;
- promises: due (answered, or the deadline has passed), kept, broken, still pending;
- repeat contact: resolved cases whose customer opened another case on the same channel
  within 7 days (a sign the fix did not hold);
- reopen rate: cases reopened at least once (the customer said the fix did not work), of
  the cases resolved at least once; CSAT: the share of follow-up ratings of 4 or 5 (of 5).
  A case store from before the agent desk has neither: the reopen rate is then 0 and
  CSAT "n/a", and the notes say so.

Text table by default; ``--json`` for machines; ``--html FILE`` for a self-contained
page (inline CSS, plots as inline PNG; no external URL).
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot import clock
from bot.eta.history import quantile

if TYPE_CHECKING:
    from bot.cases import Case, CaseStore

QUICK_REPLY_MINUTES = 15
REPEAT_CONTACT_DAYS = 7
NOTE_REOPEN_NONE = "reopen rate: this case store cannot record a reopened case, so it is 0"
NOTE_REOPEN = "reopen rate: cases reopened at least once, of the cases resolved at least once"
NOTE_CSAT_NONE = "CSAT: no follow-up rating is stored yet (n/a)"
NOTE_CSAT = "CSAT: share of follow-up ratings of 4 or 5 (of 5), of the cases rated"
SATISFIED_RATING = 4
NOTE_TIMES = (
    "times are wall-clock minutes from the case being opened (time to case: from the "
    "customer's first message); p50/p90 are nearest-rank"
)
_UTC = timezone.utc


# --- figures ---------------------------------------------------------------------------------


def _minutes(start: datetime, end: datetime) -> float:
    return (end - start).total_seconds() / 60


def _spread(values: Sequence[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0, "p50": None, "p90": None}
    return {
        "n": len(values),
        "p50": round(quantile(values, 0.5), 2),
        "p90": round(quantile(values, 0.9), 2),
    }


def _share(count: int, total: int) -> dict[str, Any]:
    return {"count": count, "rate": round(count / total, 4) if total else None}


def _reopened_count(case: Case) -> int:
    # The agent desk's columns (case store schema 2); an older Case has none.
    return int(getattr(case, "reopened_count", 0) or 0)


def _rating(case: Case) -> int | None:
    rating = getattr(case, "rating", None)
    return None if rating is None else int(rating)


def _notes(cases: Sequence[Case]) -> list[str]:
    sample = cases[0] if cases else None
    reopen = NOTE_REOPEN if sample is not None and hasattr(sample, "reopened_count") else NOTE_REOPEN_NONE
    rated = any(_rating(case) is not None for case in cases)
    return [NOTE_TIMES, reopen, NOTE_CSAT if rated else NOTE_CSAT_NONE]


def _first_customer_message(case: Case) -> datetime | None:
    times = [line.at for line in case.transcript if line.who == "customer"]
    return min(times) if times else None


def _came_back(case: Case, later: dict[tuple[str, str], list[datetime]]) -> bool:
    if case.resolved_at is None:
        return False
    horizon = case.resolved_at + timedelta(days=REPEAT_CONTACT_DAYS)
    return any(
        case.resolved_at < opened <= horizon for opened in later.get((case.channel, case.sender_id), ())
    )


def figures(
    group: Sequence[Case], now: datetime, later: dict[tuple[str, str], list[datetime]]
) -> dict[str, Any]:
    """Return the figures of one group of cases.

    Args:
        group: The cases.
        now: The report's moment: a promise not yet answered is pending until then.
        later: (channel, sender id) -> when each of that customer's cases was opened,
            for repeat contacts.
    """
    to_case = []
    for case in group:
        first = _first_customer_message(case)
        if first is not None:
            to_case.append(max(0.0, _minutes(first, case.created_at)))
    claimed = [_minutes(c.created_at, c.claimed_at) for c in group if c.claimed_at is not None]
    answered = [c for c in group if c.first_human_reply_at is not None]
    to_human = [_minutes(c.created_at, c.first_human_reply_at) for c in answered]  # type: ignore[arg-type]
    quick = sum(1 for minutes in to_human if minutes <= QUICK_REPLY_MINUTES)
    kept = sum(1 for c in answered if c.first_human_reply_at <= c.promised_by)  # type: ignore[operator]
    due = len(answered) + sum(
        1 for c in group if c.first_human_reply_at is None and c.promised_by <= now
    )
    resolved = [c for c in group if c.resolved_at is not None]
    back = sum(1 for c in resolved if _came_back(c, later))
    reopened = sum(1 for c in group if _reopened_count(c) > 0)
    ever_resolved = sum(1 for c in group if c.resolved_at is not None or _reopened_count(c) > 0)
    ratings = [rating for rating in (_rating(c) for c in group) if rating is not None]
    satisfied = sum(1 for rating in ratings if rating >= SATISFIED_RATING)
    return {
        "cases": len(group),
        "answered": len(answered),
        "time_to_case_minutes": _spread(to_case),
        "time_to_claim_minutes": _spread(claimed),
        "time_to_human_minutes": _spread(to_human),
        f"human_within_{QUICK_REPLY_MINUTES}_min": _share(quick, len(group)),
        "human_within_promise": _share(kept, len(group)),
        "promises": {
            "due": due,
            "kept": kept,
            "broken": due - kept,
            "pending": len(group) - due,
            "kept_rate": round(kept / due, 4) if due else None,
        },
        "repeat_contact_7d": {
            "resolved": len(resolved),
            "came_back": back,
            "rate": round(back / len(resolved), 4) if resolved else None,
        },
        "reopened": reopened,
        "reopen_rate": round(reopened / ever_resolved, 4) if ever_resolved else 0.0,
        "ratings": len(ratings),
        "csat": round(satisfied / len(ratings), 4) if ratings else "n/a",
    }


def _grouped(cases: Iterable[Case], key: Callable[[Case], str]) -> dict[str, list[Case]]:
    groups: dict[str, list[Case]] = {}
    for case in cases:
        groups.setdefault(key(case), []).append(case)
    return dict(sorted(groups.items()))


def build_report(
    cases: Sequence[Case],
    now: datetime,
    since: datetime | None = None,
    until: datetime | None = None,
    later_cases: Sequence[Case] = (),
) -> dict[str, Any]:
    """Return the report as JSON-ready data.

    Args:
        cases: The cases opened in the period.
        now: The report's moment (timezone-aware).
        since: The period's start, for the heading; None if open.
        until: The period's end (exclusive), for the heading; None if open.
        later_cases: Cases opened after the period, so repeat contacts just after its end
            count too.
    """
    later: dict[tuple[str, str], list[datetime]] = {}
    for case in [*cases, *later_cases]:
        later.setdefault((case.channel, case.sender_id), []).append(case.created_at)
    return {
        "generated_at": now.astimezone(_UTC).isoformat(),
        "since": since.astimezone(_UTC).isoformat() if since else None,
        "until": until.astimezone(_UTC).isoformat() if until else None,
        "overall": figures(cases, now, later),
        "by_channel": {
            name: figures(group, now, later)
            for name, group in _grouped(cases, lambda c: c.channel).items()
        },
        "by_case_type": {
            name: figures(group, now, later)
            for name, group in _grouped(cases, lambda c: c.case_type).items()
        },
        "notes": _notes(cases),
    }


# --- text and HTML ---------------------------------------------------------------------------

def format_minutes(value: float | None) -> str:
    """Return minutes as the report and the dashboard show them: "–" for none, 1 decimal under 10."""
    if value is None:
        return "–"
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def format_rate(value: float | None) -> str:
    """Return a share (0-1) as a whole percentage, or "–" for none."""
    return "–" if value is None else f"{100 * value:.0f}%"


def _cells(data: dict[str, Any]) -> list[str]:
    human = data["time_to_human_minutes"]
    return [
        str(data["cases"]),
        format_minutes(data["time_to_case_minutes"]["p50"]),
        format_minutes(data["time_to_claim_minutes"]["p50"]),
        f"{format_minutes(human['p50'])} / {format_minutes(human['p90'])}",
        format_rate(data[f"human_within_{QUICK_REPLY_MINUTES}_min"]["rate"]),
        format_rate(data["human_within_promise"]["rate"]),
        f"{data['promises']['kept']}/{data['promises']['due']}",
        format_rate(data["repeat_contact_7d"]["rate"]),
        format_rate(data["reopen_rate"]),
        data["csat"] if isinstance(data["csat"], str) else format_rate(data["csat"]),
    ]


HEADERS = (
    "",
    "cases",
    "to case p50",
    "to claim p50",
    "to human p50/p90",
    f"≤{QUICK_REPLY_MINUTES} min",
    "in promise",
    "kept/due",
    "back ≤7d",
    "reopen",
    "CSAT",
)


def _rows(report: dict[str, Any]) -> list[list[str]]:
    rows = [["overall", *_cells(report["overall"])]]
    rows += [[f"channel {name}", *_cells(data)] for name, data in report["by_channel"].items()]
    rows += [[f"type {name}", *_cells(data)] for name, data in report["by_case_type"].items()]
    return rows


def _period(report: dict[str, Any]) -> str:
    since = report["since"] or "the first case"
    until = report["until"] or report["generated_at"]
    return f"cases opened from {since} to {until} (UTC; minutes)"


def render_text(report: dict[str, Any]) -> str:
    """Return the report as a plain-text table."""
    if not report["overall"]["cases"]:
        return f"No cases: {_period(report)}.\n"
    table = [list(HEADERS), *_rows(report)]
    widths = [max(len(row[i]) for row in table) for i in range(len(HEADERS))]
    lines = [f"FirstReply report: {_period(report)}", ""]
    for row in table:
        cells = [row[0].ljust(widths[0])] + [
            cell.rjust(width) for cell, width in zip(row[1:], widths[1:])
        ]
        lines.append("  ".join(cells).rstrip())
    lines += ["", *(f"Note: {note}" for note in report["notes"])]
    return "\n".join(lines) + "\n"


_CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { padding: 4px 10px; border-bottom: 1px solid #ddd; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #f3f3f3; }
.notes { color: #555; font-size: 12px; }
img { max-width: 100%; }
"""


def _png(figure: Any) -> str:
    buffer = io.BytesIO()
    # No metadata: the default names the plotting library with its web address.
    figure.savefig(buffer, format="png", dpi=96, metadata={"Software": None})
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _plots(cases: Sequence[Case]) -> list[tuple[str, str]]:
    """Return (caption, base64 PNG) pairs; matplotlib is imported only here."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    plots = []
    waits = [
        _minutes(c.created_at, c.first_human_reply_at)
        for c in cases
        if c.first_human_reply_at is not None
    ]
    if waits:
        figure = Figure(figsize=(7, 3))
        FigureCanvasAgg(figure)
        axes = figure.add_subplot()
        axes.hist(waits, bins=30, color="#4a78a8")
        axes.axvline(QUICK_REPLY_MINUTES, color="#c44", linestyle="--", label="15 minutes")
        axes.set_xlabel("minutes from case opened to first human reply")
        axes.set_ylabel("cases")
        axes.legend()
        figure.tight_layout()
        plots.append(("Time to a human", _png(figure)))
    days: dict[date, list[Case]] = {}
    for case in cases:
        days.setdefault(case.created_at.astimezone(_UTC).date(), []).append(case)
    if days:
        figure = Figure(figsize=(7, 3))
        FigureCanvasAgg(figure)
        axes = figure.add_subplot()
        ordered = sorted(days)
        totals = [len(days[day]) for day in ordered]
        kept = [
            sum(
                1
                for c in days[day]
                if c.first_human_reply_at is not None and c.first_human_reply_at <= c.promised_by
            )
            for day in ordered
        ]
        labels = [day.isoformat() for day in ordered]
        axes.bar(labels, totals, color="#bbb", label="cases opened")
        axes.bar(labels, kept, color="#4a8a5a", label="answered within the promise")
        axes.set_ylabel("cases")
        axes.tick_params(axis="x", labelrotation=45, labelsize=8)
        axes.legend()
        figure.tight_layout()
        plots.append(("Cases per day (UTC)", _png(figure)))
    return plots


def render_html(report: dict[str, Any], cases: Sequence[Case]) -> str:
    """Return the report as one self-contained HTML page."""
    escape = html.escape
    head = "".join(f"<th>{escape(header)}</th>" for header in HEADERS)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in row) + "</tr>"
        for row in _rows(report)
    )
    figures_html = "".join(
        f'<figure><img alt="{escape(caption)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{escape(caption)}</figcaption></figure>"
        for caption, data in _plots(cases)
    )
    notes = "".join(f"<li>{escape(note)}</li>" for note in report["notes"])
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<title>FirstReply report</title>"
        f"<style>{_CSS}</style></head><body>"
        f"<h1>FirstReply report</h1><p>{escape(_period(report))}</p>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
        f"{figures_html}<ul class=\"notes\">{notes}</ul>"
        "</body></html>\n"
    )


# --- command line ----------------------------------------------------------------------------


def _moment(text: str, end_of_day: bool) -> datetime:
    """Parse YYYY-MM-DD (a UTC day) or an ISO 8601 time with offset."""
    try:
        day = date.fromisoformat(text)
    except ValueError:
        day = None
    if day is not None:
        start = datetime(day.year, day.month, day.day, tzinfo=_UTC)
        return start + timedelta(days=1) if end_of_day else start
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a date (YYYY-MM-DD) or an ISO 8601 time with offset"
        ) from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} needs a UTC offset, e.g. {text}+00:00")
    return moment


def add_report_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the ``report`` command on the top-level parser."""
    report = subparsers.add_parser(
        "report",
        help="response times, promises kept and repeat contacts, from the case store",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    report.add_argument(
        "--since",
        metavar="DATE",
        type=lambda text: _moment(text, end_of_day=False),
        help="first day (YYYY-MM-DD, UTC) or moment (ISO 8601 with offset) of the period",
    )
    report.add_argument(
        "--until",
        metavar="DATE",
        type=lambda text: _moment(text, end_of_day=True),
        help="last day, included (YYYY-MM-DD, UTC), or the moment the period ends before",
    )
    report.add_argument(
        "--db", metavar="URL", help="SQLAlchemy URL of the case database (default: as `cases`)"
    )
    output = report.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print the report as JSON")
    output.add_argument("--html", metavar="FILE", type=Path, help="write a self-contained HTML page")
    report.set_defaults(handler=_run_with_store)


def _run_with_store(args: argparse.Namespace) -> int:
    # The same store opening and error messages as ``python -m bot cases``.
    from bot.cases.cli import _with_store

    return _with_store(run_report)(args)


def run_report(store: CaseStore, args: argparse.Namespace) -> int:
    """Build the report from ``store`` for the period in ``args`` and print or write it."""
    now = clock.now()
    if args.since and args.until and args.until <= args.since:
        print("--until must be after --since", file=sys.stderr)
        return 2
    cases = store.figures.cases_opened_between(args.since, args.until)
    later = (
        store.figures.cases_opened_between(args.until, args.until + timedelta(days=REPEAT_CONTACT_DAYS))
        if args.until
        else []
    )
    report = build_report(cases, now, args.since, args.until, later)
    if args.json:
        json.dump(report, sys.stdout, ensure_ascii=False, indent=2)
        sys.stdout.write("\n")
    elif args.html:
        args.html.write_text(render_html(report, cases), encoding="utf-8")
        print(f"wrote {args.html}")
    else:
        sys.stdout.write(render_text(report))
    return 0
