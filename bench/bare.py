"""The bare Rasa bot we compare against: Rasa's default config, our NLU data, one rule per intent.

It answers every message with a single ``utter_<intent>`` response (``utter_nlu_fallback``
for low-confidence messages), so it needs no action server; its responses start with
"Hi" so the load generator checks both bots for a greeting the same way.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import List

import yaml

ROOT = Path(__file__).resolve().parent.parent

BARE_CONFIG = """\
# Rasa's defaults: no pipeline and no policies, so `rasa train` fills them in.
recipe: default.v1
language: en
assistant_id: bare
"""


def our_intents() -> List[str]:
    """Return the intents our domain declares, in order."""
    intents: List[str] = []
    for path in sorted((ROOT / "domain").glob("*.yml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for intent in doc.get("intents") or []:
            name = next(iter(intent)) if isinstance(intent, dict) else str(intent)
            if name not in intents:
                intents.append(name)
    return intents


def our_entities() -> List[str]:
    """Return the entities our domain declares."""
    entities: List[str] = []
    for path in sorted((ROOT / "domain").glob("*.yml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for entity in doc.get("entities") or []:
            name = next(iter(entity)) if isinstance(entity, dict) else str(entity)
            if name not in entities:
                entities.append(name)
    return entities


def write_bare_config(path: Path) -> Path:
    """Write the default-only config.yml to ``path``."""
    path.write_text(BARE_CONFIG)
    return path


def build_bare_project(project: Path) -> Path:
    """Create the bare bot's project in ``project`` (config, domain, data); return it."""
    project.mkdir(parents=True, exist_ok=True)
    write_bare_config(project / "config.yml")
    intents = our_intents()
    labels = intents + ["nlu_fallback"]
    domain = {
        "version": "3.1",
        "intents": intents,
        "entities": our_entities(),
        "responses": {f"utter_{name}": [{"text": f"Hi! (bare bot, {name.replace('_', ' ')})"}] for name in labels},
        "session_config": {"session_expiration_time": 60, "carry_over_slots_to_new_session": False},
    }
    (project / "domain.yml").write_text(yaml.safe_dump(domain, sort_keys=False))
    nlu_dir = project / "data" / "nlu"
    nlu_dir.mkdir(parents=True, exist_ok=True)
    for source in sorted((ROOT / "data" / "nlu").glob("*.yml")):
        shutil.copy(source, nlu_dir / source.name)
    rules = {
        "version": "3.1",
        "rules": [
            {"rule": f"answer {name}", "steps": [{"intent": name}, {"action": f"utter_{name}"}]} for name in labels
        ],
    }
    (project / "data" / "rules.yml").write_text(yaml.safe_dump(rules, sort_keys=False))
    (project / "credentials.yml").write_text("rest:\n")
    return project
