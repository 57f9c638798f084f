"""Reading a YAML file node by node, so every mistake can name its line.

The file is parsed to a YAML node tree (which keeps line numbers) rather than to plain
data; ``NodeReader`` turns nodes into checked values and raises ``OpsConfigError`` on the
first one that is wrong. What a particular file must hold is its own reader's business
(``bot.ops.support``); this module knows only YAML and the shapes of values.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from bot.ops.errors import NO_VALUE, OpsConfigError

# A key's node and its value's node; a mapping read with ``NodeReader.section``.
Entry = tuple[Node, Node]
Entries = Mapping[str, Entry]

_T = TypeVar("_T")


def suggest(wrong: str, valid: Sequence[str], kind: str) -> str:
    """Return the closest valid name as a question, else the list of valid ones.

    Args:
        wrong: What the file says.
        valid: What it may say.
        kind: What the valid ones are called, in the plural (for the list).
    """
    close = difflib.get_close_matches(wrong, valid, n=1)
    if close:
        return f"did you mean '{close[0]}'?"
    return f"{kind} are {', '.join(valid)}"


def is_empty(node: Node) -> bool:
    """Return whether a node is YAML's null (an empty value, or ``~``)."""
    return isinstance(node, ScalarNode) and node.tag == "tag:yaml.org,2002:null"


class NodeReader:
    """One YAML file's nodes; each check raises ``OpsConfigError`` on the first mistake.

    Use as a context manager, or call ``close`` when done: the YAML loader holds state.
    """

    def __init__(self, path: Path, text: str) -> None:
        """Start reading ``text``, the contents of ``path``.

        Raises:
            OpsConfigError: When the text holds characters YAML does not allow.
        """
        self.path = path
        self._text = text
        try:
            self._loader = yaml.SafeLoader(text)
        except yaml.reader.ReaderError as error:
            # Raised for control characters before any parsing; it knows only the offset.
            line = text.count("\n", 0, error.position) + 1
            bad = chr(error.character) if isinstance(error.character, int) else error.character
            raise OpsConfigError(path, line, f"invalid YAML: {error.reason}", bad) from None

    def __enter__(self) -> NodeReader:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Free the YAML loader."""
        self._loader.dispose()

    def root(self) -> Node | None:
        """Return the file's one document as a node tree, or None for an empty file."""
        try:
            return self._loader.get_single_node()
        except yaml.MarkedYAMLError as error:
            mark = error.problem_mark or error.context_mark
            problem = error.problem or error.context or "not valid YAML"
            if mark is None:
                raise OpsConfigError(self.path, None, f"invalid YAML: {problem}") from None
            if error.context and error.context_mark and error.context_mark.line != mark.line:
                # Say where the unfinished thing began: that is usually the mistake.
                problem += f", {error.context} on line {error.context_mark.line + 1}"
            lines = self._text.splitlines()
            source = lines[mark.line].strip() if mark.line < len(lines) else ""
            raise OpsConfigError(
                self.path, mark.line + 1, f"invalid YAML: {problem}", source
            ) from None
        except yaml.YAMLError as error:
            raise OpsConfigError(self.path, None, f"invalid YAML: {error}") from None

    # --- nodes -------------------------------------------------------------------

    def error(self, node: Node, problem: str, value: object = NO_VALUE) -> OpsConfigError:
        """Return the error for a mistake at ``node``'s line."""
        return OpsConfigError(self.path, node.start_mark.line + 1, problem, value)

    def value(self, node: Node) -> object:
        """Return a node as Python data, the way yaml.safe_load would."""
        try:
            return self._loader.construct_object(node, deep=True)
        except yaml.constructor.ConstructorError:
            # An explicit tag safe YAML does not allow, e.g. !!python/object.
            problem = "invalid YAML: only plain YAML is allowed, not tags like this"
            raise self.error(node, problem, node.tag) from None
        except ValueError:
            # A scalar YAML took for a timestamp but that is no real date: 2026-02-30.
            return node.value if isinstance(node, ScalarNode) else None

    def bad(self, node: Node, problem: str) -> OpsConfigError:
        """Return the error for a mistake at ``node``, showing its value."""
        return self.error(node, problem, self.value(node))

    def mapping(self, node: Node, where: str) -> dict[str, Entry]:
        """Read a mapping with text keys, each once; ``where`` names it in errors."""
        if not isinstance(node, MappingNode):
            raise self.bad(node, f"{where} must be a mapping of keys to values")
        entries: dict[str, Entry] = {}
        for key_node, value_node in node.value:
            key = self.value(key_node)
            if not isinstance(key, str):
                raise self.bad(key_node, f"keys in {where} must be text")
            if key in entries:
                first_line = entries[key][0].start_mark.line + 1
                raise self.error(
                    key_node, f"duplicate key in {where}, first on line {first_line}", key
                )
            entries[key] = (key_node, value_node)
        return entries

    def section(
        self,
        node: Node,
        where: str,
        where_node: Node,
        allowed: Sequence[str],
        required: Sequence[str],
        item: str = "key",
    ) -> dict[str, Entry]:
        """Read a mapping and check its keys; ``where_node`` carries the line for missing keys."""
        entries = self.mapping(node, where)
        for key, (key_node, _value) in entries.items():
            if key not in allowed:
                hint = suggest(key, allowed, f"valid {item}s")
                raise self.error(key_node, f"unknown {item} in {where}; {hint}", key)
        for key in required:
            if key not in entries:
                raise self.error(where_node, f"{where} is missing the required {item} '{key}'")
        return entries

    def items(self, key_node: Node, node: Node, where: str, what: str) -> list[Node]:
        """Return a list's item nodes; ``what`` says what the list holds, in the error."""
        if not isinstance(node, SequenceNode):
            raise self.error(
                self.line_node(key_node, node), f"{where} must be a list of {what}", self.value(node)
            )
        return list(node.value)

    @staticmethod
    def line_node(key_node: Node, value_node: Node) -> Node:
        """Return the node whose line a mistake in ``value_node`` is reported at."""
        # An empty value ("timezone:") has no text of its own; point at its key.
        if isinstance(value_node, ScalarNode) and value_node.value == "":
            return key_node
        return value_node

    @staticmethod
    def optional(
        entries: Entries, key: str, read: Callable[[Entry], _T], default: _T
    ) -> _T:
        """Return ``read`` of the entry ``key``, or ``default`` when the mapping lacks it."""
        return read(entries[key]) if key in entries else default

    # --- scalars -----------------------------------------------------------------

    def text(self, key_node: Node, node: Node, where: str, hint: str = "") -> str:
        """Read non-blank text, stripped."""
        value = self.value(node)
        if not isinstance(value, str) or not value.strip():
            raise self.error(self.line_node(key_node, node), f"{where} must be text{hint}", value)
        return value.strip()

    def one_of(self, node: Node, where: str, valid: Sequence[str], what: str, kinds: str) -> str:
        """Read one of ``valid`` names; ``what`` names one (in errors), ``kinds`` all of them."""
        value = self.value(node)
        if not isinstance(value, str) or value not in valid:
            wrong = value if isinstance(value, str) else ""
            hint = suggest(wrong, valid, kinds)
            raise self.error(node, f"{where}: unknown {what}; {hint}", value)
        return value

    def flag(self, key_node: Node, node: Node, where: str) -> bool:
        """Read true or false."""
        value = self.value(node)
        if not isinstance(value, bool):
            raise self.error(self.line_node(key_node, node), f"{where} must be true or false", value)
        return value

    def number(
        self,
        key_node: Node,
        node: Node,
        where: str,
        rule: str,
        accept: Callable[[float], bool],
        whole: bool = False,
    ) -> float:
        """Read a finite number that ``accept``s; ``rule`` says which, in errors."""
        value = self.value(node)
        is_number = isinstance(value, int) or (isinstance(value, float) and not whole)
        if (
            isinstance(value, bool)
            or not is_number
            or not math.isfinite(value)  # type: ignore[arg-type]
            or not accept(value)  # type: ignore[arg-type]
        ):
            raise self.error(self.line_node(key_node, node), f"{where} must be {rule}", value)
        return float(value)  # type: ignore[arg-type]

    def positive_int(self, entry: Entry, where: str) -> int:
        """Read a whole number greater than 0."""
        value = self.number(*entry, where, "a whole number greater than 0", lambda v: v > 0, True)
        return int(value)

    def positive(self, entry: Entry, where: str) -> float:
        """Read a number greater than 0."""
        return self.number(*entry, where, "a number greater than 0", lambda v: v > 0)

    def fraction(self, entry: Entry, where: str) -> float:
        """Read a number from 0 to 1."""
        return self.number(*entry, where, "a number from 0 to 1", lambda v: 0 <= v <= 1)
