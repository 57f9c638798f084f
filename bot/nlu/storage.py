"""Saving and loading the trained NLU components' models: skops for the model, JSON for the rest.

skops rather than pickle: loading a model file runs no code beyond the types it was
told to trust: scikit-learn's, NumPy's, SciPy's and the classifier's feature pair.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Optional, Tuple

from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage

MODEL_FILE = "model.skops"
META_FILE = "meta.json"
# Library types, and the classifier's own pair of vectorizers (plain data, no code run on load).
TRUSTED_PREFIXES = ("sklearn.", "numpy.", "scipy.", "bot.nlu.intent_classifier.TextFeatures")


def save_model(storage: ModelStorage, resource: Resource, model: Optional[Any], meta: Dict[str, Any]) -> None:
    """Write ``model`` (if any) and ``meta`` to the component's place in the model archive."""
    import skops.io as sio

    with storage.write_to(resource) as folder:
        if model is not None:
            sio.dump(model, folder / MODEL_FILE)
        (folder / META_FILE).write_text(json.dumps(meta), encoding="utf-8")


def load_model(storage: ModelStorage, resource: Resource) -> Tuple[Optional[Any], Dict[str, Any]]:
    """Return the saved model (``None`` if none was saved) and its metadata.

    Raises:
        ValueError: nothing was saved for ``resource``, or the file holds types that are
            trusted (``TRUSTED_PREFIXES``).
    """
    import skops.io as sio

    with storage.read_from(resource) as folder:
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
        path = folder / MODEL_FILE
        if not path.exists():
            return None, meta
        untrusted = sio.get_untrusted_types(file=path)
        foreign = [name for name in untrusted if not name.startswith(TRUSTED_PREFIXES)]
        if foreign:
            raise ValueError(f"unexpected types in {path}: {foreign}")
        return sio.load(path, trusted=untrusted), meta
