"""Kills at random moments of bursts of new customers: ``make bench-crash`` / ``python -m bench.crash``.

Each trial is ``tests.integration.crash_support.run_trial``: 30 new customers write at once over
one channel (Telegram, Slack DMs, WhatsApp, X DMs, Messenger or Instagram Direct, against their
local fakes, or the web chat,
each customer doing what the page does with a failed request: ``tests.integration.crash_webchat``;
the channels take turns); at a random moment of the burst one part is killed and started again at
once; every customer's side is then held against what Rasa saved. Two stacks, each started once
with every channel's connector and given ``--trials`` trials:

* ``sqlite``: what ``make run`` starts (one Rasa through ``bot.launcher``, one action server,
  SQLite files, the default 60 s lease, and the front process on the public port for Telegram,
  Slack DMs, WhatsApp, X, Messenger and Instagram); Rasa, the action server or the front is
  killed (SIGKILL);
* ``pg2``: two Rasa replicas and two action servers on PostgreSQL and Redis behind round-robin
  proxies (``endpoints.prod.yml``); one Rasa or action server (drawn at random) is killed, or
  every database connection of the stack is terminated. Needs the test services
  (``scripts/test-services.sh run``, as the make target does).

Per trial: lost messages, messages handled twice, customers greeted twice, customers who
received a reply twice (and whether one of their replies was in flight at the kill), replies
missing, replies in flight at the kill, how soon the answers resumed after the restart. The
in-doubt window (``GET /webhooks/<channel>/replies`` of the first messaging channel, from every
Rasa process at the end) closes the report.

Two more stacks drive the desk's outbox (``tests.integration.crash_desk``): 10 new Telegram
cases get 3 agents' replies each, queued at random moments of 3 s, while the desk is killed
(SIGKILL, started again at once) or, on PostgreSQL, every connection to the case store is
terminated: ``desk`` on a SQLite case store, ``desk_pg`` on PostgreSQL. Per trial: replies
lost, repeated (and whether they were in doubt at the kill), given up, Slack posts made twice,
how soon deliveries resumed. Writes bench/results/crash-latest.json and .md.
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
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from bench.lifecycle import add_output_arguments, begin, finish, ready_to_run, record_failure
from bench.procs import ROOT
from bench.run import loadavg, machine_facts
from tests.fakes.graph_api import FakeGraphAPI
from tests.fakes.slack_api import FakeSlackAPI
from tests.fakes.telegram_api import FakeTelegramAPI
from tests.fakes.whatsapp_api import FakeWhatsAppAPI
from tests.fakes.x_api import FakeXAPI
from tests.integration.conftest import fresh_database, production_services
from tests.integration.crash_desk import DESK, DeliveryOutcome, DeskStack, desk_stack, run_desk_trial
from tests.integration.crash_support import (
    ACTIONS,
    DATABASE,
    FRONT,
    FRONT_KILL_WINDOW_S,
    RASA,
    InstagramPlatform,
    MessengerPlatform,
    CrashStack,
    Outcome,
    Platform,
    ReplicaStack,
    SlackPlatform,
    TelegramPlatform,
    WhatsAppPlatform,
    XPlatform,
    kill_window,
    new_customers,
    platforms_env,
    reply_windows,
    run_trial,
    solo_stack,
    write_credentials,
)
from tests.integration.crash_webchat import WebChatPlatform, run_webchat_trial
from tests.integration.stack_support import running_stack

RESULTS = ROOT / "bench" / "results"
MODEL = ROOT / "models" / "firstreply.tar.gz"
STACKS = {
    "sqlite": "make run: 1 Rasa + 1 action server, SQLite",
    "pg2": "2 Rasa + 2 action servers, PostgreSQL + Redis",
    "desk": "desk's outbox, SQLite case store",
    "desk_pg": "desk's outbox, PostgreSQL case store",
}
DESK_STACKS = ("desk", "desk_pg")
CUSTOMERS = 30
KILL_WINDOW_S = (0.2, 2.5)
REDIS_DB_CRASH = 5
PLATFORMS = ["telegram", "slack_dm", "whatsapp", "x", "messenger", "instagram", "webchat"]
DESK_CUSTOMERS, DESK_REPLIES_EACH = 10, 3
DESK_KILL_WINDOW_S = (0.3, 3.5)
KILLS = [RASA, ACTIONS, FRONT, DATABASE, DESK]


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
        target = rng.choice(_targets(stack.targets, results))
        customers = new_customers(first_id + 1000 * trial, CUSTOMERS)
        label = f"{name}/{platform.name}"
        trial_of = run_webchat_trial if isinstance(platform, WebChatPlatform) else run_trial
        window = kill_window(target, results["settings"]["kill_window_s"])
        outcome: Outcome = await trial_of(stack, platform, label, customers, target, rng.uniform(*window), rng)
        entry["trials"].append(outcome.as_dict())
        log(f"{label} trial {trial + 1}/{trials}: {outcome.killed} at {outcome.kill_at_s} s: lost {outcome.lost}, "
            f"greeted twice {outcome.greeted_twice}, repeated {outcome.repeated} "
            f"({outcome.in_flight_at_kill} in flight), resumed {outcome.resume_s} s")  # fmt: skip


def _targets(targets: tuple[str, ...], results: Dict[str, Any]) -> List[str]:
    """Return the stack's kill targets that ``--kills`` allows (all of them when it names none of them)."""
    allowed = [target for target in targets if target in results["settings"]["kills"]]
    return allowed or list(targets)


async def _desk_sweep(
    name: str, stack: DeskStack, trials: int, rng: random.Random, first_id: int, results: Dict[str, Any]
) -> None:
    entry = results["stacks"][name]
    for trial in range(trials):
        target = rng.choice(_targets(stack.targets, results))
        outcome: DeliveryOutcome = await run_desk_trial(
            stack, name, first_id + 1000 * trial, DESK_CUSTOMERS, DESK_REPLIES_EACH, target,
            rng.uniform(*DESK_KILL_WINDOW_S), rng,
        )  # fmt: skip
        entry["trials"].append(outcome.as_dict())
        log(f"{name} trial {trial + 1}/{trials}: {outcome.killed} at {outcome.kill_at_s} s: lost {outcome.lost}, "
            f"repeated {outcome.repeated} ({outcome.in_doubt_at_kill} in doubt), "
            f"resumed {outcome.resume_s} s")  # fmt: skip


def _totals(trials: List[Dict[str, Any]]) -> Tuple[Callable[[str], int], List[float]]:
    """Return a function summing a figure over ``trials``, and their resume times."""

    def total(key: str) -> int:
        return sum(int(t[key]) for t in trials)

    return total, [t["resume_s"] for t in trials if t["resume_s"] is not None]


def summarize_desk(trials: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Return a desk stack's totals over its trials."""
    if not trials:
        return {}
    total, resumed = _totals(trials)
    return {
        "trials": len(trials),
        "kills": dict(sorted(Counter(t["target"] for t in trials).items())),
        "replies": total("replies"),
        "lost": total("lost"),
        "given_up": total("given_up"),
        "repeated": total("repeated"),
        "repeated_max_per_trial": max(int(t["repeated"]) for t in trials),
        "repeated_not_in_doubt": total("repeated_not_in_doubt"),
        "in_doubt_at_kill": total("in_doubt_at_kill"),
        "in_doubt_max_per_trial": max(int(t["in_doubt_at_kill"]) for t in trials),
        "cut_off": total("cut_off"),
        "slack_posts_twice": total("slack_posts_twice"),
        "resume_s_median": round(statistics.median(resumed), 2) if resumed else None,
        "resume_s_max": max(resumed) if resumed else None,
    }


def summarize(trials: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Return a stack's totals over its trials."""
    if not trials:
        return {}
    total, resumed = _totals(trials)
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
    rows = [
        (f"{STACKS[name]}, {channel}", summarize([t for t in entry["trials"] if t["stack"] == f"{name}/{channel}"]))
        for name, entry in results["stacks"].items()
        if name not in DESK_STACKS
        for channel in sorted({t["stack"].split("/")[-1] for t in entry["trials"]})
    ]
    lines += [] if not rows else [
        "| stack | trials (kills) | lost | handled twice | greeted twice | missing | customers with a repeated reply "
        "(max per trial) | of them with nothing in flight | replies in flight at the kill (max) | greetings in "
        "doubt not resent | told to wait (twice) | resumed after restart, median / max | all answered, median |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label, s in rows:
        kills = ", ".join(f"{count} {target}" for target, count in s["kills"].items())
        platforms = ", ".join(f"{count} {platform}" for platform, count in s["platforms"].items())
        lines.append(
            f"| {label} | {s['trials']} ({platforms}; {kills}) | {s['lost']} | {s['handled_twice']} | "
            f"{s['greeted_twice']} | "
            f"{s['missing']} | {s['repeated']} ({s['repeated_max_per_trial']}) | {s['repeated_without_reply_in_flight']} | "
            f"{s['in_flight_at_kill']} ({s['in_flight_max_per_trial']}) | {s['greetings_in_doubt_kept']} | "
            f"{s['held']} ({s['held_twice']}) | "
            f"{s['resume_s_median']} / {s['resume_s_max']} s | {s['complete_s_median']} s |"
        )
    desk = [(name, entry.get("summary") or {}) for name, entry in results["stacks"].items() if name in DESK_STACKS]
    if any(s for _, s in desk):
        lines += [
            "",
            f"The desk's outbox: {DESK_CUSTOMERS} Telegram cases, {DESK_REPLIES_EACH} agents' replies each per trial:",
            "",
            "| stack | trials (kills) | replies | lost | given up | repeated (max per trial) | of them not in doubt | "
            "in doubt at the kill (max) | cut off and sent again | Slack posts twice | "
            "resumed after restart, median / max |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]  # fmt: skip
        for name, s in desk:
            if not s:
                continue
            kills = ", ".join(f"{count} {target}" for target, count in s["kills"].items())
            lines.append(
                f"| {STACKS[name]} | {s['trials']} ({kills}) | {s['replies']} | {s['lost']} | {s['given_up']} | "
                f"{s['repeated']} ({s['repeated_max_per_trial']}) | {s['repeated_not_in_doubt']} | "
                f"{s['in_doubt_at_kill']} ({s['in_doubt_max_per_trial']}) | {s['cut_off']} | "
                f"{s['slack_posts_twice']} | "
                f"{s['resume_s_median']} / {s['resume_s_max']} s |"
            )
    if any(entry.get("windows") for entry in results["stacks"].values()):
        lines += ["", "In-doubt window of the Rasa processes running at the end (ms: p50 / p99 / max):", ""]
    for name, entry in results["stacks"].items():
        for window in entry.get("windows", []):
            lag, doubt = window["record_lag_ms"], window["in_doubt_window_ms"]
            lines.append(
                f"- {name} {window['url']}: {window['replies']} replies; answer to 'sent' record "
                f"{lag['p50']} / {lag['p99']} / {lag['max']}; 'sending' to 'sent' {doubt['p50']} / {doubt['p99']} / "
                f"{doubt['max']}; found in doubt {window['found_in_doubt']}"
            )
    lines += ["", f"Seed {results['settings']['seed']}; kills allowed: {', '.join(results['settings']['kills'])}; "
              f"FIRSTREPLY_REPLY_CALLS {results['settings']['reply_calls']}; {results['wall_s']:.0f} s."]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    """Run the sweep; return the exit code."""
    parser = argparse.ArgumentParser(prog="python -m bench.crash", description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20, help="trials per stack (default 20)")
    parser.add_argument("--stacks", nargs="+", choices=list(STACKS), default=list(STACKS), help="which stacks")
    parser.add_argument("--platforms", nargs="+", choices=PLATFORMS, default=PLATFORMS, help="which channels, in turn")
    parser.add_argument("--kills", nargs="+", choices=KILLS, default=KILLS,
                        help="what may be killed, where the stack has it (default: all)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=None, help="replay a sweep (default: drawn, and reported)")
    parser.add_argument("--kill-window", nargs=2, type=float, default=KILL_WINDOW_S, metavar=("FROM", "TO"),
                        help=f"seconds into a burst a kill is drawn from (default {KILL_WINDOW_S[0]} {KILL_WINDOW_S[1]}; "
                             f"the front's: {FRONT_KILL_WINDOW_S[0]} {FRONT_KILL_WINDOW_S[1]}); "
                             "a faster server finishes a burst sooner")  # fmt: skip
    add_output_arguments(parser, RESULTS, "crash-latest")
    args = parser.parse_args(argv)
    if not ready_to_run(MODEL):
        return 2
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1_000_000)
    rng = random.Random(seed)
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="firstreply-bench-crash-"))
    settings = {"trials": args.trials, "customers": CUSTOMERS, "kill_window_s": tuple(args.kill_window), "seed": seed,
                "platforms": args.platforms, "kills": args.kills,
                "reply_calls": os.environ.get("FIRSTREPLY_REPLY_CALLS", "default")}  # fmt: skip
    results: Dict[str, Any] = {
        **begin(work, False, settings, machine_facts(), log),
        "stacks": {name: {"label": STACKS[name], "trials": []} for name in args.stacks},
    }
    code = 0
    fakes: Dict[str, Tuple[Callable[[], Any], Callable[[Any], Platform]]] = {
        "telegram": (FakeTelegramAPI, TelegramPlatform), "slack_dm": (FakeSlackAPI, SlackPlatform),
        "whatsapp": (FakeWhatsAppAPI, WhatsAppPlatform), "x": (FakeXAPI, XPlatform),
        # Each its own fake Graph API (the connector's base_url is in its credentials).
        "messenger": (FakeGraphAPI, MessengerPlatform), "instagram": (FakeGraphAPI, InstagramPlatform),
    }  # fmt: skip
    apis = {name: fakes[name][0]().start() for name in args.platforms if name in fakes}
    platforms: List[Platform] = [fakes[name][1](api) for name, api in apis.items()]
    platforms += [WebChatPlatform()] if "webchat" in args.platforms else []
    try:
        for number, name in enumerate(args.stacks):
            (work / name).mkdir()
            run: Callable[..., Any] = _SWEEPS[name]
            run(work / name, platforms, args.trials, rng, 1_000_000 * (number + 1), results)
    except (Exception, KeyboardInterrupt) as exc:  # the report says what failed; the temp dir is kept
        code = record_failure(results, exc, log)
    finally:
        for api in apis.values():
            api.stop()
        for name, entry in results["stacks"].items():
            entry["summary"] = (summarize_desk if name in DESK_STACKS else summarize)(entry["trials"])
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
            results["stacks"]["sqlite"]["windows"] = _windows([f"http://127.0.0.1:{stack.rasa_port}"], platforms)


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
    # A table the channels make at start-up: the inbox, or the web chat's when it runs alone.
    table = "channel_inbox" if any(not isinstance(p, WebChatPlatform) for p in platforms) else "webchat_messages"
    with running_stack(work, 2, REDIS_DB_CRASH, credentials=write_credentials(work, platforms), extra_env=env,
                       channel_table=table) as running:  # fmt: skip
        try:
            asyncio.run(_sweep("pg2", ReplicaStack(running), platforms, trials, rng, first_id, results))
        finally:
            results["stacks"]["pg2"]["windows"] = _windows(running.rasa_urls, platforms)


def _windows(rasa_urls: List[str], platforms: List[Platform]) -> List[Dict[str, Any]]:
    """Return the reply figures of the first channel that keeps reply records (the web chat keeps none)."""
    recorded = [platform for platform in platforms if not isinstance(platform, WebChatPlatform)]
    return reply_windows(rasa_urls, recorded[0]) if recorded else []


def _desk(
    work: Path, _platforms: List[Platform], trials: int, rng: random.Random, first_id: int, results: Dict[str, Any]
) -> None:
    with desk_stack(work) as stack:
        asyncio.run(_desk_sweep("desk", stack, trials, rng, first_id, results))


def _desk_pg(
    work: Path, _platforms: List[Platform], trials: int, rng: random.Random, first_id: int, results: Dict[str, Any]
) -> None:
    with fresh_database(production_services().postgres_url) as url, desk_stack(work, url) as stack:
        asyncio.run(_desk_sweep("desk_pg", stack, trials, rng, first_id, results))


_SWEEPS = {"sqlite": _sqlite, "pg2": _pg2, "desk": _desk, "desk_pg": _desk_pg}

if __name__ == "__main__":
    os.environ.setdefault("SQLALCHEMY_SILENCE_UBER_WARNING", "1")
    sys.exit(main())
