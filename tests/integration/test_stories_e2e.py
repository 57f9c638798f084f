"""The end-to-end conversation tests in tests/test_stories.yml, run by Rasa's own test command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.processes import MODEL, ROOT, require_model

pytestmark = pytest.mark.integration


def test_every_test_story_is_predicted_exactly(tmp_path: Path) -> None:
    require_model()
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "rasa"), "test", "core", "--model", str(MODEL),
            "--stories", str(ROOT / "tests" / "test_stories.yml"), "--out", str(tmp_path),
            "--fail-on-prediction-errors", "--no-plot",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={"PYTHONPATH": str(ROOT), "SQLALCHEMY_SILENCE_UBER_WARNING": "1", "TF_CPP_MIN_LOG_LEVEL": "3",
             "PATH": str(Path(sys.executable).parent), "HOME": str(tmp_path)},
    )
    failed = (tmp_path / "failed_test_stories.yml")
    assert result.returncode == 0, (failed.read_text() if failed.exists() else "") + result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((tmp_path / "story_report.json").read_text())
    accuracy = report["conversation_accuracy"]
    stories = yaml.safe_load((ROOT / "tests" / "test_stories.yml").read_text())["stories"]
    assert (accuracy["correct"], accuracy["total"]) == (len(stories), len(stories))
