"""Tests for the blended intent classifier and the sentence-encoder featurizer, built as Rasa builds them."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import pytest
from rasa.engine.graph import ExecutionContext, GraphSchema
from rasa.engine.storage.local_model_storage import LocalModelStorage
from rasa.engine.storage.resource import Resource
from rasa.shared.nlu.constants import INTENT, TEXT
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData

from bot.nlu.featurizer import CACHE_ENV, EmbeddingCache, SentenceEncoderFeaturizer, sentence_embedding
from bot.nlu.intent_classifier import BlendedIntentClassifier, rejection_threshold

EXAMPLES: Dict[str, List[str]] = {
    "order_status": ["where is my order", "my parcel hasn't arrived", "tracking not updating", "when will my package come",
                     "delivery is late", "order still not here", "has my order shipped", "where's my stuff"],
    "account_access": ["i can't log in", "forgot my password", "my account is locked", "reset password please",
                       "login not working", "verification code never comes", "locked out of my account", "cant sign in"],
    "billing": ["i was charged twice", "unknown charge on my card", "payment declined", "wrong amount taken",
                "double charged", "why was i billed again", "my card payment failed", "refund the extra charge"],
    "out_of_scope": ["what's the weather tomorrow", "tell me a joke", "how tall is everest", "best pizza recipe",
                     "who won the football", "translate hello to french", "what is 12 times 7", "recommend a movie"],
}


def _context() -> ExecutionContext:
    return ExecutionContext(GraphSchema({}), "test")


def featurizer() -> SentenceEncoderFeaturizer:
    config = SentenceEncoderFeaturizer.get_default_config()
    return SentenceEncoderFeaturizer.create(config, None, Resource("encoder"), _context())  # type: ignore[arg-type]


def training_data() -> TrainingData:
    return TrainingData([Message(data={TEXT: text, INTENT: intent}) for intent, texts in EXAMPLES.items() for text in texts])


def trained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **config: Any) -> BlendedIntentClassifier:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache.sqlite"))
    data = featurizer().process_training_data(training_data())
    classifier = BlendedIntentClassifier.create(
        {**BlendedIntentClassifier.get_default_config(), **config}, LocalModelStorage(tmp_path), Resource("clf"), _context()
    )
    classifier.train(data)
    return classifier


def parse(classifier: BlendedIntentClassifier, text: str) -> Message:
    message = Message(data={TEXT: text})
    featurizer().process([message])
    classifier.process([message])
    return message


def test_the_featurizer_adds_a_unit_sentence_vector() -> None:
    message = Message(data={TEXT: "@brand where is my parcel https://t.co/x"})

    featurizer().process([message])

    vector = sentence_embedding(message)
    # MiniLM's 384 numbers, then the multilingual encoder's 512, each a unit vector.
    assert vector is not None and vector.shape == (384 + 512,)
    assert abs(float(np.linalg.norm(vector[:384])) - 1.0) < 1e-5
    assert abs(float(np.linalg.norm(vector[384:])) - 1.0) < 1e-5
    assert sentence_embedding(Message(data={TEXT: "no features"})) is None


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        # No word in common with the examples: the embedding carries the meaning.
        ("the courier never showed up with my box", "order_status"),
        ("they took money from me two times", "billing"),
        ("what's the capital of australia", "out_of_scope"),
        ("@acme i cannot get into my profile, it keeps rejecting me", "account_access"),
    ],
)
def test_it_understands_what_no_example_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, intent: str
) -> None:
    # A vocabulary of 32 examples knows few words: the unknown-words guard is off here.
    classifier = trained(tmp_path, monkeypatch, max_in_scope_rejection=0.0, min_known_words=0.0)

    message = parse(classifier, text)

    assert message.get(INTENT)["name"] == intent
    ranking = message.get("intent_ranking")
    assert ranking[0]["name"] == intent
    assert abs(sum(entry["confidence"] for entry in ranking) - 1.0) < 1e-6


def test_below_the_learned_threshold_is_nlu_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    classifier = trained(tmp_path, monkeypatch)
    classifier.threshold = 0.99

    message = parse(classifier, "where is my order")

    assert message.get(INTENT) == {"name": "nlu_fallback", "confidence": 0.99}
    assert message.get("intent_ranking")[1]["name"] == "order_status"


def test_the_threshold_is_learned_by_cross_validation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loose = trained(tmp_path / "a", monkeypatch, max_in_scope_rejection=0.0)
    strict = trained(tmp_path / "b", monkeypatch, max_in_scope_rejection=0.3, max_threshold=0.95)

    assert loose.threshold == 0.0
    assert 0.0 < strict.threshold <= 0.95


def test_persisted_and_loaded_it_answers_the_same(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    classifier = trained(tmp_path, monkeypatch)
    before = parse(classifier, "they charged me twice").get("intent_ranking")

    loaded = BlendedIntentClassifier.load(
        BlendedIntentClassifier.get_default_config(), LocalModelStorage(tmp_path), Resource("clf"), _context()
    )

    assert loaded.threshold == classifier.threshold
    assert parse(loaded, "they charged me twice").get("intent_ranking") == before


def test_without_the_featurizer_it_says_what_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    classifier = trained(tmp_path, monkeypatch)

    with pytest.raises(ValueError, match="SentenceEncoderFeaturizer"):
        classifier.process([Message(data={TEXT: "hello"})])


def test_one_intent_is_not_enough(tmp_path: Path) -> None:
    classifier = BlendedIntentClassifier.create(
        BlendedIntentClassifier.get_default_config(), LocalModelStorage(tmp_path), Resource("clf"), _context()
    )

    with pytest.raises(ValueError, match="at least two intents"):
        classifier.train(TrainingData([Message(data={TEXT: "hi", INTENT: "greet"})]))


@pytest.mark.parametrize(
    ("confidences", "share", "ceiling", "expected"),
    [
        ([0.9, 0.8, 0.7, 0.6, 0.5], 0.0, 0.5, 0.0),
        ([0.9, 0.8, 0.7, 0.6, 0.5], 0.25, 0.9, 0.6),
        ([0.9, 0.8, 0.7, 0.6, 0.5], 0.25, 0.55, 0.55),
        ([], 0.1, 0.5, 0.0),
    ],
)
def test_rejection_threshold(confidences: List[float], share: float, ceiling: float, expected: float) -> None:
    assert rejection_threshold(np.asarray(confidences), share, ceiling) == pytest.approx(expected)


def test_the_embedding_cache_encodes_only_new_texts(tmp_path: Path) -> None:
    calls: List[List[str]] = []

    def encode(texts: List[str]) -> np.ndarray:
        calls.append(list(texts))
        return np.asarray([[float(len(text)), 1.0] for text in texts], dtype=np.float32)

    cache = EmbeddingCache(tmp_path / "c.sqlite", "model-1")
    first = cache.encode(["a", "bb", "a"], encode)
    second = cache.encode(["bb", "ccc"], encode)
    other_model = EmbeddingCache(tmp_path / "c.sqlite", "model-2").encode(["a"], encode)

    assert first.tolist() == [[1.0, 1.0], [2.0, 1.0], [1.0, 1.0]]
    assert second.tolist() == [[2.0, 1.0], [3.0, 1.0]]
    assert other_model.tolist() == [[1.0, 1.0]]
    assert calls == [["a", "bb"], ["ccc"], ["a"]]


def test_a_broken_cache_file_only_costs_time(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    path.write_bytes(b"not a database")

    vectors = EmbeddingCache(path, "m").encode(["x"], lambda texts: np.ones((len(texts), 2), dtype=np.float32))

    assert vectors.tolist() == [[1.0, 1.0]]


def test_two_problems_in_one_message_are_both_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    classifier = trained(tmp_path, monkeypatch, max_in_scope_rejection=0.0, problem_confidence=0.3, min_known_words=0.0)

    two = parse(classifier, "my parcel still hasn't arrived and i was charged twice for it")
    one = parse(classifier, "my parcel still hasn't arrived and the tracking is not updating")

    assert [p["intent"] for p in two.get("problems")] == ["order_status", "billing"]
    assert two.get("problems")[1]["text"] == "i was charged twice for it"
    assert one.get("problems") is None


@pytest.mark.parametrize("text", ["", "   ", "@acme", "https://t.co/abc"])
def test_nothing_to_read_is_unclear(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    classifier = trained(tmp_path, monkeypatch, max_in_scope_rejection=0.0)

    message = parse(classifier, text)

    assert message.get(INTENT) == {"name": "nlu_fallback", "confidence": 0.0}
    assert message.get("intent_ranking") == []


def test_words_the_examples_never_used_are_unclear(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    classifier = trained(tmp_path, monkeypatch, max_in_scope_rejection=0.0)

    assert parse(classifier, "blorp the frobnicator").get(INTENT)["name"] == "nlu_fallback"
    assert parse(classifier, "where is my parcl").get(INTENT)["name"] == "order_status"


def test_a_model_file_with_untrusted_types_is_not_loaded(tmp_path: Path) -> None:
    from rasa.shared.nlu.training_data.features import Features

    from bot.nlu.storage import load_model, save_model

    storage, resource = LocalModelStorage(tmp_path), Resource("x")
    save_model(storage, resource, {"unexpected": Features(np.zeros((1, 2)), "sentence", "text", "o")}, {"a": 1})

    with pytest.raises(ValueError, match="unexpected types"):
        load_model(storage, resource)
    save_model(storage, Resource("y"), None, {"threshold": 0.5})
    assert load_model(storage, Resource("y")) == (None, {"threshold": 0.5})


def test_the_featurizer_remembers_recent_texts(monkeypatch: pytest.MonkeyPatch) -> None:
    from bot.nlu import featurizer as module

    calls: List[List[str]] = []
    real = module.encode_texts

    def counting(texts: List[str], batch_size: int = 64) -> np.ndarray:
        calls.append(list(texts))
        return real(texts, batch_size)

    monkeypatch.setattr(module, "encode_texts", counting)
    monkeypatch.setattr(module, "_RECENT", module.BoundedCache(module.RECENT_TEXTS))
    encoder = featurizer()
    first, again, other = Message(data={TEXT: "It's late"}), Message(data={TEXT: "@x It's late"}), Message(data={TEXT: "yes"})

    encoder.process([first])
    encoder.process([again, other])

    assert calls == [["It's late"], ["yes"]]
    assert np.array_equal(sentence_embedding(first), sentence_embedding(again))


def test_the_bounded_cache_forgets_the_least_recently_used() -> None:
    from bot.nlu.featurizer import BoundedCache

    cache = BoundedCache(2)
    cache["a"], cache["b"] = 1, 2
    assert cache["a"] == 1
    cache["c"] = 3

    assert list(cache) == ["a", "c"]


# --- languages -----------------------------------------------------------------------------

SPANISH: Dict[str, List[str]] = {
    "order_status": ["donde esta mi pedido", "mi paquete no ha llegado", "el seguimiento no se mueve",
                     "cuando llega mi pedido", "mi pedido llega tarde", "todavia no tengo mi pedido"],
    "account_access": ["no puedo entrar en mi cuenta", "olvide mi contraseña", "mi cuenta esta bloqueada",
                       "no me llega el codigo", "no puedo iniciar sesion", "cambiar mi contraseña"],
    "billing": ["me cobraron dos veces", "un cargo que no conozco", "el pago fue rechazado", "me cobraron de mas",
                "cobro doble en mi tarjeta", "mi pago fallo"],
    "out_of_scope": ["que tiempo hace mañana", "cuentame un chiste", "quien gano el partido", "receta de paella",
                     "recomiendame una pelicula", "cuanto es 12 por 7"],
}


def _with_spanish() -> TrainingData:
    spanish = [
        Message(data={TEXT: text, INTENT: intent, "metadata": {"intent": {"language": "es"}}})
        for intent, texts in SPANISH.items()
        for text in texts
    ]
    return TrainingData(training_data().intent_examples + spanish)


def test_another_language_gets_its_own_model_and_the_main_one_is_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    english_only = trained(tmp_path / "en", monkeypatch)
    (tmp_path / "both").mkdir()
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache.sqlite"))
    both = BlendedIntentClassifier.create(
        BlendedIntentClassifier.get_default_config(), LocalModelStorage(tmp_path / "both"), Resource("clf"), _context()
    )
    both.train(featurizer().process_training_data(_with_spanish()))

    assert english_only.other is None and both.other is not None
    # An English message is read by a model trained as if no other language existed.
    assert parse(both, "they charged me twice").get("intent_ranking") == parse(
        english_only, "they charged me twice"
    ).get("intent_ranking")
    assert both.threshold == english_only.threshold
    # A Spanish one by the model that knows Spanish.
    assert parse(both, "hola, me habeis cobrado dos veces el mismo pedido").get(INTENT)["name"] == "billing"
    assert parse(both, "no puedo entrar en mi cuenta, la contraseña no funciona").get(INTENT)["name"] == "account_access"

    loaded = BlendedIntentClassifier.load(
        BlendedIntentClassifier.get_default_config(), LocalModelStorage(tmp_path / "both"), Resource("clf"), _context()
    )
    assert loaded.other is not None and loaded.other[2] == both.other[2]
    assert parse(loaded, "hola, me habeis cobrado dos veces el mismo pedido").get(INTENT)["name"] == "billing"
