"""Tests for the sentence encoder (bot.nlu.encoder) and the text clean-up before it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bot.nlu import encoder
from bot.nlu.encoder import BACKEND_ENV, BACKENDS, ENCODER_DIR_ENV, EncoderNotInstalled, SentenceEncoder, backend_from_env
from bot.nlu.encoder import find_model_dir, shared_encoder
from tests.processes import ROOT, base_env
from bot.nlu.text import for_classifier

REFERENCE = Path(__file__).parent / "fixtures" / "minilm_reference.json"


@pytest.fixture(scope="module", params=BACKENDS)
def each_backend(request: pytest.FixtureRequest) -> SentenceEncoder:
    return SentenceEncoder(backend=request.param)


def test_the_vectors_equal_the_reference_implementation(each_backend: SentenceEncoder) -> None:
    # The fixture was computed with Hugging Face transformers' BertModel on PyTorch from the
    # same weights (mean pooling, L2 norm): both forward passes must give the same vectors.
    reference = json.loads(REFERENCE.read_text(encoding="utf-8"))
    vectors = each_backend.encode(reference["texts"])
    expected = np.asarray(reference["vectors"], dtype=np.float32)

    assert vectors.shape == (len(reference["texts"]), 384)
    assert vectors.dtype == np.float32
    assert np.abs(vectors - expected).max() < 1e-5


def test_the_served_encoder_runs_on_tensorflow_unless_told_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(BACKEND_ENV, raising=False)
    assert backend_from_env() == "tensorflow"
    assert backend_from_env({BACKEND_ENV: " NumPy "}) == "numpy"
    with pytest.raises(ValueError, match="tensorflow, numpy"):
        backend_from_env({BACKEND_ENV: "torch"})
    with pytest.raises(ValueError, match="unknown encoder backend"):
        SentenceEncoder(backend="torch")


def test_the_graph_is_built_where_it_is_used_never_in_a_process_that_forks_after_loading() -> None:
    # bot.launcher loads the encoder before Rasa forks its workers: TensorFlow's threads would
    # not survive the fork, so loading must not start them; each worker builds its own graph.
    script = (
        "import multiprocessing, numpy as np\n"
        "from bot.launcher import preload_for_workers\n"
        "from bot.nlu.encoder import shared_encoder\n"
        "preload_for_workers()\n"
        "assert shared_encoder()._graph is None, 'the graph was built before the fork'\n"
        "def encode(text):\n"
        "    return shared_encoder().encode([text])[0].tolist()\n"
        "with multiprocessing.get_context('fork').Pool(2) as pool:\n"
        "    forked = pool.map(encode, ['where is my parcel', 'refund please'])\n"
        "here = shared_encoder().encode(['where is my parcel', 'refund please'])\n"
        "assert np.abs(np.asarray(forked) - here).max() < 1e-5\n"
        "print('ok', shared_encoder().backend)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          cwd=ROOT, env={**base_env(), BACKEND_ENV: "tensorflow"})  # fmt: skip

    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["ok", "tensorflow"]


def test_one_at_a_time_equals_a_padded_batch(each_backend: SentenceEncoder) -> None:
    texts = ["hi", "my parcel never came and nobody answers my emails", "refund"]
    batch = each_backend.encode(texts)
    single = np.vstack([each_backend.encode([text]) for text in texts])

    assert np.abs(batch - single).max() < 1e-5
    assert np.allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)


def test_meaning_not_words() -> None:
    late, lost, password = shared_encoder().encode(
        ["my parcel never turned up", "the delivery hasn't arrived", "I forgot my password"]
    )

    assert float(late @ lost) > float(late @ password) + 0.2


def test_empty_and_very_long_texts(each_backend: SentenceEncoder) -> None:
    vectors = each_backend.encode(["", "word " * 2000])

    assert vectors.shape == (2, 384)
    assert np.isfinite(vectors).all()
    assert each_backend.encode([]).shape == (0, 384)


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


def test_loading_the_model_runs_the_encoders_once_so_the_first_customer_does_not_trace_the_graph(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from rasa.engine.graph import ExecutionContext, GraphSchema
    from rasa.engine.storage.resource import Resource

    from bot.nlu.featurizer import SentenceEncoderFeaturizer

    served = shared_encoder()
    if served.backend != "tensorflow":
        pytest.fail(f"the tests run with {BACKEND_ENV} unset: the served encoder must be TensorFlow's")
    monkeypatch.setattr(served, "_graph", None)
    config = SentenceEncoderFeaturizer.get_default_config()
    SentenceEncoderFeaturizer.create(config, None, Resource("encoder"), ExecutionContext(GraphSchema({}), "m"))  # type: ignore[arg-type]

    assert served._graph is not None and served._graph_pid == os.getpid()
