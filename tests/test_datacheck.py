"""Tests for bot.datacheck: Rasa's validation, strict, plus FirstReply's own rules.

Runs the real check (Rasa loads the project) on the shipped files once, then on copies
with one planted mistake each.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from bot.constants import CASE_TYPES, DESK_RESPONSES, RESPONSES_SENT_BY_ACTIONS
from bot.datacheck import Report, check

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def shipped_report() -> Report:
    return check(ROOT / "domain", ROOT / "data", ROOT / "config.yml")


def test_the_shipped_project_passes(shipped_report: Report) -> None:
    assert shipped_report.problems == []
    assert shipped_report.ok is True
    assert shipped_report.checked["case types"] == len(CASE_TYPES)
    # Every case type's form, plus the form that takes a correction of the summary.
    assert shipped_report.checked["forms"] == len(CASE_TYPES) + 1
    assert list(shipped_report.checked) == ["case types", "intents", "responses", "forms"]


def test_report_is_ok_only_without_problems() -> None:
    assert (Report().ok, Report(problems=["x"]).ok) == (True, False)


def project_copy(tmp_path: Path) -> Path:
    """Copy the domain, data and config into ``tmp_path`` and return it."""
    shutil.copytree(ROOT / "domain", tmp_path / "domain")
    shutil.copytree(ROOT / "data", tmp_path / "data")
    shutil.copy(ROOT / "config.yml", tmp_path / "config.yml")
    return tmp_path


def replace_once(path: Path, old: str, new: str) -> None:
    """Replace ``old`` (which must occur exactly once) in the file by ``new``."""
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"{path.name} no longer holds the text to plant a mistake in: {old!r}"
    path.write_text(text.replace(old, new), encoding="utf-8")


def check_copy(project: Path) -> list[str]:
    return check(project / "domain", project / "data", project / "config.yml").problems


ORDER_STATUS_START_RULE = """\
  - rule: order_status - acknowledge and ask the clarifying questions
    steps:
      - intent: order_status
      - action: action_acknowledge
      - action: order_status_form
      - active_loop: order_status_form

"""


@pytest.mark.parametrize(
    ("file", "old", "new", "problems"),
    [
        pytest.param(
            "domain/responses.yml",
            '  utter_label_billing:\n    - text: "A payment, charge or invoice"\n',
            "",
            ["case type 'billing': the response 'utter_label_billing' is missing"],
            id="label response removed",
        ),
        pytest.param(
            "domain/cases.yml",
            "      - product_name\n      - question_detail\n",
            "      - product_name\n      - question_detail\n      - order_number\n      - account_email\n",
            ["case type 'product_question': product_question_form asks 4 questions; ask between 1 and 3"],
            id="form with four questions",
        ),
        pytest.param(
            "domain/responses.yml",
            '  utter_ask_desired_outcome:\n    - text: "What would put this right for you?"\n',
            "",
            [
                "case type 'complaint': no question for 'desired_outcome' "
                "(add a response 'utter_ask_desired_outcome')"
            ],
            id="question response removed",
        ),
        pytest.param(
            "data/rules/case_types.yml",
            ORDER_STATUS_START_RULE,
            "",
            [
                # Rasa's own warning, then FirstReply's.
                "The intent 'order_status' is not used in any story or rule.",
                "case type 'order_status': no rule starts order_status_form after the intent "
                "(see data/rules/case_types.yml)",
            ],
            id="case type rule removed",
        ),
        pytest.param(
            "domain/responses.yml",
            "  utter_detail_added:\n    - text: \"Got it, I've added that.\"\n",
            "",
            ["the response 'utter_detail_added' is sent by the actions but missing from the domain"],
            id="response sent by actions removed",
        ),
        pytest.param(
            "data/nlu/complaint.yml",
            "    - terrible service\n",
            "    - terrible service\n    - where is my refund\n",
            [
                "The example 'where is my refund' was found labeled with multiple different intents in the "
                "training data. Each annotated message should only appear with one intent. You should fix that "
                "conflict The example is labeled with: complaint, refund_return."
            ],
            id="example under two intents",
        ),
    ],
)
def test_a_planted_mistake_is_named(tmp_path: Path, file: str, old: str, new: str, problems: list[str]) -> None:
    project = project_copy(tmp_path)
    replace_once(project / file, old, new)

    assert check_copy(project) == problems


def test_the_response_removed_above_is_one_the_actions_send() -> None:
    # Guards the planted case: it must test RESPONSES_SENT_BY_ACTIONS, not a response a rule names.
    assert "utter_detail_added" in RESPONSES_SENT_BY_ACTIONS


def test_a_response_the_desk_sends_is_required_but_never_reported_unused(tmp_path: Path) -> None:
    # No rule names the desk's responses: the shipped project passes (above) without any of
    # them reported unused, and one removed is named.
    project = project_copy(tmp_path)
    desk = project / "domain" / "desk.yml"
    text = desk.read_text(encoding="utf-8")
    block = re.search(r"  utter_watchdog_close:\n(    .*\n)+", text)
    assert block is not None and "utter_watchdog_close" in DESK_RESPONSES
    desk.write_text(text.replace(block.group(0), ""), encoding="utf-8")

    assert check_copy(project) == [
        "the response 'utter_watchdog_close' is sent by the agent desk but missing from the domain"
    ]
