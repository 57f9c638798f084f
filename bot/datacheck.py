"""``python -m bot data check``: Rasa's data validation, strict, plus FirstReply's own rules.

Runs the checks of ``rasa data validate --fail-on-warnings`` and fails on any warning
but two kinds. Rasa reports every response that no story or rule names as unused,
including the questions a form asks and the responses the actions send by name; those
are instead checked here the other way round: every one the forms and actions need
must exist. And it asks for training examples of ``EXTERNAL_`` intents, which other
programs trigger through Rasa's HTTP API and no customer types. Then each case type is
checked for what it needs to work end to end.
"""

from __future__ import annotations

import argparse
import re
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from bot.constants import (
    ACK_RESPONSE_PREFIX,
    ASK_RESPONSE_PREFIX,
    CASE_TYPE_GENERAL,
    INTENT_REQUEST_HUMAN,
    COMPOSED_RESPONSE_PREFIXES,
    DESK_RESPONSE_PREFIX,
    DESK_RESPONSES,
    LABEL_RESPONSE_PREFIX,
    RESPONSES_SENT_BY_ACTIONS,
    form_name,
)

if TYPE_CHECKING:
    from rasa.shared.core.domain import Domain
    from rasa.shared.core.training_data.structures import StoryGraph

_UNUSED_RESPONSE = re.compile(r"The utterance '([^']+)' is not used in any story or rule\.")
_NO_EXAMPLES = re.compile(r"The intent '([^']+)' is listed in the domain file, but is not found in the NLU training data")
# Intents named so are triggered by other programs through Rasa's HTTP API (Rasa's convention).
EXTERNAL_INTENT_PREFIX = "EXTERNAL_"
ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Report:
    """What the check found."""

    problems: list[str] = field(default_factory=list)
    checked: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Return whether nothing is wrong."""
        return not self.problems


def _responses_used_outside_rules(domain: "Domain") -> set[str]:
    used = set(RESPONSES_SENT_BY_ACTIONS)
    used.update(f"{ACK_RESPONSE_PREFIX}{intent}" for intent in domain.intents)
    sent_by_code = (LABEL_RESPONSE_PREFIX, DESK_RESPONSE_PREFIX, *COMPOSED_RESPONSE_PREFIXES)
    used.update(name for name in domain.responses if name.startswith(sent_by_code))
    for form, definition in domain.forms.items():
        for slot in definition.get("required_slots", []):
            used.add(f"{ASK_RESPONSE_PREFIX}{slot}")
            used.add(f"{ASK_RESPONSE_PREFIX}{form}_{slot}")
    return used


def _case_types(domain: "Domain") -> list[str]:
    return [intent for intent in domain.intents if form_name(intent) in domain.forms]


def _rule_steps(story_graph: "StoryGraph") -> list[list[tuple[str, str]]]:
    """Return each rule as a list of (kind, name) steps: ("intent", x) or ("action", y)."""
    from rasa.shared.core.events import ActionExecuted, UserUttered
    from rasa.shared.core.training_data.structures import RuleStep

    rules = []
    for step in story_graph.story_steps:
        if not isinstance(step, RuleStep):
            continue
        steps = []
        for event in step.events:
            if isinstance(event, UserUttered) and event.intent_name:
                steps.append(("intent", event.intent_name))
            elif isinstance(event, ActionExecuted) and event.action_name:
                steps.append(("action", event.action_name))
        rules.append(steps)
    return rules


def _has_rule(rules: Iterable[list[tuple[str, str]]], *expected: tuple[str, str]) -> bool:
    needle = list(expected)
    return any(
        rule[start : start + len(needle)] == needle for rule in rules for start in range(len(rule) - len(needle) + 1)
    )


def _check_case_types(domain: "Domain", story_graph: "StoryGraph", report: Report) -> None:
    rules = _rule_steps(story_graph)
    case_types = _case_types(domain)
    report.checked["case types"] = len(case_types)
    for case_type in case_types:
        form = form_name(case_type)
        needed = [f"{ACK_RESPONSE_PREFIX}{case_type}", f"{LABEL_RESPONSE_PREFIX}{case_type}"]
        for response in needed:
            if response not in domain.responses:
                report.problems.append(f"case type '{case_type}': the response '{response}' is missing")
        slots = domain.forms[form].get("required_slots", [])
        if not 1 <= len(slots) <= 3:
            report.problems.append(
                f"case type '{case_type}': {form} asks {len(slots)} questions; ask between 1 and 3"
            )
        for slot in slots:
            if slot not in {defined.name for defined in domain.slots}:
                continue  # Rasa's own validation reports an undefined slot
            if f"{ASK_RESPONSE_PREFIX}{slot}" not in domain.responses and (
                f"{ASK_RESPONSE_PREFIX}{form}_{slot}" not in domain.responses
            ):
                report.problems.append(
                    f"case type '{case_type}': no question for '{slot}' (add a response "
                    f"'{ASK_RESPONSE_PREFIX}{slot}')"
                )
        if not _has_rule(rules, ("intent", case_type), ("action", "action_acknowledge"), ("action", form)):
            report.problems.append(
                f"case type '{case_type}': no rule starts {form} after the intent (see data/rules/case_types.yml)"
            )
        if not _has_rule(rules, ("action", form), ("action", "action_summarize_case")):
            report.problems.append(f"case type '{case_type}': no rule sums the case up when {form} is done")
    if case_types and not _has_rule(rules, ("intent", INTENT_REQUEST_HUMAN), ("action", "action_deactivate_loop")):
        report.problems.append("no rule lets the customer ask for a person during the questions")
    if f"{LABEL_RESPONSE_PREFIX}{CASE_TYPE_GENERAL}" not in domain.responses:
        report.problems.append(f"the response '{LABEL_RESPONSE_PREFIX}{CASE_TYPE_GENERAL}' is missing")


def check(domain_path: Path, data_path: Path, config_path: Path) -> Report:
    """Validate the Rasa project files and return what is wrong."""
    from rasa.shared.importers.importer import TrainingDataImporter
    from rasa.validator import Validator

    report = Report()
    importer = TrainingDataImporter.load_from_config(str(config_path), str(domain_path), [str(data_path)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        domain = importer.get_domain()
        if domain.is_empty():
            report.problems.append(f"{domain_path}: the domain is empty")
            return report
        validator = Validator.from_importer(importer)
        results = [
            validator.verify_domain_validity(),
            validator.verify_actions_in_stories_rules(),
            validator.verify_forms_in_stories_rules(),
            validator.verify_form_slots(),
            validator.verify_slot_mappings(),
            validator.verify_nlu(ignore_warnings=False),
            validator.verify_story_structure(ignore_warnings=False),
        ]
        validator.warn_if_config_mandatory_keys_are_not_set()
    from rasa.utils.common import EXPECTED_WARNINGS

    used_elsewhere = _responses_used_outside_rules(domain)
    exempted = False
    for warning in caught:
        message = str(warning.message)
        if not issubclass(warning.category, UserWarning) or any(
            issubclass(warning.category, category) and re.match(pattern, message)
            for category, pattern in EXPECTED_WARNINGS
        ):
            # Rasa's own list of warnings it always raises and expects.
            continue
        unused = _UNUSED_RESPONSE.search(message)
        if unused and unused.group(1) in used_elsewhere:
            exempted = True
            continue
        external = _NO_EXAMPLES.search(message)
        if external and external.group(1).startswith(EXTERNAL_INTENT_PREFIX):
            # Triggered through Rasa's HTTP API only; customers never type it.
            exempted = True
            continue
        report.problems.append(message.splitlines()[0])
    if not all(results) and not report.problems and not exempted:
        report.problems.append("Rasa's validation failed (see the log above)")
    for response in RESPONSES_SENT_BY_ACTIONS:
        if response not in domain.responses:
            report.problems.append(f"the response '{response}' is sent by the actions but missing from the domain")
    for response in DESK_RESPONSES:
        if response not in domain.responses:
            report.problems.append(f"the response '{response}' is sent by the agent desk but missing from the domain")
    _check_case_types(domain, validator.story_graph, report)
    report.checked.update(intents=len(domain.intents), responses=len(domain.responses), forms=len(domain.forms))
    return report


def add_data_parser(subparsers: Any) -> None:
    """Register ``data check`` on the top-level command line."""
    data = subparsers.add_parser("data", help="check the Rasa training data and domain")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    check_parser = data_sub.add_parser("check", help="validate domain, data and config (fails on any warning)")
    check_parser.add_argument("--domain", type=Path, default=ROOT / "domain")
    check_parser.add_argument("--data", type=Path, default=ROOT / "data")
    check_parser.add_argument("--config", type=Path, default=ROOT / "config.yml")
    check_parser.set_defaults(handler=run_check)


def run_check(args: argparse.Namespace) -> int:
    """Run the check from the command line; print the problems; return the exit code."""
    report = check(args.domain, args.data, args.config)
    for problem in report.problems:
        print(f"error: {problem}", file=sys.stderr)
    summary = ", ".join(f"{count} {what}" for what, count in report.checked.items())
    if report.ok:
        print(f"Rasa data: OK ({summary})")
        return 0
    print(f"Rasa data: {len(report.problems)} problem(s) ({summary})", file=sys.stderr)
    return 1
