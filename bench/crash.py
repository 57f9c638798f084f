"""Kills at random moments of bursts of new customers: ``make bench-crash`` / ``python -m bench.crash``.

Each trial is ``tests.integration.crash_support.run_trial``: 30 new customers write at once over
one platform (Telegram or Slack DMs, against their local fakes; the platforms take turns); at a
random moment of the burst one part is killed and started again at once; every customer's side
is then held against what Rasa saved. Two stacks, each started once with every platform's
connector and given ``--trials`` trials:

* ``sqlite``: what ``make run`` starts (one Rasa through ``bot.launcher``, one action server,
  SQLite files, the default 60 s lease); Rasa or the action server is killed (SIGKILL);
* ``pg2``: two Rasa replicas and two action servers on PostgreSQL and Redis behind round-robin
  proxies (``endpoints.prod.yml``); one Rasa or action server (drawn at random) is killed, or
  every database connection of the stack is terminated. Needs the test services
  (``scripts/test-services.sh run``, as the make target does).

Per trial: lost messages, messages handled twice, customers greeted twice, customers who
received a reply twice (and whether one of their replies was in flight at the kill), replies
missing, replies in flight at the kill, how soon the answers resumed after the restart. The
in-doubt window (``GET /webhooks/telegram/replies`` of every Rasa process at the end) closes
the report. Writes bench/results/crash-latest.json and .md.

Not covered yet: the web chat (it answers in the request, no inbox) and the desk's outbox.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from bench.lifecycle import add_output_arguments, begin, finish, ready_to_run, record_failure
from bench.procs import ROOT
from bench.run import loadavg, machine_facts
from tests.fakes.slack_api import FakeSlackAPI
from tests.fakes.telegram_api import FakeTelegramAPI
from tests.integration.crash_support import (
    CrashStack,
    Outcome,
    Platform,
    ReplicaStack,
    SlackPlatform,
    TelegramPlatform,
    new_customers,
    platforms_env,
    reply_windows,
    run_trial,
    solo_stack,
    write_credentials,
)
from tests.integration.stack_support import running_stack

RESULTS = ROOT / "bench" / "results"
MODEL = ROOT / "models" / "firstreply.tar.gz"
STACKS = {
    "sqlite": "make run: 1 Rasa + 1 action server, SQLite",
    "pg2": "2 Rasa + 2 action servers, PostgreSQL + Redis",
}
CUSTOMERS = 30
KILL_WINDOW_S = (0.3, 4.0)
REDIS_DB_CRASH = 5
PLATFORMS = ["telegram", "slack_dm"]


def log(line: str) -> None:
    """Print a progress line."""
    print(f"[bench.crash] {line}", flush=True)



async def _sweep(
    name: str, stack: CrashStack, platforms: List[Platform], trials: int, rng: random.Random, first_id: int,
    results: Dict[str, Any],
) -> None:  # fmt: skip
    entry = results["stacks"][name]
    for trial in range(trials):
        platform = platforms[trial % len(platforms)]
        target = rng.choice(stack.targets)
        customers = new_customers(first_id + 1000 * trial, CUSTOMERS)
        label = f"{name}/{platform.name}"
        outcome: Outcome = await run_trial(stack, platform, label, customers, target, rng.uniform(*KILL_WINDOW_S), rng)
        entry["trials"].append(outcome.as_dict())
        log(f"{label} trial {trial + 1}/{trials}: {outcome.killed} at {outcome.kill_at_s} s: lost {outcome.lost}, "
            f"greeted twice {outcome.greeted_twice}, repeated {outcome.repeated} "
            f"({outcome.in_flight_at_kill} in flight), resumed {outcome.resume_s} s")  # fmt: skip


def summarize(trials: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Return a stack's totals over its trials."""
    if not trials:
        return {}

    def total(key: str) -> int:
        return sum(int(t[key]) for t in trials)

    resumed = [t["resume_s"] for t in trials if t["resume_s"] is not None]
    return {
        "trials": len(trials),
        "platforms": {p: sum(1 for t in trials if t["stack"].endswith(f"/{p}")) for p in sorted({t["stack"].split("/")[-1] for t in trials})},
        "kills": {target: sum(1 for t in trials if t["target"] == target) for target in sorted({t["target"] for t in trials})},
        "customers": total("customers"),
        "lost": total("lost"),
        "handled_twice": total("handled_twice"),
        "greeted_twice": total("greeted_twice"),
        "missing": total("missing"),
        "repeated": total("repeated"),
        "repeated_max_per_trial": max(int(t["repeated"]) for t in trials),
        "repeated_without_reply_in_flight": total("repeated_without_reply_in_flight"),
        "in_flight_at_kill": total("in_flight_at_kill"),
        "in_flight_max_per_trial": max(int(t["in_flight_at_kill"]) for t in trials),
        "greetings_in_doubt_kept": total("greetings_in_doubt_kept"),
        "held": total("held"),
        "held_twice": total("held_twice"),
        "resent": total("resent"),
        "resume_s_median": round(statistics.median(resumed), 2) if resumed else None,
        "resume_s_max": max(resumed) if resumed else None,
        "complete_s_median": round(statistics.median(t["complete_s"] for t in trials), 2),
    }


def render(results: Dict[str, Any]) -> str:
    """Return the report as Markdown."""
    lines = [f"# Random kills in bursts of {CUSTOMERS} new customers ({results['date']})", ""]
    if results.get("error"):
        lines += [f"**The run failed:** {results['error']}", ""]
    lines += [
        "| stack | trials (kills) | lost | handled twice | greeted twice | missing | customers with a repeated reply "
        "(max per trial) | of them with nothing in flight | replies in flight at the kill (max) | greetings in "
        "doubt not resent | told to wait (twice) | resumed after restart, median / max | all answered, median |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, entry in results["stacks"].items():
        s = entry.get("summary") or {}
        if not s:
            continue
        kills = ", ".join(f"{count} {target}" for target, count in s["kills"].items())
        platforms = ", ".join(f"{count} {platform}" for platform, count in s["platforms"].items())
        lines.append(
            f"| {STACKS[name]} | {s['trials']} ({platforms}; {kills}) | {s['lost']} | {s['handled_twice']} | {s['greeted_twice']} | "
            f"{s['missing']} | {s['repeated']} ({s['repeated_max_per_trial']}) | {s['repeated_without_reply_in_flight']} | "
            f"{s['in_flight_at_kill']} ({s['in_flight_max_per_trial']}) | {s['greetings_in_doubt_kept']} | "
            f"{s['held']} ({s['held_twice']}) | "
            f"{s['resume_s_median']} / {s['resume_s_max']} s | {s['complete_s_median']} s |"
        )
    lines += ["", "In-doubt window of the Rasa processes running at the end (ms: p50 / p99 / max):", ""]
    for name, entry in results["stacks"].items():
        for window in entry.get("windows", []):
            lag, doubt = window["record_lag_ms"], window["in_doubt_window_ms"]
            lines.append(
                f"- {name} {window['url']}: {window['replies']} replies; answer to 'sent' record "
                f"{lag['p50']} / {lag['p99']} / {lag['max']}; 'sending' to 'sent' {doubt['p50']} / {doubt['p99']} / "
                f"{doubt['max']}; found in doubt {window['found_in_doubt']}"
            )
    lines += ["", f"Seed {results['settings']['seed']}; {results['wall_s']:.0f} s."]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    """Run the sweep; return the exit code."""
    parser = argparse.ArgumentParser(prog="python -m bench.crash", description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20, help="trials per stack (default 20)")
    parser.add_argument("--stacks", nargs="+", choices=list(STACKS), default=list(STACKS), help="which stacks")
    parser.add_argument("--platforms", nargs="+", choices=PLATFORMS, default=PLATFORMS, help="which platforms, in turn")
    parser.add_argument("--seed", type=int, default=None, help="replay a sweep (default: drawn, and reported)")
    add_output_arguments(parser, RESULTS, "crash-latest")
    args = parser.parse_args(argv)
    if not ready_to_run(MODEL):
        return 2
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1_000_000)
    rng = random.Random(seed)
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="firstreply-bench-crash-"))
    settings = {"trials": args.trials, "customers": CUSTOMERS, "kill_window_s": KILL_WINDOW_S, "seed": seed,
                "platforms": args.platforms}  # fmt: skip
    results: Dict[str, Any] = {
        **begin(work, False, settings, machine_facts(), log),
        "stacks": {name: {"label": STACKS[name], "trials": []} for name in args.stacks},
    }
    code = 0
    fakes = {"telegram": FakeTelegramAPI, "slack_dm": FakeSlackAPI}
    apis = [fakes[name]().start() for name in args.platforms]
    platforms = [TelegramPlatform(api) if isinstance(api, FakeTelegramAPI) else SlackPlatform(api) for api in apis]
    try:
        for number, name in enumerate(args.stacks):
            (work / name).mkdir()
            run: Callable[..., Any] = _SWEEPS[name]
            run(work / name, platforms, args.trials, rng, 1_000_000 * (number + 1), results)
    except (Exception, KeyboardInterrupt) as exc:  # the report says what failed; the temp dir is kept
        code = record_failure(results, exc, log)
    finally:
        for api in apis:
            api.stop()
        for entry in results["stacks"].values():
            entry["summary"] = summarize(entry["trials"])
        results["machine"]["loadavg_end"] = loadavg()
        results["wall_s"] = round(time.perf_counter() - started, 1)
        finish(results, args.results, "crash-latest", render, work, args.keep, log)
    return code


def _sqlite(
    work: Path, platforms: List[Platform], trials: int, rng: random.Random, first_id: int, results: Dict[str, Any]
) -> None:
    with solo_stack(work, platforms) as stack:
        try:
            asyncio.run(_sweep("sqlite", stack, platforms, trials, rng, first_id, results))
        finally:
            results["stacks"]["sqlite"]["windows"] = reply_windows([f"http://127.0.0.1:{stack.rasa_port}"], platforms[0])


def _pg2(
    work: Path, platforms: List[Platform], trials: int, rng: random.Random, first_id: int, results: Dict[str, Any]
) -> None:
    env = {
        **platforms_env(platforms),
        # The default lease: a killed replica's updates must be taken over because its process is
        # gone, not because the lease ran out.
        "FIRSTREPLY_INBOX_SWEEP_SECONDS": "1",
        "TICKET_LOCK_LIFETIME": "15",
    }
    with running_stack(work, 2, REDIS_DB_CRASH, credentials=write_credentials(work, platforms), extra_env=env,
                       channel_table="channel_inbox") as running:  # fmt: skip
        try:
            asyncio.run(_sweep("pg2", ReplicaStack(running), platforms, trials, rng, first_id, results))
        finally:
            results["stacks"]["pg2"]["windows"] = reply_windows(running.rasa_urls, platforms[0])


_SWEEPS = {"sqlite": _sqlite, "pg2": _pg2}

if __name__ == "__main__":
    os.environ.setdefault("SQLALCHEMY_SILENCE_UBER_WARNING", "1")
    sys.exit(main())
