"""The LanguageGuard NLU component: the customer's language on every parse, and no guessed case for a message not understood."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

import pytest
from rasa.engine.graph import ExecutionContext, GraphSchema
from rasa.engine.storage.local_model_storage import LocalModelStorage
from rasa.engine.storage.resource import Resource
from rasa.shared.nlu.training_data.message import Message

from bot.nlu.language_guard import LanguageGuard, understood_as_written

ALL = ["en", "es", "fr", "de", "pt", "it"]


def _guard(tmp_path: Path, **config: Any) -> LanguageGuard:
    return LanguageGuard.create(
        {**LanguageGuard.get_default_config(), "answer_in": ALL, **config},
        LocalModelStorage(tmp_path),
        Resource("guard"),
        ExecutionContext(GraphSchema({}), "test"),
    )


def _message(text: str, metadata: Optional[Dict[str, Any]] = None) -> Message:
    message = Message(data={"text": text, "metadata": metadata})
    message.set("intent", {"name": "product_issue", "confidence": 0.48}, add_to_output=True)
    message.set("intent_ranking", [{"name": "product_issue", "confidence": 0.48}, {"name": "billing", "confidence": 0.2}])
    return message


@pytest.mark.parametrize(
    ("text", "language", "confidence"),
    [
        ("my order hasn't arrived and I need help", "en", 0.48),
        ("bonjour, ma commande n'est pas arrivée et je suis très déçu", "fr", 0.48),
        ("hola, mi pedido no ha llegado todavía", "es", 0.48),
        # Not switched on: answered in the closest switched-on language, intent dropped.
        ("Hallo, mijn bestelling is nog steeds niet aangekomen, wat is er aan de hand?", "de", 0.0),
        ("мой заказ до сих пор не пришёл, что случилось?", "en", 0.0),
        # Too short to tell: the conversation keeps its language.
        ("ok", None, 0.48),
    ],
)
def test_each_message_gets_its_language_and_only_understood_ones_keep_their_intent(
    tmp_path: Path, text: str, language: Optional[str], confidence: float
) -> None:
    [message] = _guard(tmp_path).process([_message(text)])
    output: Dict[str, Any] = message.as_dict(only_output_properties=True)

    assert output.get("language") == language
    assert understood_as_written(output) is (confidence > 0)
    assert message.get("intent") == {"name": "product_issue", "confidence": confidence}
    assert [entry["confidence"] for entry in message.get("intent_ranking")] == (
        [0.48, 0.2] if confidence else [0.0, 0.0]
    )


def test_the_channels_locale_is_a_hint(tmp_path: Path) -> None:
    [message] = _guard(tmp_path).process([_message("ok", {"language_code": "it"})])
    assert message.get("language") == "it"
    assert message.get("language_detection")["reason"] == "locale hint"


def test_only_switched_on_languages_are_answered_in(tmp_path: Path) -> None:
    [message] = _guard(tmp_path, answer_in=["en", "es"]).process([_message("bonjour, ma commande n'est pas arrivée")])
    assert message.get("language") in ("en", "es")
    assert message.get("intent")["confidence"] == 0.0
    assert message.get("language_detection")["detected"] == "fr"


def test_switched_on_languages_come_from_support_yml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    support = Path(__file__).resolve().parents[1] / "support.yml"
    text = support.read_text(encoding="utf-8").replace("answer_in: [en, es, fr, de, pt, it]", "answer_in: [en, de]")
    (tmp_path / "support.yml").write_text(text, encoding="utf-8")
    monkeypatch.setenv("FIRSTREPLY_SUPPORT_FILE", str(tmp_path / "support.yml"))

    guard = _guard(tmp_path, answer_in=None)

    assert guard.switched_on == ["en", "de"]


def test_a_bad_language_list_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="languages must be a list of codes from"):
        _guard(tmp_path, languages=["en", "xx"])
