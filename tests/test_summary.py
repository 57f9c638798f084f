"""Tests for bot.summary: the one-paragraph case summary."""

from __future__ import annotations

import pytest

from bot.summary import MAX_QUOTE_CHARS, answer_label, compose_summary


@pytest.mark.parametrize(
    ("slot", "label"),
    [("order_number", "order number"), ("account_email", "account email"), ("product", "product")],
)
def test_answer_label_reads_the_slot_name_as_words(slot: str, label: str) -> None:
    assert answer_label(slot) == label


@pytest.mark.parametrize(
    ("case_label", "answers", "first_message", "corrections", "expected"),
    [
        (
            "Where my order is",
            {},
            None,
            (),
            "Where my order is.",
        ),
        (
            "where my order is.",
            {},
            "",
            (),
            "Where my order is.",
        ),
        (
            # Answers keep the order they are given in (the order the form asks them).
            "Where my order is",
            {"order_number": "AC-2291734", "delivery_problem": "It's late"},
            "Where is my parcel?",
            (),
            "Where my order is. Order number: AC-2291734; delivery problem: It's late."
            " In your words: “Where is my parcel?”.",
        ),
        (
            # A final full stop is not doubled; the quote has its whitespace collapsed.
            "A complaint about our service",
            {"complaint_detail": "the driver was rude", "desired_outcome": "an apology."},
            "Your driver   swore at me\n\nyesterday",
            (),
            "A complaint about our service. Complaint detail: the driver was rude; desired outcome: "
            "an apology. In your words: “Your driver swore at me yesterday”.",
        ),
        (
            "A payment, charge or invoice",
            {"billing_problem": "I was charged twice"},
            "I was charged twice for order 48213",
            ["It was on 3 March.", "  The amount was  £40 "],
            "A payment, charge or invoice. Billing problem: I was charged twice."
            " In your words: “I was charged twice for order 48213”."
            " You added: “It was on 3 March.”. You added: “The amount was £40”.",
        ),
    ],
)
def test_compose_summary(
    case_label: str,
    answers: dict[str, str],
    first_message: str | None,
    corrections: tuple[str, ...] | list[str],
    expected: str,
) -> None:
    assert compose_summary(case_label, answers, first_message, corrections) == expected


def test_a_long_first_message_is_quoted_up_to_the_limit_with_an_ellipsis() -> None:
    message = "word " * 100  # 499 characters once trimmed

    summary = compose_summary("A faulty product or a bug", {}, message)

    quoted = ("word " * 48).rstrip() + "…"  # the first 239 characters, trailing space dropped
    assert summary == f"A faulty product or a bug. In your words: “{quoted}”."
    assert len(quoted) <= MAX_QUOTE_CHARS


def test_a_first_message_of_exactly_the_limit_is_quoted_whole() -> None:
    message = "x" * MAX_QUOTE_CHARS

    assert compose_summary("Label", {}, message) == f"Label. In your words: “{message}”."


def test_a_long_correction_is_capped_like_the_first_message() -> None:
    summary = compose_summary("Label", {}, None, ["y" * (MAX_QUOTE_CHARS + 1)])

    assert summary == f"Label. You added: “{'y' * (MAX_QUOTE_CHARS - 1)}…”."
