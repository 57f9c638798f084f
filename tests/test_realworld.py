"""Tests for the evaluation on real customer messages (bench.realworld): labels, joining, scoring."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import pytest

from bench.realworld import LABELS, _bootstrap, _macro_f1, load_labelled, render, score

INTENTS = {
    "order_status", "change_order", "cancel_order", "refund_return", "billing", "account_access", "product_issue",
    "product_question", "complaint", "request_human", "ask_response_time", "compliment", "thank", "greet", "out_of_scope",
}


def test_the_label_file_is_ids_and_labels_only() -> None:
    with LABELS.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))

    assert len(rows) >= 800
    assert set(rows[0]) == {"tweet_id", "file", "intent", "complaint", "sarcasm"}
    assert not [tweet for tweet, n in Counter((r["file"], r["tweet_id"]) for r in rows).items() if n > 1]
    assert {r["intent"] for r in rows} <= INTENTS
    assert {r["complaint"] for r in rows} == {"yes", "no"}
    assert {r["sarcasm"] for r in rows} <= {"yes", "no"}
    assert all(r["tweet_id"].isdigit() for r in rows)


def _corpus(folder: Path) -> Path:
    labels = folder / "labels.csv"
    labels.write_text("tweet_id,file,intent,complaint,sarcasm\n1,x.csv,billing,yes,no\n3,x.csv,out_of_scope,no,no\n")
    with (folder / "x.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["tweet_id", "author_id", "inbound", "created_at", "text"])
        writer.writerow(["1", "a", "True", "now", "charged twice,\nagain"])
        writer.writerow(["3", "b", "True", "now", "nice weather"])
    return labels


def test_texts_are_read_from_the_corpus_by_id(tmp_path: Path) -> None:
    items = load_labelled(_corpus(tmp_path), tmp_path)

    assert [(i["tweet_id"], i["part"], i["text"], i["intent"], i["complaint"]) for i in items] == [
        ("1", "x", "charged twice,\nagain", "billing", True),
        ("3", "x", "nice weather", "out_of_scope", False),
    ]


def test_a_missing_corpus_says_where_to_point(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="FIRSTREPLY_TWCS_DIR"):
        load_labelled(_corpus(tmp_path), tmp_path / "nowhere")


def _parse(intent: str, top: str, confidence: float, complaint: bool) -> dict:
    return {"intent": intent, "top": top, "top_confidence": confidence, "is_complaint": complaint}


def test_scoring() -> None:
    items = [
        {"intent": "billing", "complaint": True, "sarcasm": False},
        {"intent": "billing", "complaint": False, "sarcasm": False},
        {"intent": "out_of_scope", "complaint": False, "sarcasm": False},
        {"intent": "out_of_scope", "complaint": True, "sarcasm": True},
    ]
    parses = [
        _parse("billing", "billing", 0.9, True),        # right
        _parse("nlu_fallback", "billing", 0.2, False),  # in scope, rejected
        _parse("out_of_scope", "out_of_scope", 0.8, False),  # rejected: right
        _parse("thank", "thank", 0.3, False),           # let through, sarcasm missed
    ]

    result = score(items, parses)

    assert result["intent_accuracy"] == 0.5
    assert result["in_scope_accuracy"] == 0.5
    assert result["in_scope_rejected"] == 0.5
    assert result["out_of_scope_rejected"] == 0.5
    assert result["per_intent_recall"] == {"billing": {"n": 2, "recall": 0.5}, "out_of_scope": {"n": 2, "recall": 0.5}}
    assert result["complaint_macro_f1"] == pytest.approx(_macro_f1([True, False, False, True], [True, False, False, False]), abs=1e-3)
    assert result["sarcasm_read_as_complaint"] == 0.0
    # At a threshold of 0.35 the thanks (0.3) is rejected too, and the fallback already was.
    point = next(p for p in result["curve"] if p["threshold"] == 0.35)
    assert point == {"threshold": 0.35, "in_scope_rejected": 0.5, "out_of_scope_rejected": 1.0}
    assert "| m | all | 0.500" in render({"n": 4, "parts": {"x": 4}, "when": "now", "machine": "here",
                                           "models": {"m": {"all": result, "parts": {}, "train_s": 1, "parse_ms_median": 2,
                                                            "parse_ms_p90": 3, "cpu_ms_per_message": 4}}})


def test_macro_f1_and_bootstrap() -> None:
    assert _macro_f1([True, False], [True, False]) == 1.0
    assert _macro_f1([True, True], [False, False]) == 0.0
    low, high = _bootstrap([True] * 60 + [False] * 40)
    assert low < 0.6 < high and high - low < 0.25
    assert _bootstrap([True] * 10) == [1.0, 1.0]
