"""FirstReply's benchmark, side by side with a bare Rasa bot: ``make bench`` / ``python -m bench.run``.

Phases, one after the other (never two heavy things at once):

1. a fixed stratified 80/20 split of data/nlu;
2. ``rasa train`` (fresh output dir, ``--force``, own cache dir): our project on all of
   its data, then our project and the bare bot on the same 80 % split;
3. NLU quality of both split models on the held-out 20 %;
4. for each bot in turn: start it (ours with its action server), then first-reply
   latency under open-loop Poisson arrivals, a burst of simultaneous new
   conversations, closed-loop saturation, and memory; then stop it.

Writes bench/results/latest.json and latest.md and prints the markdown table.
``--quick`` is a smoke run of a few seconds per phase (the bare bot then trains with
Rasa's default pipeline but 2 epochs: its training time and accuracy mean nothing).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Dict, List, Optional

import yaml

from bench import report
from bench.bare import build_bare_project
from bench.lifecycle import begin, finish, record_failure
from bench.load import LoadGenerator, nlu_examples
from bench.nlu import split_nlu
from bench.procs import ROOT, VENV_BIN, Server, cpu_seconds, rasa_cmd, rasa_env, run_timed

RESULTS = ROOT / "bench" / "results"
AUTOCONFIG_MARK = "was chosen automatically"

FULL = {
    "warmup_s": 5.0,
    "rates": [5, 10, 20],
    "rate_s": 20.0,
    "burst": 50,
    "concurrency": [1, 4, 16, 32],
    "level_s": 12.0,
    "follow_ups": 3,
}
QUICK = {
    "warmup_s": 1.0,
    "rates": [5, 10, 20],
    "rate_s": 3.0,
    "burst": 50,
    "concurrency": [1, 4, 16],
    "level_s": 3.0,
    "follow_ups": 3,
}
# A level counts as sustained when at most this share of its requests failed.
MAX_ERROR_SHARE = 0.01


def log(message: str) -> None:
    """Print a progress line (stderr, so stdout carries only the table)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def machine_facts() -> Dict[str, Any]:
    """Return what the figures depend on: CPUs, memory, versions, commit."""
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = next(int(l.split()[1]) for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal"))
    git = lambda *a: subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True).stdout.strip()  # noqa: E731
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "mem_gib": round(mem_kb / 1024 / 1024, 1),
        "python": platform.python_version(),
        "rasa": metadata.version("rasa"),
        "rasa_sdk": metadata.version("rasa-sdk"),
        "os": platform.platform(),
        "commit": git("rev-parse", "--short", "HEAD") or "unknown",
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "loadavg_start": loadavg(),
    }


def loadavg() -> str:
    """Return the 1/5/15-minute load averages (other work on the machine shows here)."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def port_free(port: int) -> bool:
    """Return whether nothing listens on 127.0.0.1:``port``."""
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def quick_bare_config(path: Path) -> None:
    """Write Rasa's default config with every neural component cut to 2 epochs (--quick only)."""
    spec = importlib.util.find_spec("rasa")  # locate the packaged default config without importing Rasa
    assert spec is not None and spec.submodule_search_locations
    default = Path(spec.submodule_search_locations[0]) / "engine" / "recipes" / "config_files" / "default_config.yml"
    config = yaml.safe_load(default.read_text())
    config["assistant_id"] = "bare"
    for item in config["pipeline"] + config["policies"]:
        if "epochs" in item:
            item["epochs"] = 2
    path.write_text(yaml.safe_dump(config, sort_keys=False))


# --- phase 2: training --------------------------------------------------------------


def train(name: str, cwd: Path, args: List[str], work: Path, timeout: float) -> Dict[str, Any]:
    """Run one fresh ``rasa train`` and return its time, model and log."""
    out = work / "models" / name
    out.mkdir(parents=True, exist_ok=True)
    logfile = work / f"train-{name}.log"
    env = rasa_env(RASA_CACHE_DIRECTORY=str(work / "cache" / name))
    cmd = rasa_cmd("train", *args, "--out", str(out), "--fixed-model-name", name, "--force")
    log(f"training {name} ...")
    seconds = run_timed(cmd, cwd, env, logfile, timeout)
    log(f"training {name}: {seconds:.1f} s")
    return {"seconds": round(seconds, 2), "model": str(out / f"{name}.tar.gz"), "log": logfile}


def training_phase(work: Path, split_dir: Path, quick: bool, bare_full: bool, timeout: float) -> Dict[str, Any]:
    """Train our project (all data; 80 % split) and the bare bot (80 % split; optionally all data)."""
    ours_args = ["--domain", "domain", "--config", "config.yml"]
    rule_data = [str(ROOT / "data" / d) for d in ("rules", "stories") if (ROOT / "data" / d).exists()]
    results: Dict[str, Any] = {}
    ours_full = train("ours-full", ROOT, [*ours_args, "--data", "data"], work, timeout)
    ours_split = train("ours-split", ROOT, [*ours_args, "--data", str(split_dir / "train"), *rule_data], work, timeout)

    def bare_project(name: str, nlu_dir: Optional[Path]) -> Path:
        project = build_bare_project(work / name)
        if nlu_dir is not None:
            shutil.rmtree(project / "data" / "nlu")
            shutil.copytree(nlu_dir, project / "data" / "nlu")
        if quick:
            quick_bare_config(project / "config.yml")
        return project

    bare_split_dir = bare_project("bare-split", split_dir / "train")
    bare_split = train("bare-split", bare_split_dir, [], work, timeout)
    results["bare_autoconfigured"] = AUTOCONFIG_MARK in bare_split["log"].read_text(errors="replace")
    results["bare_config_written_back"] = (bare_split_dir / "config.yml").read_text()
    results.update(
        ours_full_s=ours_full["seconds"],
        ours_split_s=ours_split["seconds"],
        bare_split_s=bare_split["seconds"],
        models={"ours": ours_full["model"], "ours_split": ours_split["model"], "bare": bare_split["model"]},
    )
    if bare_full:
        full = train("bare-full", bare_project("bare-full", None), [], work, timeout)
        results["bare_full_s"] = full["seconds"]
    return results


# --- phase 3: NLU quality -----------------------------------------------------------


def nlu_phase(work: Path, models: Dict[str, str], test_file: Path) -> Dict[str, Any]:
    """Score both split models on the held-out file, each in its own process."""
    results: Dict[str, Any] = {}
    for bot, model in (("ours", models["ours_split"]), ("bare", models["bare"])):
        out = work / f"nlu-{bot}"
        out.mkdir(parents=True, exist_ok=True)
        log(f"NLU evaluation of {bot} ...")
        cmd = [str(VENV_BIN / "python"), "-m", "bench.nlu", model, str(test_file), str(out)]
        run_timed(cmd, ROOT, rasa_env(), work / f"nlu-{bot}.log", 900)
        results[bot] = json.loads((out / "metrics.json").read_text())
    return results


# --- phase 4: serving ---------------------------------------------------------------


class CpuMeter:
    """CPU seconds the bot's processes use during a phase, per answered message."""

    def __init__(self, pids: Dict[str, int]) -> None:
        """Watch ``pids`` (role -> pid, each with its descendants)."""
        self.pids = pids
        self._start: Dict[str, float] = {}

    def start(self) -> None:
        """Mark the start of a phase."""
        self._start = {role: cpu_seconds(pid) for role, pid in self.pids.items()}

    def stop(self, summary: Dict[str, Any]) -> Dict[str, Any]:
        """Add ``cpu_ms_per_msg_<role>`` and the CPU cores in use to ``summary``."""
        answered = max(1, summary.get("answered") or 0)
        for role, pid in self.pids.items():
            used = cpu_seconds(pid) - self._start.get(role, 0.0)
            summary[f"cpu_ms_per_msg_{role}"] = round(1000.0 * used / answered, 2)
            summary[f"cpu_cores_{role}"] = round(used / summary["duration_s"], 2) if summary.get("duration_s") else None
        return summary


async def load_phase(base_url: str, examples: List[str], settings: Dict[str, Any], cpu: CpuMeter) -> Dict[str, Any]:
    """Run every load phase against one bot."""
    results: Dict[str, Any] = {"open_loop": {}, "saturation": {}}
    async with LoadGenerator(base_url, examples) as gen:
        log(f"  warm-up {settings['warmup_s']:.0f} s at 5/s")
        await gen.open_loop(5, settings["warmup_s"])
        for rate in settings["rates"]:
            cpu.start()
            summary = cpu.stop((await gen.open_loop(rate, settings["rate_s"])).summary())
            results["open_loop"][str(rate)] = summary
            log(f"  open loop {rate}/s: p50 {summary['p50_ms']} p99 {summary['p99_ms']} ms, errors {summary['errors']}/{summary['sent']}")
            await asyncio.sleep(1.0)
        cpu.start()
        burst = cpu.stop((await gen.burst(settings["burst"])).summary())
        results["burst"] = burst
        log(f"  burst {settings['burst']}: last after {burst['duration_s']} s, p99 {burst['p99_ms']} ms, errors {burst['errors']}")
        await asyncio.sleep(1.0)
        for level in settings["concurrency"]:
            cpu.start()
            summary = cpu.stop((await gen.closed_loop(level, settings["level_s"], settings["follow_ups"])).summary())
            summary["concurrency"] = level
            results["saturation"][str(level)] = summary
            log(f"  closed loop x{level}: {summary['throughput_msg_s']} msg/s, p50 {summary['p50_ms']} p99 {summary['p99_ms']} ms, "
                f"errors {summary['errors']}, Rasa CPU {summary['cpu_ms_per_msg_rasa']} ms/msg")
            await asyncio.sleep(1.0)
    sustained = [
        s for s in results["saturation"].values() if s["sent"] and s["errors"] <= MAX_ERROR_SHARE * s["sent"]
    ]
    results["saturation_best"] = max(sustained, key=lambda s: s["throughput_msg_s"]) if sustained else None
    return results


def write_endpoints(
    path: Path, trackers: Path, action_port: Optional[int], project: bool, bare_store: str = "memory"
) -> Optional[Path]:
    """Write an endpoints.yml with its tracker store in the file ``trackers``; None if none is needed.

    Our bot keeps the tracker store type of the project's endpoints.yml (only its file
    moves to the temp dir) and gets ``action_port``. The bare bot keeps Rasa's default,
    the in-memory tracker store (no endpoints file), or with ``bare_store="sqlite"``
    Rasa's stock SQL tracker store on SQLite.
    """
    if not project and bare_store == "memory":
        return None
    store: Dict[str, Any] = {"type": "SQL", "dialect": "sqlite", "db": str(trackers)}
    if project:
        ours = (yaml.safe_load((ROOT / "endpoints.yml").read_text()) or {}).get("tracker_store") or {}
        if ours.get("type") and ("db" in ours or ours.get("dialect") == "sqlite"):
            store = {**ours, "db": str(trackers)}
    doc: Dict[str, Any] = {"tracker_store": store}
    if action_port is not None:
        doc["action_endpoint"] = {"url": f"http://127.0.0.1:{action_port}/webhook"}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def rasa_server_cmd(project: bool) -> List[str]:
    """Return how the bot's server is started: ours as ``make run`` starts it, the bare bot with ``rasa``."""
    if project and (ROOT / "bot" / "launcher.py").exists():
        return [str(VENV_BIN / "python"), "-m", "bot.launcher", "run"]
    return rasa_cmd("run")


def serve_and_measure(
    bot: str, model: str, work: Path, port: int, action_port: Optional[int], settings: Dict[str, Any], examples: List[str],
    bare_store: str = "memory",
) -> Dict[str, Any]:
    """Start one bot (and its action server), load it, measure memory, stop it."""
    run_dir = work / f"serve-{bot}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    results: Dict[str, Any] = {"loadavg_before": loadavg()}
    actions: Optional[Server] = None
    rasa: Optional[Server] = None
    try:
        if action_port is not None:
            env = rasa_env(SANIC_HOST="127.0.0.1", FIRSTREPLY_CASE_DB=f"sqlite:///{run_dir / 'cases.db'}")
            actions = Server(
                "action server",
                rasa_cmd("run", "actions", "--port", str(action_port), "--actions", "actions"),
                ROOT, env, run_dir / "actions.log", f"http://127.0.0.1:{action_port}/health",
            ).start()
            results["actions_startup_s"] = round(actions.startup_s or 0, 2)
        endpoints = write_endpoints(run_dir / "endpoints.yml", run_dir / "trackers.db", action_port, bot == "ours", bare_store)
        results["tracker_store"] = (
            (yaml.safe_load(endpoints.read_text())["tracker_store"] or {}).get("type") if endpoints else "InMemoryTrackerStore"
        )
        credentials = run_dir / "credentials.yml"
        credentials.write_text("rest:\n")
        log(f"starting {bot} on :{port} ...")
        rasa = Server(
            f"rasa ({bot})",
            [
                *rasa_server_cmd(bot == "ours"), "--model", model, *(["--endpoints", str(endpoints)] if endpoints else []),
                "--credentials", str(credentials),
                "--interface", "127.0.0.1", "--port", str(port), "--enable-api",
            ],
            ROOT, rasa_env(), run_dir / "rasa.log", f"http://127.0.0.1:{port}/",
        ).start()
        results["startup_s"] = round(rasa.startup_s or 0, 2)
        results["command"] = " ".join(Path(a).name if a.startswith("/") else a for a in rasa.cmd[: rasa.cmd.index("--model")])
        results["rss_rasa_idle_mb"] = rasa.rss_mb()
        if actions:
            results["rss_actions_idle_mb"] = actions.rss_mb()
        results["pids"] = {"rasa": rasa.pid, **({"actions": actions.pid} if actions else {})}
        log(f"{bot} ready after {results['startup_s']} s (pid {rasa.pid}); loading it")
        cpu = CpuMeter(results["pids"])
        results.update(asyncio.run(load_phase(f"http://127.0.0.1:{port}", examples, settings, cpu)))
        results["rss_rasa_after_mb"] = rasa.rss_mb()
        results["rss_actions_after_mb"] = actions.rss_mb() if actions else None
        results["rss_total_after_mb"] = round(results["rss_rasa_after_mb"] + (results["rss_actions_after_mb"] or 0), 1)
        results["alive_after"] = rasa.alive() and (actions is None or actions.alive())
        results["log_errors"] = _log_problems(run_dir)
    finally:
        if rasa:
            rasa.stop()
        if actions:
            actions.stop()
    results["loadavg_after"] = loadavg()
    return results


def _log_problems(run_dir: Path, limit: int = 8) -> List[str]:
    """Return the first distinct ERROR/Exception lines of the bot's logs."""
    seen: List[str] = []
    for logfile in sorted(run_dir.glob("*.log")):
        for line in logfile.read_text(errors="replace").splitlines():
            if ("ERROR" in line or "Traceback" in line or "Exception" in line) and line not in seen:
                seen.append(f"{logfile.name}: {line.strip()[:300]}")
                if len(seen) >= limit:
                    return seen
    return seen


# --- main ---------------------------------------------------------------------------


def _render(results: Dict[str, Any]) -> str:
    """Return the Markdown report, or one line saying the run failed before training finished."""
    return report.render(results) if "training" in results else f"Benchmark failed: {results.get('error')}"


def main(argv: Optional[List[str]] = None) -> int:
    """Run the benchmark; return the exit code."""
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: a few seconds per phase")
    parser.add_argument("--bare-full-data", action="store_true",
                        help="also train the bare bot on 100 %% of the NLU data (several extra minutes)")
    parser.add_argument("--bare-tracker-store", choices=("memory", "sqlite"), default="memory",
                        help="the bare bot's tracker store: Rasa's default in-memory one (default) or Rasa's SQL "
                        "tracker store on a temp SQLite file")
    parser.add_argument("--port", type=int, default=6105, help="our Rasa server's port (default 6105)")
    parser.add_argument("--actions-port", type=int, default=6155, help="our action server's port (default 6155)")
    parser.add_argument("--bare-port", type=int, default=6205, help="the bare bot's port (default 6205)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where latest.json/latest.md go")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (models, logs)")
    args = parser.parse_args(argv)

    for port in (args.port, args.actions_port, args.bare_port):
        if not port_free(port):
            print(f"Port {port} is in use; choose others with --port/--actions-port/--bare-port.", file=sys.stderr)
            return 2

    settings = dict(QUICK if args.quick else FULL)
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="firstreply-bench-"))
    results: Dict[str, Any] = {
        **begin(work, args.quick, settings, machine_facts(), log),
        "bots": {},
        "notes": [],
        "bare_tracker_store": args.bare_tracker_store,
    }
    code = 0
    try:
        split = split_nlu(work / "split")
        results["split"] = split
        log(f"NLU split (seed {split['seed']}): {split['train_examples']} train / {split['test_examples']} test examples")

        training = training_phase(work, work / "split", args.quick, args.bare_full_data, 3600)
        results["training"] = {k: v for k, v in training.items() if k not in ("models", "bare_config_written_back")}
        if not training["bare_autoconfigured"] and not args.quick:
            results["notes"].append("Rasa did NOT report filling in the bare bot's pipeline/policies; check the training log.")

        results["nlu"] = nlu_phase(work, training["models"], work / "split" / "test.yml")

        examples = nlu_examples()
        for bot, port, action_port in (("ours", args.port, args.actions_port), ("bare", args.bare_port, None)):
            for attempt in (1, 2):
                try:
                    res = serve_and_measure(
                        bot, training["models"][bot], work, port, action_port, settings, examples, args.bare_tracker_store
                    )
                except RuntimeError as exc:  # did not start, or died while starting
                    if attempt == 2:
                        raise
                    res = {"alive_after": False, "start_error": str(exc)[:500]}
                results["bots"][bot] = res
                if res.get("alive_after"):
                    break
                # Something outside the benchmark stopped a server (the machine is shared): measure again once.
                results["notes"].append(f"{bot}: a server process died during the load (attempt {attempt}); "
                                        + ("measured again." if attempt == 1 else "figures are from a broken run."))
                log(f"{bot}: a server died during the load (attempt {attempt})")
        for bot, res in results["bots"].items():
            if res.get("log_errors"):
                results["notes"].append(f"{bot}: errors in its logs, first: `{res['log_errors'][0]}`")
    except Exception as exc:  # the report says what failed; the temp dir is kept for its logs
        code = record_failure(results, exc, log)
    finally:
        results["machine"]["loadavg_end"] = loadavg()
        results["wall_s"] = round(time.perf_counter() - started, 1)
        results["notes"] += standard_notes(results)
        results["targets"] = report.targets(results) if results["bots"] else []
        name = "quick" if args.quick else "latest"
        finish(results, args.results, name, _render, work, args.keep, log)
    return code


def standard_notes(results: Dict[str, Any]) -> List[str]:
    """Return the notes every report carries, so its figures are read correctly."""
    split = results.get("split") or {}
    notes = [
        "Both bots get the same load from the same generator (aiohttp, in the benchmark process, on the same "
        "CPUs); they are measured one after the other, never both loaded at once. Other work on the machine "
        "shows in the load averages above; CPU ms per message (from /proc) is the figure least affected by it.",
        "The bare bot has Rasa's default config (`recipe: default.v1` only; Rasa fills in DIET, TED, "
        "UnexpecTED, ...), our NLU data, our intents, and one rule per intent that answers with one response; "
        "it is served with Rasa's defaults (`rasa run`, "
        + ("in-memory tracker store: it persists nothing, which favours it" if results.get("bare_tracker_store", "memory") == "memory"
           else "Rasa's SQL tracker store on SQLite") + ").",
        f"Both served models and both NLU evaluations use the same seeded 80/20 split ({split.get('train_examples')} / "
        f"{split.get('test_examples')} examples), except our served model, trained on 100 %. The bare bot is trained "
        "once, on the 80 % (a 100-epoch DIET run takes many minutes on this machine); its latency does not depend on it.",
        "Ratio column: ours divided by bare. Lower is better for times, latencies and memory; higher for throughput "
        "and accuracy.",
        "Saturation = the highest closed-loop throughput with ≤ 1 % errors; customers send a first message and "
        f"{results['settings']['follow_ups']} follow-ups (random NLU examples) per conversation.",
    ]
    for bot, res in (results.get("bots") or {}).items():
        if res.get("command"):
            notes.append(f"{bot}: served by `{res['command']} ...`, tracker store `{res.get('tracker_store')}`"
                         + (", with its action server (`rasa run actions`)." if res.get("pids", {}).get("actions") else "."))
    if results.get("quick"):
        notes.append("QUICK run: phases of a few seconds and a 2-epoch bare model; do not quote these figures.")
    return notes


if __name__ == "__main__":
    sys.exit(main())
