"""An NLU component that adds a complaint signal to every parse result.

Placed in the ``config.yml`` pipeline after the intent classifier, it adds the
top-level key ``complaint`` = ``{"is_complaint": bool, "score": float}`` (and
``hostility``), which appears in ``/model/parse`` output and in the tracker's latest
message, where the actions read it to set the case priority.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Text

from rasa.engine.graph import ExecutionContext, GraphComponent
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.shared.nlu.constants import INTENT, INTENT_NAME_KEY, PREDICTED_CONFIDENCE_KEY, TEXT
from rasa.shared.nlu.training_data.message import Message

from bot.nlu.signals import read_signals

COMPLAINT_KEY = "complaint"


@DefaultV1Recipe.register(DefaultV1Recipe.ComponentType.INTENT_CLASSIFIER, is_trainable=False)
class ComplaintSignal(GraphComponent):
    """Scores each message for a breach of the customer's expectations.

    Config:
        threshold: Score at or above which ``is_complaint`` is true (default 0.5).
        complaint_intents: Intents whose confidence also counts as evidence (default
            ``["complaint"]``): a message the classifier reads as a complaint is one
            even when it uses none of the lexical cues.
    """

    @staticmethod
    def get_default_config() -> Dict[Text, Any]:
        """Return the component's defaults."""
        return {"threshold": 0.5, "complaint_intents": ["complaint"]}

    def __init__(self, config: Dict[Text, Any]) -> None:
        """Build the component from its validated config."""
        threshold = float(config["threshold"])
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"ComplaintSignal: threshold must be in (0, 1], got {threshold!r}")
        self._threshold = threshold
        self._complaint_intents = frozenset(config["complaint_intents"])

    @classmethod
    def create(
        cls,
        config: Dict[Text, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
    ) -> "ComplaintSignal":
        """Create the component (it has nothing to train)."""
        return cls(config)

    def process(self, messages: List[Message]) -> List[Message]:
        """Add the ``complaint`` key to each message's parse output."""
        for message in messages:
            signals = read_signals(message.get(TEXT))
            score = max(signals.complaint_score, self._intent_evidence(message.get(INTENT)))
            message.set(
                COMPLAINT_KEY,
                {
                    "is_complaint": score >= self._threshold,
                    "score": round(score, 3),
                    "hostility": signals.hostility,
                },
                add_to_output=True,
            )
        return messages

    def _intent_evidence(self, intent: Optional[Dict[Text, Any]]) -> float:
        if not isinstance(intent, dict) or intent.get(INTENT_NAME_KEY) not in self._complaint_intents:
            return 0.0
        # The classifier's confidence is evidence, discounted so that a lukewarm
        # guess alone does not make a complaint.
        return float(intent.get(PREDICTED_CONFIDENCE_KEY) or 0.0) * 0.9
