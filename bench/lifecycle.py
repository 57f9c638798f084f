"""How a benchmark run starts and ends, the same for ``bench.run`` and ``bench.stack``.

A run works in a temporary directory and gathers its figures in one results mapping that
starts with the same header (``begin``). A failed run records its error (``record_failure``)
and keeps the directory for its logs; every run then writes ``<name>.json`` and ``<name>.md``
to the results directory, prints the Markdown, and removes the directory unless asked to
keep it (``finish``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
from datetime import datetime, timezone
from pathlib import Path
from types import FrameType
from typing import Any, Callable, Dict, Optional

Results = Dict[str, Any]


def begin(
    work: Path, quick: bool, settings: Dict[str, Any], machine: Dict[str, Any], log: Callable[[str], None]
) -> Results:
    """Say where the run works and return the header every results mapping starts with.

    Args:
        work: The run's temporary directory.
        quick: Whether this is a smoke run (its figures mean nothing).
        settings: The run's durations, rates and sizes.
        machine: What the figures depend on (``bench.run.machine_facts``).
        log: Prints a progress line.
    """
    log(f"working in {work}{' (quick smoke run)' if quick else ''}")
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "quick": quick,
        "machine": machine,
        "settings": settings,
    }


def add_output_arguments(parser: argparse.ArgumentParser, results: Path, name: str) -> None:
    """Add ``--results`` (where ``<name>.json/.md`` go, default ``results``) and ``--keep`` to ``parser``."""
    parser.add_argument("--results", type=Path, default=results, help=f"where {name}.json/.md go")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, SQLite files)")


def _stop_on_sigterm(_signum: int, _frame: Optional[FrameType]) -> None:
    sys.exit(143)  # unwinds through the finally blocks, which stop every server


def ready_to_run(model: Path) -> bool:
    """Return whether the trained ``model`` is there (else say how to make it).

    From then on a SIGTERM ends the run through its ``finally`` blocks: servers stopped, report written.
    """
    if not model.exists():
        print(f"{model} is missing: run `make train` first.", file=sys.stderr)
        return False
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    return True


def record_failure(results: Results, error: BaseException, log: Callable[[str], None]) -> int:
    """Note in ``results`` what the run failed with, log it, and return the run's exit code (1).

    ``finish`` then keeps the temporary directory, for its logs.
    """
    results["error"] = f"{type(error).__name__}: {error}"
    log(f"FAILED: {results['error']}")
    return 1


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
        work: The run's temporary directory: removed, unless ``keep`` or the run failed.
        keep: Keep ``work`` (its models and logs) and say where it is.
        log: Prints a progress line.
    """
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    markdown = render(results)
    (directory / f"{name}.md").write_text(markdown + "\n")
    print(markdown)
    if keep or "error" in results:
        log(f"kept {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    log(f"done in {results['wall_s']:.0f} s; wrote {directory / (name + '.md')} and .json")
