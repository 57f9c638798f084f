"""Understanding per language, and how well the language itself is told, on messages kept apart from training.

``python -m bench.languages [--model models/firstreply.tar.gz]`` parses, with the trained model
(in this process, as served: ``/model/parse``'s result), two sets of messages:

- **real**: the customer tweets in Spanish, French, German and Portuguese found in the public
  corpus ``bench.realworld`` reads (../shared/data/twcs; no Italian ones), labelled by hand by
  reading each (``bench/data/twcs_languages_labels.csv``, ids and labels only, as for English);
  messages that only continue a thread with no request of their own were left out. English
  beside them is ``bench.realworld``'s 960 labelled tweets;
- **written**: ``bench/data/languages_heldout.csv``, below;

and reports per language (English beside the others):

- intent accuracy (an out-of-scope message is right when rejected), with a 95 % bootstrap
  interval over the messages; out-of-scope rejection; complaint macro-F1 (``bench.realworld``'s
  scoring, unchanged);
- language detection on each message (``bot.i18n``: answered in its own language and
  understood), by length (1-3, 4-8, 9+ words), without and with the channel's locale as a hint;
- the same detection on the labelled real English tweets of ``bench.realworld`` (the share
  answered in English), since a regression there would cost English customers.

The written held-out messages are a parallel set: the same 26 situations written once per
language, in a different register from the training examples (longer, other words and
places), never used for training or tuning. The team wrote them, so they are weaker evidence
than the real tweets; they are the only Italian evidence, and the only set where every
language faces the same situations (docs/nlu.md, "Languages"). Nothing here is tuned on.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, List, Optional

from bench.procs import ROOT
from bench.realworld import _parse_all, load_labelled, score

HELDOUT = ROOT / "bench" / "data" / "languages_heldout.csv"
REAL_LABELS = ROOT / "bench" / "data" / "twcs_languages_labels.csv"
LENGTHS = (("1-3 words", 1, 3), ("4-8 words", 4, 8), ("9+ words", 9, 1_000_000))
SWITCHED_ON = ("en", "es", "fr", "de", "pt", "it")


def load_heldout(path: Path = HELDOUT) -> List[Dict[str, Any]]:
    """Return the held-out messages: ``language``, ``intent``, ``complaint``, ``text``, ``sarcasm``."""
    with path.open(encoding="utf-8", newline="") as handle:
        return [
            {**row, "complaint": row["complaint"] == "1", "sarcasm": False, "part": row["language"]}
            for row in csv.DictReader(handle)
        ]


def load_real() -> List[Dict[str, Any]]:
    """Return the labelled real tweets in other languages, with their ``language``."""
    with REAL_LABELS.open(encoding="utf-8", newline="") as handle:
        languages = {row["tweet_id"]: row["language"] for row in csv.DictReader(handle)}
    return [{**item, "language": languages[item["tweet_id"]]} for item in load_labelled(REAL_LABELS)]


def detection_accuracy(items: List[Dict[str, Any]], hint: bool) -> Dict[str, Any]:
    """Return the share of messages answered in their own language and understood, by length."""
    from bot.i18n import detect_language, reply_language

    buckets: Dict[str, List[bool]] = defaultdict(list)
    for item in items:
        detection = detect_language(item["text"])
        reply = reply_language(detection, SWITCHED_ON, item["language"] if hint else None)
        # A message too short to tell keeps the conversation's language: on a first message,
        # the brand's main one.
        right = reply.understood and (reply.code or SWITCHED_ON[0]) == item["language"]
        for name, low, high in LENGTHS:
            if low <= detection.words <= high:
                buckets[name].append(right)
        buckets["all"].append(right)
    return {name: {"n": len(hits), "accuracy": round(sum(hits) / len(hits), 3)} for name, hits in buckets.items()}


def _evaluate(parses: List[Dict[str, Any]], items: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Score ``parses`` of ``items`` per language: understanding, and language detection."""
    by_language: Dict[str, List[int]] = defaultdict(list)
    for i, item in enumerate(items):
        by_language[item["language"]].append(i)
    understanding, detection = {}, {}
    for language, indexes in by_language.items():
        chosen = [items[i] for i in indexes]
        scored = score(chosen, [parses[i] for i in indexes])
        understanding[language] = {
            key: scored.get(key)
            for key in ("n", "intent_accuracy", "intent_accuracy_95ci", "out_of_scope_rejected", "in_scope_rejected",
                        "complaint_macro_f1", "confusions")
        }
        detection[language] = {
            "without hint": detection_accuracy(chosen, hint=False),
            "with hint": detection_accuracy(chosen, hint=True),
        }
    return {"n": len(items), "understanding": understanding, "detection": detection}


def run(model: str) -> Dict[str, Any]:
    """Evaluate ``model`` on the real and the written held-out messages; return the results."""
    started = time.perf_counter()
    english = [{**item, "language": "en"} for item in load_labelled()]
    real = load_real()
    written = load_heldout()
    texts = [item["text"] for item in (*english, *real, *written)]
    parses = asyncio.run(_parse_all(model, texts))
    return {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "model": model,
        "real": _evaluate(parses[: len(english) + len(real)], [*english, *real]),
        "written": _evaluate(parses[len(english) + len(real):], written),
        "seconds": round(time.perf_counter() - started, 1),
    }


def _render_set(title: str, results: Dict[str, Any]) -> List[str]:
    lines = [
        f"### {title} ({results['n']} messages)",
        "",
        "| language | n | intent accuracy (95 % CI) | out-of-scope rejected | in-scope rejected | complaint macro-F1 |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for language, row in results["understanding"].items():
        low, high = row["intent_accuracy_95ci"]
        lines.append(
            f"| {language} | {row['n']} | {row['intent_accuracy']:.3f} ({low:.2f}–{high:.2f}) | "
            f"{row['out_of_scope_rejected']:.2f} | {row['in_scope_rejected']:.2f} | {row.get('complaint_macro_f1', 0):.2f} |"
        )
    lines += ["", "Language told right (answered in it, understood), by message length (n):", "",
              "| language | hint | 1-3 words | 4-8 words | 9+ words | all |", "| --- | --- | --- | --- | --- | --- |"]
    for language, modes in results["detection"].items():
        for mode, buckets in modes.items():
            cells = [f"{buckets[k]['accuracy']:.2f} ({buckets[k]['n']})" if k in buckets else "–"
                     for k in ("1-3 words", "4-8 words", "9+ words", "all")]
            lines.append(f"| {language} | {mode} | " + " | ".join(cells) + " |")
    return lines + [""]


def render(results: Dict[str, Any]) -> str:
    """Return the results as Markdown tables."""
    lines = [f"{results['when']}, model {results['model']}.", ""]
    lines += _render_set("Real customer tweets (English: bench.realworld's)", results["real"])
    lines += _render_set("Written held-out messages (parallel, the same 26 situations per language)", results["written"])
    return "\n".join(lines)


def main() -> None:
    """Command line: ``python -m bench.languages [--model PATH] [--out DIR]``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "firstreply.tar.gz"))
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    results = run(args.model)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "languages-latest.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    (args.out / "languages-latest.md").write_text(render(results), encoding="utf-8")
    print(render(results))


if __name__ == "__main__":
    main()
