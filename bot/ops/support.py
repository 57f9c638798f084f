"""The support-operations file (support.yml): brand, hours, staffing, targets, priority, routing, watchdog, languages.

Ops people own this file, so a mistake in it must be easy to fix: it is read node by
node (``bot.ops.nodes``) and the first problem is raised as an ``OpsConfigError`` naming
the file, the line and the bad value, e.g.::

    support.yml:5: unknown key in hours; did you mean 'timezone'? (got 'timezon')

The ``hours`` section is read by ``bot.ops.hours``; the other sections here. Nothing is
read at import time; call ``load_support_config``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType

from yaml.nodes import MappingNode, Node

from bot.constants import CASE_TYPE_GENERAL, CASE_TYPES, PRIORITIES
from bot.eta.estimate import ServiceTargets
from bot.i18n import KNOWN_LANGUAGES
from bot.ops.config import (
    Brand, Languages, PriorityRules, PublicReply, Routing, SupportConfig, WatchdogRules, WhatsAppRules,
)
from bot.ops.errors import OpsConfigError
from bot.ops.hours import HOURS_KEYS, HOURS_REQUIRED, read_calendar
from bot.ops.nodes import Entries, Entry, NodeReader, is_empty

SUPPORT_FILE_ENV = "FIRSTREPLY_SUPPORT_FILE"
# Where public comments are answered: Facebook Page posts, Instagram posts.
PUBLIC_REPLY_PLATFORMS: tuple[str, ...] = ("x", "facebook", "instagram")
SUPPORT_FILE_NAME = "support.yml"
# The repository root: the directory holding the ``bot`` package.
_REPO_ROOT = Path(__file__).resolve().parents[2]
# The domain whose responses must cover every switched-on language.
DEFAULT_DOMAIN_DIR = _REPO_ROOT / "domain"

KNOWN_CASE_TYPES: tuple[str, ...] = (*CASE_TYPES, CASE_TYPE_GENERAL)

# Section -> (all keys, required keys). Order is the order errors are looked for.
_SECTIONS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "brand": (("name", "assistant_name"), ("name", "assistant_name")),
    "hours": (HOURS_KEYS, HOURS_REQUIRED),
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
    "routing": (("default", "case_types", "priorities", "languages"), ("default",)),
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
    "public_replies": (PUBLIC_REPLY_PLATFORMS, ()),
    "languages": (("answer_in",), ("answer_in",)),
}
_OPTIONAL_SECTIONS["whatsapp"] = (("reopen_template", "template_language"), ())
# A WhatsApp template's name (lowercase letters, digits, underscores) and language code.
_TEMPLATE_NAME = re.compile(r"[a-z0-9_]{1,512}")
_TEMPLATE_LANGUAGE = re.compile(r"[a-z]{2,3}(_[A-Za-z]{2,4})?")
# How a public post is answered in public, per platform (``public_replies.<platform>``): comments
# on Facebook and Instagram, posts on X that mention the brand (which must say how to DM it).
_COMMENT_REPLY_KEYS: tuple[str, ...] = ("enabled", "text", "thanks")
_X_REPLY_KEYS: tuple[str, ...] = ("enabled", "text", "no_dm_text")
# X's public reply: every link counts as 23 characters, whatever its length, and takes at most 280.
POST_LIMIT = 280
_LINK_WEIGHT = 23
_LINK = re.compile(r"https?://\S+|\{dm_link\}")
# A Slack user (U.../W...) or user group (S...) id, for the watchdog's on-call mention.
_SLACK_MENTIONABLE = re.compile(r"[UWS][A-Z0-9]{2,}")

# Defaults for optional target keys: the same as ServiceTargets' own.
_DEFAULT_MIN_HISTORY_SAMPLES = 5
_DEFAULT_SAFETY_FACTOR = 1.5
_DEFAULT_HISTORY_WINDOW_DAYS = 7
_DEFAULT_PROMISE_QUANTILE = 0.9


def default_support_path() -> Path:
    """Return the support.yml to load when none is named.

    ``$FIRSTREPLY_SUPPORT_FILE`` if set, else ``support.yml`` in the repository
    root (the directory holding the ``bot`` package).
    """
    from_env = os.environ.get(SUPPORT_FILE_ENV)
    if from_env:
        return Path(from_env)
    return _REPO_ROOT / SUPPORT_FILE_NAME


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
    with _SupportReader(file, text) as reader:
        return reader.read()


class _SupportReader(NodeReader):
    """Checks one support.yml section by section; each check raises on the first mistake."""

    def read(self) -> SupportConfig:
        root = self.root()
        if root is None or is_empty(root):
            needed = ", ".join(_SECTIONS)
            raise OpsConfigError(self.path, 1, f"the file is empty; it needs {needed}")
        return self._config(root)

    def _config(self, root: Node) -> SupportConfig:
        if not isinstance(root, MappingNode):
            raise self.bad(
                root, f"the file must be a mapping of sections ({', '.join(_SECTIONS)})"
            )
        sections = self.section(
            root, "the file", root, (*_SECTIONS, *_OPTIONAL_SECTIONS), tuple(_SECTIONS), "section"
        )
        parts: dict[str, dict[str, Entry]] = {}
        for name, (allowed, required) in {**_SECTIONS, **_OPTIONAL_SECTIONS}.items():
            if name not in sections:
                continue
            key_node, value_node = sections[name]
            if name in _OPTIONAL_SECTIONS and is_empty(value_node):
                parts[name] = {}
                continue
            parts[name] = self.section(value_node, name, key_node, allowed, required)
        brand = self._brand(parts["brand"])
        calendar = read_calendar(self, parts["hours"])
        agents = self.positive_int(
            parts["staffing"]["default_agents_on_shift"], "staffing.default_agents_on_shift"
        )
        targets, window = self._targets(parts["targets"], agents)
        return SupportConfig(
            path=self.path,
            brand=brand,
            calendar=calendar,
            targets=targets,
            history_window_days=window,
            priority=self._priority(parts["priority"]),
            routing=self._routing(parts["routing"]),
            watchdog=self._watchdog(parts.get("watchdog", {})),
            whatsapp=self._whatsapp(parts.get("whatsapp", {})),
            languages=self._languages(parts.get("languages", {})),
            public_replies=MappingProxyType(
                {name: self._public_reply(name, *entry) for name, entry in parts.get("public_replies", {}).items()}
            ),
        )

    def _public_reply(self, platform: str, key_node: Node, node: Node) -> PublicReply:
        where = f"public_replies.{platform}"
        on_x = platform == "x"
        keys = _X_REPLY_KEYS if on_x else _COMMENT_REPLY_KEYS
        entries = self.section(node, where, key_node, keys, ("text", "no_dm_text") if on_x else ())

        def wording(key: str) -> Callable[[Entry], str]:
            def read(entry: Entry) -> str:
                text = self.text(*entry, f"{where}.{key}")
                line = self.line_node(*entry)
                try:
                    text.format(dm_link="")
                except (KeyError, IndexError, ValueError):
                    problem = f"{where}.{key}: the only {{placeholder}} allowed is {{dm_link}}"
                    raise self.error(line, problem, text) from None
                weighed = len(_LINK.sub("x" * _LINK_WEIGHT, text))
                if on_x and weighed > POST_LIMIT:
                    raise self.error(line, f"{where}.{key} is {weighed} characters as X counts them (links as "
                                     f"{_LINK_WEIGHT}); a public reply takes at most {POST_LIMIT}", text)  # fmt: skip
                if on_x and key == "text" and "{dm_link}" not in text:
                    raise self.error(line, f"{where}.text must contain {{dm_link}}, the link that opens a DM to "
                                     "the brand", text)  # fmt: skip
                return text

            return read

        defaults = PublicReply()
        return PublicReply(
            enabled=self.optional(entries, "enabled", lambda e: self.flag(*e, f"{where}.enabled"), True),
            text=self.optional(entries, "text", wording("text"), defaults.text),
            thanks=self.optional(entries, "thanks", wording("thanks"), defaults.thanks),
            no_dm_text=self.optional(entries, "no_dm_text", wording("no_dm_text"), defaults.no_dm_text),
        )

    def _languages(self, entries: Entries) -> Languages:
        if "answer_in" not in entries:
            return Languages()
        where = "languages.answer_in"
        seen: list[str] = []
        for item in self.items(*entries["answer_in"], where, "language codes (en, es, fr, de, pt, it)"):
            code = self._language(item, where)
            if code in seen:
                raise self.error(item, f"{where}: listed twice", code)
            seen.append(code)
        if not seen:
            raise self.error(self.line_node(*entries["answer_in"]), f"{where} must name at least one language", [])
        return Languages(answer_in=tuple(seen))

    def _language(self, node: Node, where: str) -> str:
        return self.one_of(node, where, KNOWN_LANGUAGES, "language", "known languages")

    def _brand(self, entries: Entries) -> Brand:
        return Brand(
            name=self.text(*entries["name"], "brand.name"),
            assistant_name=self.text(*entries["assistant_name"], "brand.assistant_name"),
        )

    def _targets(self, entries: Entries, agents: int) -> tuple[ServiceTargets, int]:
        targets = ServiceTargets(
            first_response_minutes=self.positive(
                entries["first_response_minutes"], "targets.first_response_minutes"
            ),
            average_handle_minutes=self.positive(
                entries["average_handle_minutes"], "targets.average_handle_minutes"
            ),
            default_agents_on_shift=agents,
            min_history_samples=self.optional(
                entries,
                "min_history_samples",
                lambda e: self.positive_int(e, "targets.min_history_samples"),
                _DEFAULT_MIN_HISTORY_SAMPLES,
            ),
            safety_factor=self.optional(
                entries,
                "safety_factor",
                lambda e: self.number(
                    *e, "targets.safety_factor", "a number of at least 1", lambda v: v >= 1
                ),
                _DEFAULT_SAFETY_FACTOR,
            ),
            promise_quantile=self.optional(
                entries,
                "promise_quantile",
                lambda e: self.number(
                    *e,
                    "targets.promise_quantile",
                    "a number from 0.5 to 1 (the share of promises to keep, e.g. 0.9)",
                    lambda v: 0.5 <= v <= 1,
                ),
                _DEFAULT_PROMISE_QUANTILE,
            ),
        )
        window = self.optional(
            entries,
            "history_window_days",
            lambda e: self.positive_int(e, "targets.history_window_days"),
            _DEFAULT_HISTORY_WINDOW_DAYS,
        )
        return targets, window

    def _priority(self, entries: Entries) -> PriorityRules:
        high = self.fraction(entries["complaint_high"], "priority.complaint_high")
        urgent = self.fraction(entries["complaint_urgent"], "priority.complaint_urgent")
        if urgent < high:
            raise self.error(
                self.line_node(*entries["complaint_urgent"]),
                f"priority.complaint_urgent must not be below complaint_high ({high:g})",
                urgent,
            )
        urgent_types = self.optional(
            entries,
            "urgent_case_types",
            lambda e: self._case_types(*e, "priority.urgent_case_types", {}),
            {},
        )
        high_types = self.optional(
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
        return self.one_of(node, where, KNOWN_CASE_TYPES, "case type", "known case types")

    def _priority_name(self, node: Node, where: str) -> str:
        return self.one_of(node, where, PRIORITIES, "priority", "known priorities")

    def _case_types(
        self, key_node: Node, node: Node, where: str, elsewhere: Mapping[str, int]
    ) -> dict[str, int]:
        """Read a list of case types; returns case type -> line, for duplicate reports."""
        seen: dict[str, int] = {}
        for item in self.items(key_node, node, where, "case types, or []"):
            case_type = self._case_type(item, where)
            if case_type in seen:
                raise self.error(item, f"{where}: listed twice", case_type)
            if case_type in elsewhere:
                raise self.error(
                    item,
                    f"{where}: already urgent (priority.urgent_case_types, line "
                    f"{elsewhere[case_type]})",
                    case_type,
                )
            seen[case_type] = item.start_mark.line + 1
        return seen

    def _routing(self, entries: Entries) -> Routing:
        quote_hint = "; put it in quotes, since # starts a YAML comment"
        default = self._channel(*entries["default"], "routing.default", quote_hint)
        case_types = self.optional(
            entries,
            "case_types",
            lambda e: self._routes(*e, "routing.case_types", self._case_type),
            {},
        )
        priorities = self.optional(
            entries,
            "priorities",
            lambda e: self._routes(*e, "routing.priorities", self._priority_name),
            {},
        )
        languages = self.optional(
            entries,
            "languages",
            lambda e: self._routes(*e, "routing.languages", self._language),
            {},
        )
        return Routing(
            default=default,
            case_types=MappingProxyType(case_types),
            priorities=MappingProxyType(priorities),
            languages=MappingProxyType(languages),
        )

    def _channel(self, key_node: Node, node: Node, where: str, hint: str = "") -> str:
        value = self.value(node)
        if not isinstance(value, str) or not value.strip() or any(c.isspace() for c in value):
            raise self.error(
                self.line_node(key_node, node), f"{where} must be a channel name{hint}", value
            )
        return value

    def _routes(
        self, key_node: Node, node: Node, where: str, read_key: Callable[[Node, str], str]
    ) -> dict[str, str]:
        entries = self.mapping(node, where) if not is_empty(node) else {}
        routes: dict[str, str] = {}
        for name, (name_node, channel_node) in entries.items():
            routes[read_key(name_node, where)] = self._channel(
                name_node, channel_node, f"{where}.{name}", "; put it in quotes"
            )
        return routes

    def _watchdog(self, entries: Entries) -> WatchdogRules:
        defaults = WatchdogRules()
        share = "a number greater than 0 and at most 1 (a share of the promised wait, e.g. 0.75)"

        def fraction(key: str, default: float) -> float:
            return self.optional(
                entries,
                key,
                lambda e: self.number(*e, f"watchdog.{key}", share, lambda v: 0 < v <= 1),
                default,
            )

        escalate_at = fraction("escalate_at", defaults.escalate_at)
        update_at = fraction("update_at", defaults.update_at)
        if "update_at" in entries and update_at < escalate_at:
            raise self.error(
                self.line_node(*entries["update_at"]),
                f"watchdog.update_at must not be below escalate_at ({escalate_at:g}): the leads hear "
                "of a case before its customer gets a new estimate",
                update_at,
            )
        return WatchdogRules(
            enabled=self.optional(entries, "enabled", lambda e: self.flag(*e, "watchdog.enabled"), True),
            escalate_at=escalate_at,
            update_at=update_at,
            lead_channel=self.optional(
                entries,
                "lead_channel",
                lambda e: self._channel(*e, "watchdog.lead_channel", "; put it in quotes"),
                None,
            ),
            oncall=self.optional(entries, "oncall", lambda e: self._mentionable(*e), None),
            checkin_after_minutes=self.optional(
                entries,
                "checkin_after_minutes",
                lambda e: self.positive(e, "watchdog.checkin_after_minutes"),
                defaults.checkin_after_minutes,
            ),
            close_after_minutes=self.optional(
                entries,
                "close_after_minutes",
                lambda e: self.positive(e, "watchdog.close_after_minutes"),
                defaults.close_after_minutes,
            ),
        )

    def _whatsapp(self, entries: Entries) -> WhatsAppRules:
        def matching(key: str, pattern: re.Pattern[str], shape: str) -> Callable[[Entry], str]:
            def read(entry: Entry) -> str:
                value = self.text(*entry, f"whatsapp.{key}")
                if not pattern.fullmatch(value):
                    raise self.error(self.line_node(*entry), f"whatsapp.{key} must be {shape}", value)
                return value
            return read

        return WhatsAppRules(
            reopen_template=self.optional(
                entries, "reopen_template",
                matching("reopen_template", _TEMPLATE_NAME, "a template name as WhatsApp Manager shows it "
                         "(lowercase letters, digits and underscores)"), None,
            ),
            template_language=self.optional(
                entries, "template_language",
                matching("template_language", _TEMPLATE_LANGUAGE, "a language code such as en, en_GB or pt_BR"), "en",
            ),
        )  # fmt: skip

    def _mentionable(self, key_node: Node, node: Node) -> str:
        value = self.value(node)
        if not isinstance(value, str) or not _SLACK_MENTIONABLE.fullmatch(value.strip()):
            raise self.error(
                self.line_node(key_node, node),
                "watchdog.oncall must be a Slack user id (U...) or user group id (S...)",
                value,
            )
        return value.strip()
