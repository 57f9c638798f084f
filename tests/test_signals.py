"""Tests for bot.nlu.signals: complaint and hostility scores read from a message."""

from __future__ import annotations

import pytest

from bot.nlu.signals import Signals, read_signals


def evidence(*weights: float) -> float:
    """Return what independent cues of these weights combine to: ``1 - prod(1 - w)``, 3 places."""
    remaining = 1.0
    for weight in weights:
        remaining *= 1.0 - weight
    return round(1.0 - remaining, 3)


# Weights of the cues, as the module documents them, named so each case reads as its cues.
LATE = 0.35
NEVER_ARRIVED = 0.5
STILL_WAITING = 0.45
BROKEN = 0.4
CHARGED_TWICE = 0.5
NOBODY_ANSWERS = 0.55
WORST = 0.5
COMPLAIN = 0.5
FED_UP = 0.45
REFUND = 0.2
SWEARING = 0.6
LEGAL = 0.6
PUBLIC_SHAMING = 0.4
EXCLAMATIONS = 0.3
SHOUTING = 0.4


@pytest.mark.parametrize(
    ("text", "breach_cues", "hostile_cues"),
    [
        # Calm questions: nothing at all.
        ("Hi, do you have the blue jacket in size M?", (), ()),
        ("What time do you open on Saturday?", (), ()),
        ("Can I change the delivery address on my order?", (), ()),
        # One breach cue.
        ("My parcel still hasn't arrived after 3 weeks", (NEVER_ARRIVED,), ()),
        ("my order is late", (LATE,), ()),
        ("The item arrived broken", (BROKEN,), ()),
        ("I was charged twice for one order", (CHARGED_TWICE,), ()),
        ("I want a refund please", (REFUND,), ()),
        ("I'd like to make a complaint", (COMPLAIN,), ()),
        # Repeated letters are squeezed, so a stretched word still matches.
        ("stilllll waiting on my parcel", (STILL_WAITING,), ()),
        # Two breach cues.
        ("My order is late and the box was damaged", (LATE, BROKEN), ()),
        ("I'm fed up, the order never arrived", (FED_UP, NEVER_ARRIVED), ()),
        # Hostile cues on their own still count (halved) as breach evidence.
        ("this is fucking ridiculous", (WORST,), (SWEARING,)),
        ("your staff are idiots", (), (SWEARING,)),
        ("I will be contacting my lawyer", (), (LEGAL,)),
        ("Sort it out or I will take legal action", (), (LEGAL,)),
        ("I'll sue you", (), (LEGAL,)),
        ("I will post this on twitter", (), (PUBLIC_SHAMING,)),
        ("where is it!!!", (), (EXCLAMATIONS,)),
        # Shouting: at least three words of 3+ letters, most of them in capitals.
        ("WHERE ARE YOU", (), (SHOUTING,)),
        ("WORST SERVICE EVER nobody answers!!!", (NOBODY_ANSWERS, WORST), (EXCLAMATIONS, SHOUTING)),
    ],
)
def test_scores_follow_the_combination_of_the_cues_found(
    text: str, breach_cues: tuple[float, ...], hostile_cues: tuple[float, ...]
) -> None:
    hostility = evidence(*hostile_cues)
    halved_hostility = (hostility / 2,) if hostility else ()

    assert read_signals(text) == Signals(
        complaint_score=evidence(*breach_cues, *halved_hostility), hostility=hostility
    )


def test_the_angriest_message_reads_as_a_hostile_complaint() -> None:
    signals = read_signals("WORST SERVICE EVER nobody answers!!!")

    assert signals == Signals(complaint_score=0.84, hostility=0.58)
    assert signals.is_complaint() is True


@pytest.mark.parametrize(
    ("text", "is_complaint"),
    [
        ("Hi, do you have the blue jacket in size M?", False),
        ("my order is late", False),
        ("My parcel still hasn't arrived after 3 weeks", True),
        ("Still waiting, weeks and nothing, absolutely unacceptable", True),
        ("You charged me twice and nobody replies to my emails. Disgraceful.", True),
        ("I will be contacting my lawyer", False),
    ],
)
def test_is_complaint_at_the_default_threshold(text: str, is_complaint: bool) -> None:
    assert read_signals(text).is_complaint() is is_complaint


def test_several_strong_cues_score_near_certainty() -> None:
    signals = read_signals(
        "Third time I've written. The order never arrived, nobody answers and it's a total scam, I'm furious"
    )

    assert signals.complaint_score >= 0.95
    assert signals.hostility == 0.0


@pytest.mark.parametrize(
    ("threshold", "is_complaint"), [(0.34, True), (0.35, True), (0.36, False)]
)
def test_is_complaint_includes_the_threshold(threshold: float, is_complaint: bool) -> None:
    assert read_signals("my order is late").is_complaint(threshold) is is_complaint


@pytest.mark.parametrize(
    "text",
    [
        # Fewer than three words of three or more letters: not shouting.
        "WHERE IS IT",
        "NOT OK",
        "WHERE IS MY ORDER",
        # Three words but mostly lower case.
        "where is my ORDER please",
    ],
)
def test_short_or_mostly_lowercase_capitals_are_not_shouting(text: str) -> None:
    assert read_signals(text) == Signals(0.0, 0.0)


def test_shouting_needs_sixty_percent_of_the_words_in_capitals() -> None:
    # 3 of 5 words in capitals is 60%: shouting; 2 of 5 is not.
    assert read_signals("WHERE THE HECK is everyone").hostility == SHOUTING
    assert read_signals("WHERE THE heck is everyone").hostility == 0.0


@pytest.mark.parametrize("text", ["", None])
def test_no_text_scores_zero(text: str | None) -> None:
    assert read_signals(text) == Signals(complaint_score=0.0, hostility=0.0)


def test_matching_ignores_case() -> None:
    assert read_signals("My Order Is LATE") == read_signals("my order is late")
