"""How a benchmark run ends, the same for ``bench.run`` and ``bench.stack``.

A failed run records its error in the results (and keeps its temporary directory for the
logs); every run writes ``<name>.json`` and ``<name>.md`` to the results directory, prints
the Markdown, and removes its temporary directory unless asked to keep it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable, Dict

Results = Dict[str, Any]


def record_failure(results: Results, error: BaseException, log: Callable[[str], None]) -> None:
    """Note in ``results`` what the run failed with, and log it."""
    results["error"] = f"{type(error).__name__}: {error}"
    log(f"FAILED: {results['error']}")


def finish(
    results: Results,
    directory: Path,
    name: str,
    render: Callable[[Results], str],
    work: Path,
    keep: bool,
    log: Callable[[str], None],
) -> None:
    """Write the results as JSON and as Markdown (``render``), print the Markdown, tidy up.

    Args:
        results: The run's figures and notes; ``results["wall_s"]`` is its duration.
        directory: Where ``<name>.json`` and ``<name>.md`` go (made if missing).
        name: The files' name, e.g. ``latest``.
        render: Turns the results into the Markdown report.
        work: The run's temporary directory: removed, unless ``keep``.
        keep: Keep ``work`` (its models and logs) and say where it is.
        log: Prints a progress line.
    """
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    markdown = render(results)
    (directory / f"{name}.md").write_text(markdown + "\n")
    print(markdown)
    if keep:
        log(f"kept {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    log(f"done in {results['wall_s']:.0f} s; wrote {directory / (name + '.md')} and .json")
