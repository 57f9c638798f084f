"""The intent classifier: word and character n-grams blended with a sentence embedding.

One logistic regression reads two views of a message, each scaled to unit length so
that neither drowns the other (a raw concatenation lets thousands of n-gram counts
outweigh 384 small embedding numbers, and the embedding then adds nothing):

- TF-IDF of words and of character 3-5-grams: exact wording, typos, order numbers;
- the sentence embedding from :class:`~bot.nlu.featurizer.SentenceEncoderFeaturizer`,
  times ``dense_weight``: what the message means, in words no example used.

Rejection is learned, not guessed: at training time a stratified k-fold
cross-validation on the training examples gives each in-scope example the confidence
the model would have had without seeing it; the threshold is the highest one that
rejects at most ``max_in_scope_rejection`` of them. A message whose top intent scores
below it becomes ``nlu_fallback`` (the "did you mean" path). Messages that are clearly
about something else are caught by the ``out_of_scope`` intent, trained on examples
of what customers ask that a brand's support cannot help with.

Languages: examples tagged with another language (``metadata: {language: es}`` on the
intent block, data/nlu/languages/) train a second model over every example, English
included (customers mix English words in); the main language's model is trained on its
own examples alone, exactly as without the other languages. Each message goes to the
model of the language it is in (``bot.i18n``, lingua with the channel's locale as hint;
a message too short to tell goes to the main language's). So adding a language cannot
move the main language's understanding (docs/nlu.md, "Languages").
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Sequence, Text, Tuple

import numpy as np
from rasa.engine.graph import ExecutionContext, GraphComponent
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.nlu.classifiers.classifier import IntentClassifier
from rasa.shared.nlu.constants import INTENT, INTENT_RANKING_KEY, TEXT
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData
from scipy.sparse import csr_matrix, hstack

from bot.i18n import DEFAULT_LANGUAGE, message_language, tagged_language
from bot.nlu.featurizer import sentence_embedding
from bot.nlu.storage import load_model, save_model
from bot.nlu.text import clauses, for_classifier, words

logger = logging.getLogger(__name__)

FALLBACK_INTENT = "nlu_fallback"
OUT_OF_SCOPE_INTENT = "out_of_scope"
PROBLEMS_KEY = "problems"
METADATA_KEY = "metadata"
CASE_INTENTS = ("order_status", "change_order", "cancel_order", "refund_return", "billing", "account_access",
                "product_issue", "product_question", "complaint")


def _vectorizers() -> Tuple[Any, Any]:
    from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer, TfidfVectorizer
    from sklearn.pipeline import make_pipeline

    words = TfidfVectorizer(lowercase=True, sublinear_tf=True, token_pattern=r"(?u)\b\w+\b")
    # Character n-grams hashed into a fixed space: no vocabulary of tens of thousands of
    # strings to keep, save and load; at 2^14 the accuracy on real messages
    # is the same as with a full vocabulary, and training is twice as fast.
    chars = make_pipeline(
        HashingVectorizer(analyzer="char_wb", ngram_range=(3, 5), n_features=2**14, alternate_sign=False, norm=None),
        TfidfTransformer(sublinear_tf=True),
    )
    return words, chars


class TextFeatures:
    """The two views of a message, fitted on the training texts."""

    def __init__(self, dense_weight: float) -> None:
        """Create unfitted vectorizers; ``dense_weight`` scales the embedding."""
        self.words, self.chars = _vectorizers()
        self.dense_weight = dense_weight

    def fit(self, texts: Sequence[str]) -> "TextFeatures":
        """Learn the vocabularies and IDF weights."""
        self.words.fit(texts)
        self.chars.fit(texts)
        return self

    def transform(self, texts: Sequence[str], embeddings: Optional[np.ndarray]) -> csr_matrix:
        """Return the feature matrix: unit-length n-grams, then the scaled embedding."""
        from sklearn.preprocessing import normalize

        sparse = normalize(hstack([self.words.transform(texts), self.chars.transform(texts)]).tocsr())
        if embeddings is None:
            return sparse
        return hstack([sparse, csr_matrix(embeddings * self.dense_weight)]).tocsr()


def rejection_threshold(confidences: np.ndarray, max_rejection: float, ceiling: float) -> float:
    """Return the highest threshold that rejects at most ``max_rejection`` of ``confidences``.

    Args:
        confidences: Out-of-fold top-intent confidences of in-scope training examples.
        max_rejection: Share of them that may fall below the threshold (0 to 1).
        ceiling: The threshold never goes above this.
    """
    if len(confidences) == 0 or max_rejection <= 0:
        return 0.0
    return float(min(ceiling, np.quantile(confidences, max_rejection)))


@DefaultV1Recipe.register(DefaultV1Recipe.ComponentType.INTENT_CLASSIFIER, is_trainable=True)
class BlendedIntentClassifier(IntentClassifier, GraphComponent):
    """Logistic regression over n-grams and a sentence embedding, with a learned rejection.

    Config:
        C: Inverse regularisation strength (default 0.5).
        dense_weight: Scale of the embedding against the unit-length n-grams (default 1.0).
        max_in_scope_rejection: Share of in-scope training examples that cross-validation
            may reject; sets the rejection threshold (default 0.03; 0 turns rejection off).
        max_threshold: The rejection threshold never exceeds this (default 0.5).
        cv_folds: Folds of the cross-validation (default 3).
        ranking_length: Intents listed in ``intent_ranking`` (default 10).
        case_intents: The case types; a message whose clauses name two or more of them
            gets ``problems`` in its parse result (one entry per clause).
        problem_confidence: How sure the model must be of a clause's case type (default 0.5).
        min_known_words: A message of two or more words of which fewer than this share
            occur in the training examples is unclear (``nlu_fallback``) whatever the model
            says: "blorp the frobnicator" is not a product question (default 0.34).
        max_iter: Solver iterations (default 3000).
        main_language: The language of untagged examples (default ``en``); examples tagged
            with another train the model that reads messages in the other languages.
        other_language_weight: How much each example of another language counts in that
            model against one of the main language's (default 4.0): there are far fewer of
            them, and without it the main language's examples decide every close call.
    """

    @staticmethod
    def get_default_config() -> Dict[Text, Any]:
        """Return the component's defaults."""
        return {
            "C": 0.5,
            "dense_weight": 1.0,
            "max_in_scope_rejection": 0.03,
            "max_threshold": 0.5,
            "cv_folds": 3,
            "ranking_length": 10,
            "case_intents": list(CASE_INTENTS),
            "problem_confidence": 0.5,
            "min_known_words": 0.34,
            "max_iter": 3000,
            "main_language": DEFAULT_LANGUAGE,
            "other_language_weight": 4.0,
        }

    @staticmethod
    def required_packages() -> List[Text]:
        """Return the packages the component needs."""
        return ["sklearn", "skops"]

    def __init__(self, config: Dict[Text, Any], model_storage: ModelStorage, resource: Resource) -> None:
        """Build an untrained classifier from its config."""
        self.config = {**self.get_default_config(), **config}
        if not 0.0 <= float(self.config["max_in_scope_rejection"]) < 0.5:
            raise ValueError("BlendedIntentClassifier: max_in_scope_rejection must be in [0, 0.5)")
        self._storage = model_storage
        self._resource = resource
        self.features: Optional[TextFeatures] = None
        self.model: Any = None
        self.threshold = 0.0
        self.uses_embedding = False
        # The model for messages in the other languages: (features, model, threshold).
        self.other: Optional[Tuple[TextFeatures, Any, float]] = None

    # The signature is Rasa's GraphComponent.create, the same in every component (the graph calls it).
    @classmethod
    def create(
        cls,
        config: Dict[Text, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
    ) -> "BlendedIntentClassifier":
        """Create an untrained component."""
        return cls(config, model_storage, resource)

    def _logistic_regression(self, tol: float = 1e-4) -> Any:
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(C=float(self.config["C"]), max_iter=int(self.config["max_iter"]), tol=tol,
                                  class_weight="balanced", random_state=42)

    def train(self, training_data: TrainingData) -> Resource:
        """Fit the features and the model, and learn the rejection threshold."""
        examples = [m for m in training_data.intent_examples if m.get(TEXT) and m.get(INTENT)]
        if len({m.get(INTENT) for m in examples}) < 2:
            raise ValueError("BlendedIntentClassifier needs examples of at least two intents")
        main = [m for m in examples if self._example_language(m) == self.config["main_language"]]
        self.uses_embedding = self._embeddings(examples[:1]) is not None
        self.features, self.model, self.threshold = self._fit(main)
        logger.info("Intent rejection threshold %.3f (cross-validated on %d examples)", self.threshold, len(main))
        if len(main) < len(examples):
            weight = float(self.config["other_language_weight"])
            main_ids = {id(m) for m in main}
            self.other = self._fit(examples, [1.0 if id(m) in main_ids else weight for m in examples])
            logger.info("Other languages: rejection threshold %.3f (%d examples)", self.other[2], len(examples))
        self.persist()
        return self._resource

    def _example_language(self, example: Message) -> str:
        return tagged_language(example.get(METADATA_KEY)) or str(self.config["main_language"])

    def _fit(
        self, examples: List[Message], weights: Optional[List[float]] = None
    ) -> Tuple[TextFeatures, Any, float]:
        """Fit features and a model on ``examples`` (each counted by its weight); learn their rejection threshold."""
        texts = [for_classifier(m.get(TEXT)) for m in examples]
        labels = np.asarray([m.get(INTENT) for m in examples])
        embeddings = self._embeddings(examples)
        features = TextFeatures(float(self.config["dense_weight"])).fit(texts)
        sample_weight = None if weights is None else np.asarray(weights)
        model = self._logistic_regression().fit(features.transform(texts, embeddings), labels, sample_weight=sample_weight)
        return features, model, self._learn_threshold(texts, labels, embeddings, sample_weight)

    def _reads_other_language(self, message: Message) -> bool:
        """Return whether ``message`` is in a language other than the main one (and a model for it exists)."""
        if self.other is None:
            return False
        code = message_language(message.get(TEXT), message.get(METADATA_KEY))
        return code is not None and code != self.config["main_language"]

    def _learn_threshold(
        self, texts: List[str], labels: np.ndarray, embeddings: Optional[np.ndarray],
        sample_weight: Optional[np.ndarray] = None,
    ) -> float:
        from sklearn.model_selection import StratifiedKFold

        share = float(self.config["max_in_scope_rejection"])
        if share <= 0:
            return 0.0
        folds = int(self.config["cv_folds"])
        smallest = min(np.unique(labels, return_counts=True)[1])
        folds = min(folds, int(smallest))
        if folds < 2:
            return 0.0
        top = np.zeros(len(texts))
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=7)
        for train_idx, test_idx in splitter.split(texts, labels):
            features = TextFeatures(float(self.config["dense_weight"])).fit([texts[i] for i in train_idx])
            pick = (lambda idx: None if embeddings is None else embeddings[idx])
            # Only the top confidence is needed from these fits: a looser tolerance halves their time.
            model = self._logistic_regression(tol=1e-2).fit(
                features.transform([texts[i] for i in train_idx], pick(train_idx)), labels[train_idx],
                sample_weight=None if sample_weight is None else sample_weight[train_idx],
            )
            probabilities = model.predict_proba(features.transform([texts[i] for i in test_idx], pick(test_idx)))
            top[test_idx] = probabilities.max(axis=1)
        in_scope = labels != OUT_OF_SCOPE_INTENT
        return rejection_threshold(top[in_scope], share, float(self.config["max_threshold"]))

    @staticmethod
    def _embeddings(messages: List[Message]) -> Optional[np.ndarray]:
        vectors = [sentence_embedding(m) for m in messages]
        if not vectors or any(v is None for v in vectors):
            return None
        return np.vstack(vectors)

    def probabilities(self, messages: List[Message], other: bool = False) -> np.ndarray:
        """Return the intent probabilities, one row per message (columns: ``classes``).

        ``other``: use the other languages' model (same classes) rather than the main one's.
        """
        features, model, _ = self._fitted(other)
        embeddings = self._embeddings(messages) if self.uses_embedding else None
        if self.uses_embedding and embeddings is None:
            raise ValueError("BlendedIntentClassifier was trained with sentence embeddings; put "
                             "SentenceEncoderFeaturizer before it in the pipeline")
        return model.predict_proba(features.transform([for_classifier(m.get(TEXT)) for m in messages], embeddings))

    def _fitted(self, other: bool) -> Tuple[TextFeatures, Any, float]:
        if other and self.other is not None:
            return self.other
        assert self.features is not None and self.model is not None
        return self.features, self.model, self.threshold

    @property
    def classes(self) -> List[str]:
        """Return the intents the model knows, in column order."""
        return [str(c) for c in self.model.classes_]

    def process(self, messages: List[Message]) -> List[Message]:
        """Set ``intent`` and ``intent_ranking`` on each message that has text."""
        if self.model is None:
            return messages
        with_text = [m for m in messages if for_classifier(m.get(TEXT))]
        for message in messages:
            if message not in with_text and message.get(TEXT) is not None:
                # Nothing to read (empty, spaces, only a mention or a link): unclear, not a guess.
                message.set(INTENT, {"name": FALLBACK_INTENT, "confidence": 0.0}, add_to_output=True)
                message.set(INTENT_RANKING_KEY, [], add_to_output=True)
        if not with_text:
            return messages
        for other in (False, True):
            group = [m for m in with_text if self._reads_other_language(m) == other]
            if group:
                self._classify(group, other)
        return messages

    def _classify(self, messages: List[Message], other: bool) -> None:
        """Set ``intent`` and ``intent_ranking`` with the main or the other languages' model."""
        features, model, threshold = self._fitted(other)
        classes = [str(c) for c in model.classes_]
        for message, row in zip(messages, self.probabilities(messages, other)):
            ranking = sorted(({"name": name, "confidence": float(p)} for name, p in zip(classes, row)),
                             key=lambda entry: -entry["confidence"])
            ranking = ranking[: int(self.config["ranking_length"])]
            top = ranking[0]
            if top["confidence"] < threshold or not self._known_enough(message.get(TEXT), features):
                # Kept at the threshold, as Rasa's FallbackClassifier does, with the ranking intact.
                top = {"name": FALLBACK_INTENT, "confidence": threshold}
                ranking = [top] + ranking
            message.set(INTENT, top, add_to_output=True)
            message.set(INTENT_RANKING_KEY, ranking, add_to_output=True)
            problems = self._problems(message.get(TEXT), ranking, other)
            if problems:
                message.set(PROBLEMS_KEY, problems, add_to_output=True)

    def _known_enough(self, text: str, features: Optional[TextFeatures] = None) -> bool:
        """Return whether enough of the message's words occur in the training examples."""
        features = features or self.features
        said = words(text)
        if len(said) < 2 or features is None:
            return True
        vocabulary = features.words.vocabulary_
        return sum(word in vocabulary for word in said) / len(said) >= float(self.config["min_known_words"])

    def _problems(self, text: str, ranking: List[Dict[str, Any]], other: bool = False) -> List[Dict[str, Any]]:
        """Return one entry per clause naming a case type, when the clauses name two or more.

        "The box came broken and I was charged twice" is two problems: the case
        carries both, so nobody has to ask for the second one later. Clauses are only
        read (another encoder pass) when the whole message already ranks two case
        types at 0.2 or more.
        """
        wanted = set(self.config["case_intents"])
        if sum(1 for entry in ranking if entry["name"] in wanted and entry["confidence"] >= 0.2) < 2:
            return []
        parts = [part for part in clauses(text) if len(part.split()) >= 3]
        if len(parts) < 2:
            return []
        embeddings = None
        if self.uses_embedding:
            from bot.nlu.featurizer import embed_recent

            embeddings = embed_recent(parts)
        features, model, _ = self._fitted(other)
        rows = model.predict_proba(features.transform(parts, embeddings))
        classes = [str(c) for c in model.classes_]
        found: Dict[str, Dict[str, Any]] = {}
        for part, row in zip(parts, rows):
            best = int(np.argmax(row))
            intent, confidence = classes[best], float(row[best])
            if intent in wanted and confidence >= float(self.config["problem_confidence"]) and intent not in found:
                found[intent] = {"intent": intent, "text": part, "confidence": round(confidence, 3)}
        return list(found.values()) if len(found) >= 2 else []

    def persist(self) -> None:
        """Save the features and the model, and the threshold."""
        saved = {"features": self.features, "model": self.model}
        meta: Dict[str, Any] = {"threshold": self.threshold, "uses_embedding": self.uses_embedding}
        if self.other is not None:
            saved.update(other_features=self.other[0], other_model=self.other[1])
            meta["other_threshold"] = self.other[2]
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
    ) -> "BlendedIntentClassifier":
        """Load a trained component; an untrained one if there is nothing saved."""
        component = cls(config, model_storage, resource)
        try:
            saved, meta = load_model(model_storage, resource)
        except ValueError as error:
            logger.warning("BlendedIntentClassifier: nothing to load (%s); untrained", error)
            return component
        component.features, component.model = saved["features"], saved["model"]
        component.threshold = float(meta["threshold"])
        component.uses_embedding = bool(meta["uses_embedding"])
        if "other_model" in saved:
            component.other = (saved["other_features"], saved["other_model"], float(meta["other_threshold"]))
        return component

    def process_training_data(self, training_data: TrainingData) -> TrainingData:
        """Leave the training data as it is (later components do not need the intents predicted)."""
        return training_data
