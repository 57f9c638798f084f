"""A Rasa featurizer that adds a sentence embedding to every message.

Placed after the tokenizer, it adds a dense *sentence* feature to the message's text: the
unit vectors of the configured encoders, side by side. The classifiers read it next to the
sparse word and character n-grams: the n-grams know the exact words of the training
examples, the embedding knows what a message *means*, so "parcel never came" lands near
"where is my order" though they share no word.

Two encoders, each a unit vector (``encoders`` in config.yml, both by default):

- ``all-minilm-l6-v2`` (:mod:`bot.nlu.encoder`, 384 numbers): English, the finer of the two
  on English messages;
- ``use-multilingual-v3`` (:mod:`bot.nlu.multilingual`, 512 numbers): 16 languages in one
  space, so a Spanish or German message lands near the English examples that mean the same.

Measured on real customer messages (docs/nlu.md): both together read English best, and the
multilingual one lifts the other languages from about a third right to about half.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Text, Tuple

import numpy as np
from rasa.engine.graph import ExecutionContext, GraphComponent
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.nlu.featurizers.dense_featurizer.dense_featurizer import DenseFeaturizer
from rasa.shared.nlu.constants import TEXT
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData

from bot.nlu.encoder import shared_encoder
from bot.nlu.multilingual import shared_multilingual_encoder
from bot.nlu.text import for_classifier

logger = logging.getLogger(__name__)

RECENT_TEXTS = 4096


class BoundedCache(OrderedDict):
    """A dict that forgets its oldest entries beyond ``size`` (least recently used first)."""

    def __init__(self, size: int) -> None:
        """Create an empty cache for at most ``size`` entries."""
        super().__init__()
        self._size = size

    def __getitem__(self, key: Any) -> Any:
        value = super().__getitem__(key)
        self.move_to_end(key)
        return value

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, value)
        self.move_to_end(key)
        while len(self) > self._size:
            del self[next(iter(self))]

ENCODER_ALIAS = "sentence_encoder"
CACHE_ENV = "FIRSTREPLY_EMBEDDING_CACHE"
_DEFAULT_CACHE = Path(".rasa") / "firstreply-embeddings.sqlite"
MINILM = "all-minilm-l6-v2"
MULTILINGUAL = "use-multilingual-v3"
ENCODERS = (MINILM, MULTILINGUAL)
# The encoders in use in this process, in the order their vectors are laid side by side. Set
# by the featurizer from its config; the components that encode a message's clauses
# (the classifier, the complaint signal) read the same through :func:`embed_recent`.
_ACTIVE: Tuple[str, ...] = ENCODERS


def _minilm_weights() -> Path:
    from bot.nlu.encoder import find_model_dir

    return find_model_dir() / "model.safetensors"


def _multilingual_weights() -> Path:
    from bot.nlu.multilingual import weights_file

    return weights_file()


# Each encoder by name: how this process gets it, and its weights file (which names its vectors in caches).
_PARTS: Dict[str, Tuple[Callable[[], Any], Callable[[], Path]]] = {
    MINILM: (shared_encoder, _minilm_weights),
    MULTILINGUAL: (shared_multilingual_encoder, _multilingual_weights),
}


def active_encoders() -> List[Any]:
    """Return the encoders in use, loading them if this process has not yet."""
    return [_PARTS[name][0]() for name in _ACTIVE]


def encode_texts(texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """Return the vectors of ``texts`` from every encoder in use, side by side."""
    parts = [encoder.encode(list(texts), batch_size=batch_size) for encoder in active_encoders()]
    return np.hstack(parts).astype(np.float32)


def _check_encoders(names: Any) -> None:
    """Raise ``ValueError`` unless ``names`` is a list of one or both known encoders."""
    if not isinstance(names, (list, tuple)) or not names or any(name not in ENCODERS for name in names):
        raise ValueError(f"SentenceEncoderFeaturizer: encoders must be a list of one or both of {list(ENCODERS)}, "
                         f"got {names!r}")


def use_encoders(names: Sequence[str]) -> None:
    """Make ``names`` the encoders of this process (the featurizer's ``encoders``)."""
    global _ACTIVE
    _check_encoders(names)
    chosen = tuple(dict.fromkeys(names))
    if chosen != _ACTIVE:
        with _RECENT_LOCK:
            _RECENT.clear()
        _ACTIVE = chosen


class EmbeddingCache:
    """Embeddings of training texts kept between trainings (a SQLite file).

    Retraining after ops change a few examples encodes only the new ones. The key is
    the text and the encoder's weights file, so new weights never reuse old vectors.
    Anything wrong with the file only costs the time of encoding again.
    """

    def __init__(self, path: Path, model_id: str) -> None:
        """Open (or create) the cache at ``path`` for the encoder identified by ``model_id``."""
        self._path = path
        self._model_id = model_id

    @classmethod
    def default(cls) -> Optional["EmbeddingCache"]:
        """Return the cache at ``$FIRSTREPLY_EMBEDDING_CACHE`` or ``.rasa/``; ``None`` if set to ``off``."""
        setting = os.environ.get(CACHE_ENV, "")
        if setting.lower() == "off":
            return None
        ids = []
        for name in _ACTIVE:
            weights = _PARTS[name][1]()
            stat = weights.stat()
            ids.append(f"{weights}:{stat.st_size}:{int(stat.st_mtime)}")
        return cls(Path(setting) if setting else _DEFAULT_CACHE, "+".join(ids))

    def _key(self, text: str) -> str:
        return hashlib.sha256(f"{self._model_id}\n{text}".encode("utf-8")).hexdigest()

    def _connect(self) -> sqlite3.Connection:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self._path)
        connection.execute("CREATE TABLE IF NOT EXISTS embedding (key TEXT PRIMARY KEY, vector BLOB NOT NULL)")
        return connection

    def encode(self, texts: Sequence[str], encode: Any) -> np.ndarray:
        """Return the embeddings of ``texts``, computing with ``encode`` only those not cached."""
        keys = [self._key(text) for text in texts]
        found: Dict[str, np.ndarray] = {}
        try:
            with self._connect() as connection:
                for start in range(0, len(keys), 500):
                    chunk = keys[start:start + 500]
                    rows = connection.execute(
                        f"SELECT key, vector FROM embedding WHERE key IN ({','.join('?' * len(chunk))})", chunk
                    ).fetchall()
                    found.update((key, np.frombuffer(blob, dtype=np.float32)) for key, blob in rows)
        except sqlite3.Error as error:
            logger.warning("Embedding cache %s unreadable (%s); encoding everything", self._path, error)
        missing = sorted({i for i, key in enumerate(keys) if key not in found}, key=lambda i: keys[i])
        unique = list(dict.fromkeys(texts[i] for i in missing))
        if unique:
            vectors = encode(unique)
            fresh = {self._key(text): vector for text, vector in zip(unique, vectors)}
            found.update(fresh)
            try:
                with self._connect() as connection:
                    connection.executemany("INSERT OR REPLACE INTO embedding VALUES (?, ?)",
                                           [(key, vector.astype(np.float32).tobytes()) for key, vector in fresh.items()])
            except sqlite3.Error as error:
                logger.warning("Embedding cache %s not written (%s)", self._path, error)
        logger.info("Embedded %d training texts (%d from the cache)", len(texts), len(texts) - len(unique))
        return np.vstack([found[key] for key in keys])


# Many messages are the same few words ("yes", "It's late", a button's title): the last few
# thousand texts' vectors are kept, for the featurizer and for the components that read a
# message clause by clause, so neither encodes a text the other already did.
_RECENT = BoundedCache(RECENT_TEXTS)
_RECENT_LOCK = threading.Lock()


def embed_recent(texts: Sequence[str]) -> np.ndarray:
    """Return the embeddings of ``texts`` (already tidied), encoding only those not seen lately.

    Encoded on one BLAS thread: a served message or its clauses are a handful of tokens, and a
    second BLAS thread saves a few milliseconds of wall time but spins for many more of CPU,
    which concurrent conversations need (measured in docs/nlu.md). The classifier's and the
    complaint signal's clause passes come through here too.
    """
    with _RECENT_LOCK:
        missing = [text for text in dict.fromkeys(texts) if text not in _RECENT]
    vectors: Any = []
    if missing:
        with _one_blas_thread():
            vectors = encode_texts(missing)
    with _RECENT_LOCK:
        for text, vector in zip(missing, vectors):
            _RECENT[text] = vector
        return np.vstack([_RECENT[text] for text in texts])


def sentence_embedding(message: Message) -> np.ndarray | None:
    """Return the message's sentence embedding (the encoders' vectors side by side), or ``None`` if it has none."""
    for feature in message.features:
        if feature.attribute == TEXT and feature.type == "sentence" and feature.origin == ENCODER_ALIAS:
            return np.asarray(feature.features, dtype=np.float32).reshape(-1)
    return None



_BLAS: Any = None


def _one_blas_thread() -> Any:
    """Return a context that keeps BLAS (NumPy's OpenBLAS) on one thread while it is open.

    threadpoolctl's ``threadpool_limits`` looks up every loaded library on each call (about
    17 ms of CPU in a Rasa server, which loads TensorFlow's): here the lookup is made once per
    process and its controller kept.
    """
    global _BLAS
    if _BLAS is None:
        from threadpoolctl import ThreadpoolController

        _BLAS = ThreadpoolController()
    return _BLAS.limit(limits=1, user_api="blas")

@DefaultV1Recipe.register(DefaultV1Recipe.ComponentType.MESSAGE_FEATURIZER, is_trainable=False)
class SentenceEncoderFeaturizer(DenseFeaturizer, GraphComponent):
    """Adds the sentence embedding of the configured encoders as a dense sentence feature.

    Config:
        encoders: Which encoders, in order (default both: ``all-minilm-l6-v2``,
            ``use-multilingual-v3``). ``[use-multilingual-v3]`` alone saves MiniLM's forward
            pass per message for some points of English accuracy (docs/nlu.md).
        batch_size: How many training examples are encoded at once (default 64).
    """

    @staticmethod
    def get_default_config() -> Dict[Text, Any]:
        """Return the component's defaults."""
        return {**DenseFeaturizer.get_default_config(), "alias": ENCODER_ALIAS, "batch_size": 64,
                "encoders": list(ENCODERS)}

    @classmethod
    def validate_config(cls, config: Dict[Text, Any]) -> None:
        """Check the batch size and the encoders."""
        if int(config.get("batch_size") or 0) < 1:
            raise ValueError(f"SentenceEncoderFeaturizer: batch_size must be at least 1, got {config.get('batch_size')!r}")
        _check_encoders(config.get("encoders", list(ENCODERS)))

    @staticmethod
    def required_packages() -> List[Text]:
        """Return the packages the component needs."""
        return ["tokenizers", "safetensors"]

    def __init__(self, config: Dict[Text, Any], name: Text) -> None:
        """Build the featurizer; the encoder loads on first use."""
        super().__init__(name, config)
        self._batch_size = int(config["batch_size"])
        use_encoders(config.get("encoders") or ENCODERS)

    # The signature is Rasa's GraphComponent.create, the same in every component (the graph calls it).
    @classmethod
    def create(
        cls,
        config: Dict[Text, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
    ) -> "SentenceEncoderFeaturizer":
        """Create the component (nothing to train: the encoder is pre-trained)."""
        cls.validate_config(config)
        component = cls(config, execution_context.node_name)
        # Load the weights and run each encoder once now (TensorFlow traces MiniLM's graph on its
        # first pass, about a second), so that the first customer waits for neither.
        for encoder in active_encoders():
            encoder.encode(["hello"])
        return component

    def process_training_data(self, training_data: TrainingData) -> TrainingData:
        """Embed every training example that has text, in batches, reusing cached vectors."""
        messages = [message for message in training_data.training_examples if message.get(TEXT)]
        if not messages:
            return training_data
        texts = [for_classifier(message.get(TEXT)) for message in messages]
        cache = EmbeddingCache.default()
        encode = lambda batch: encode_texts(batch, batch_size=self._batch_size)  # noqa: E731
        vectors = cache.encode(texts, encode) if cache else encode(texts)
        self._attach(messages, vectors)
        return training_data

    def process(self, messages: List[Message]) -> List[Message]:
        """Embed each message that has text (on one BLAS thread, see :func:`embed_recent`)."""
        self._embed([message for message in messages if message.get(TEXT)])
        return messages

    def _embed(self, messages: List[Message]) -> None:
        if not messages:
            return
        self._attach(messages, embed_recent([for_classifier(message.get(TEXT)) for message in messages]))

    def _attach(self, messages: List[Message], vectors: np.ndarray) -> None:
        for message, vector in zip(messages, vectors):
            self.add_features_to_message(sequence=None, sentence=vector[None, :], attribute=TEXT, message=message)
