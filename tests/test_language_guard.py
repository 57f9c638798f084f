"""The LanguageGuard NLU component: other languages become nlu_fallback, never a guessed case."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

import pytest
from rasa.engine.graph import ExecutionContext, GraphSchema
from rasa.engine.storage.local_model_storage import LocalModelStorage
from rasa.engine.storage.resource import Resource
from rasa.shared.nlu.training_data.message import Message

from bot.nlu.language_guard import LanguageGuard


def _guard(tmp_path: Path, **config: Any) -> LanguageGuard:
    return LanguageGuard.create(
        {**LanguageGuard.get_default_config(), **config},
        LocalModelStorage(tmp_path),
        Resource("guard"),
        ExecutionContext(GraphSchema({}), "test"),
    )


def _message(text: str) -> Message:
    message = Message(data={"text": text})
    message.set("intent", {"name": "product_issue", "confidence": 0.48}, add_to_output=True)
    message.set("intent_ranking", [{"name": "product_issue", "confidence": 0.48}, {"name": "billing", "confidence": 0.2}])
    return message


@pytest.mark.parametrize(
    ("text", "language", "confidence"),
    [
        ("my order hasn't arrived and I need help", "en", 0.48),
        ("bonjour, ma commande n'est pas arrivée et je suis très déçu", "fr", 0.0),
        ("hola, mi pedido no ha llegado todavía", "es", 0.0),
        ("мой заказ не пришёл", "ru", 0.0),
        ("ok", "en", 0.48),
    ],
)
def test_other_languages_lose_their_guessed_intent(tmp_path: Path, text: str, language: str, confidence: float) -> None:
    [message] = _guard(tmp_path).process([_message(text)])
    output: Dict[str, Any] = message.as_dict(only_output_properties=True)

    assert output["language"] == language
    assert message.get("intent") == {"name": "product_issue", "confidence": confidence}
    assert [entry["confidence"] for entry in message.get("intent_ranking")] == (
        [0.48, 0.2] if confidence else [0.0, 0.0]
    )


def test_served_languages_are_configurable(tmp_path: Path) -> None:
    [message] = _guard(tmp_path, languages=["en", "es"]).process([_message("hola, mi pedido no ha llegado todavía")])
    assert message.get("intent")["confidence"] == 0.48


def test_a_bad_language_list_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="languages must be a list of language codes"):
        _guard(tmp_path, languages=[])
