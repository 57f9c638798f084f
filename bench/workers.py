"""One worker process against one per core: ``python -m bench.workers`` (part of ``make bench``).

FirstReply as ``make run`` starts it (endpoints.yml as shipped: the SQLite tracker store and the
SQLite lock store; the trained model in models/), with 1 and with 2 Rasa and action-server
workers (``SANIC_WORKERS`` / ``ACTION_SERVER_SANIC_WORKERS``, what ``FIRSTREPLY_RASA_WORKERS``
sets), in interleaved trials on this machine, over the REST channel:

- a burst of ``--burst`` new conversations at the same instant: the last first reply, and the
  median and p99;
- closed-loop saturation with 16 customers for ``--seconds``: messages per second, median
  and p99 reply time, CPU per message of all the processes;
- memory: PSS of every process of both servers (shared pages counted once), idle and after.

Writes bench/results/workers-latest.json and .md and prints the table.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
from pathlib import Path
from typing import Any

import yaml

from bench.load import LoadGenerator, nlu_examples
from bench.procs import ROOT, Server, publish, pss_mb, rasa_cmd, rasa_env
from bench.run import CpuMeter, port_free

MODEL = ROOT / "models" / "firstreply.tar.gz"


def shipped_endpoints(run_dir: Path, action_port: int) -> Path:
    """Write endpoints.yml as shipped (make run's stores), its files in ``run_dir``, the action server on ``action_port``."""
    shipped = yaml.safe_load((ROOT / "endpoints.yml").read_text())
    shipped["action_endpoint"]["url"] = f"http://127.0.0.1:{action_port}/webhook"
    shipped["tracker_store"]["db"] = str(run_dir / "trackers.db")
    shipped["lock_store"]["db"] = str(run_dir / "locks.db")
    path = run_dir / "endpoints.yml"
    path.write_text(yaml.safe_dump(shipped))
    return path


async def _load(url: str, examples: list[str], burst: int, seconds: float, cpu: CpuMeter) -> dict[str, Any]:
    async with LoadGenerator(url, examples) as generator:
        await generator.open_loop(5, 3.0)  # warm-up: every code path loaded once
        cpu.start()
        first = cpu.stop((await generator.burst(burst)).summary())
        await asyncio.sleep(1.0)
        cpu.start()
        saturation = cpu.stop((await generator.closed_loop(16, seconds)).summary())
    return {"burst": first, "saturation": saturation}


def measure(workers: int, work: Path, ports: tuple[int, int], burst: int, seconds: float) -> dict[str, Any]:
    """Start both servers with ``workers`` workers each, load them, stop them; return the figures."""
    run_dir = Path(tempfile.mkdtemp(prefix=f"w{workers}-", dir=work))
    rasa_port, action_port = ports
    env = rasa_env(
        SANIC_HOST="127.0.0.1", SANIC_WORKERS=str(workers), ACTION_SERVER_SANIC_WORKERS=str(workers),
        FIRSTREPLY_CASE_DB=f"sqlite:///{run_dir / 'cases.db'}", FIRSTREPLY_CHANNEL_DB=str(run_dir / "channels.db"),
        FIRSTREPLY_WEBCHAT_SECRET="bench-workers",
    )  # fmt: skip
    credentials = run_dir / "credentials.yml"
    credentials.write_text("rest:\n")
    actions = Server(
        "action server", rasa_cmd("run", "actions", "--port", str(action_port), "--actions", "actions"),
        ROOT, env, run_dir / "actions.log", f"http://127.0.0.1:{action_port}/health",
    )  # fmt: skip
    rasa = Server(
        "rasa",
        ["python", "-m", "bot.launcher", "run", "--model", str(MODEL), "--endpoints", str(shipped_endpoints(run_dir, action_port)),
         "--credentials", str(credentials), "--interface", "127.0.0.1", "--port", str(rasa_port)],
        ROOT, env, run_dir / "rasa.log", f"http://127.0.0.1:{rasa_port}/",
    )  # fmt: skip
    rasa.cmd[0] = str(ROOT / ".venv" / "bin" / "python")
    try:
        actions.start()
        rasa.start()
        idle = {"rasa": pss_mb(rasa.pid), "actions": pss_mb(actions.pid)}
        cpu = CpuMeter({"rasa": rasa.pid, "actions": actions.pid})
        figures = asyncio.run(_load(f"http://127.0.0.1:{rasa_port}", nlu_examples(), burst, seconds, cpu))
        figures["pss_idle_mb"] = idle
        figures["pss_after_mb"] = {"rasa": pss_mb(rasa.pid), "actions": pss_mb(actions.pid)}
        return figures
    finally:
        rasa.stop()
        actions.stop()


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.0f} ({min(values):.0f}-{max(values):.0f})"


def markdown(trials: dict[str, list[dict[str, Any]]], burst: int) -> str:
    """Return the table docs/benchmarks.md shows: medians over trials (min-max)."""
    lines = [
        f"REST, `make run`'s endpoints, {len(next(iter(trials.values())))} interleaved trials: median (min-max)",
        "",
        f"| workers | burst of {burst}: last reply ms | burst p50 ms | saturation msg/s (16 customers) | "
        "p99 ms at saturation | CPU ms/msg (all processes) | PSS MiB after (Rasa + actions) |",
        "|---|---|---|---|---|---|---|",
    ]
    for workers, runs in trials.items():
        cpu = [r["saturation"]["cpu_ms_per_msg_rasa"] + r["saturation"]["cpu_ms_per_msg_actions"] for r in runs]
        memory = [r["pss_after_mb"]["rasa"] + r["pss_after_mb"]["actions"] for r in runs]
        lines.append(
            f"| {workers} | {_spread([r['burst']['duration_s'] * 1000 for r in runs])} | "
            f"{_spread([r['burst']['p50_ms'] for r in runs])} | "
            f"{_spread([r['saturation']['throughput_msg_s'] for r in runs])} | "
            f"{_spread([r['saturation']['p99_ms'] for r in runs])} | {_spread(cpu)} | {_spread(memory)} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    """Run the trials and write the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--burst", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=15.0, help="length of the saturation phase")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--port", type=int, default=6305)
    parser.add_argument("--actions-port", type=int, default=6355)
    args = parser.parse_args()
    for port in (args.port, args.actions_port):
        if not port_free(port):
            raise SystemExit(f"port {port} is in use: choose others with --port / --actions-port")
    trials: dict[str, list[dict[str, Any]]] = {str(w): [] for w in args.workers}
    with tempfile.TemporaryDirectory(prefix="firstreply-bench-workers-") as work:
        for trial in range(args.trials):
            order = args.workers if trial % 2 == 0 else list(reversed(args.workers))
            for workers in order:
                print(f"trial {trial + 1}: {workers} worker(s)", flush=True)
                trials[str(workers)].append(
                    measure(workers, Path(work), (args.port, args.actions_port), args.burst, args.seconds)
                )
    publish("workers", trials, markdown(trials, args.burst))


if __name__ == "__main__":
    main()
