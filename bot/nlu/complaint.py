"""An NLU component that adds a complaint signal to every parse result, and catches sarcasm.

Placed after the intent classifier, it adds the top-level key ``complaint`` =
``{"is_complaint": bool, "score": float, "hostility": float, "sarcasm": bool}`` to
``/model/parse`` output and to the tracker's latest message, where the actions read it
to set the case priority.

Two kinds of evidence, the stronger wins:

- the lexical cues of :mod:`bot.nlu.signals` ("still not arrived", "charged twice",
  "worst"), which are explicit and need no training;
- a logistic regression over the sentence embedding, trained with the intents: short
  social posts say "no wifi again 😡" or "love sitting on the tarmac for 3 hours",
  which no cue list covers. Its training labels are derived from the examples'
  intents (see :func:`complaint_label`), so ops people label nothing twice.

The threshold is chosen by cross-validation on those training labels (the one with the
best macro-F1), not by hand.

Sarcasm: praise or thanks ("love it", "thanks a lot", "amazing work 👏") that reads as
a complaint is a complaint. The intent is changed to ``complaint`` (the ranking keeps
what the classifier said) so the customer gets an apology and the complaint path,
never thanks.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Text

import numpy as np
from rasa.engine.graph import ExecutionContext, GraphComponent
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.shared.nlu.constants import INTENT, INTENT_NAME_KEY, PREDICTED_CONFIDENCE_KEY, TEXT
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData

from bot.i18n import DEFAULT_LANGUAGE, message_language, tagged_language
from bot.nlu.featurizer import sentence_embedding
from bot.nlu.signals import read_signals
from bot.nlu.storage import load_model, save_model
from bot.nlu.text import clauses, for_classifier

logger = logging.getLogger(__name__)

COMPLAINT_KEY = "complaint"
# Lexical evidence that makes an example of a neutral case type a complaint for training.
CASE_CUE_SCORE = 0.35
# ... and an example of small talk or a product question (those rarely are).
OTHER_CUE_SCORE = 0.6


def complaint_label(intent: str, text: str, complaint_intents: frozenset, case_intents: frozenset) -> bool:
    """Return whether a training example counts as a complaint.

    Examples of ``complaint_intents`` (complaints and product faults) always do; an
    example of another case type does when its words say something went wrong (cues
    scoring at least 0.35: "still not here", "charged twice"); small talk, questions
    and off-topic messages only on strong cues (0.6).
    """
    if intent in complaint_intents:
        return True
    score = read_signals(text).complaint_score
    return score >= (CASE_CUE_SCORE if intent in case_intents else OTHER_CUE_SCORE)


@DefaultV1Recipe.register(DefaultV1Recipe.ComponentType.INTENT_CLASSIFIER, is_trainable=True)
class ComplaintSignal(GraphComponent):
    """Scores each message for a breach of the customer's expectations.

    Config:
        threshold: Score at or above which ``is_complaint`` is true; ``auto`` (the
            default) takes the cross-validated one.
        complaint_intents: Intents whose examples are complaints (default
            ``[complaint, product_issue]``).
        case_intents: Other case types; their examples are complaints when cues say so.
        praise_intents: Intents that become ``complaint`` when the message reads as one
            (sarcasm; default ``[thank, compliment]``).
        C: Inverse regularisation of the embedding model (default 0.3).
    """

    @staticmethod
    def get_default_config() -> Dict[Text, Any]:
        """Return the component's defaults."""
        return {
            "threshold": "auto",
            "complaint_intents": ["complaint", "product_issue"],
            "case_intents": ["order_status", "change_order", "cancel_order", "refund_return", "billing",
                             "account_access", "request_human", "ask_response_time"],
            "praise_intents": ["thank", "compliment"],
            "C": 0.3,
        }

    def __init__(self, config: Dict[Text, Any], model_storage: Optional[ModelStorage] = None,
                 resource: Optional[Resource] = None) -> None:
        """Build the component from its validated config."""
        config = {**self.get_default_config(), **config}
        threshold = config["threshold"]
        if threshold != "auto":
            threshold = float(threshold)
            if not 0.0 < threshold <= 1.0:
                raise ValueError(f"ComplaintSignal: threshold must be 'auto' or in (0, 1], got {threshold!r}")
        self._fixed_threshold: Optional[float] = None if threshold == "auto" else threshold
        self.threshold = self._fixed_threshold or 0.5
        self._complaint_intents = frozenset(config["complaint_intents"])
        self._case_intents = frozenset(config["case_intents"])
        self._praise_intents = frozenset(config["praise_intents"])
        self._c = float(config["C"])
        self._storage = model_storage
        self._resource = resource
        self.model: Any = None
        # For messages in the other languages: (model, threshold), when trained with them.
        self.other: Optional[tuple[Any, float]] = None

    # The signature is Rasa's GraphComponent.create, the same in every component (the graph calls it).
    @classmethod
    def create(
        cls,
        config: Dict[Text, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
    ) -> "ComplaintSignal":
        """Create an untrained component (lexical cues only until trained)."""
        return cls(config, model_storage, resource)

    def _regression(self) -> Any:
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(C=self._c, max_iter=2000, class_weight="balanced", random_state=42)

    def train(self, training_data: TrainingData) -> Resource:
        """Fit the embedding model on labels derived from the intents; pick the threshold.

        As the intent classifier does, the main language's model learns from its examples
        alone (those with no ``language`` tag), so adding a language does not move how the
        main one is read; when there are tagged examples, a second model learns from every
        example and reads the messages in the other languages.
        """
        examples = [m for m in training_data.intent_examples if m.get(TEXT) and sentence_embedding(m) is not None]
        main = [m for m in examples if not tagged_language(m.get("metadata"))]
        fitted = self._fit(main)
        if fitted is not None:
            self.model, self.threshold = fitted
        if len(main) < len(examples):
            self.other = self._fit(examples)
        self.persist()
        assert self._resource is not None
        return self._resource

    def _fit(self, examples: List[Message]) -> Optional[tuple[Any, float]]:
        """Fit a model and its threshold on ``examples``; None when they hold one label only."""
        labels = np.asarray([
            complaint_label(m.get(INTENT), m.get(TEXT), self._complaint_intents, self._case_intents) for m in examples
        ])
        if not examples or not 0 < labels.sum() < len(labels):
            return None
        embeddings = np.vstack([sentence_embedding(m) for m in examples])
        lexical = np.asarray([read_signals(m.get(TEXT)).complaint_score for m in examples])
        model = self._regression().fit(embeddings, labels)
        threshold = self._fixed_threshold or self._cross_validated_threshold(embeddings, lexical, labels)
        logger.info("Complaint threshold %.2f (%d examples, %d complaints)", threshold, len(labels), labels.sum())
        return model, threshold

    def _for(self, message: Message) -> tuple[Any, float]:
        """Return the model and threshold for ``message``'s language."""
        if self.other is not None:
            code = message_language(message.get(TEXT), message.get("metadata"))
            if code is not None and code != DEFAULT_LANGUAGE:
                return self.other
        return self.model, self.threshold

    def _cross_validated_threshold(self, embeddings: np.ndarray, lexical: np.ndarray, labels: np.ndarray) -> float:
        from sklearn.metrics import f1_score
        from sklearn.model_selection import StratifiedKFold

        scores = np.zeros(len(labels))
        for train_idx, test_idx in StratifiedKFold(n_splits=4, shuffle=True, random_state=7).split(embeddings, labels):
            model = self._regression().fit(embeddings[train_idx], labels[train_idx])
            scores[test_idx] = np.maximum(model.predict_proba(embeddings[test_idx])[:, 1], lexical[test_idx])
        candidates = np.round(np.arange(0.3, 0.81, 0.05), 2)
        best = max(candidates, key=lambda t: (f1_score(labels, scores >= t, average="macro"), -abs(t - 0.5)))
        return float(best)

    def process(self, messages: List[Message]) -> List[Message]:
        """Add the ``complaint`` key; turn praise that reads as a complaint into one."""
        for message in messages:
            text = message.get(TEXT)
            model, threshold = self._for(message)
            signals = read_signals(text)
            intent = message.get(INTENT) or {}
            score = max(signals.complaint_score, self._learned_score(message, model), self._intent_evidence(intent))
            praise = intent.get(INTENT_NAME_KEY) in self._praise_intents
            if praise and score < threshold:
                # "another week without my package. love it. thanks a lot": the thanks
                # drown the grievance in the whole message, not in its own clause.
                score = max(score, self._worst_clause(text, model))
            is_complaint = bool(text) and score >= threshold
            sarcasm = is_complaint and praise
            if sarcasm:
                message.set(INTENT, {INTENT_NAME_KEY: "complaint", PREDICTED_CONFIDENCE_KEY: round(score, 3)},
                            add_to_output=True)
            message.set(
                COMPLAINT_KEY,
                {"is_complaint": is_complaint, "score": round(score, 3), "hostility": signals.hostility,
                 "sarcasm": sarcasm},
                add_to_output=True,
            )
        return messages

    def _intent_evidence(self, intent: Dict[Text, Any]) -> float:
        if intent.get(INTENT_NAME_KEY) not in self._complaint_intents:
            return 0.0
        # The classifier's confidence is evidence, discounted so that a lukewarm
        # guess alone does not make a complaint.
        return float(intent.get(PREDICTED_CONFIDENCE_KEY) or 0.0) * 0.9

    def _worst_clause(self, text: Optional[str], model: Any) -> float:
        parts = clauses(text)
        if len(parts) < 2:
            return 0.0
        lexical = max(read_signals(part).complaint_score for part in parts)
        if model is None:
            return lexical
        from bot.nlu.featurizer import embed_recent

        learned = model.predict_proba(embed_recent(parts))[:, 1].max()
        return max(lexical, float(learned))

    @staticmethod
    def _learned_score(message: Message, model: Any) -> float:
        if model is None:
            return 0.0
        embedding = sentence_embedding(message)
        if embedding is None:
            return 0.0
        return float(model.predict_proba(embedding[None, :])[0, 1])

    def persist(self) -> None:
        """Save the model and the threshold."""
        if self._storage is not None and self._resource is not None:
            meta: Dict[str, Any] = {"threshold": self.threshold}
            saved: Any = self.model
            if self.other is not None:
                saved = {"model": self.model, "other_model": self.other[0]}
                meta["other_threshold"] = self.other[1]
            save_model(self._storage, self._resource, saved, meta)

    # The signature is Rasa's GraphComponent.load, the same in every trained component.
    @classmethod
    def load(
        cls,
        config: Dict[Text, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
        **kwargs: Any,
    ) -> "ComplaintSignal":
        """Load the trained component; cues only if nothing was trained."""
        component = cls(config, model_storage, resource)
        try:
            component.model, meta = load_model(model_storage, resource)
        except ValueError as error:
            logger.warning("ComplaintSignal: nothing to load (%s); lexical cues only", error)
            return component
        component.threshold = float(meta["threshold"])
        if "other_threshold" in meta and isinstance(component.model, dict):
            saved = component.model
            component.model = saved["model"]
            component.other = (saved["other_model"], float(meta["other_threshold"]))
        return component

    def process_training_data(self, training_data: TrainingData) -> TrainingData:
        """Leave the training data as it is."""
        return training_data
