"""An NLU component that tells the language of each message and keeps the classifier honest.

It adds to every parse result ``language`` (the language to answer in, or None when the
message says too little to change the conversation's) and ``language_detection`` (that,
plus whether the message was understood as written, what it looked like and why;
``bot.i18n.reply_language``). The channel's locale hint is read from the message metadata.

A message that is unclear, mixed, or in a language that is not switched on would still get
the classifier's likeliest intent, sometimes confidently, and a case would start under a
guessed type. For those the intent's confidence is set to zero, so the message becomes
``nlu_fallback``: the customer is told, in the closest switched-on language, that a person
will read it as written.

Which languages are switched on is support.yml's ``languages.answer_in`` (read once, when
the model loads), limited to the ``languages`` this model was trained for.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Text

from rasa.engine.graph import ExecutionContext, GraphComponent
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.shared.nlu.constants import INTENT, INTENT_RANKING_KEY, PREDICTED_CONFIDENCE_KEY, TEXT
from rasa.shared.nlu.training_data.message import Message

from bot.constants import LANGUAGE_METADATA_KEYS
from bot.i18n import DETECTION_KEY, KNOWN_LANGUAGES, LANGUAGE_KEY, detect_language, first_present, reply_language
from bot.i18n import understood_as_written, warm_up_detector

__all__ = ["DETECTION_KEY", "LANGUAGE_KEY", "LanguageGuard", "switched_on_languages", "understood_as_written"]
METADATA_KEY = "metadata"


def switched_on_languages(trained: List[str]) -> List[str]:
    """Return the languages support.yml switches on that the model was trained for, main one first."""
    from bot.ops import load_support_config

    answer_in = load_support_config().languages.answer_in
    return [code for code in answer_in if code in trained] or trained[:1]


@DefaultV1Recipe.register(DefaultV1Recipe.ComponentType.INTENT_CLASSIFIER, is_trainable=False)
class LanguageGuard(GraphComponent):
    """Adds the customer's language; a message not understood as written becomes unclear.

    Config:
        languages: ISO 639-1 codes the intents are trained for, the brand's main language
            first (default: every language FirstReply knows).
        answer_in: The languages switched on; None (the default) reads support.yml's
            ``languages.answer_in`` when the model loads.
    """

    @staticmethod
    def get_default_config() -> Dict[Text, Any]:
        """Return the component's defaults."""
        return {"languages": list(KNOWN_LANGUAGES), "answer_in": None}

    def __init__(self, config: Dict[Text, Any]) -> None:
        """Build the component from its config."""
        languages = config["languages"]
        if not languages or not all(isinstance(code, str) and code in KNOWN_LANGUAGES for code in languages):
            raise ValueError(
                f"LanguageGuard: languages must be a list of codes from {', '.join(KNOWN_LANGUAGES)}, got {languages!r}"
            )
        self._trained = [code.lower() for code in languages]
        answer_in = config.get("answer_in")
        self._on: Optional[List[str]] = [code for code in answer_in if code in self._trained] if answer_in else None

    # The signature is Rasa's GraphComponent.create, the same in every component (the graph calls it).
    @classmethod
    def create(
        cls,
        config: Dict[Text, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
    ) -> "LanguageGuard":
        """Create the component (it has nothing to train) and load lingua's models.

        Loading them takes seconds (a few on an idle machine, much more under load): it is
        done here, when the model loads, so no customer's first message waits for it.
        """
        warm_up_detector()
        return cls(config)

    @property
    def switched_on(self) -> List[str]:
        """Return the languages answered in (support.yml's, read on first use)."""
        if self._on is None:
            self._on = switched_on_languages(self._trained)
        return self._on

    def process(self, messages: List[Message]) -> List[Message]:
        """Add ``language`` and ``language_detection``; zero the intent of a message not understood."""
        for message in messages:
            metadata = message.get(METADATA_KEY)
            hint = first_present(metadata.get(key) for key in LANGUAGE_METADATA_KEYS) if isinstance(metadata, dict) else None
            reply = reply_language(detect_language(message.get(TEXT)), self.switched_on, hint)
            message.set(LANGUAGE_KEY, reply.code, add_to_output=True)
            message.set(DETECTION_KEY, reply.as_dict(), add_to_output=True)
            intent = message.get(INTENT)
            if reply.understood or not isinstance(intent, dict):
                continue
            message.set(INTENT, {**intent, PREDICTED_CONFIDENCE_KEY: 0.0}, add_to_output=True)
            ranking = message.get(INTENT_RANKING_KEY)
            if isinstance(ranking, list):
                message.set(
                    INTENT_RANKING_KEY,
                    [{**entry, PREDICTED_CONFIDENCE_KEY: 0.0} for entry in ranking],
                    add_to_output=True,
                )
        return messages
