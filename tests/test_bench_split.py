"""bench/nlu.py's 80/20 split: every intent example lands on one side, the tables on the training side."""

from __future__ import annotations

from pathlib import Path

import yaml
from rasa.shared.nlu.training_data.loading import load_data

from bench.nlu import split_nlu

MIXED = """version: "3.1"
nlu:
- lookup: product
  examples: |
    - air fryer
    - toaster
- intent: product_issue
  examples: |
    - the [toaster](product) burns the bread
    - the [air fryer](product) will not heat
    - my kettle leaks
    - the lid of the kettle broke
    - my blender is loud
"""

INTENTS = """version: "3.1"
nlu:
- intent: greet
  examples: |
    - hello
    - hi there
    - good morning
    - hey
    - hiya
"""


def test_a_file_with_intents_and_a_lookup_table_is_split_and_its_table_kept_for_training(tmp_path: Path) -> None:
    nlu = tmp_path / "nlu"
    nlu.mkdir()
    (nlu / "lookups.yml").write_text(MIXED, encoding="utf-8")
    (nlu / "smalltalk.yml").write_text(INTENTS, encoding="utf-8")

    figures = split_nlu(tmp_path / "split", nlu_dir=nlu)

    assert (figures["train_examples"], figures["test_examples"], figures["intents"]) == (8, 2, 2)
    train = load_data(str(tmp_path / "split" / "train"))
    test = load_data(str(tmp_path / "split" / "test.yml"))
    texts = sorted(m.get("text") for m in [*train.intent_examples, *test.intent_examples])
    assert len(texts) == 10 and len(set(texts)) == 10  # each example on one side only
    assert [(t["name"], sorted(t["elements"])) for t in train.lookup_tables] == [("product", ["air fryer", "toaster"])]
    assert test.lookup_tables == []
    tables = yaml.safe_load((tmp_path / "split" / "train" / "lookups.yml").read_text(encoding="utf-8"))
    assert [block.get("lookup") for block in tables["nlu"]] == ["product"]
