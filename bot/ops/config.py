"""What support.yml says, once checked: the brand, the calendar, targets, priority, routing, watchdog.

Plain frozen data; ``bot.ops.support`` builds it from the file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from bot.eta.calendar import BusinessCalendar
from bot.eta.estimate import ServiceTargets


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
    languages: Mapping[str, str] = MappingProxyType({})

    def channel_for(self, case_type: str, priority: str, language: str | None = None) -> str:
        """Return the channel for a case: by priority, else language, else case type, else the default.

        The language comes before the case type: a billing question in German is better
        read by the agents who speak German than by billing agents who do not.

        Args:
            case_type: The case's type.
            priority: The case's priority.
            language: The customer's language (ISO 639-1), if known.
        """
        return (
            self.priorities.get(priority)
            or (self.languages.get(language) if language else None)
            or self.case_types.get(case_type)
            or self.default
        )


@dataclass(frozen=True)
class Languages:
    """Which languages customers are answered in.

    Attributes:
        answer_in: The switched-on languages (ISO 639-1), the brand's main language first:
            messages in another language, or unclear ones, are answered in the closest of
            these and passed to a person as written.
    """

    answer_in: tuple[str, ...] = ("en",)


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
class WhatsAppRules:
    """What the desk may send on WhatsApp past the 24-hour window.

    Attributes:
        reopen_template: The approved template (its name in WhatsApp Manager) an agent may
            send to invite a customer back once 24 hours have passed; None: none is offered.
        template_language: The template's language and locale code (``en_GB``, ``de``...).
    """

    reopen_template: str | None = None
    template_language: str = "en"


@dataclass(frozen=True)
class PublicReply:
    """How a public post about the brand is answered in public (support.yml ``public_replies.<platform>``).

    Facebook and Instagram comments get ``text`` (the conversation goes on in one private
    message) or, for praise, ``thanks``; a post on X that mentions the brand gets ``text``,
    an invitation to DM with ``{dm_link}``, or ``no_dm_text`` when the customer does not
    accept DMs from the brand.

    Attributes:
        enabled: Whether anything is posted in public (a private message goes regardless).
        text: The public reply ("Sorry to hear this — we've sent you a message").
        thanks: Posted under praise (comments), which gets nothing else.
        no_dm_text: X: the public reply when the customer does not accept DMs: how else to reach the brand.
    """

    enabled: bool = True
    text: str = "Sorry to hear this — we've sent you a message so we can sort it out."
    thanks: str = "Thank you, that's lovely to hear!"
    no_dm_text: str = ""


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
        whatsapp: What may be sent on WhatsApp past its window (no template when left out).
        public_replies: Platform -> its public reply (``public_reply``: the defaults for
            Facebook and Instagram comments when left out; X posts get none then).
        languages: The languages customers are answered in (English alone when left out).
    """

    path: Path
    brand: Brand
    calendar: BusinessCalendar
    targets: ServiceTargets
    history_window_days: int
    priority: PriorityRules
    routing: Routing
    watchdog: WatchdogRules = WatchdogRules()
    whatsapp: WhatsAppRules = WhatsAppRules()
    public_replies: Mapping[str, PublicReply] = MappingProxyType({})

    def public_reply(self, platform: str) -> PublicReply:
        """Return how comments on ``platform`` are answered in public (the defaults if not configured)."""
        return self.public_replies.get(platform) or PublicReply()
    languages: Languages = Languages()

    @property
    def lead_channel(self) -> str:
        """Return where the watchdog escalates: its own channel, else urgent cases', else the default."""
        return self.watchdog.lead_channel or self.routing.priorities.get("urgent") or self.routing.default
