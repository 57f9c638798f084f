"""How urgent a case is, from what the customer wrote and who they are."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from bot.constants import INTENT_COMPLAINT, PRIORITIES

if TYPE_CHECKING:
    from bot.ops import PriorityRules

HOSTILITY_URGENT = 0.6
CALM_COMPLAINT_SCORE = 0.2
LOW_PRIORITY_CASE_TYPES = frozenset({"product_question"})


def case_priority(
    case_type: str,
    complaint_score: float,
    hostility: float,
    open_previous_cases: int,
    rules: "PriorityRules",
    public_post: Mapping[str, Any] | None = None,
) -> str:
    """Return the case priority: ``low``, ``normal``, ``high`` or ``urgent``.

    Args:
        case_type: The case type (an intent name, or ``general``).
        complaint_score: The highest complaint score of the customer's messages.
        hostility: The highest hostility score of the customer's messages.
        open_previous_cases: Cases of this customer still open: a customer who has to
            write again has already been let down once.
        rules: The thresholds from the support-operations file.
        public_post: The public post the case began with, if any: a complaint or a hostile
            post made in front of everyone rises one step, to at least ``high``.
    """
    priority = _from_what_was_said(case_type, complaint_score, hostility, open_previous_cases, rules)
    if public_post is not None and (
        public_post.get("hostile") is True or case_type == INTENT_COMPLAINT or complaint_score >= rules.complaint_high
    ):
        return PRIORITIES[min(max(PRIORITIES.index(priority) + 1, PRIORITIES.index("high")), len(PRIORITIES) - 1)]
    return priority


def _from_what_was_said(
    case_type: str, complaint_score: float, hostility: float, open_previous_cases: int, rules: "PriorityRules"
) -> str:
    if (
        case_type in rules.urgent_case_types
        or complaint_score >= rules.complaint_urgent
        or hostility >= HOSTILITY_URGENT
    ):
        return "urgent"
    if case_type in rules.high_case_types or complaint_score >= rules.complaint_high or open_previous_cases:
        return "high"
    if case_type in LOW_PRIORITY_CASE_TYPES and complaint_score < CALM_COMPLAINT_SCORE:
        return "low"
    return "normal"
