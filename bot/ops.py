"""The support-operations file (support.yml): hours, staffing, targets, priority, routing.

Ops people own this file, so a mistake in it must be easy to fix: the file is
parsed to a YAML node tree (which keeps line numbers) and checked node by node,
and the first problem is raised as an ``OpsConfigError`` naming the file, the
line and the bad value, e.g.::

    support.yml:5: unknown key in hours; did you mean 'timezone'? (got 'timezon')

Nothing is read at import time; call ``load_support_config``.
"""

from __future__ import annotations

import argparse
import difflib
import math
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, time, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from bot.constants import CASE_TYPE_GENERAL, CASE_TYPES, PRIORITIES
from bot.eta.calendar import END_OF_DAY, BusinessCalendar
from bot.eta.estimate import ServiceTargets

SUPPORT_FILE_ENV = "FIRSTREPLY_SUPPORT_FILE"
SUPPORT_FILE_NAME = "support.yml"

WEEKDAYS: tuple[str, ...] = (
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
)
KNOWN_CASE_TYPES: tuple[str, ...] = (*CASE_TYPES, CASE_TYPE_GENERAL)

# Section -> (all keys, required keys). Order is the order errors are looked for.
_SECTIONS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "brand": (("name", "assistant_name"), ("name", "assistant_name")),
    "hours": (("timezone", "weekly", "holidays"), ("timezone", "weekly")),
    "staffing": (("default_agents_on_shift",), ("default_agents_on_shift",)),
    "targets": (
        (
            "first_response_minutes",
            "average_handle_minutes",
            "min_history_samples",
            "safety_factor",
            "history_window_days",
            "promise_quantile",
        ),
        ("first_response_minutes", "average_handle_minutes"),
    ),
    "priority": (
        ("complaint_high", "complaint_urgent", "urgent_case_types", "high_case_types"),
        ("complaint_high", "complaint_urgent"),
    ),
    "routing": (("default", "case_types", "priorities"), ("default",)),
}
# Sections a file may leave out (their keys all have defaults).
_OPTIONAL_SECTIONS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "watchdog": (
        (
            "enabled",
            "escalate_at",
            "update_at",
            "lead_channel",
            "oncall",
            "checkin_after_minutes",
            "close_after_minutes",
        ),
        (),
    ),
}
_HOLIDAY_KEYS = ("date", "name")
# A Slack user (U.../W...) or user group (S...) id, for the watchdog's on-call mention.
_SLACK_MENTIONABLE = re.compile(r"[UWS][A-Z0-9]{2,}")

# Defaults for optional target keys: the same as ServiceTargets' own.
_DEFAULT_MIN_HISTORY_SAMPLES = 5
_DEFAULT_SAFETY_FACTOR = 1.5
_DEFAULT_HISTORY_WINDOW_DAYS = 7
_DEFAULT_PROMISE_QUANTILE = 0.9

_TIME_RANGE = re.compile(r"(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})")
_NO_VALUE = object()
_MAX_SHOWN_VALUE = 60

_T = TypeVar("_T")


class OpsConfigError(ValueError):
    """support.yml has a mistake.

    ``str(error)`` reads ``<file>:<line>: <what is wrong> (got <bad value>)``; the
    line and the value are left out when there is none (a missing file, a
    missing section).

    Attributes:
        path: The file.
        line: The 1-based line of the mistake, or None for the whole file.
        problem: What is wrong, without the file, line and value.
        value: The bad value as read from the file, or None.
    """

    def __init__(
        self, path: Path, line: int | None, problem: str, value: object = _NO_VALUE
    ) -> None:
        self.path = path
        self.line = line
        self.problem = problem
        self.value = None if value is _NO_VALUE else value
        location = str(path) if line is None else f"{path}:{line}"
        got = "" if value is _NO_VALUE else f" (got {_shown(value)})"
        super().__init__(f"{location}: {problem}{got}")


def _shown(value: object) -> str:
    text = repr(value)
    if len(text) > _MAX_SHOWN_VALUE:
        text = text[: _MAX_SHOWN_VALUE - 3] + "..."
    return text


@dataclass(frozen=True)
class Brand:
    """Who the assistant speaks for.

    Attributes:
        name: The brand's name, e.g. "Northwind Goods".
        assistant_name: How the bot introduces itself.
    """

    name: str
    assistant_name: str


@dataclass(frozen=True)
class PriorityRules:
    """When a case's priority is raised.

    Attributes:
        complaint_high: Complaint score at or above which a case is high priority.
        complaint_urgent: Complaint score at or above which it is urgent.
        urgent_case_types: Case types that are always urgent.
        high_case_types: Case types that are always at least high.
    """

    complaint_high: float
    complaint_urgent: float
    urgent_case_types: frozenset[str]
    high_case_types: frozenset[str]


@dataclass(frozen=True)
class Routing:
    """Which channel a case is posted to.

    Attributes:
        default: The channel for anything not routed elsewhere.
        case_types: Case type -> channel.
        priorities: Priority -> channel; wins over ``case_types``.
    """

    default: str
    case_types: Mapping[str, str]
    priorities: Mapping[str, str]

    def channel_for(self, case_type: str, priority: str) -> str:
        """Return the channel for a case: by priority, else by case type, else the default.

        Args:
            case_type: The case's type.
            priority: The case's priority.
        """
        return self.priorities.get(priority) or self.case_types.get(case_type) or self.default


@dataclass(frozen=True)
class WatchdogRules:
    """What the desk's watchdog does about promises and silent customers.

    Attributes:
        enabled: Whether the watchdog runs at all.
        escalate_at: Share of a waiting case's promise (in open minutes) after which it
            is escalated to the leads, once per promise.
        update_at: Share after which the customer gets a new estimate, if the new
            deadline is later than the one they were told.
        lead_channel: Where escalations go; None: ``routing.priorities.urgent``, else
            ``routing.default``.
        oncall: A Slack user (U...) or user group (S...) id mentioned in escalations.
        checkin_after_minutes: Open minutes of silence after an agent's last reply before
            the customer is asked whether they need anything else.
        close_after_minutes: Open minutes after that question, still unanswered, before
            the case is closed.
    """

    enabled: bool = True
    escalate_at: float = 0.75
    update_at: float = 0.9
    lead_channel: str | None = None
    oncall: str | None = None
    checkin_after_minutes: float = 60.0
    close_after_minutes: float = 60.0


@dataclass(frozen=True)
class SupportConfig:
    """Everything support.yml says, checked.

    Attributes:
        path: The file it was read from.
        brand: Who the assistant speaks for.
        calendar: Business hours and holidays.
        targets: Response-time targets and staffing default.
        history_window_days: How many days of handled cases the estimate learns from.
        priority: When a case's priority is raised.
        routing: Which channel a case is posted to.
        watchdog: What the desk's watchdog does (all defaults when the section is left out).
    """

    path: Path
    brand: Brand
    calendar: BusinessCalendar
    targets: ServiceTargets
    history_window_days: int
    priority: PriorityRules
    routing: Routing
    watchdog: WatchdogRules = WatchdogRules()

    @property
    def lead_channel(self) -> str:
        """Return where the watchdog escalates: its own channel, else urgent cases', else the default."""
        return self.watchdog.lead_channel or self.routing.priorities.get("urgent") or self.routing.default


def default_support_path() -> Path:
    """Return the support.yml to load when none is named.

    ``$FIRSTREPLY_SUPPORT_FILE`` if set, else ``support.yml`` in the repository
    root (the directory holding the ``bot`` package).
    """
    from_env = os.environ.get(SUPPORT_FILE_ENV)
    if from_env:
        return Path(from_env)
    return Path(__file__).resolve().parent.parent / SUPPORT_FILE_NAME


def load_support_config(path: str | os.PathLike[str] | None = None) -> SupportConfig:
    """Read and check support.yml.

    Args:
        path: The file; None means ``default_support_path()``.

    Returns:
        The checked configuration.

    Raises:
        OpsConfigError: On the first mistake found, naming file, line and value.
    """
    file = default_support_path() if path is None else Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise OpsConfigError(file, None, "file not found") from None
    except UnicodeDecodeError as error:
        raise OpsConfigError(file, None, f"not UTF-8 text ({error.reason})") from None
    except OSError as error:
        raise OpsConfigError(file, None, f"cannot read the file: {error.strerror}") from None
    return _Reader(file, text).read()


def _suggest(wrong: str, valid: Sequence[str], kind: str) -> str:
    close = difflib.get_close_matches(wrong, valid, n=1)
    if close:
        return f"did you mean '{close[0]}'?"
    return f"{kind} are {', '.join(valid)}"


class _Reader:
    """Checks one support.yml node by node; each check raises on the first mistake."""

    def __init__(self, path: Path, text: str) -> None:
        self._path = path
        self._text = text
        try:
            self._loader = yaml.SafeLoader(text)
        except yaml.reader.ReaderError as error:
            # Raised for control characters before any parsing; it knows only the offset.
            line = text.count("\n", 0, error.position) + 1
            bad = chr(error.character) if isinstance(error.character, int) else error.character
            raise OpsConfigError(path, line, f"invalid YAML: {error.reason}", bad) from None

    def read(self) -> SupportConfig:
        try:
            root = self._compose()
            if root is None or _is_empty(root):
                needed = ", ".join(_SECTIONS)
                raise OpsConfigError(self._path, 1, f"the file is empty; it needs {needed}")
            return self._config(root)
        finally:
            self._loader.dispose()

    # --- nodes -------------------------------------------------------------------

    def _compose(self) -> Node | None:
        try:
            return self._loader.get_single_node()
        except yaml.MarkedYAMLError as error:
            mark = error.problem_mark or error.context_mark
            problem = error.problem or error.context or "not valid YAML"
            if mark is None:
                raise OpsConfigError(self._path, None, f"invalid YAML: {problem}") from None
            if error.context and error.context_mark and error.context_mark.line != mark.line:
                # Say where the unfinished thing began: that is usually the mistake.
                problem += f", {error.context} on line {error.context_mark.line + 1}"
            lines = self._text.splitlines()
            source = lines[mark.line].strip() if mark.line < len(lines) else ""
            raise OpsConfigError(
                self._path, mark.line + 1, f"invalid YAML: {problem}", source
            ) from None
        except yaml.YAMLError as error:
            raise OpsConfigError(self._path, None, f"invalid YAML: {error}") from None

    def _error(self, node: Node, problem: str, value: object = _NO_VALUE) -> OpsConfigError:
        return OpsConfigError(self._path, node.start_mark.line + 1, problem, value)

    def _value(self, node: Node) -> object:
        """Return a node as Python data, the way yaml.safe_load would."""
        try:
            return self._loader.construct_object(node, deep=True)
        except yaml.constructor.ConstructorError:
            # An explicit tag safe YAML does not allow, e.g. !!python/object.
            problem = "invalid YAML: only plain YAML is allowed, not tags like this"
            raise self._error(node, problem, node.tag) from None
        except ValueError:
            # A scalar YAML took for a timestamp but that is no real date: 2026-02-30.
            return node.value if isinstance(node, ScalarNode) else None

    def _bad(self, node: Node, problem: str) -> OpsConfigError:
        return self._error(node, problem, self._value(node))

    def _mapping(self, node: Node, where: str) -> dict[str, tuple[Node, Node]]:
        if not isinstance(node, MappingNode):
            raise self._bad(node, f"{where} must be a mapping of keys to values")
        entries: dict[str, tuple[Node, Node]] = {}
        for key_node, value_node in node.value:
            key = self._value(key_node)
            if not isinstance(key, str):
                raise self._bad(key_node, f"keys in {where} must be text")
            if key in entries:
                first_line = entries[key][0].start_mark.line + 1
                raise self._error(
                    key_node, f"duplicate key in {where}, first on line {first_line}", key
                )
            entries[key] = (key_node, value_node)
        return entries

    def _section(
        self,
        node: Node,
        where: str,
        where_node: Node,
        allowed: Sequence[str],
        required: Sequence[str],
        item: str = "key",
    ) -> dict[str, tuple[Node, Node]]:
        """Read a mapping and check its keys; ``where_node`` carries the line for missing keys."""
        entries = self._mapping(node, where)
        for key, (key_node, _value) in entries.items():
            if key not in allowed:
                hint = _suggest(key, allowed, f"valid {item}s")
                raise self._error(key_node, f"unknown {item} in {where}; {hint}", key)
        for key in required:
            if key not in entries:
                raise self._error(where_node, f"{where} is missing the required {item} '{key}'")
        return entries

    @staticmethod
    def _line_node(key_node: Node, value_node: Node) -> Node:
        # An empty value ("timezone:") has no text of its own; point at its key.
        if isinstance(value_node, ScalarNode) and value_node.value == "":
            return key_node
        return value_node

    # --- scalars -----------------------------------------------------------------

    def _text_value(self, key_node: Node, node: Node, where: str, hint: str = "") -> str:
        value = self._value(node)
        if not isinstance(value, str) or not value.strip():
            raise self._error(self._line_node(key_node, node), f"{where} must be text{hint}", value)
        return value.strip()

    def _number(
        self,
        key_node: Node,
        node: Node,
        where: str,
        rule: str,
        accept: Callable[[float], bool],
        whole: bool = False,
    ) -> float:
        value = self._value(node)
        is_number = isinstance(value, int) or (isinstance(value, float) and not whole)
        if (
            isinstance(value, bool)
            or not is_number
            or not math.isfinite(value)  # type: ignore[arg-type]
            or not accept(value)  # type: ignore[arg-type]
        ):
            raise self._error(self._line_node(key_node, node), f"{where} must be {rule}", value)
        return float(value)  # type: ignore[arg-type]

    def _positive_int(self, entry: tuple[Node, Node], where: str) -> int:
        value = self._number(*entry, where, "a whole number greater than 0", lambda v: v > 0, True)
        return int(value)

    def _positive(self, entry: tuple[Node, Node], where: str) -> float:
        return self._number(*entry, where, "a number greater than 0", lambda v: v > 0)

    def _fraction(self, entry: tuple[Node, Node], where: str) -> float:
        return self._number(*entry, where, "a number from 0 to 1", lambda v: 0 <= v <= 1)

    def _optional(
        self,
        entries: Mapping[str, tuple[Node, Node]],
        key: str,
        read: Callable[[tuple[Node, Node]], _T],
        default: _T,
    ) -> _T:
        return read(entries[key]) if key in entries else default

    # --- sections ----------------------------------------------------------------

    def _config(self, root: Node) -> SupportConfig:
        if not isinstance(root, MappingNode):
            raise self._bad(
                root, f"the file must be a mapping of sections ({', '.join(_SECTIONS)})"
            )
        sections = self._section(
            root, "the file", root, (*_SECTIONS, *_OPTIONAL_SECTIONS), tuple(_SECTIONS), "section"
        )
        parts: dict[str, dict[str, tuple[Node, Node]]] = {}
        for name, (allowed, required) in {**_SECTIONS, **_OPTIONAL_SECTIONS}.items():
            if name not in sections:
                continue
            key_node, value_node = sections[name]
            if name in _OPTIONAL_SECTIONS and _is_empty(value_node):
                parts[name] = {}
                continue
            parts[name] = self._section(value_node, name, key_node, allowed, required)
        brand = self._brand(parts["brand"])
        calendar = self._calendar(parts["hours"])
        agents = self._positive_int(
            parts["staffing"]["default_agents_on_shift"], "staffing.default_agents_on_shift"
        )
        targets, window = self._targets(parts["targets"], agents)
        return SupportConfig(
            path=self._path,
            brand=brand,
            calendar=calendar,
            targets=targets,
            history_window_days=window,
            priority=self._priority(parts["priority"]),
            routing=self._routing(parts["routing"]),
            watchdog=self._watchdog(parts.get("watchdog", {})),
        )

    def _brand(self, entries: Mapping[str, tuple[Node, Node]]) -> Brand:
        return Brand(
            name=self._text_value(*entries["name"], "brand.name"),
            assistant_name=self._text_value(*entries["assistant_name"], "brand.assistant_name"),
        )

    def _calendar(self, entries: Mapping[str, tuple[Node, Node]]) -> BusinessCalendar:
        zone = self._timezone(*entries["timezone"])
        weekly = self._weekly(*entries["weekly"])
        holidays = self._optional(entries, "holidays", lambda e: self._holidays(*e), {})
        return BusinessCalendar(timezone=zone, weekly=weekly, holidays=holidays)

    def _timezone(self, key_node: Node, node: Node) -> ZoneInfo:
        name = self._text_value(key_node, node, "hours.timezone", " like Europe/London")
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            # available_timezones() scans the tz database; only worth it on this error.
            close = difflib.get_close_matches(name, sorted(available_timezones()), n=1)
            hint = f"did you mean '{close[0]}'?" if close else "use a name like Europe/London"
            raise self._error(node, f"hours.timezone: unknown timezone; {hint}", name) from None

    def _weekly(self, key_node: Node, node: Node) -> dict[int, tuple[tuple[time, time], ...]]:
        days = self._section(node, "hours.weekly", key_node, WEEKDAYS, (), "day")
        for day in WEEKDAYS:
            if day not in days:
                raise self._error(
                    key_node,
                    f"hours.weekly is missing {day}; use {day}: [] for a day you are closed",
                )
        weekly = {number: self._day(day, *days[day]) for number, day in enumerate(WEEKDAYS)}
        if not any(weekly.values()):
            raise self._error(key_node, "hours.weekly has no open hours on any day")
        return weekly

    def _day(self, day: str, key_node: Node, node: Node) -> tuple[tuple[time, time], ...]:
        where = f"hours.weekly.{day}"
        if not isinstance(node, SequenceNode):
            raise self._error(
                self._line_node(key_node, node),
                f"{where} must be a list of time ranges like [\"09:00-17:00\"], or []",
                self._value(node),
            )
        ranges: list[tuple[timedelta, timedelta, Node]] = []
        for item in node.value:
            start, end = self._time_range(item, where)
            ranges.append((start, end, item))
        ranges.sort(key=lambda entry: entry[0])
        for (_, earlier_end, earlier), (later_start, _, later) in zip(ranges, ranges[1:]):
            if later_start < earlier_end:
                # Report whichever of the two comes later in the file.
                first, second = sorted((earlier, later), key=lambda n: n.start_mark.index)
                raise self._bad(second, f"{where}: the range overlaps '{self._value(first)}'")
        return tuple(
            (_as_time(start), END_OF_DAY if end == timedelta(days=1) else _as_time(end))
            for start, end, _ in ranges
        )

    def _time_range(self, node: Node, where: str) -> tuple[timedelta, timedelta]:
        value = self._value(node)
        match = _TIME_RANGE.fullmatch(value.strip()) if isinstance(value, str) else None
        if match is None:
            raise self._error(node, f"{where}: a time range looks like '09:00-17:30'", value)
        start_hour, start_minute, end_hour, end_minute = (int(part) for part in match.groups())
        start = timedelta(hours=start_hour, minutes=start_minute)
        end = timedelta(hours=end_hour, minutes=end_minute)
        for hour, minute, offset in (
            (start_hour, start_minute, start),
            (end_hour, end_minute, end),
        ):
            if hour > 24 or minute > 59 or offset > timedelta(days=1):
                raise self._error(
                    node, f"{where}: {hour:02d}:{minute:02d} is not a time of day", value
                )
        if start == timedelta(days=1):
            raise self._error(node, f"{where}: 24:00 can only end a range", value)
        if end == start:
            raise self._error(node, f"{where}: the range is empty", value)
        if end < start:
            raise self._error(
                node,
                f"{where}: the range ends before it starts; split hours past midnight into"
                " two ranges, like '22:00-24:00' and '00:00-02:00' the next day",
                value,
            )
        return start, end

    def _holidays(self, key_node: Node, node: Node) -> dict[date, str]:
        where = "hours.holidays"
        if not isinstance(node, SequenceNode):
            raise self._error(
                self._line_node(key_node, node),
                f"{where} must be a list of {{date: YYYY-MM-DD, name: ...}} entries",
                self._value(node),
            )
        holidays: dict[date, str] = {}
        lines: dict[date, int] = {}
        for item in node.value:
            entries = self._section(item, where, item, _HOLIDAY_KEYS, _HOLIDAY_KEYS)
            date_key, date_node = entries["date"]
            day = self._date(date_key, date_node, where)
            if day in holidays:
                raise self._error(
                    date_node, f"{where}: date already listed on line {lines[day]}", day.isoformat()
                )
            holidays[day] = self._text_value(*entries["name"], f"{where}: name")
            lines[day] = date_node.start_mark.line + 1
        return holidays

    def _date(self, key_node: Node, node: Node, where: str) -> date:
        value = self._value(node)
        if isinstance(value, str):
            try:
                value = date.fromisoformat(value.strip())
            except ValueError:
                pass
        if not isinstance(value, date) or hasattr(value, "hour"):
            shown = node.value if isinstance(node, ScalarNode) else value
            raise self._error(
                self._line_node(key_node, node),
                f"{where}: not a valid date, write it as YYYY-MM-DD",
                shown,
            )
        return value

    def _targets(
        self, entries: Mapping[str, tuple[Node, Node]], agents: int
    ) -> tuple[ServiceTargets, int]:
        targets = ServiceTargets(
            first_response_minutes=self._positive(
                entries["first_response_minutes"], "targets.first_response_minutes"
            ),
            average_handle_minutes=self._positive(
                entries["average_handle_minutes"], "targets.average_handle_minutes"
            ),
            default_agents_on_shift=agents,
            min_history_samples=self._optional(
                entries,
                "min_history_samples",
                lambda e: self._positive_int(e, "targets.min_history_samples"),
                _DEFAULT_MIN_HISTORY_SAMPLES,
            ),
            safety_factor=self._optional(
                entries,
                "safety_factor",
                lambda e: self._number(
                    *e, "targets.safety_factor", "a number of at least 1", lambda v: v >= 1
                ),
                _DEFAULT_SAFETY_FACTOR,
            ),
            promise_quantile=self._optional(
                entries,
                "promise_quantile",
                lambda e: self._number(
                    *e,
                    "targets.promise_quantile",
                    "a number from 0.5 to 1 (the share of promises to keep, e.g. 0.9)",
                    lambda v: 0.5 <= v <= 1,
                ),
                _DEFAULT_PROMISE_QUANTILE,
            ),
        )
        window = self._optional(
            entries,
            "history_window_days",
            lambda e: self._positive_int(e, "targets.history_window_days"),
            _DEFAULT_HISTORY_WINDOW_DAYS,
        )
        return targets, window

    def _priority(self, entries: Mapping[str, tuple[Node, Node]]) -> PriorityRules:
        high = self._fraction(entries["complaint_high"], "priority.complaint_high")
        urgent = self._fraction(entries["complaint_urgent"], "priority.complaint_urgent")
        if urgent < high:
            raise self._error(
                self._line_node(*entries["complaint_urgent"]),
                f"priority.complaint_urgent must not be below complaint_high ({high:g})",
                urgent,
            )
        urgent_types = self._optional(
            entries,
            "urgent_case_types",
            lambda e: self._case_types(*e, "priority.urgent_case_types", {}),
            {},
        )
        high_types = self._optional(
            entries,
            "high_case_types",
            lambda e: self._case_types(*e, "priority.high_case_types", urgent_types),
            {},
        )
        return PriorityRules(
            complaint_high=high,
            complaint_urgent=urgent,
            urgent_case_types=frozenset(urgent_types),
            high_case_types=frozenset(high_types),
        )

    def _case_type(self, node: Node, where: str) -> str:
        value = self._value(node)
        if not isinstance(value, str) or value not in KNOWN_CASE_TYPES:
            wrong = value if isinstance(value, str) else ""
            hint = _suggest(wrong, KNOWN_CASE_TYPES, "known case types")
            raise self._error(node, f"{where}: unknown case type; {hint}", value)
        return value

    def _case_types(
        self, key_node: Node, node: Node, where: str, elsewhere: Mapping[str, int]
    ) -> dict[str, int]:
        """Read a list of case types; returns case type -> line, for duplicate reports."""
        if not isinstance(node, SequenceNode):
            raise self._error(
                self._line_node(key_node, node),
                f"{where} must be a list of case types, or []",
                self._value(node),
            )
        seen: dict[str, int] = {}
        for item in node.value:
            case_type = self._case_type(item, where)
            if case_type in seen:
                raise self._error(item, f"{where}: listed twice", case_type)
            if case_type in elsewhere:
                raise self._error(
                    item,
                    f"{where}: already urgent (priority.urgent_case_types, line "
                    f"{elsewhere[case_type]})",
                    case_type,
                )
            seen[case_type] = item.start_mark.line + 1
        return seen

    def _routing(self, entries: Mapping[str, tuple[Node, Node]]) -> Routing:
        quote_hint = "; put it in quotes, since # starts a YAML comment"
        default = self._channel(*entries["default"], "routing.default", quote_hint)
        case_types = self._optional(
            entries,
            "case_types",
            lambda e: self._routes(*e, "routing.case_types", self._case_type),
            {},
        )
        priorities = self._optional(
            entries,
            "priorities",
            lambda e: self._routes(*e, "routing.priorities", self._priority_name),
            {},
        )
        return Routing(
            default=default,
            case_types=MappingProxyType(case_types),
            priorities=MappingProxyType(priorities),
        )

    def _priority_name(self, node: Node, where: str) -> str:
        value = self._value(node)
        if not isinstance(value, str) or value not in PRIORITIES:
            wrong = value if isinstance(value, str) else ""
            hint = _suggest(wrong, PRIORITIES, "known priorities")
            raise self._error(node, f"{where}: unknown priority; {hint}", value)
        return value

    def _channel(self, key_node: Node, node: Node, where: str, hint: str = "") -> str:
        value = self._value(node)
        if not isinstance(value, str) or not value.strip() or any(c.isspace() for c in value):
            raise self._error(
                self._line_node(key_node, node), f"{where} must be a channel name{hint}", value
            )
        return value

    def _routes(
        self, key_node: Node, node: Node, where: str, read_key: Callable[[Node, str], str]
    ) -> dict[str, str]:
        entries = self._mapping(node, where) if not _is_empty(node) else {}
        routes: dict[str, str] = {}
        for name, (name_node, channel_node) in entries.items():
            routes[read_key(name_node, where)] = self._channel(
                name_node, channel_node, f"{where}.{name}", "; put it in quotes"
            )
        return routes


    def _watchdog(self, entries: Mapping[str, tuple[Node, Node]]) -> WatchdogRules:
        defaults = WatchdogRules()
        share = "a number greater than 0 and at most 1 (a share of the promised wait, e.g. 0.75)"

        def fraction(key: str, default: float) -> float:
            return self._optional(
                entries,
                key,
                lambda e: self._number(*e, f"watchdog.{key}", share, lambda v: 0 < v <= 1),
                default,
            )

        escalate_at = fraction("escalate_at", defaults.escalate_at)
        update_at = fraction("update_at", defaults.update_at)
        if "update_at" in entries and update_at < escalate_at:
            raise self._error(
                self._line_node(*entries["update_at"]),
                f"watchdog.update_at must not be below escalate_at ({escalate_at:g}): the leads hear "
                "of a case before its customer gets a new estimate",
                update_at,
            )
        return WatchdogRules(
            enabled=self._optional(entries, "enabled", lambda e: self._flag(*e, "watchdog.enabled"), True),
            escalate_at=escalate_at,
            update_at=update_at,
            lead_channel=self._optional(
                entries,
                "lead_channel",
                lambda e: self._channel(*e, "watchdog.lead_channel", "; put it in quotes"),
                None,
            ),
            oncall=self._optional(entries, "oncall", lambda e: self._mentionable(*e), None),
            checkin_after_minutes=self._optional(
                entries,
                "checkin_after_minutes",
                lambda e: self._positive(e, "watchdog.checkin_after_minutes"),
                defaults.checkin_after_minutes,
            ),
            close_after_minutes=self._optional(
                entries,
                "close_after_minutes",
                lambda e: self._positive(e, "watchdog.close_after_minutes"),
                defaults.close_after_minutes,
            ),
        )

    def _flag(self, key_node: Node, node: Node, where: str) -> bool:
        value = self._value(node)
        if not isinstance(value, bool):
            raise self._error(self._line_node(key_node, node), f"{where} must be true or false", value)
        return value

    def _mentionable(self, key_node: Node, node: Node) -> str:
        value = self._value(node)
        if not isinstance(value, str) or not _SLACK_MENTIONABLE.fullmatch(value.strip()):
            raise self._error(
                self._line_node(key_node, node),
                "watchdog.oncall must be a Slack user id (U...) or user group id (S...)",
                value,
            )
        return value.strip()


def _is_empty(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == "tag:yaml.org,2002:null"


def _as_time(offset: timedelta) -> time:
    minutes = int(offset.total_seconds() // 60)
    return time(minutes // 60, minutes % 60)


def _open_hours_per_week(calendar: BusinessCalendar) -> float:
    total = timedelta(0)
    for intervals in calendar.weekly.values():
        for start, end in intervals:
            end_offset = timedelta(days=1) if end == END_OF_DAY else _offset(end)
            total += end_offset - _offset(start)
    return total.total_seconds() / 3600


def _offset(clock: time) -> timedelta:
    return timedelta(hours=clock.hour, minutes=clock.minute)


def summarize(config: SupportConfig) -> str:
    """Return a one-line summary of a checked configuration, for ``ops check``.

    Args:
        config: The configuration.
    """
    routes = len(config.routing.case_types) + len(config.routing.priorities)
    return (
        f"{config.brand.name}, {config.calendar.timezone.key}, "
        f"open {_open_hours_per_week(config.calendar):g} hours a week, "
        f"{len(config.calendar.holidays)} holidays, {routes} routing rules"
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
    arguments = parser.parse_args(sys.argv[1:] if argv is None else argv)
    path = Path(arguments.file) if arguments.file else default_support_path()
    try:
        config = load_support_config(path)
    except OpsConfigError as error:
        print(error, file=sys.stderr)
        return 1
    print(f"{path}: OK ({summarize(config)})")
    return 0
