"""The desk's dashboard (``GET /dashboard``): the live queue and the report's figures, on one page.

Rendered on the server as one self-contained HTML page: inline CSS, charts drawn as
inline SVG, no script and nothing loaded from anywhere else; the browser reloads it every
``REFRESH_SECONDS``. The figures are ``bot.report.build_report``'s for the cases opened in
the last ``days`` days (``?days=N``, 1 to 90, default 7), so they agree with
``python -m bot report``.

Made for a screen the whole team sees: it shows case numbers, types, priorities,
channels, owners and promises, and never a customer's name or words.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from bot.constants import PRIORITIES, STATUS_CLAIMED, STATUS_WAITING, priority_rank
from bot.desk.cards import label
from bot.desk.text import countdown_words, duration_words
from bot.report import QUICK_REPLY_MINUTES, build_report, format_minutes, format_rate

if TYPE_CHECKING:
    from bot.cases import Case, CaseStore
    from bot.ops import SupportConfig

REFRESH_SECONDS = 30
DEFAULT_DAYS = 7
MAX_DAYS = 90
QUEUE_LIMIT = 60
# Colours, each readable on white and told apart by more than hue alone (labels and order too).
KEPT, BROKEN, PENDING = "#2e7d4f", "#c0392b", "#aab2bd"
WAITING, CLAIMED = "#d9822b", "#3b6ea8"
P50, P90 = "#3b6ea8", "#9db7d9"
_PRIORITY_CLASS = {"urgent": "urgent", "high": "high", "normal": "normal", "low": "low"}

_CSS = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1f2933;
       background: #f4f6f8; }
header { display: flex; align-items: baseline; justify-content: space-between; gap: 1em; flex-wrap: wrap;
         padding: 14px 24px; background: #1f2933; color: #fff; }
header h1 { margin: 0; font-size: 20px; font-weight: 600; }
header .meta { color: #cbd2d9; font-size: 13px; }
.open { color: #8fe3ae; font-weight: 600; } .closed { color: #f5b7b1; font-weight: 600; }
main { padding: 18px 24px 28px; max-width: 1280px; margin: 0 auto; }
.tiles { display: grid; grid-template-columns: repeat(auto-fit, minmax(150px, 1fr)); gap: 12px; margin-bottom: 18px; }
.tile { background: #fff; border-radius: 8px; padding: 12px 14px; box-shadow: 0 1px 2px rgba(0,0,0,.08); }
.tile .value { font-size: 26px; font-weight: 650; line-height: 1.15; }
.tile .name { color: #52606d; font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
.tile .note { color: #7b8794; font-size: 12px; }
.tile.alert .value { color: #c0392b; }
section { background: #fff; border-radius: 8px; padding: 14px 16px 16px; margin-bottom: 18px;
          box-shadow: 0 1px 2px rgba(0,0,0,.08); }
section h2 { margin: 0 0 10px; font-size: 15px; font-weight: 600; }
section h2 small { color: #7b8794; font-weight: 400; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(520px, 1fr)); gap: 18px; }
.grid section { margin-bottom: 0; }
table { border-collapse: collapse; width: 100%; }
th, td { padding: 6px 8px; border-bottom: 1px solid #e4e7eb; text-align: left; white-space: nowrap; }
th { color: #52606d; font-size: 12px; font-weight: 600; background: #f9fafb; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.overdue td.promise { color: #c0392b; font-weight: 600; }
tr.soon td.promise { color: #b9770e; font-weight: 600; }
.pill { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px; font-weight: 600; }
.pill.urgent { background: #fdecea; color: #a93226; } .pill.high { background: #fdf2e3; color: #9c5a0a; }
.pill.normal { background: #eaf1fb; color: #2c5282; } .pill.low { background: #eef0f2; color: #52606d; }
.status-waiting { color: #b9620e; font-weight: 600; } .status-claimed { color: #2c5282; }
.empty { color: #52606d; padding: 10px 0; }
.legend { display: flex; gap: 14px; flex-wrap: wrap; font-size: 12px; color: #52606d; margin-top: 6px; }
.legend i { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 5px;
            vertical-align: -1px; }
svg { display: block; margin: 4px 0 2px; }
svg text { font: 13px system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; fill: #323f4b; }
svg .muted { fill: #7b8794; }
footer { color: #7b8794; font-size: 12px; text-align: center; padding-bottom: 18px; }
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


@dataclass(frozen=True)
class Bar:
    """One part of a bar: its value, colour and name (for the legend and the tooltip)."""

    value: float
    colour: str
    name: str


# --- charts (inline SVG) --------------------------------------------------------------------------


def stacked_bars(rows: Sequence[tuple[str, Sequence[Bar]]], *, width: int = 560, unit: str = "") -> str:
    """Return horizontal stacked bars, one row per label, scaled to the largest total."""
    if not rows:
        return '<p class="empty">Nothing yet.</p>'
    label_width, row_height, gap = 90, 24, 8
    plot = width - label_width - 60
    top = max(sum(part.value for part in parts) for _, parts in rows) or 1
    height = len(rows) * (row_height + gap)
    shapes = []
    for index, (name, parts) in enumerate(rows):
        y = index * (row_height + gap)
        shapes.append(f'<text x="{label_width - 8}" y="{y + 16}" text-anchor="end">{_e(name)}</text>')
        x = float(label_width)
        for part in parts:
            length = plot * part.value / top
            if length > 0:
                shapes.append(
                    f'<rect x="{x:.1f}" y="{y}" width="{length:.1f}" height="{row_height}" fill="{part.colour}" rx="2">'
                    f"<title>{_e(name)}: {_e(part.name)} {part.value:g}{unit}</title></rect>"
                )
                if length >= 22:
                    shapes.append(
                        f'<text x="{x + length / 2:.1f}" y="{y + 16}" text-anchor="middle" fill="#fff" '
                        f'style="fill:#fff">{part.value:g}</text>'
                    )
            x += length
        total = sum(part.value for part in parts)
        shapes.append(f'<text x="{x + 6:.1f}" y="{y + 16}" class="muted">{total:g}{unit}</text>')
    return _svg(width, height, shapes)


def grouped_bars(groups: Sequence[tuple[str, Sequence[Bar]]], *, height: int = 190, unit: str = "") -> str:
    """Return vertical bars in groups (e.g. p50 and p90 per channel), scaled to the largest value."""
    values = [part.value for _, parts in groups for part in parts]
    if not values:
        return '<p class="empty">Nothing yet.</p>'
    per_group = max(len(parts) for _, parts in groups)
    bar, inner, outer, left, bottom = 24, 3, 22, 36, 30
    width = left + len(groups) * (per_group * (bar + inner) + outer)
    top = max(values) or 1
    plot = height - bottom - 14
    shapes = [f'<line x1="{left}" y1="{14 + plot}" x2="{width}" y2="{14 + plot}" stroke="#cbd2d9"/>']
    for tick in (0.5, 1.0):
        y = 14 + plot - plot * tick
        shapes.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width}" y2="{y:.1f}" stroke="#eef0f2"/>')
        shapes.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" class="muted">{top * tick:.0f}</text>')
    x = float(left + outer / 2)
    for name, parts in groups:
        start = x
        for part in parts:
            size = plot * part.value / top
            shapes.append(
                f'<rect x="{x:.1f}" y="{14 + plot - size:.1f}" width="{bar}" height="{size:.1f}" fill="{part.colour}" '
                f'rx="2"><title>{_e(name)}: {_e(part.name)} {part.value:g}{unit}</title></rect>'
            )
            shapes.append(
                f'<text x="{x + bar / 2:.1f}" y="{14 + plot - size - 4:.1f}" text-anchor="middle" class="muted">'
                f"{part.value:.0f}</text>"
            )
            x += bar + inner
        middle = (start + x - inner) / 2
        shapes.append(f'<text x="{middle:.1f}" y="{height - 14}" text-anchor="middle">{_e(name)}</text>')
        x += outer
    return _svg(int(width), height, shapes)


def _svg(width: int, height: int, shapes: Sequence[str]) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="100%" viewBox="0 0 {width} {height}" '
        f'style="max-width:{width}px">' + "".join(shapes) + "</svg>"
    )


def _legend(items: Sequence[tuple[str, str]]) -> str:
    return '<div class="legend">' + "".join(f'<span><i style="background:{c}"></i>{_e(n)}</span>' for n, c in items) + "</div>"


# --- the page ---------------------------------------------------------------------------------


def _tile(name: str, value: str, note: str = "", alert: bool = False) -> str:
    kind = "tile alert" if alert else "tile"
    return (
        f'<div class="{kind}"><div class="name">{_e(name)}</div><div class="value">{_e(value)}</div>'
        f'<div class="note">{_e(note)}</div></div>'
    )


def _queue_row(case: Case, now: datetime) -> str:
    left = case.promised_by - now
    answered = case.first_human_reply_at is not None
    total = (case.promised_by - case.promise_start).total_seconds()
    row_class = ""
    if not answered and left.total_seconds() < 0:
        row_class = "overdue"
    elif not answered and total > 0 and left.total_seconds() / total < 0.25:
        row_class = "soon"
    owner = case.claimed_by or "–"
    status = "claimed" if case.status == STATUS_CLAIMED else "waiting"
    promise = "answered" if answered else countdown_words(left)
    updates = str(case.promise_updates) if case.promise_updates else ""
    escalated = " ⚑" if case.status == STATUS_WAITING and case.escalated_promise is not None else ""
    priority = _PRIORITY_CLASS.get(case.priority, "normal")
    return (
        f'<tr class="{row_class}" data-case="{case.id}"><td class="num">#{case.id}</td>'
        f"<td>{_e(label(case.case_type))}</td>"
        f'<td><span class="pill {priority}">{_e(case.priority)}</span></td><td>{_e(case.channel)}</td>'
        f'<td class="status-{status}">{status}{_e(escalated)}</td><td>{_e(owner)}</td>'
        f"<td>{_e(duration_words(now - case.created_at))}</td>"
        f'<td class="promise">{_e(promise)}</td><td class="num">{_e(updates)}</td></tr>'
    )


def queue_table(cases: Sequence[Case], now: datetime) -> str:
    """Return the open cases, the earliest promise first, as a table (no customer names or words)."""
    if not cases:
        return '<p class="empty">No open cases.</p>'
    head = (
        '<tr><th class="num">Case</th><th>Type</th><th>Priority</th><th>Channel</th><th>Status</th><th>Owner</th>'
        '<th>Open for</th><th>Promise</th><th class="num">New estimates</th></tr>'
    )
    rows = "".join(_queue_row(case, now) for case in cases[:QUEUE_LIMIT])
    more = f'<p class="empty">…and {len(cases) - QUEUE_LIMIT} more.</p>' if len(cases) > QUEUE_LIMIT else ""
    return f'<table id="queue"><thead>{head}</thead><tbody>{rows}</tbody></table>{more}'


def _report_rows(report: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    rows: list[tuple[str, Mapping[str, Any]]] = [("overall", report["overall"])]
    rows += [(f"channel {name}", data) for name, data in report["by_channel"].items()]
    rows += [(f"type {label(name).lower()}", data) for name, data in report["by_case_type"].items()]
    return rows


def report_table(report: Mapping[str, Any]) -> str:
    """Return the report's figures (``python -m bot report``) as a table."""
    if not report["overall"]["cases"]:
        return '<p class="empty">No cases in this period.</p>'
    head = (
        "<tr><th></th>"
        + "".join(
            f'<th class="num">{_e(name)}</th>'
            for name in ("cases", "to claim p50", "to a person p50 / p90", f"≤{QUICK_REPLY_MINUTES} min",
                         "in promise", "kept / due", "reopen", "CSAT")
        )  # fmt: skip
        + "</tr>"
    )
    body = []
    for name, data in _report_rows(report):
        human = data["time_to_human_minutes"]
        csat = data["csat"] if isinstance(data["csat"], str) else format_rate(data["csat"])
        cells = [
            str(data["cases"]),
            format_minutes(data["time_to_claim_minutes"]["p50"]),
            f"{format_minutes(human['p50'])} / {format_minutes(human['p90'])}",
            format_rate(data[f"human_within_{QUICK_REPLY_MINUTES}_min"]["rate"]),
            format_rate(data["human_within_promise"]["rate"]),
            f"{data['promises']['kept']} / {data['promises']['due']}",
            format_rate(data["reopen_rate"]),
            csat,
        ]
        body.append(f"<tr><td>{_e(name)}</td>" + "".join(f'<td class="num">{_e(cell)}</td>' for cell in cells) + "</tr>")
    return f'<table id="figures"><thead>{head}</thead><tbody>{"".join(body)}</tbody></table>'


def _promise_chart(report: Mapping[str, Any]) -> str:
    rows = []
    for name, data in [("overall", report["overall"]), *report["by_channel"].items()]:
        promises = data["promises"]
        rows.append(
            (name, [Bar(promises["kept"], KEPT, "kept"), Bar(promises["broken"], BROKEN, "broken"),
                    Bar(promises["pending"], PENDING, "pending")])
        )  # fmt: skip
    return stacked_bars(rows) + _legend([("kept", KEPT), ("broken", BROKEN), ("not yet due", PENDING)])


def _response_chart(report: Mapping[str, Any]) -> str:
    groups = []
    for name, data in [("overall", report["overall"]), *report["by_channel"].items()]:
        human = data["time_to_human_minutes"]
        if human["n"]:
            groups.append((name, [Bar(human["p50"], P50, "p50 minutes"), Bar(human["p90"], P90, "p90 minutes")]))
    return grouped_bars(groups, unit=" min") + _legend([("p50", P50), ("p90", P90)])


def _days_chart(cases: Sequence[Case], since: datetime, now: datetime, zone: Any) -> str:
    days: dict[date, list[Case]] = {}
    day = since.astimezone(zone).date()
    while day <= now.astimezone(zone).date():
        days[day] = []
        day += timedelta(days=1)
    for case in cases:
        days.setdefault(case.created_at.astimezone(zone).date(), []).append(case)
    groups = []
    for day, opened in sorted(days.items())[-14:]:
        kept = sum(1 for c in opened if c.first_human_reply_at is not None and c.first_human_reply_at <= c.promised_by)
        groups.append((day.strftime("%a %d"), [Bar(len(opened), PENDING, "opened"), Bar(kept, KEPT, "answered within the promise")]))
    return grouped_bars(groups) + _legend([("cases opened", PENDING), ("answered within the promise", KEPT)])


def _queue_chart(open_cases: Sequence[Case]) -> str:
    rows = []
    for priority in reversed(PRIORITIES):
        waiting = sum(1 for c in open_cases if c.priority == priority and c.status == STATUS_WAITING)
        claimed = sum(1 for c in open_cases if c.priority == priority and c.status == STATUS_CLAIMED)
        rows.append((priority, [Bar(waiting, WAITING, "waiting"), Bar(claimed, CLAIMED, "claimed")]))
    return stacked_bars(rows) + _legend([("waiting", WAITING), ("claimed", CLAIMED)])


def render(store: CaseStore, support: SupportConfig, now: datetime, days: int = DEFAULT_DAYS) -> str:
    """Return the dashboard page as of ``now``, with the figures of the last ``days`` days. Blocking."""
    days = max(1, min(MAX_DAYS, days))
    zone = support.calendar.timezone
    since = now - timedelta(days=days)
    open_cases = store.lookup.open_cases()
    cases = store.figures.cases_opened_between(since, None)
    report = build_report(cases, now, since, None)
    overall = report["overall"]
    waiting = [c for c in open_cases if c.status == STATUS_WAITING]
    overdue = [c for c in open_cases if c.first_human_reply_at is None and c.promised_by <= now]
    oldest = max((now - c.created_at for c in waiting), default=None)
    promises = overall["promises"]
    csat = overall["csat"]
    tiles = "".join(
        [
            _tile("Waiting", str(len(waiting)), f"{sum(1 for c in waiting if c.priority in ('urgent', 'high'))} urgent or high"),
            _tile("Claimed", str(len(open_cases) - len(waiting)), "being handled"),
            _tile("Overdue", str(len(overdue)), "promise passed, no reply", alert=bool(overdue)),
            _tile("Longest wait", duration_words(oldest) if oldest is not None else "–", "unclaimed"),
            _tile("Promises kept", format_rate(promises["kept_rate"]), f"{promises['kept']} of {promises['due']} due"),
            _tile("To a person, p50", f"{format_minutes(overall['time_to_human_minutes']['p50'])} min",
                  f"p90 {format_minutes(overall['time_to_human_minutes']['p90'])} min"),
            _tile("CSAT", csat if isinstance(csat, str) else format_rate(csat), f"{overall['ratings']} rating(s)"),
        ]
    )  # fmt: skip
    local = now.astimezone(zone)
    state = '<span class="open">open now</span>' if support.calendar.is_open(now) else '<span class="closed">closed now</span>'
    ordered = sorted(open_cases, key=lambda c: (c.promised_by, -priority_rank(c.priority), c.id))
    period = f"last {days} day{'s' if days != 1 else ''}"
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(support.brand.name)} · FirstReply desk</title><style>{_CSS}</style></head><body>"
        f"<header><h1>{_e(support.brand.name)} · support desk</h1>"
        f'<div class="meta">{state} · updated {local:%H:%M} {_e(local.tzname() or "")} · '
        f"refreshes every {REFRESH_SECONDS} s · figures: cases opened in the {_e(period)}</div></header><main>"
        f'<div class="tiles">{tiles}</div>'
        f"<section><h2>Live queue <small>earliest promise first · {len(open_cases)} open · "
        "⚑ escalated to the leads</small></h2>"
        f"{queue_table(ordered, now)}</section>"
        '<div class="grid">'
        f"<section><h2>Promises <small>{_e(period)}</small></h2>{_promise_chart(report)}</section>"
        f"<section><h2>Open queue by priority</h2>{_queue_chart(open_cases)}</section>"
        f"<section><h2>Minutes to a person's first reply <small>{_e(period)}</small></h2>{_response_chart(report)}</section>"
        f"<section><h2>Cases per day <small>{_e(period)}</small></h2>{_days_chart(cases, since, now, zone)}</section>"
        "</div>"
        f'<section style="margin-top:18px"><h2>Figures <small>as <code>python -m bot report</code>, {_e(period)}; '
        f"minutes</small></h2>{report_table(report)}</section>"
        "</main><footer>FirstReply · no customer names or messages are shown here</footer></body></html>\n"
    )


def days_param(query: Mapping[str, str]) -> int:
    """Return the ``days`` query parameter, within 1 to ``MAX_DAYS`` (the default when missing or not a number)."""
    try:
        return max(1, min(MAX_DAYS, int(query.get("days", DEFAULT_DAYS))))
    except ValueError:
        return DEFAULT_DAYS
