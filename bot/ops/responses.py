"""Every response in every switched-on language: the check behind ``python -m bot ops check``.

A response is in the brand's main language (the first of support.yml's
``languages.answer_in``) through its variation without a condition, and in another
language through a variation conditioned on the ``language`` slot (Rasa's conditional
response variations). A response missing a switched-on language would reach those
customers in the main language; each is reported with the file and the line of the
response.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from bot.constants import SLOT_LANGUAGE

RESPONSES_KEY = "responses"


@dataclass(frozen=True)
class MissingResponse:
    """A response with no variation in a switched-on language."""

    path: Path
    line: int
    response: str
    language: str

    def __str__(self) -> str:
        """Return ``file:line: <response> has no '<language>' variation``."""
        return (
            f"{self.path}:{self.line}: {self.response} has no '{self.language}' variation "
            f"(add one with condition [{{type: slot, name: {SLOT_LANGUAGE}, value: {self.language}}}])"
        )


def _get(node: Node, key: str) -> Node | None:
    if isinstance(node, MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, ScalarNode) and key_node.value == key:
                return value_node
    return None


def _variation_languages(variation: Node, main: str) -> set[str]:
    """Return the languages one variation is in: its ``language`` conditions, else the main one."""
    conditions = _get(variation, "condition")
    if not isinstance(conditions, SequenceNode) or not conditions.value:
        return {main}
    found = set()
    for condition in conditions.value:
        name, value = _get(condition, "name"), _get(condition, "value")
        if isinstance(name, ScalarNode) and name.value == SLOT_LANGUAGE and isinstance(value, ScalarNode):
            found.add(value.value)
    return found


def _responses(path: Path) -> Iterator[tuple[str, int, Node]]:
    """Yield (name, line, variations) for each response of one domain file."""
    root = yaml.compose(path.read_text(encoding="utf-8"))
    responses = _get(root, RESPONSES_KEY) if root is not None else None
    if not isinstance(responses, MappingNode):
        return
    for key_node, value_node in responses.value:
        yield str(key_node.value), key_node.start_mark.line + 1, value_node


def missing_responses(domain: Path, languages: Sequence[str]) -> list[MissingResponse]:
    """Return every response of ``domain`` (a file or a directory of them) missing a language.

    Args:
        domain: domain.yml, or the domain/ directory.
        languages: The switched-on languages, the main one first.
    """
    missing = []
    for path in domain_files(domain):
        for name, line, variations in _responses(path):
            have: set[str] = set()
            for variation in variations.value if isinstance(variations, SequenceNode) else []:
                have |= _variation_languages(variation, languages[0])
            missing.extend(MissingResponse(path, line, name, code) for code in languages if code not in have)
    return missing


def domain_files(domain: Path) -> list[Path]:
    """Return the domain's YAML files: ``domain`` itself, or the ``*.yml``/``*.yaml`` in it."""
    return sorted(domain.glob("*.yml")) + sorted(domain.glob("*.yaml")) if domain.is_dir() else [domain]


def load_responses(domain: Path) -> dict[str, Any]:
    """Return every response of ``domain`` (a file or a directory of them), as Rasa merges them."""
    responses: dict[str, Any] = {}
    for path in domain_files(domain):
        responses.update((yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get(RESPONSES_KEY) or {})
    return responses
