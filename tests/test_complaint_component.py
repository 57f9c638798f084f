"""Tests for bot.nlu.complaint.ComplaintSignal, the NLU component, built as Rasa builds it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from rasa.engine.graph import ExecutionContext, GraphSchema
from rasa.engine.storage.local_model_storage import LocalModelStorage
from rasa.engine.storage.resource import Resource
from rasa.shared.nlu.constants import INTENT, TEXT
from rasa.shared.nlu.training_data.message import Message

from bot.nlu.complaint import COMPLAINT_KEY, ComplaintSignal


def make_component(tmp_path: Path, **config: Any) -> ComplaintSignal:
    """Create the component the way the graph runner does: defaults overridden by config.yml."""
    return ComplaintSignal.create(
        {**ComplaintSignal.get_default_config(), **config},
        LocalModelStorage(tmp_path),
        Resource("complaint"),
        ExecutionContext(GraphSchema({}), "test"),
    )


def parsed(text: str, intent: str, confidence: float) -> Message:
    """Return a message as it reaches the component at inference: text and predicted intent."""
    return Message(data={TEXT: text, INTENT: {"name": intent, "confidence": confidence}})


def test_default_config() -> None:
    assert ComplaintSignal.get_default_config() == {"threshold": 0.5, "complaint_intents": ["complaint"]}


@pytest.mark.parametrize(
    ("text", "intent", "confidence", "is_complaint", "score", "hostility"),
    [
        # Calm: nothing.
        ("do you have this in blue?", "product_question", 0.88, False, 0.0, 0.0),
        # The text's own cues: 0.5 is a complaint at the default threshold of 0.5.
        ("My parcel still hasn't arrived after 3 weeks", "order_status", 0.93, True, 0.5, 0.0),
        ("my order is late", "order_status", 0.9, False, 0.35, 0.0),
        ("WORST SERVICE EVER nobody answers!!!", "greet", 0.4, True, 0.84, 0.58),
        # The complaint intent is evidence too, discounted to 90% of its confidence.
        ("you people are the pits", "complaint", 0.8, True, 0.72, 0.0),
        ("you people are the pits", "complaint", 0.5, False, 0.45, 0.0),
        # ... taken instead of the cues when it is stronger, never added to them.
        ("WORST SERVICE EVER nobody answers!!!", "complaint", 0.95, True, 0.855, 0.58),
        ("I'd like to make a complaint", "complaint", 0.3, True, 0.5, 0.0),
        # Another intent's confidence is no evidence.
        ("you people are the pits", "product_issue", 0.99, False, 0.0, 0.0),
    ],
)
def test_process_adds_the_complaint_key(
    tmp_path: Path, text: str, intent: str, confidence: float, is_complaint: bool, score: float, hostility: float
) -> None:
    expected = {"is_complaint": is_complaint, "score": score, "hostility": hostility}
    message = parsed(text, intent, confidence)

    returned = make_component(tmp_path).process([message])

    assert returned == [message]
    assert message.get(COMPLAINT_KEY) == expected
    # In the parse output (what /model/parse returns and the tracker stores).
    assert COMPLAINT_KEY in message.output_properties
    assert message.as_dict(only_output_properties=True)[COMPLAINT_KEY] == expected


def test_process_handles_every_message_of_a_batch(tmp_path: Path) -> None:
    messages = [parsed("hi", "greet", 0.99), parsed("this is fucking ridiculous", "complaint", 0.2)]

    make_component(tmp_path).process(messages)

    assert [message.get(COMPLAINT_KEY) for message in messages] == [
        {"is_complaint": False, "score": 0.0, "hostility": 0.0},
        {"is_complaint": True, "score": 0.65, "hostility": 0.6},
    ]


def test_a_message_without_intent_or_text_scores_zero(tmp_path: Path) -> None:
    # E.g. a message with only a photo, before any classifier has run.
    message = Message(data={TEXT: ""})

    make_component(tmp_path).process([message])

    assert message.get(COMPLAINT_KEY) == {"is_complaint": False, "score": 0.0, "hostility": 0.0}


@pytest.mark.parametrize(("threshold", "is_complaint"), [(0.35, True), (0.36, False), (1.0, False)])
def test_threshold_from_the_config(tmp_path: Path, threshold: float, is_complaint: bool) -> None:
    message = parsed("my order is late", "order_status", 0.9)

    make_component(tmp_path, threshold=threshold).process([message])

    assert message.get(COMPLAINT_KEY) == {"is_complaint": is_complaint, "score": 0.35, "hostility": 0.0}


def test_complaint_intents_from_the_config(tmp_path: Path) -> None:
    message = parsed("you people are the pits", "product_issue", 1.0)

    make_component(tmp_path, complaint_intents=["complaint", "product_issue"]).process([message])

    assert message.get(COMPLAINT_KEY) == {"is_complaint": True, "score": 0.9, "hostility": 0.0}


@pytest.mark.parametrize("threshold", [0, 0.0, -0.1, 1.01, 5, "0"])
def test_invalid_threshold_raises(tmp_path: Path, threshold: Any) -> None:
    with pytest.raises(ValueError, match=r"ComplaintSignal: threshold must be in \(0, 1\], got "):
        make_component(tmp_path, threshold=threshold)


def test_non_numeric_threshold_raises(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="could not convert string to float: 'high'"):
        make_component(tmp_path, threshold="high")
