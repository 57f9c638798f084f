"""The full production stack under load: ``make bench-stack`` / ``python -m bench.stack``.

Telegram connector -> Rasa -> action server -> case store, three ways, measured side by side
in one run:

* ``sqlite``: the embedded defaults (``bot.trackers.SQLiteTrackerStore``, the case store and
  the channel database in SQLite files, Rasa's in-memory lock store), one Rasa process and its
  action server, as ``make run`` serves them;
* ``pg-1``: ``endpoints.prod.yml`` as shipped (PostgreSQL tracker store and event broker, Redis
  lock store; case store and channel tables in PostgreSQL), one Rasa replica and one action
  server, each behind a round-robin proxy (``bench.stack_proxy``);
* ``pg-2``: the same with two Rasa replicas and two action servers behind the proxies.

Each PostgreSQL stack gets its own private PostgreSQL and Redis (``scripts/test-services.sh
start``; stopped at the end), so their memory and CPU are measured apart. All three stacks are
started first and stay up; the trials then take turns (trial ``n`` starts with a different
stack), so a noisy moment on the shared machine hits every stack alike, and every ratio is
taken within one round of trials. Customers and the fake Telegram Bot API are in
``bench.stack_load``.

Per stack and trial: open-loop steps of rising offered messages/s (first response p50/p99
at each, stopping after two steps over the limit), then closed-loop saturation; CPU time per
message of every process; memory at the end. Writes bench/results/stack-latest.json and .md
(``--quick``: stack-quick.*, figures meaningless).
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from sqlalchemy import create_engine, text

from bench import stack_report
from bench.lifecycle import add_output_arguments, begin, finish, ready_to_run, record_failure
from bench.procs import ROOT, VENV_BIN, Server, cpu_seconds, pss_mb, rasa_cmd, rasa_env, rss_mb
from bench.run import _log_problems, loadavg, machine_facts, rasa_server_cmd, write_endpoints
from bench.stack_load import SCRIPTS, TelegramCustomers, TimedBotAPI
from bench.stack_proxy import HEALTH_PATH
from tests.fakes.telegram_api import RASA_CREDENTIALS as CREDENTIALS
from tests.fakes.telegram_api import TOKEN
from tests.integration.conftest import free_port, fresh_database, production_env

RESULTS = ROOT / "bench" / "results"
SERVICES_SCRIPT = ROOT / "scripts" / "test-services.sh"
PROD_ENDPOINTS = ROOT / "endpoints.prod.yml"
MODEL = ROOT / "models" / "firstreply.tar.gz"
P99_LIMIT_MS = 300.0
# A step or level counts when at most this share of its messages failed.
MAX_ERROR_SHARE = 0.01
LABELS = {
    "sqlite": "SQLite, 1 Rasa",
    "pg-1": "PostgreSQL + Redis, 1 Rasa",
    "pg-2": "PostgreSQL + Redis, 2 Rasa",
}

FULL = {
    "trials": 3,
    "rates": [2, 5, 10, 15, 20, 25, 30, 40, 50, 60],
    "warmup_s": 4.0,
    "ramp_s": 4.0,
    "measure_s": 15.0,
    "customers": [8, 24],
    "closed_ramp_s": 3.0,
    "closed_measure_s": 12.0,
    "pause_s": 1.0,
}
QUICK = {
    "trials": 1,
    "rates": [5, 10],
    "warmup_s": 2.0,
    "ramp_s": 2.0,
    "measure_s": 5.0,
    "customers": [8],
    "closed_ramp_s": 2.0,
    "closed_measure_s": 5.0,
    "pause_s": 0.5,
}


def log(message: str) -> None:
    """Print a progress line (stderr, so stdout carries only the table)."""
    print(f"[bench-stack {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- PostgreSQL and Redis ---------------------------------------------------------------


@dataclass
class Services:
    """A private PostgreSQL and Redis started by scripts/test-services.sh."""

    directory: Path
    postgres_url: str
    redis_url: str

    @classmethod
    def start(cls) -> "Services":
        """Start both servers (``test-services.sh start``).

        Raises:
            RuntimeError: the script failed (its message says what to install).
        """
        done = subprocess.run([str(SERVICES_SCRIPT), "start"], capture_output=True, text=True, timeout=180)
        found = dict(
            line[len("export "):].split("=", 1) for line in done.stdout.splitlines() if line.startswith("export ")
        )
        directory = found.get("FIRSTREPLY_TEST_SERVICES_DIR")
        if done.returncode != 0 or not {"FIRSTREPLY_TEST_POSTGRES_URL", "FIRSTREPLY_TEST_REDIS_URL"} <= set(found):
            if directory:  # the script cleans up after itself, but leave nothing behind
                subprocess.run([str(SERVICES_SCRIPT), "stop", directory], capture_output=True, timeout=120)
            raise RuntimeError(f"scripts/test-services.sh start failed:\n{done.stderr[-2000:]}")
        return cls(Path(str(directory)), found["FIRSTREPLY_TEST_POSTGRES_URL"], found["FIRSTREPLY_TEST_REDIS_URL"])

    def stop(self) -> None:
        """Stop both servers and delete their directory."""
        subprocess.run([str(SERVICES_SCRIPT), "stop", str(self.directory)], capture_output=True, timeout=120)

    def pids(self) -> Dict[str, int]:
        """Return the PostgreSQL postmaster's and the Redis server's process ids."""
        postmaster = (self.directory / "postgres" / "data" / "postmaster.pid").read_text().split()[0]
        return {"postgres": int(postmaster), "redis": int((self.directory / "redis" / "redis.pid").read_text())}


# --- the stacks -------------------------------------------------------------------------


@dataclass
class Stack:
    """One configuration, running: its servers by role, in start order."""

    name: str
    url: str
    case_db: str
    servers: Dict[str, Server] = field(default_factory=dict)
    services: Optional[Services] = None
    run_dir: Path = ROOT

    def pids(self) -> Dict[str, int]:
        """Return every process of the stack by role (servers, then PostgreSQL and Redis)."""
        return {
            **{role: server.pid for role, server in self.servers.items()},
            **(self.services.pids() if self.services else {}),
        }

    def alive(self) -> bool:
        """Return whether every server is still running."""
        return all(server.alive() for server in self.servers.values())

    def memory(self) -> Dict[str, float]:
        """Return RSS per process in MiB; PostgreSQL's as PSS too (see ``pss_mb``)."""
        found = {role: rss_mb(pid) for role, pid in self.pids().items()}
        if self.services:
            found["postgres_pss"] = pss_mb(self.services.pids()["postgres"])
        return found

    def cases(self) -> int:
        """Return how many cases the stack's case store holds."""
        engine = create_engine(self.case_db, future=True)
        try:
            with engine.connect() as conn:
                return int(conn.execute(text("SELECT count(*) FROM cases")).scalar_one())
        finally:
            engine.dispose()

    def stop(self) -> None:
        """Stop the servers, last started first."""
        for server in reversed(list(self.servers.values())):
            server.stop()


def _telegram_env(api: TimedBotAPI, secret: str) -> Dict[str, str]:
    return {"TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_WEBHOOK_SECRET": secret, "TELEGRAM_API_BASE_URL": api.base_url}


def _rasa(role: str, run_dir: Path, model: Path, endpoints: Path, env: Dict[str, str]) -> Server:
    port = free_port()
    cmd = [
        *rasa_server_cmd(True), "--model", str(model), "--endpoints", str(endpoints),
        "--credentials", str(run_dir / "credentials.yml"), "--interface", "127.0.0.1", "--port", str(port),
        "--enable-api",
    ]  # fmt: skip
    return Server(role, cmd, ROOT, env, run_dir / f"{role}.log", f"http://127.0.0.1:{port}/")


def _actions(role: str, run_dir: Path, env: Dict[str, str]) -> Server:
    port = free_port()
    cmd = rasa_cmd("run", "actions", "--port", str(port), "--actions", "actions")
    return Server(role, cmd, ROOT, env, run_dir / f"{role}.log", f"http://127.0.0.1:{port}/health")


def _proxy(role: str, run_dir: Path, backends: Sequence[Server], port: int) -> Server:
    cmd = [str(VENV_BIN / "python"), "-m", "bench.stack_proxy", "--port", str(port)]
    for backend in backends:
        cmd += ["--backend", _base_url(backend)]
    return Server(role, cmd, ROOT, rasa_env(), run_dir / f"{role}.log", f"http://127.0.0.1:{port}{HEALTH_PATH}")


def _base_url(server: Server) -> str:
    scheme, _, host, _ = server.health.split("/", 3)
    return f"{scheme}//{host}"


def _start_all(servers: Sequence[Server]) -> None:
    """Start ``servers`` at the same time; wait until each answers its health URL."""
    with ThreadPoolExecutor(max_workers=max(1, len(servers))) as pool:
        for started in pool.map(lambda server: server.start(timeout=300), servers):
            log(f"  {started.name} ready after {started.startup_s:.1f} s")


def build_stacks(
    names: Sequence[str], work: Path, model: Path, api: TimedBotAPI, secret: str, resources: ExitStack
) -> Dict[str, Stack]:
    """Describe, then start, every stack in ``names`` (PostgreSQL and Redis first)."""
    stacks: Dict[str, Stack] = {}
    for name in names:
        run_dir = work / name
        run_dir.mkdir(parents=True)
        (run_dir / "credentials.yml").write_text(CREDENTIALS)
        if name == "sqlite":
            env = rasa_env(
                SANIC_HOST="127.0.0.1", FIRSTREPLY_CASE_DB=f"sqlite:///{run_dir / 'cases.db'}",
                FIRSTREPLY_CHANNEL_DB=str(run_dir / "channels.db"), **_telegram_env(api, secret),
            )  # fmt: skip
            actions = _actions("actions", run_dir, env)
            endpoints = write_endpoints(
                run_dir / "endpoints.yml", run_dir / "trackers.db", int(_base_url(actions).rsplit(":", 1)[1]), True
            )
            assert endpoints is not None
            rasa = _rasa("rasa", run_dir, model, endpoints, env)
            stacks[name] = Stack(name, _base_url(rasa), env["FIRSTREPLY_CASE_DB"], {"actions": actions, "rasa": rasa},
                                 run_dir=run_dir)  # fmt: skip
            continue
        replicas = int(name.split("-")[1])
        log(f"starting PostgreSQL and Redis for {name} ...")
        services = Services.start()
        resources.callback(services.stop)
        database_url = resources.enter_context(fresh_database(services.postgres_url))
        events_url = resources.enter_context(fresh_database(services.postgres_url))
        actions_port = free_port()
        env = rasa_env(
            SANIC_HOST="127.0.0.1", **_telegram_env(api, secret),
            **production_env(database_url, events_url, services.redis_url, 0, f"http://127.0.0.1:{actions_port}/webhook"),
        )  # fmt: skip
        action_servers = [_actions(f"actions{n}", run_dir, env) for n in range(1, replicas + 1)]
        actions_proxy = _proxy("actions-proxy", run_dir, action_servers, actions_port)
        rasas = [_rasa(f"rasa{n}", run_dir, model, PROD_ENDPOINTS, env) for n in range(1, replicas + 1)]
        front = _proxy("front-proxy", run_dir, rasas, free_port())
        servers = {s.name: s for s in [*action_servers, actions_proxy, *rasas, front]}
        stacks[name] = Stack(name, _base_url(front), database_url, servers, services, run_dir)
    for stack in stacks.values():
        resources.callback(stack.stop)
    # First wave: everything but the second replicas, which start once the first has created
    # the tables (docs/deployment.md: replicas racing to create them can fail their start).
    first = [s for stack in stacks.values() for role, s in stack.servers.items() if role not in ("rasa2", "front-proxy")]
    log(f"starting {len(first)} servers ...")
    _start_all(first)
    _start_all([s for stack in stacks.values() for role, s in stack.servers.items() if role in ("rasa2", "front-proxy")])
    return stacks


# --- measuring ---------------------------------------------------------------------------


def _meets(summary: Dict[str, Any]) -> bool:
    return bool(
        summary["sent"]
        and summary["errors"] <= MAX_ERROR_SHARE * summary["sent"]
        and summary["p99_ms"] is not None
        and summary["p99_ms"] <= P99_LIMIT_MS
    )


def _cpu_now(pids: Dict[str, int]) -> Dict[str, float]:
    """Return the CPU seconds used so far by each process tree, and by this process (``loadgen``)."""
    return {**{role: cpu_seconds(pid) for role, pid in pids.items()}, "loadgen": time.process_time()}


async def _phase(stack: Stack, phase: Any, ramp_s: float, measure_s: float) -> Dict[str, Any]:
    """Run ``phase`` (a coroutine giving a PhaseResult); add the CPU each process used per message.

    CPU time is taken over the phase's measured window only (not its ramp-up, nor the end of
    the conversations still running after it), the window its messages are counted in.
    ``loadgen`` is the benchmark process: the customers and the fake Bot API.
    """
    pids = stack.pids()
    marks: List[Dict[str, float]] = []

    async def window() -> None:
        await asyncio.sleep(ramp_s)
        marks.append(_cpu_now(pids))
        await asyncio.sleep(measure_s)
        marks.append(_cpu_now(pids))

    meter = asyncio.ensure_future(window())
    summary = (await phase).summary()
    await meter  # a phase always lasts longer than its window
    answered = max(1, summary["answered"])
    for role, start in marks[0].items():
        used = marks[1][role] - start
        summary[f"cpu_ms_per_msg_{role}"] = round(1000.0 * used / answered, 2)
        summary[f"cpu_cores_{role}"] = round(used / measure_s, 2)
    return summary


async def trial(customers: TelegramCustomers, stack: Stack, settings: Dict[str, Any]) -> Dict[str, Any]:
    """One trial on one stack: the open-loop step-up, then closed-loop saturation."""
    result: Dict[str, Any] = {"loadavg_before": loadavg(), "steps": {}, "saturation": {}}
    await customers.open_loop(stack.url, settings["rates"][0], 0.0, settings["warmup_s"])
    over = 0
    for rate in settings["rates"]:
        await asyncio.sleep(settings["pause_s"])
        phase = customers.open_loop(stack.url, rate, settings["ramp_s"], settings["measure_s"])
        summary = await _phase(stack, phase, settings["ramp_s"], settings["measure_s"])
        summary["meets"] = _meets(summary)
        result["steps"][str(rate)] = summary
        log(f"  {stack.name} {rate} msg/s: p50 {summary['p50_ms']} p99 {summary['p99_ms']} ms, "
            f"errors {summary['errors']}/{summary['sent']}")  # fmt: skip
        over = 0 if summary["meets"] else over + 1
        if over >= 2 or (summary["p99_ms"] or 1e9) > 4 * P99_LIMIT_MS:
            break
    met = [int(rate) for rate, summary in result["steps"].items() if summary["meets"]]
    result["sustained_msg_s"] = max(met) if met else 0
    for level in settings["customers"]:
        await asyncio.sleep(settings["pause_s"])
        phase = customers.closed_loop(stack.url, level, settings["closed_ramp_s"], settings["closed_measure_s"])
        summary = await _phase(stack, phase, settings["closed_ramp_s"], settings["closed_measure_s"])
        result["saturation"][str(level)] = summary
        log(f"  {stack.name} x{level} customers: {summary['throughput_msg_s']} msg/s, p50 {summary['p50_ms']} "
            f"p99 {summary['p99_ms']} ms, errors {summary['errors']}/{summary['sent']}")  # fmt: skip
    good = [s for s in result["saturation"].values() if s["sent"] and s["errors"] <= MAX_ERROR_SHARE * s["sent"]]
    result["saturation_msg_s"] = max((s["throughput_msg_s"] for s in good), default=0.0)
    result["loadavg_after"] = loadavg()
    result["alive_after"] = stack.alive()
    return result


async def measure(
    stacks: Dict[str, Stack], api: TimedBotAPI, secret: str, settings: Dict[str, Any], results: Dict[str, Any]
) -> None:
    """Calibrate every stack, then run the trials in turns; fill ``results['stacks']``."""
    async with TelegramCustomers(api, secret) as customers:
        for stack in stacks.values():
            counts = await customers.calibrate(stack.url)
            results["stacks"][stack.name]["replies_per_step"] = counts
            results["stacks"][stack.name]["memory_idle_mb"] = stack.memory()
            log(f"{stack.name}: replies per step {counts}")
        names = list(stacks)
        for number in range(settings["trials"]):
            for name in names[number % len(names):] + names[: number % len(names)]:
                log(f"trial {number + 1}/{settings['trials']}: {name}")
                results["stacks"][name]["trials"].append(await trial(customers, stacks[name], settings))
        results["unexpected_replies"] = customers.unexpected
        for stack in stacks.values():
            results["stacks"][stack.name]["conversations_handed_off"] = customers.completed.get(stack.url, 0)


def main(argv: Optional[List[str]] = None) -> int:
    """Run the benchmark; return the exit code."""
    parser = argparse.ArgumentParser(prog="python -m bench.stack", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: one short trial (figures meaningless)")
    parser.add_argument("--trials", type=int, help="rounds of trials (default 3)")
    parser.add_argument("--stacks", nargs="+", choices=list(LABELS), default=list(LABELS), help="which stacks")
    add_output_arguments(parser, RESULTS, "stack-latest")
    args = parser.parse_args(argv)
    if not ready_to_run(MODEL):
        return 2

    settings = dict(QUICK if args.quick else FULL)
    if args.trials:
        settings["trials"] = args.trials
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="firstreply-bench-stack-"))
    model = work / "firstreply.tar.gz"
    shutil.copy2(MODEL, model)  # the model in use stays the same if someone retrains meanwhile
    results: Dict[str, Any] = {
        **begin(work, args.quick, settings, machine_facts(), log),
        "p99_limit_ms": P99_LIMIT_MS,
        "scripts": {script.name: len(script.steps) for script in SCRIPTS},
        "stacks": {name: {"label": LABELS[name], "trials": []} for name in args.stacks},
        "notes": [],
    }
    secret = secrets.token_urlsafe(24)
    api = TimedBotAPI().start()
    code = 0
    try:
        with ExitStack() as resources:
            stacks = build_stacks(args.stacks, work, model, api, secret, resources)
            for stack in stacks.values():
                results["stacks"][stack.name]["startup_s"] = {r: round(s.startup_s or 0, 1) for r, s in stack.servers.items()}
            asyncio.run(measure(stacks, api, secret, settings, results))
            for stack in stacks.values():
                entry = results["stacks"][stack.name]
                entry["memory_after_mb"] = stack.memory()
                entry["cases_in_store"] = stack.cases()
                entry["log_errors"] = _log_problems(stack.run_dir)
                if entry["log_errors"]:
                    results["notes"].append(f"{stack.name}: errors in its logs, first: `{entry['log_errors'][0]}`")
    except Exception as exc:  # the report says what failed; the temp dir is kept for its logs
        code = record_failure(results, exc, log)
    finally:
        api.stop()
        results["machine"]["loadavg_end"] = loadavg()
        results["wall_s"] = round(time.perf_counter() - started, 1)
        results["summary"] = stack_report.summarize(results)
        name = "stack-quick" if args.quick else "stack-latest"
        finish(results, args.results, name, stack_report.render, work, args.keep, log)
    return code


if __name__ == "__main__":
    sys.exit(main())
