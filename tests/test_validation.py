"""Tests for bot.validation: the checks of the customer's answers to the questions."""

from __future__ import annotations

import pytest

from bot.validation import MAX_ANSWER_CHARS, email, free_text, order_number, says_not_known


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("#48213", "48213"),
        ("AC-2291734", "AC-2291734"),
        ("ac2291734", "AC2291734"),
        ("ac-2291734", "AC-2291734"),
        ("my order is 7781234 thanks", "7781234"),
        ("It's #48213.", "48213"),
        ("AC-2291734, thanks", "AC-2291734"),
        ("order 1234567890", "1234567890"),
        # The first number wins when there are several.
        ("either 48213 or 48214", "48213"),
    ],
)
def test_order_number_is_found_and_normalised(text: str, expected: str) -> None:
    assert order_number(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "1234",  # too short
        "call me on 07700900123",  # phone-like: 11 digits
        "+447700900123",
        "ABCD-12345",  # prefix too long
        "A-12345",  # prefix too short
        "x12345",
        "order-12345",  # part of a longer token
        "12345-6789",
        "I don't have it",
        "",
        None,
    ],
)
def test_order_number_rejects_what_is_not_one(text: str | None) -> None:
    assert order_number(text) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("maria@example.com", "maria@example.com"),
        ("it's Maria.Keller+shop@Example.CO.UK thanks", "maria.keller+shop@example.co.uk"),
        ("o'brien@mail.ie", "o'brien@mail.ie"),
        ("MARIA@EXAMPLE.COM.", "maria@example.com"),
    ],
)
def test_email_is_extracted_and_lowercased(text: str, expected: str) -> None:
    assert email(text) == expected


@pytest.mark.parametrize(
    "text", ["maria@localhost", "maria @example.com", "maria at example dot com", "", None]
)
def test_email_rejects_what_is_not_one(text: str | None) -> None:
    assert email(text) is None


@pytest.mark.parametrize(
    "text",
    [
        "no",
        "No.",
        "nope!",
        "nah",
        "skip",
        "n/a",
        "none",
        "idk",
        "pass",
        "I don't have it",
        "i dont know it",
        "I can't find it",
        "I can't remember",
        "no idea",
        "I have no idea, sorry",
        "not sure",
        "I lost the email",
        "I deleted it",
        "there's no order number",
        "I have no email",
    ],
)
def test_says_not_known(text: str) -> None:
    assert says_not_known(text) is True


@pytest.mark.parametrize(
    "text",
    [
        "AC-2291734",
        "yes",
        "nothing arrived",
        "November",
        "I know it",
        # "no" counts only as the whole answer: followed by the number, it is a correction
        # of the question's assumption, and the number is what the customer gave.
        "no, it's AC-2291734",
        "Nope, got it: 48213",
        "",
        None,
    ],
)
def test_does_not_say_not_known(text: str | None) -> None:
    assert says_not_known(text) is False


def test_no_followed_by_the_number_gives_the_number() -> None:
    assert (says_not_known("no, it's AC-2291734"), order_number("no, it's AC-2291734")) == (
        False,
        "AC-2291734",
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ok", "ok"),
        ("  it  broke \n\n badly ", "it broke badly"),
        ("\tThe zip\r\nbroke on day one  ", "The zip broke on day one"),
        ("5 5", "5 5"),
    ],
)
def test_free_text_is_trimmed_with_whitespace_collapsed(text: str, expected: str) -> None:
    assert free_text(text) == expected


@pytest.mark.parametrize("text", ["a", "!!", "  ?  ", "", "   ", "é", None])
def test_free_text_needs_two_word_characters(text: str | None) -> None:
    assert free_text(text) is None


def test_free_text_keeps_an_answer_of_exactly_the_cap() -> None:
    text = "x" * MAX_ANSWER_CHARS

    assert free_text(text) == text


def test_free_text_caps_a_long_answer_with_an_ellipsis() -> None:
    capped = free_text("word " * 400)

    assert capped == ("word " * 200).strip() + "…"
    assert len(capped) == MAX_ANSWER_CHARS


def test_free_text_cap_counts_after_whitespace_collapse() -> None:
    text = "a" + " " * 2000 + "b"

    assert free_text(text) == "a b"


@pytest.mark.parametrize(
    "text",
    ["no lo tengo", "je ne l'ai pas", "hab ich nicht", "não tenho", "non ce l'ho", "saltar", "passer", "überspringen",
     "salta", "pular", "no sé", "weiß ich nicht"],
)
def test_not_known_in_the_other_languages(text: str) -> None:
    # What utter_invalid_order_number and utter_invalid_email suggest saying, in each language.
    assert says_not_known(text) is True


@pytest.mark.parametrize("text", ["AC-2291734", "non-stop delivery please", "salta@example.com", "nonsense"])
def test_not_known_is_not_read_into_answers(text: str) -> None:
    assert says_not_known(text) is False
