"""Understanding judged on real customer messages nobody on the team wrote.

``python -m bench.realworld`` (also a phase of ``make bench``) trains, on the same
machine and in one run:

- ``firstreply``: the project as it is (config.yml, data/, domain/);
- ``english-encoder-only`` and ``multilingual-encoder-only``: the same with one of its two
  sentence encoders (what each costs per message against what it reads right);
- ``rasa-default``: Rasa's default pipeline (DIET) on the same data and domain;
- ``shipped-2026-11``: the pipeline and data of the previous release (git ``BASELINE_REV``);

then parses every labelled message as served (``/model/parse``'s result: intent after
every component, complaint signal) and reports, per model: intent accuracy,
out-of-scope rejection, in-scope messages rejected, complaint macro-F1, per-intent
recall, parse latency and CPU per message, and the rejection trade-off curve.

The messages are public tweets to brands (../shared/data/twcs, CC BY-NC-SA 4.0). Their
texts never enter the project: ``bench/data/twcs_labels.csv`` keeps labels by
``tweet_id`` and the texts are read from the corpus when this runs
(``FIRSTREPLY_TWCS_DIR`` to point elsewhere). Labels were set by hand, by reading each
message. Nothing is trained or tuned on them: the models' thresholds come from
cross-validation on the training data (see docs/nlu.md). The two label files are
reported apart: ``twcs-a`` was looked at while the training examples were written (a
development set), ``twcs-b`` was not (the test set).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import Counter, defaultdict
from io import BytesIO
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from bench.procs import ROOT, rasa_cmd, rasa_env, run_timed

LABELS = ROOT / "bench" / "data" / "twcs_labels.csv"
DEFAULT_TWCS_DIR = ROOT.parent / "shared" / "data" / "twcs"
TWCS_DIR_ENV = "FIRSTREPLY_TWCS_DIR"
# The release the project is compared with: its config.yml, data/ and domain/.
BASELINE_REV = "b39fe74"
OUT_OF_SCOPE = "out_of_scope"
REJECTED = frozenset({OUT_OF_SCOPE, "nlu_fallback"})
CURVE_THRESHOLDS = (0.0, 0.1, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6)


def load_labelled(labels: Path = LABELS, twcs_dir: Optional[Path] = None) -> List[Dict[str, Any]]:
    """Return the labelled messages: ``tweet_id``, ``part``, ``text``, ``intent``, ``complaint``, ``sarcasm``.

    Raises:
        FileNotFoundError: the corpus is not where it was looked for.
        KeyError: a labelled tweet id is not in the corpus.
    """
    folder = Path(twcs_dir or os.environ.get(TWCS_DIR_ENV) or DEFAULT_TWCS_DIR)
    with labels.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    texts: Dict[tuple, str] = {}
    for name in sorted({row["file"] for row in rows}):
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found; set {TWCS_DIR_ENV} to the folder with the twcs CSV files")
        with path.open(encoding="utf-8", newline="") as handle:
            for record in csv.DictReader(handle):
                texts[(name, record["tweet_id"])] = record["text"]
    return [
        {
            "tweet_id": row["tweet_id"],
            "part": row["file"].removesuffix(".csv"),
            "text": texts[(row["file"], row["tweet_id"])],
            "intent": row["intent"],
            "complaint": row["complaint"] == "yes",
            "sarcasm": row["sarcasm"] == "yes",
        }
        for row in rows
    ]


def _macro_f1(truth: Sequence[bool], predicted: Sequence[bool]) -> float:
    scores = []
    for positive in (True, False):
        tp = sum(t == positive and p == positive for t, p in zip(truth, predicted))
        fp = sum(t != positive and p == positive for t, p in zip(truth, predicted))
        fn = sum(t == positive and p != positive for t, p in zip(truth, predicted))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return sum(scores) / 2


def score(items: List[Dict[str, Any]], parses: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Score parse results against the labels.

    Intent accuracy counts an out-of-scope message as right when it is rejected
    (``out_of_scope`` or ``nlu_fallback``), an in-scope one when its intent is the label.
    """
    predicted = [p["intent"] for p in parses]
    truth = [item["intent"] for item in items]
    in_scope = [i for i, t in enumerate(truth) if t != OUT_OF_SCOPE]
    off_topic = [i for i, t in enumerate(truth) if t == OUT_OF_SCOPE]

    def right(i: int) -> bool:
        return predicted[i] in REJECTED if truth[i] == OUT_OF_SCOPE else predicted[i] == truth[i]

    recall: Dict[str, Dict[str, Any]] = {}
    for intent, count in sorted(Counter(truth).items()):
        hits = sum(right(i) for i, t in enumerate(truth) if t == intent)
        recall[intent] = {"n": count, "recall": round(hits / count, 3)}
    result: Dict[str, Any] = {
        "n": len(items),
        "intent_accuracy": round(sum(map(right, range(len(items)))) / len(items), 3),
        "in_scope_accuracy": round(sum(map(right, in_scope)) / max(1, len(in_scope)), 3),
        "out_of_scope_rejected": round(sum(predicted[i] in REJECTED for i in off_topic) / max(1, len(off_topic)), 3),
        "in_scope_rejected": round(sum(predicted[i] in REJECTED for i in in_scope) / max(1, len(in_scope)), 3),
        "per_intent_recall": recall,
        "confusions": [
            {"label": t, "predicted": p, "n": n}
            for (t, p), n in Counter((truth[i], predicted[i]) for i in range(len(items)) if not right(i)).most_common(8)
        ],
    }
    if all(p.get("is_complaint") is not None for p in parses):
        truth_c = [item["complaint"] for item in items]
        said = [bool(p["is_complaint"]) for p in parses]
        result["complaint_macro_f1"] = round(_macro_f1(truth_c, said), 3)
        sarcastic = [i for i, item in enumerate(items) if item["sarcasm"]]
        if sarcastic:
            result["sarcasm_read_as_complaint"] = round(sum(said[i] for i in sarcastic) / len(sarcastic), 3)
    result["intent_accuracy_95ci"] = _bootstrap([right(i) for i in range(len(items))])
    result["curve"] = _curve(items, parses)
    return result


def _bootstrap(hits: Sequence[bool], rounds: int = 2000, seed: int = 11) -> List[float]:
    """Return a 95 % bootstrap interval of the share of ``hits`` (resampling the messages)."""
    import random

    if not hits:
        return [0.0, 0.0]
    rng = random.Random(seed)
    n = len(hits)
    shares = sorted(sum(hits[rng.randrange(n)] for _ in range(n)) / n for _ in range(rounds))
    return [round(shares[int(0.025 * rounds)], 3), round(shares[int(0.975 * rounds) - 1], 3)]


def _curve(items: List[Dict[str, Any]], parses: List[Dict[str, Any]]) -> List[Dict[str, float]]:
    """In-scope rejected against off-topic rejected as the confidence threshold moves."""
    points = []
    for threshold in CURVE_THRESHOLDS:
        def rejected(p: Dict[str, Any]) -> bool:
            top = p["top"]
            return top in REJECTED or p["top_confidence"] < threshold

        ins = [rejected(p) for item, p in zip(items, parses) if item["intent"] != OUT_OF_SCOPE]
        off = [rejected(p) for item, p in zip(items, parses) if item["intent"] == OUT_OF_SCOPE]
        points.append({
            "threshold": threshold,
            "in_scope_rejected": round(sum(ins) / max(1, len(ins)), 3),
            "out_of_scope_rejected": round(sum(off) / max(1, len(off)), 3),
        })
    return points


async def _parse_all(model: str, texts: List[str]) -> List[Dict[str, Any]]:
    from rasa.core.agent import Agent
    from rasa.core.channels import UserMessage

    agent = Agent.load(model_path=model)
    await agent.processor.parse_message(UserMessage(text="warm up"))
    out = []
    for text in texts:
        wall, cpu = time.perf_counter(), time.process_time()
        parsed = await agent.processor.parse_message(UserMessage(text=text))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        ranking = [r for r in parsed.get("intent_ranking") or [] if r.get("name") != "nlu_fallback"]
        complaint = parsed.get("complaint") or {}
        out.append({
            "intent": (parsed.get("intent") or {}).get("name") or "nlu_fallback",
            "top": ranking[0]["name"] if ranking else "nlu_fallback",
            "top_confidence": float(ranking[0]["confidence"]) if ranking else 0.0,
            "is_complaint": complaint.get("is_complaint"),
            "wall_ms": wall * 1000,
            "cpu_ms": cpu * 1000,
        })
    return out


def evaluate_model(model: str, items: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Parse every item with ``model`` (in this process) and score each part and the whole."""
    parses = asyncio.run(_parse_all(model, [item["text"] for item in items]))
    by_part: Dict[str, List[int]] = defaultdict(list)
    for i, item in enumerate(items):
        by_part[item["part"]].append(i)
    walls = sorted(p["wall_ms"] for p in parses)
    cpus = [p["cpu_ms"] for p in parses]
    return {
        "all": score(items, parses),
        "parts": {part: score([items[i] for i in idx], [parses[i] for i in idx]) for part, idx in sorted(by_part.items())},
        "parse_ms_median": round(statistics.median(walls), 2),
        "parse_ms_p90": round(walls[int(0.9 * (len(walls) - 1))], 2),
        "cpu_ms_per_message": round(statistics.mean(cpus), 2),
    }


def baseline_project(dest: Path, rev: str = BASELINE_REV) -> Path:
    """Extract config.yml, data/ and domain/ of ``rev`` into ``dest``; return it."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "config.yml", "data", "domain"],
                             check=True, capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(dest)
    return dest


def train(project: Path, config: Path, out: Path, name: str, log: Path) -> Dict[str, Any]:
    """Train the NLU model of ``project`` with ``config`` (what is judged here); return path and time.

    A fresh embedding cache: the training time is that of a first training.
    """
    seconds = run_timed(
        rasa_cmd("train", "nlu", "--config", str(config), "--domain", str(project / "domain"), "--nlu",
                 str(project / "data" / "nlu"), "--out", str(out), "--fixed-model-name", name),
        cwd=project, env=rasa_env(FIRSTREPLY_EMBEDDING_CACHE=str(out / f"{name}-embeddings.sqlite")), log=log,
        timeout=7200,
    )
    return {"model": str(out / f"{name}.tar.gz"), "train_s": round(seconds, 1)}


# Rasa 3.6's default NLU pipeline (what it fills in when config.yml names none), written out so
# that DIET's epochs can be cut for a quick run.
def encoders_config(path: Path, encoders: Sequence[str]) -> Path:
    """Write config.yml with the sentence featurizer running only ``encoders``; return ``path``.

    Speed and understanding side by side: the same pipeline with one encoder or the other.
    """
    import yaml

    config = yaml.safe_load((ROOT / "config.yml").read_text(encoding="utf-8"))
    for component in config["pipeline"]:
        if component["name"].endswith("SentenceEncoderFeaturizer"):
            component["encoders"] = list(encoders)
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def default_pipeline_config(path: Path, epochs: int) -> Path:
    """Write Rasa's default NLU pipeline with DIET trained for ``epochs`` epochs; return ``path``."""
    import yaml

    pipeline = [
        {"name": "WhitespaceTokenizer"},
        {"name": "RegexFeaturizer"},
        {"name": "LexicalSyntacticFeaturizer"},
        {"name": "CountVectorsFeaturizer"},
        {"name": "CountVectorsFeaturizer", "analyzer": "char_wb", "min_ngram": 1, "max_ngram": 4},
        {"name": "DIETClassifier", "epochs": epochs, "constrain_similarities": True},
        {"name": "EntitySynonymMapper"},
        {"name": "FallbackClassifier", "threshold": 0.3, "ambiguity_threshold": 0.1},
    ]
    path.write_text(yaml.safe_dump({"recipe": "default.v1", "language": "en", "pipeline": pipeline,
                                    "assistant_id": "rasa-default"}), encoding="utf-8")
    return path


def render(results: Dict[str, Any]) -> str:
    """Return the markdown report of a run."""
    models = results["models"]
    lines = [
        f"Labelled real messages: {results['n']} ({', '.join(f'{k}: {v}' for k, v in results['parts'].items())}); "
        f"run {results['when']} on {results['machine']}; rasa-default's DIET trained for "
        f"{results.get('rasa_default_diet_epochs', 100)} epochs.",
        "",
        "| model | part | intent accuracy (95 % interval) | in-scope accuracy | off-topic rejected | in-scope rejected | "
        "complaint macro-F1 |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, data in models.items():
        for part, figures in [("all", data["all"])] + list(data["parts"].items()):
            lines.append(
                f"| {name} | {part} | {figures['intent_accuracy']:.3f} "
                f"({figures['intent_accuracy_95ci'][0]:.2f}–{figures['intent_accuracy_95ci'][1]:.2f}) | "
                f"{figures['in_scope_accuracy']:.3f} | "
                f"{figures['out_of_scope_rejected']:.3f} | {figures['in_scope_rejected']:.3f} | "
                f"{figures.get('complaint_macro_f1', float('nan')):.3f} |"
            )
    lines += ["", "| model | training (s) | parse median (ms) | parse p90 (ms) | CPU per message (ms) |",
              "| --- | --- | --- | --- | --- |"]
    for name, data in models.items():
        lines.append(f"| {name} | {data['train_s']} | {data['parse_ms_median']} | {data['parse_ms_p90']} | "
                     f"{data['cpu_ms_per_message']} |")
    lines += ["", "Per-intent recall (all labelled messages):", "",
              "| intent | n | " + " | ".join(models) + " |", "| --- | --- |" + " --- |" * len(models)]
    first = next(iter(models.values()))["all"]["per_intent_recall"]
    for intent, info in first.items():
        cells = " | ".join(f"{m['all']['per_intent_recall'][intent]['recall']:.2f}" for m in models.values())
        lines.append(f"| {intent} | {info['n']} | {cells} |")
    lines += ["", "Rejection trade-off (all labelled messages; rejected = out_of_scope, nlu_fallback, or top "
              "confidence below the threshold):", "",
              "| threshold | " + " | ".join(f"{m} in-scope rej. | {m} off-topic rej." for m in models) + " |",
              "| --- |" + " --- | --- |" * len(models)]
    for k, threshold in enumerate(CURVE_THRESHOLDS):
        cells = " | ".join(
            f"{m['all']['curve'][k]['in_scope_rejected']:.3f} | {m['all']['curve'][k]['out_of_scope_rejected']:.3f}"
            for m in models.values()
        )
        lines.append(f"| {threshold:.2f} | {cells} |")
    return "\n".join(lines) + "\n"


def run(out_dir: Path, which: Sequence[str], default_epochs: Optional[int] = None) -> Dict[str, Any]:
    """Train the models named in ``which`` and evaluate each in its own process.

    ``default_epochs``: train Rasa's default pipeline with this many DIET epochs instead of
    its 100 (recorded in the results).
    """
    import platform

    from bench.bare import write_bare_config

    items = load_labelled()
    results: Dict[str, Any] = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "n": len(items),
        "parts": dict(sorted(Counter(item["part"] for item in items).items())),
        "models": {},
        "rasa_default_diet_epochs": default_epochs or 100,
    }
    with tempfile.TemporaryDirectory(prefix="firstreply-realworld-") as tmp:
        work = Path(tmp)
        plans = {
            "firstreply": (ROOT, ROOT / "config.yml"),
            "rasa-default": (ROOT, default_pipeline_config(work / "default-config.yml", default_epochs)
                             if default_epochs else write_bare_config(work / "default-config.yml")),
            "shipped-2026-11": (baseline_project(work / "baseline"), work / "baseline" / "config.yml"),
            # The shipped pipeline with one of its two sentence encoders only.
            "english-encoder-only": (ROOT, encoders_config(work / "english-encoder.yml", ["all-minilm-l6-v2"])),
            "multilingual-encoder-only": (ROOT, encoders_config(work / "multilingual-encoder.yml",
                                                                ["use-multilingual-v3"])),
        }
        for name in which:
            project, config = plans[name]
            print(f"[realworld] training {name}", flush=True)
            trained = train(project, config, work / "models", name, work / f"train-{name}.log")
            print(f"[realworld] evaluating {name}", flush=True)
            metrics_file = work / f"{name}.json"
            subprocess.run([sys.executable, "-m", "bench.realworld", "--evaluate", trained["model"],
                            "--metrics", str(metrics_file)], check=True, env=rasa_env(LOG_LEVEL="WARNING"),
                           cwd=ROOT)
            results["models"][name] = {**json.loads(metrics_file.read_text()), "train_s": trained["train_s"]}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "realworld.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    (out_dir / "realworld.md").write_text(render(results), encoding="utf-8")
    return results


def main() -> None:
    """Command line: ``python -m bench.realworld [--models a,b] [--out DIR]``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="firstreply,english-encoder-only,multilingual-encoder-only,rasa-default,"
                                            "shipped-2026-11")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--default-epochs", type=int, help="DIET epochs for rasa-default (Rasa's default: 100)")
    parser.add_argument("--evaluate", help=argparse.SUPPRESS)
    parser.add_argument("--metrics", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.evaluate:
        metrics = evaluate_model(args.evaluate, load_labelled())
        args.metrics.write_text(json.dumps(metrics), encoding="utf-8")
        return
    results = run(args.out, [m.strip() for m in args.models.split(",") if m.strip()], args.default_epochs)
    print(render(results))


if __name__ == "__main__":
    main()
