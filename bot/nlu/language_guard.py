"""An NLU component that keeps the classifier from guessing at other languages.

The intent classifier is trained on English. On a message in another language it still
names its likeliest intent, sometimes confidently, and a case would start with questions
the customer may not read, under a case type that is a guess. This component, placed
before the FallbackClassifier, adds the guessed language to the parse result
(``language``) and, for a language the assistant does not serve, sets the intent's
confidence to zero, so the message becomes ``nlu_fallback``: the customer is offered a
person, and the message is passed on as written.
"""

from __future__ import annotations

from typing import Any, Dict, List, Text

from rasa.engine.graph import ExecutionContext, GraphComponent
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.shared.nlu.constants import INTENT, INTENT_RANKING_KEY, PREDICTED_CONFIDENCE_KEY, TEXT
from rasa.shared.nlu.training_data.message import Message

from bot.language import guess_language

LANGUAGE_KEY = "language"


@DefaultV1Recipe.register(DefaultV1Recipe.ComponentType.INTENT_CLASSIFIER, is_trainable=False)
class LanguageGuard(GraphComponent):
    """Marks messages in languages the assistant does not serve as unclear.

    Config:
        languages: ISO 639-1 codes the intents are trained for (default ``["en"]``).
    """

    @staticmethod
    def get_default_config() -> Dict[Text, Any]:
        """Return the component's defaults."""
        return {"languages": ["en"]}

    def __init__(self, config: Dict[Text, Any]) -> None:
        """Build the component from its config."""
        languages = config["languages"]
        if not languages or not all(isinstance(code, str) for code in languages):
            raise ValueError(f"LanguageGuard: languages must be a list of language codes, got {languages!r}")
        self._languages = frozenset(code.lower() for code in languages)
        self._default = sorted(self._languages)[0]

    # The signature is Rasa's GraphComponent.create, the same in every component (the graph calls it).
    @classmethod
    def create(
        cls,
        config: Dict[Text, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
    ) -> "LanguageGuard":
        """Create the component (it has nothing to train)."""
        return cls(config)

    def process(self, messages: List[Message]) -> List[Message]:
        """Add ``language``; zero the intent confidence of a language not served."""
        for message in messages:
            language = guess_language(message.get(TEXT), default=self._default)
            message.set(LANGUAGE_KEY, language, add_to_output=True)
            intent = message.get(INTENT)
            if language in self._languages or not isinstance(intent, dict):
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
