"""NLU quality: a fixed, stratified 80/20 split of data/nlu and the evaluation of a model on it.

``split_nlu`` runs in the benchmark process (no Rasa import). ``python -m bench.nlu``
runs in a subprocess per model: it scores the held-out 20 % with Rasa's own
evaluation (``rasa.nlu.test.run_evaluation``, what ``rasa test nlu`` runs; it
*undoes* the FallbackClassifier, so the report is the classifier's accuracy) and
parses every test message once more as served, to count nlu_fallback answers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
from pathlib import Path
from typing import Any, Dict, List, Tuple

import yaml

ROOT = Path(__file__).resolve().parent.parent
FALLBACK = "nlu_fallback"


def _intent_blocks(nlu_dir: Path) -> Tuple[Dict[str, List[str]], Dict[str, List[Dict[str, Any]]]]:
    """Return intent -> raw example lines (annotations kept), and each file's other blocks (regexes, lookups, synonyms)."""
    examples: Dict[str, List[str]] = {}
    other: Dict[str, List[Dict[str, Any]]] = {}
    for path in sorted(nlu_dir.glob("*.yml")):
        blocks = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("nlu") or []
        intents = [b for b in blocks if "intent" in b]
        if len(intents) < len(blocks):
            other[path.name] = [b for b in blocks if "intent" not in b]
        for block in intents:
            lines = [ln.strip()[2:] for ln in str(block.get("examples") or "").splitlines() if ln.strip().startswith("- ")]
            examples.setdefault(block["intent"], []).extend(lines)
    return examples, other


def _write_nlu(path: Path, examples: Dict[str, List[str]]) -> None:
    lines = ['version: "3.1"', "nlu:"]
    for intent, texts in examples.items():
        lines += [f"- intent: {intent}", "  examples: |"]
        lines += [f"    - {text}" for text in texts]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def split_nlu(out: Path, test_fraction: float = 0.2, seed: int = 42, nlu_dir: Path = ROOT / "data" / "nlu") -> Dict[str, Any]:
    """Split data/nlu per intent (stratified) into ``out/train/`` and ``out/test.yml``.

    Regexes, lookup tables and synonyms go to the training side whole, also from a file that
    has intent examples too (those are split with the others).
    """
    examples, other = _intent_blocks(nlu_dir)
    rng = random.Random(seed)
    train: Dict[str, List[str]] = {}
    test: Dict[str, List[str]] = {}
    for intent in sorted(examples):
        texts = list(examples[intent])
        rng.shuffle(texts)
        n_test = max(1, math.floor(len(texts) * test_fraction + 0.5))
        test[intent], train[intent] = texts[:n_test], texts[n_test:]
    (out / "train").mkdir(parents=True, exist_ok=True)
    _write_nlu(out / "train" / "nlu.yml", train)
    _write_nlu(out / "test.yml", test)
    for name, blocks in other.items():
        document = {"version": "3.1", "nlu": blocks}
        (out / "train" / name).write_text(yaml.safe_dump(document, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return {
        "seed": seed,
        "train_examples": sum(map(len, train.values())),
        "test_examples": sum(map(len, test.values())),
        "intents": len(examples),
    }


async def _evaluate(model: str, test_file: str, out_dir: str) -> Dict[str, Any]:
    from sklearn.metrics import f1_score

    from rasa.core.agent import Agent
    from rasa.core.channels import UserMessage
    from rasa.nlu.test import run_evaluation
    from rasa.shared.nlu.training_data.loading import load_data

    agent = Agent.load(model_path=model)
    report = await run_evaluation(test_file, agent.processor, output_directory=out_dir, disable_plotting=True, errors=True)
    intent_report = json.loads((Path(out_dir) / "intent_report.json").read_text(encoding="utf-8"))

    truth: List[str] = []
    served: List[str] = []
    for example in load_data(test_file).intent_examples:
        parsed = await agent.processor.parse_message(UserMessage(text=example.get("text")))
        truth.append(example.get("intent"))
        served.append((parsed.get("intent") or {}).get("name") or FALLBACK)
    labels = sorted(set(truth))
    n = len(truth)
    fallbacks = sum(p == FALLBACK for p in served)
    correct = sum(p == t for p, t in zip(served, truth))
    wrong_answered = sum(p != t and p != FALLBACK for p, t in zip(served, truth))
    return {
        "test_examples": n,
        # Rasa's report (rasa test nlu): FallbackClassifier undone, i.e. the classifier's own top intent.
        "rasa_accuracy": round(float(intent_report["accuracy"]), 4),
        "rasa_macro_f1": round(float(intent_report["macro avg"]["f1-score"]), 4),
        # As served: a nlu_fallback answer counts as wrong.
        "served_accuracy": round(correct / n, 4),
        "served_macro_f1": round(float(f1_score(truth, served, labels=labels, average="macro", zero_division=0)), 4),
        "fallback_share": round(fallbacks / n, 4),
        # Confidently wrong: an intent other than the true one, and not a fallback.
        "wrong_answered_share": round(wrong_answered / n, 4),
        "accuracy_when_answered": round(correct / (n - fallbacks), 4) if n > fallbacks else None,
        "has_intent_evaluation": report.get("intent_evaluation") is not None,
    }


def main() -> None:
    """``python -m bench.nlu MODEL TEST_FILE OUT_DIR``: write OUT_DIR/metrics.json."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model")
    parser.add_argument("test_file")
    parser.add_argument("out_dir")
    args = parser.parse_args()
    metrics = asyncio.run(_evaluate(args.model, args.test_file, args.out_dir))
    (Path(args.out_dir) / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print(json.dumps(metrics))


if __name__ == "__main__":
    main()
