"""Tests for bot.priority: how urgent a case is."""

from __future__ import annotations

import pytest

from bot.ops import PriorityRules
from bot.priority import CALM_COMPLAINT_SCORE, HOSTILITY_URGENT, case_priority

# Like the shipped support.yml, plus an always-urgent case type.
RULES = PriorityRules(
    complaint_high=0.5,
    complaint_urgent=0.85,
    urgent_case_types=frozenset({"cancel_order"}),
    high_case_types=frozenset({"billing", "account_access"}),
)


@pytest.mark.parametrize(
    ("case_type", "complaint_score", "hostility", "open_previous_cases", "expected"),
    [
        # urgent
        ("cancel_order", 0.0, 0.0, 0, "urgent"),
        ("order_status", 0.85, 0.0, 0, "urgent"),
        ("order_status", 0.97, 0.0, 0, "urgent"),
        ("product_question", 0.0, HOSTILITY_URGENT, 0, "urgent"),
        ("general", 0.3, 0.6, 0, "urgent"),
        ("billing", 0.9, 0.0, 2, "urgent"),
        # high
        ("billing", 0.0, 0.0, 0, "high"),
        ("account_access", 0.0, 0.0, 0, "high"),
        ("order_status", 0.5, 0.0, 0, "high"),
        ("order_status", 0.849, 0.0, 0, "high"),
        ("order_status", 0.0, 0.0, 1, "high"),
        ("product_question", 0.0, 0.0, 3, "high"),
        ("complaint", 0.84, 0.58, 0, "high"),
        # low: a calm product question
        ("product_question", 0.0, 0.0, 0, "low"),
        ("product_question", 0.19, 0.3, 0, "low"),
        # normal
        ("product_question", CALM_COMPLAINT_SCORE, 0.0, 0, "normal"),
        ("product_question", 0.35, 0.0, 0, "normal"),
        ("order_status", 0.0, 0.0, 0, "normal"),
        ("order_status", 0.499, 0.59, 0, "normal"),
        ("general", 0.0, 0.0, 0, "normal"),
        ("complaint", 0.3, 0.0, 0, "normal"),
    ],
)
def test_case_priority(
    case_type: str, complaint_score: float, hostility: float, open_previous_cases: int, expected: str
) -> None:
    assert case_priority(case_type, complaint_score, hostility, open_previous_cases, RULES) == expected


def test_thresholds_come_from_the_rules() -> None:
    strict = PriorityRules(
        complaint_high=0.2,
        complaint_urgent=0.4,
        urgent_case_types=frozenset(),
        high_case_types=frozenset({"product_question"}),
    )

    assert [
        case_priority("order_status", 0.19, 0.0, 0, strict),
        case_priority("order_status", 0.2, 0.0, 0, strict),
        case_priority("order_status", 0.4, 0.0, 0, strict),
        case_priority("cancel_order", 0.0, 0.0, 0, strict),
        case_priority("product_question", 0.0, 0.0, 0, strict),
    ] == ["normal", "high", "urgent", "normal", "high"]


@pytest.mark.parametrize(
    ("case_type", "complaint_score", "post", "expected"),
    [
        # A complaint or a hostile post, made in public, rises a step, to at least high.
        ("order_status", 0.5, {"hostile": False}, "urgent"),
        ("order_status", 0.2, {"hostile": True}, "high"),
        ("complaint", 0.3, {"hostile": False}, "high"),
        ("product_question", 0.0, {"hostile": True}, "high"),
        ("billing", 0.9, {"hostile": True}, "urgent"),
        # A calm public question keeps its priority.
        ("order_status", 0.2, {"hostile": False}, "normal"),
        ("product_question", 0.0, {"hostile": False}, "low"),
        # The same words in a private conversation.
        ("order_status", 0.5, None, "high"),
        ("complaint", 0.3, None, "normal"),
    ],
)
def test_a_public_complaint_or_hostile_post_rises_in_priority(
    case_type: str, complaint_score: float, post: dict[str, bool] | None, expected: str
) -> None:
    assert case_priority(case_type, complaint_score, 0.0, 0, RULES, post) == expected
