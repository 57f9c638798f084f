"""Tests for bot.nlu.complaint.ComplaintSignal, the NLU component, built as Rasa builds it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

import pytest
from rasa.engine.graph import ExecutionContext, GraphSchema
from rasa.engine.storage.local_model_storage import LocalModelStorage
from rasa.engine.storage.resource import Resource
from rasa.shared.nlu.constants import INTENT, TEXT
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData

from bot.nlu.complaint import COMPLAINT_KEY, ComplaintSignal, complaint_label
from bot.nlu.featurizer import CACHE_ENV, SentenceEncoderFeaturizer

CASES = frozenset({"order_status", "billing"})


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


def embedded(messages: List[Message]) -> List[Message]:
    featurizer = SentenceEncoderFeaturizer.create(
        SentenceEncoderFeaturizer.get_default_config(), None, Resource("e"), ExecutionContext(GraphSchema({}), "t")  # type: ignore[arg-type]
    )
    return featurizer.process(messages)


TRAINING: Dict[str, List[str]] = {
    "complaint": ["worst service ever", "nobody answers my emails", "your staff were so rude to me", "this is a joke",
                  "waited an hour on hold and got cut off", "i'm really disappointed with you", "never shopping here again",
                  "the driver was rude and left early", "third time this week the app is down, unreal"],
    "product_issue": ["my kettle stopped working", "the app keeps crashing", "screen cracked on arrival", "wifi keeps dropping",
                      "the zip broke first time i used it", "no signal since monday"],
    "thank": ["thanks so much", "cheers for the help", "thank you, sorted", "appreciate it", "thanks a lot for the quick reply"],
    "compliment": ["love the new sofa", "best shop ever", "your team is brilliant", "great quality as always",
                   "the delivery guy was lovely"],
    "product_question": ["do you have it in blue", "how much is the queen mattress", "is it waterproof", "what sizes are there",
                         "do you ship to ireland", "when does the sale start"],
    "order_status": ["where is my order", "has my parcel shipped", "my order still hasn't arrived after 3 weeks",
                     "tracking says delivered but nothing here"],
}


def trained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **config: Any) -> ComplaintSignal:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache.sqlite"))
    messages = embedded([Message(data={TEXT: t, INTENT: i}) for i, texts in TRAINING.items() for t in texts])
    component = make_component(tmp_path, case_intents=sorted(CASES), **config)
    component.train(TrainingData(messages))
    return component


def test_default_config() -> None:
    assert ComplaintSignal.get_default_config()["threshold"] == "auto"
    assert ComplaintSignal.get_default_config()["complaint_intents"] == ["complaint", "product_issue"]
    assert ComplaintSignal.get_default_config()["praise_intents"] == ["thank", "compliment"]


@pytest.mark.parametrize(
    ("text", "intent", "confidence", "expected"),
    [
        # Untrained: the lexical cues and the classifier's intent only.
        ("do you have this in blue?", "product_question", 0.88, {"is_complaint": False, "score": 0.0, "hostility": 0.0}),
        ("My parcel still hasn't arrived after 3 weeks", "order_status", 0.93,
         {"is_complaint": True, "score": 0.5, "hostility": 0.0}),
        ("my order is late", "order_status", 0.9, {"is_complaint": False, "score": 0.35, "hostility": 0.0}),
        ("WORST SERVICE EVER nobody answers!!!", "greet", 0.4, {"is_complaint": True, "score": 0.84, "hostility": 0.58}),
        # A complaint or a fault is evidence too, discounted to 90% of its confidence.
        ("you people are the pits", "complaint", 0.8, {"is_complaint": True, "score": 0.72, "hostility": 0.0}),
        ("you people are the pits", "complaint", 0.5, {"is_complaint": False, "score": 0.45, "hostility": 0.0}),
        ("the lid is wobbly", "product_issue", 0.9, {"is_complaint": True, "score": 0.81, "hostility": 0.0}),
        # Another intent's confidence is no evidence.
        ("you people are the pits", "billing", 0.99, {"is_complaint": False, "score": 0.0, "hostility": 0.0}),
    ],
)
def test_untrained_it_reads_cues_and_intents(
    tmp_path: Path, text: str, intent: str, confidence: float, expected: dict[str, Any]
) -> None:
    message = parsed(text, intent, confidence)

    returned = make_component(tmp_path).process([message])

    assert returned == [message]
    assert message.get(COMPLAINT_KEY) == {**expected, "sarcasm": False}
    # In the parse output (what /model/parse returns and the tracker stores).
    assert message.as_dict(only_output_properties=True)[COMPLAINT_KEY] == {**expected, "sarcasm": False}


def test_a_message_without_text_scores_zero(tmp_path: Path) -> None:
    # E.g. a message with only a photo, before any classifier has run.
    message = Message(data={TEXT: ""})

    make_component(tmp_path).process([message])

    assert message.get(COMPLAINT_KEY) == {"is_complaint": False, "score": 0.0, "hostility": 0.0, "sarcasm": False}


@pytest.mark.parametrize(
    ("intent", "text", "expected"),
    [
        ("complaint", "hello there", True),
        ("product_issue", "the zip is stuck", True),
        ("order_status", "where is my order", False),
        ("order_status", "my parcel still hasn't arrived", True),
        ("billing", "i was charged twice", True),
        ("product_question", "is it late night opening", False),
        ("thank", "thanks for nothing, still waiting, worst shop", True),
        ("thank", "thanks, it arrived late but fine", False),
    ],
)
def test_training_labels_come_from_intents_and_cues(intent: str, text: str, expected: bool) -> None:
    assert complaint_label(intent, text, frozenset({"complaint", "product_issue"}), CASES) is expected


def test_trained_it_hears_complaints_no_cue_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    component = trained(tmp_path, monkeypatch)
    calm, upset = embedded([parsed("can i pay with paypal", "product_question", 0.9),
                            parsed("sat on the tarmac for three hours with no food or water", "product_question", 0.4)])

    component.process([calm, upset])

    assert calm.get(COMPLAINT_KEY)["is_complaint"] is False
    assert upset.get(COMPLAINT_KEY)["is_complaint"] is True
    assert 0.3 <= component.threshold <= 0.8


@pytest.mark.parametrize(
    ("text", "intent", "expected_intent", "sarcasm"),
    [
        # Sarcastic praise becomes a complaint ...
        ("great, another week without my package. love it. thanks a lot", "thank", "complaint", True),
        ("amazing work guys 👏 third delay this week", "thank", "complaint", True),
        # ... sincere praise stays praise.
        ("thanks a lot, that sorted it", "compliment", "compliment", False),
        ("love the new jacket, fits perfectly", "compliment", "compliment", False),
    ],
)
def test_praise_that_reads_as_a_complaint_is_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, intent: str, expected_intent: str, sarcasm: bool
) -> None:
    component = trained(tmp_path, monkeypatch)
    [message] = embedded([parsed(text, intent, 0.7)])

    component.process([message])

    assert message.get(INTENT)["name"] == expected_intent
    assert message.get(COMPLAINT_KEY)["sarcasm"] is sarcasm
    assert message.get(COMPLAINT_KEY)["is_complaint"] is sarcasm


def test_persisted_and_loaded_it_scores_the_same(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    component = trained(tmp_path, monkeypatch)
    [before] = embedded([parsed("no wifi again, third night running", "product_issue", 0.3)])
    component.process([before])

    loaded = ComplaintSignal.load(ComplaintSignal.get_default_config(), LocalModelStorage(tmp_path),
                                  Resource("complaint"), ExecutionContext(GraphSchema({}), "test"))
    [after] = embedded([parsed("no wifi again, third night running", "product_issue", 0.3)])
    loaded.process([after])

    assert loaded.threshold == component.threshold
    assert after.get(COMPLAINT_KEY) == before.get(COMPLAINT_KEY)


@pytest.mark.parametrize(("threshold", "is_complaint"), [(0.35, True), (0.36, False), (1.0, False)])
def test_a_fixed_threshold_from_the_config(tmp_path: Path, threshold: float, is_complaint: bool) -> None:
    message = parsed("my order is late", "order_status", 0.9)

    make_component(tmp_path, threshold=threshold).process([message])

    assert message.get(COMPLAINT_KEY)["is_complaint"] is is_complaint


@pytest.mark.parametrize("threshold", [0, 0.0, -0.1, 1.01, 5])
def test_invalid_threshold_raises(tmp_path: Path, threshold: Any) -> None:
    with pytest.raises(ValueError, match=r"ComplaintSignal: threshold must be 'auto' or in \(0, 1\], got "):
        make_component(tmp_path, threshold=threshold)


def test_non_numeric_threshold_raises(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="could not convert string to float: 'high'"):
        make_component(tmp_path, threshold="high")


SPANISH_TRAINING: Dict[str, List[str]] = {
    "complaint": ["el peor servicio", "nadie contesta mis correos", "que verguenza de atencion", "estoy harto de esperar",
                  "nunca mas compro aqui", "muy decepcionado con vosotros"],
    "thank": ["muchas gracias", "gracias por la ayuda", "mil gracias"],
    "product_question": ["lo teneis en azul", "cuanto cuesta el colchon", "es impermeable"],
}


def test_another_language_gets_its_own_model_and_english_reads_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "en").mkdir()
    english_only = trained(tmp_path / "en", monkeypatch)
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache.sqlite"))
    tagged = {"intent": {"language": "es"}}
    messages = embedded(
        [Message(data={TEXT: t, INTENT: i}) for i, texts in TRAINING.items() for t in texts]
        + [Message(data={TEXT: t, INTENT: i, "metadata": tagged}) for i, texts in SPANISH_TRAINING.items() for t in texts]
    )
    (tmp_path / "both").mkdir()
    both = make_component(tmp_path / "both", case_intents=sorted(CASES))
    both.train(TrainingData(messages))

    assert english_only.other is None and both.other is not None
    assert both.threshold == english_only.threshold
    english = "thanks a lot, third delay this week"
    [a] = both.process(embedded([parsed(english, "thank", 0.8)]))
    [b] = english_only.process(embedded([parsed(english, "thank", 0.8)]))
    assert a.get(COMPLAINT_KEY) == b.get(COMPLAINT_KEY)

    loaded = ComplaintSignal.load(
        {**ComplaintSignal.get_default_config(), "case_intents": sorted(CASES)}, LocalModelStorage(tmp_path / "both"),
        Resource("complaint"), ExecutionContext(GraphSchema({}), "test"),
    )
    assert loaded.other is not None and loaded.other[1] == both.other[1]
    spanish = "una verguenza, nadie me contesta y estoy harto"
    [c] = loaded.process(embedded([parsed(spanish, "complaint", 0.6)]))
    assert c.get(COMPLAINT_KEY)["is_complaint"] is True
