"""Tests for the sentence encoder (bot.nlu.encoder) and the text clean-up before it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bot.nlu import encoder
from bot.nlu.encoder import ENCODER_DIR_ENV, EncoderNotInstalled, SentenceEncoder, find_model_dir, shared_encoder
from bot.nlu.text import for_classifier

REFERENCE = Path(__file__).parent / "fixtures" / "minilm_reference.json"


def test_the_vectors_equal_the_reference_implementation() -> None:
    # The fixture was computed with Hugging Face transformers' BertModel on PyTorch from the
    # same weights (mean pooling, L2 norm): the NumPy forward pass must give the same vectors.
    reference = json.loads(REFERENCE.read_text(encoding="utf-8"))
    vectors = shared_encoder().encode(reference["texts"])
    expected = np.asarray(reference["vectors"], dtype=np.float32)

    assert vectors.shape == (len(reference["texts"]), 384)
    assert np.abs(vectors - expected).max() < 1e-5


def test_one_at_a_time_equals_a_padded_batch() -> None:
    texts = ["hi", "my parcel never came and nobody answers my emails", "refund"]
    batch = shared_encoder().encode(texts)
    single = np.vstack([shared_encoder().encode([text]) for text in texts])

    assert np.abs(batch - single).max() < 1e-5
    assert np.allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)


def test_meaning_not_words() -> None:
    late, lost, password = shared_encoder().encode(
        ["my parcel never turned up", "the delivery hasn't arrived", "I forgot my password"]
    )

    assert float(late @ lost) > float(late @ password) + 0.2


def test_empty_and_very_long_texts() -> None:
    vectors = shared_encoder().encode(["", "word " * 2000])

    assert vectors.shape == (2, 384)
    assert np.isfinite(vectors).all()
    assert shared_encoder().encode([]).shape == (0, 384)


def test_the_model_is_found_where_setup_installs_it() -> None:
    folder = find_model_dir()

    assert (folder / "model.safetensors").is_file()
    assert (folder / "tokenizer.json").is_file()


def test_a_missing_model_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENCODER_DIR_ENV, str(tmp_path))
    monkeypatch.setattr(encoder.sys, "prefix", str(tmp_path))
    monkeypatch.setattr(encoder.sys, "path", [str(tmp_path)])

    with pytest.raises(EncoderNotInstalled, match="make setup"):
        find_model_dir()
    with pytest.raises(EncoderNotInstalled):
        SentenceEncoder()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("@AcmeHelp where is my order??", "where is my order??"),
        ("@115858 @acme_uk my app crashes https://t.co/abc123", "my app crashes"),
        ("Tom &amp; Jerry", "Tom & Jerry"),
        ("email me at ann@example.com", "email me at ann@example.com"),
        ("@brand", ""),
        ("[photo]", ""),
        ("[voice message]", ""),
        ("[photo] of the box", "[photo] of the box"),
        (None, ""),
        ("  lots   of\n\nspace ", "lots of space"),
    ],
)
def test_text_for_the_classifier(text: str | None, expected: str) -> None:
    assert for_classifier(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("great, another week without my package. love it. thanks a lot",
         ["great another week without my package", "love it", "thanks a lot"]),
        ("amazing work guys 👏 third delay this week", ["amazing work guys", "third delay this week"]),
        ("the lamp arrived smashed and on top of that i was charged twice",
         ["the lamp arrived smashed", "on top of that i was charged twice"]),
        ("salt and pepper", ["salt and pepper"]),
        ("ok. my parcel never came", ["ok my parcel never came"]),
        ("it broke, but the refund was quick", ["it broke", "the refund was quick"]),
        ("", []),
    ],
)
def test_clauses(text: str, expected: list[str]) -> None:
    from bot.nlu.text import clauses

    assert clauses(text) == expected


def test_words_are_what_the_classifier_reads() -> None:
    from bot.nlu.text import words

    assert words("@acme Can't log in!! https://x.co/1 2FA") == ["can't", "log", "in", "fa"]


def test_served_messages_are_embedded_on_one_blas_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    from threadpoolctl import ThreadpoolController
    from rasa.shared.nlu.training_data.message import Message

    from bot.nlu import featurizer

    seen: list[set[int]] = []
    real = featurizer.encode_texts

    def encode(texts: list, batch_size: int = 64) -> np.ndarray:
        seen.append({lib["num_threads"] for lib in ThreadpoolController().info() if lib["user_api"] == "blas"})
        return real(texts, batch_size)

    monkeypatch.setattr(featurizer, "encode_texts", encode)
    monkeypatch.setattr(featurizer, "_RECENT", featurizer.BoundedCache(featurizer.RECENT_TEXTS))
    component = featurizer.SentenceEncoderFeaturizer(featurizer.SentenceEncoderFeaturizer.get_default_config(), "encoder")
    outside = {lib["num_threads"] for lib in ThreadpoolController().info() if lib["user_api"] == "blas"}
    component.process([Message(data={"text": "where is my parcel"})])
    controller = featurizer._BLAS
    component.process([Message(data={"text": "it never came"})])
    featurizer.embed_recent(["a clause read on its own", "and another"])  # the classifier's clause pass

    assert seen == [{1}, {1}, {1}]
    assert {lib["num_threads"] for lib in ThreadpoolController().info() if lib["user_api"] == "blas"} == outside
    assert controller is not None and featurizer._BLAS is controller  # the library lookup is made once
