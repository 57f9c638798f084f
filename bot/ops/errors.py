"""How a mistake in an ops file is reported: the file, the line and the bad value.

Every reader in ``bot.ops`` raises ``OpsConfigError``, so one message shape serves them
all::

    support.yml:5: unknown key in hours; did you mean 'timezone'? (got 'timezon')
"""

from __future__ import annotations

from pathlib import Path

# Stands for "no bad value to show", since None can itself be the bad value.
NO_VALUE = object()
_MAX_SHOWN_VALUE = 60


class OpsConfigError(ValueError):
    """support.yml has a mistake.

    ``str(error)`` reads ``<file>:<line>: <what is wrong> (got <bad value>)``; the
    line and the value are left out when there is none (a missing file, a
    missing section).

    Attributes:
        path: The file.
        line: The 1-based line of the mistake, or None for the whole file.
        problem: What is wrong, without the file, line and value.
        value: The bad value as read from the file, or None.
    """

    def __init__(
        self, path: Path, line: int | None, problem: str, value: object = NO_VALUE
    ) -> None:
        self.path = path
        self.line = line
        self.problem = problem
        self.value = None if value is NO_VALUE else value
        location = str(path) if line is None else f"{path}:{line}"
        got = "" if value is NO_VALUE else f" (got {_shown(value)})"
        super().__init__(f"{location}: {problem}{got}")


def _shown(value: object) -> str:
    text = repr(value)
    if len(text) > _MAX_SHOWN_VALUE:
        text = text[: _MAX_SHOWN_VALUE - 3] + "..."
    return text
