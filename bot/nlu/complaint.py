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

from bot.i18n import tagged_language
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

        Only the main language's examples (those with no ``language`` tag) are used: the
        sentence encoder is English, and other languages' embeddings would only move its
        reading of English. Complaints in the other languages are read by the lexical cues.
        """
        examples = [
            m for m in training_data.intent_examples
            if m.get(TEXT) and sentence_embedding(m) is not None and not tagged_language(m.get("metadata"))
        ]
        labels = np.asarray([
            complaint_label(m.get(INTENT), m.get(TEXT), self._complaint_intents, self._case_intents) for m in examples
        ])
        if examples and 0 < labels.sum() < len(labels):
            embeddings = np.vstack([sentence_embedding(m) for m in examples])
            lexical = np.asarray([read_signals(m.get(TEXT)).complaint_score for m in examples])
            self.model = self._regression().fit(embeddings, labels)
            if self._fixed_threshold is None:
                self.threshold = self._cross_validated_threshold(embeddings, lexical, labels)
            logger.info("Complaint threshold %.2f (%d examples, %d complaints)", self.threshold, len(labels), labels.sum())
        self.persist()
        assert self._resource is not None
        return self._resource

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
            signals = read_signals(text)
            intent = message.get(INTENT) or {}
            score = max(signals.complaint_score, self._learned_score(message), self._intent_evidence(intent))
            praise = intent.get(INTENT_NAME_KEY) in self._praise_intents
            if praise and score < self.threshold:
                # "another week without my package. love it. thanks a lot": the thanks
                # drown the grievance in the whole message, not in its own clause.
                score = max(score, self._worst_clause(text))
            is_complaint = bool(text) and score >= self.threshold
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

    def _worst_clause(self, text: Optional[str]) -> float:
        parts = clauses(text)
        if len(parts) < 2:
            return 0.0
        lexical = max(read_signals(part).complaint_score for part in parts)
        if self.model is None:
            return lexical
        from bot.nlu.featurizer import embed_recent

        learned = self.model.predict_proba(embed_recent(parts))[:, 1].max()
        return max(lexical, float(learned))

    def _learned_score(self, message: Message) -> float:
        if self.model is None:
            return 0.0
        embedding = sentence_embedding(message)
        if embedding is None:
            return 0.0
        return float(self.model.predict_proba(embedding[None, :])[0, 1])

    def persist(self) -> None:
        """Save the model and the threshold."""
        if self._storage is not None and self._resource is not None:
            save_model(self._storage, self._resource, self.model, {"threshold": self.threshold})

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
        return component

    def process_training_data(self, training_data: TrainingData) -> TrainingData:
        """Leave the training data as it is."""
        return training_data
