"""Which responses a switched-on channel cannot show as written: too many buttons, titles too long.

Each messaging platform draws Rasa's buttons its own way and within its own limits
(Meta's references): Messenger and Instagram as quick replies (at most 13, titles up to 20
characters); WhatsApp as reply buttons (at most 3, titles up to 20) or, beyond that, as a
list message (up to 10 rows, titles up to 24). A connector still sends what does not fit
(WhatsApp's cuts a long title and shows it whole as the row's description, and sends a
second list after 10 rows), but the customer does not see the response as ops wrote it.
``python -m bot ops check`` lists each such response with its file and line, for the
channels switched on in the environment (the variables ``make run`` switches them on by)
or those named with ``--channels``.

The responses are read from ``domain/*.yml`` (and the support file, for any response it
holds) as YAML nodes, so every finding names its line.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

WHATSAPP = "whatsapp"
MESSENGER = "messenger"
INSTAGRAM = "instagram"


@dataclass(frozen=True)
class ButtonLimits:
    """How many buttons a channel shows under one message, and how long their titles may be."""

    channel: str
    # The environment variable whose presence switches the channel on (scripts/run.sh).
    switch: str
    most_buttons: int
    longest_title: int
    # What the channel draws them as, in the finding.
    drawn_as: str


LIMITS: Mapping[str, ButtonLimits] = {
    MESSENGER: ButtonLimits(MESSENGER, "MESSENGER_PAGE_TOKEN", 13, 20, "quick replies"),
    INSTAGRAM: ButtonLimits(INSTAGRAM, "INSTAGRAM_TOKEN", 13, 20, "quick replies"),
    WHATSAPP: ButtonLimits(WHATSAPP, "WHATSAPP_ACCESS_TOKEN", 10, 24, "a list message"),
}


@dataclass(frozen=True)
class Finding:
    """One response a channel cannot show as written."""

    path: Path
    line: int
    response: str
    channel: str
    problem: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: response {self.response} on {self.channel}: {self.problem}"


def switched_on(environ: Mapping[str, str]) -> list[str]:
    """Return the channels with limits whose switching variable is set in ``environ``."""
    return [name for name, limits in LIMITS.items() if environ.get(limits.switch, "").strip()]


def check_responses(paths: Iterable[Path], channels: Sequence[str]) -> list[Finding]:
    """Return every response in ``paths`` that one of ``channels`` cannot show as written.

    A file that is not YAML or holds no ``responses`` mapping is passed over (Rasa's own
    validation and ``ops check`` of support.yml report those).
    """
    found: list[Finding] = []
    for path in paths:
        try:
            root = yaml.compose(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue
        for response, line, buttons_node in _button_lists(root):
            for channel in channels:
                found.extend(_findings(path, response, line, buttons_node, LIMITS[channel]))
    return found


def _entry(mapping: Node, key: str) -> tuple[Node, Node] | None:
    if isinstance(mapping, MappingNode):
        for key_node, value_node in mapping.value:
            if isinstance(key_node, ScalarNode) and key_node.value == key:
                return key_node, value_node
    return None


def _value(mapping: Node, key: str) -> Node | None:
    found = _entry(mapping, key)
    return found[1] if found is not None else None


def _button_lists(root: Node | None) -> Iterator[tuple[str, int, SequenceNode]]:
    """Yield (response name, the line of ``buttons:``, its list) for every variation with buttons."""
    responses = _value(root, "responses") if root is not None else None
    if not isinstance(responses, MappingNode):
        return
    for name_node, variations in responses.value:
        for variation in variations.value if isinstance(variations, SequenceNode) else []:
            found = _entry(variation, "buttons")
            if found is not None and isinstance(found[1], SequenceNode):
                yield str(name_node.value), found[0].start_mark.line + 1, found[1]


def _findings(path: Path, response: str, line: int, buttons: SequenceNode, limits: ButtonLimits) -> Iterator[Finding]:
    count = len(buttons.value)
    if count > limits.most_buttons:
        yield Finding(path, line, response, limits.channel,
                      f"{count} buttons; at most {limits.most_buttons} fit in {limits.drawn_as}")  # fmt: skip
    for button in buttons.value:
        title = _value(button, "title")
        text = str(title.value) if isinstance(title, ScalarNode) else ""
        if title is not None and len(text) > limits.longest_title:
            yield Finding(path, title.start_mark.line + 1, response, limits.channel,
                          f"button title {text!r} is {len(text)} characters; at most {limits.longest_title} fit in "
                          f"{limits.drawn_as}")  # fmt: skip
