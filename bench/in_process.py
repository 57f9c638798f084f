"""Rasa alone, in this process: the CPU a new customer's first message costs without channels or storage.

``python -m bench.in_process`` loads the trained model into one Rasa ``Agent`` in this process
(with FirstReply's speed-ups, as the launcher runs it), its conversations in memory, a real
action server (``rasa run actions``) beside it, and hands it new customers' first messages
directly (``Agent.handle_message``, a ``CollectingOutputChannel``): no webhook, no inbox, no
platform calls, no tracker database. What it costs per customer, by kind of thread
(``bench.procs.thread_cpu_seconds``; the action server apart), is the floor under what the
burst of ``bench.first_message`` measures through Telegram: the part of a first answer that
is Rasa's own dialogue and the NLU.

``--customers`` (default 100) per trial, ``--trials`` (default 3), after ``--warm-up`` (20)
unmeasured ones. Alongside, the CPU of each node of Rasa's graphs (the NLU components once
per message, the policies once per prediction) on the thread that runs it: MiniLM's pass runs on
TensorFlow's threads, so the featurizer's own figure leaves it out. Writes
bench/results/in-process-latest.json and .md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.first_message import first_message
from bench.procs import cpu_seconds, publish, thread_cpu_seconds
from bench.run import loadavg, machine_facts
from tests.processes import MODEL, base_env, free_ports, start_action_server, wait_until_up


def _timing_graph_nodes() -> dict[str, list[float]]:
    """Make every graph node add its calls and its thread's CPU seconds to the returned table, by node name."""
    from rasa.engine.graph import GraphNode

    table: dict[str, list[float]] = {}
    run = GraphNode.__call__

    def timed(self: GraphNode, *inputs: Any) -> Any:
        started = time.thread_time()
        try:
            return run(self, *inputs)
        finally:
            entry = table.setdefault(self._node_name, [0.0, 0.0])
            entry[0] += 1
            entry[1] += time.thread_time() - started

    GraphNode.__call__ = timed  # type: ignore[method-assign]
    return table


async def _serve(customers: int, trials: int, warm_up: int, action_url: str, action_pid: int) -> list[dict[str, float]]:
    import logging

    from rasa.core.agent import Agent
    from rasa.core.channels.channel import CollectingOutputChannel, UserMessage
    from rasa.utils.common import configure_logging_and_warnings
    from rasa.utils.endpoints import EndpointConfig
    from rasa.utils.log_utils import configure_structlog

    from bot import resilience, speedups

    configure_logging_and_warnings(logging.INFO)  # as ``rasa run`` logs: no debug lines built
    configure_structlog(logging.INFO)
    speedups.install()
    resilience.install()
    nodes = _timing_graph_nodes()
    agent = Agent.load(str(MODEL), action_endpoint=EndpointConfig(action_url))
    number = 0

    async def first_messages(count: int) -> None:
        nonlocal number
        for _ in range(count):
            number += 1
            out = CollectingOutputChannel()
            message = UserMessage(first_message(number), out, sender_id=f"customer-{number}",
                                  metadata={"customer_name": "Sam"})  # fmt: skip
            await agent.handle_message(message)
            if len(out.messages) < 3:
                raise RuntimeError(f"customer {number} got {len(out.messages)} replies, not a first answer")

    await first_messages(warm_up)
    results = []
    for _ in range(trials):
        nodes.clear()
        threads, actions, started = thread_cpu_seconds(os.getpid()), cpu_seconds(action_pid), time.perf_counter()
        await first_messages(customers)
        elapsed = time.perf_counter() - started
        after = thread_cpu_seconds(os.getpid())
        trial = {f"Rasa: {kind}": (used - threads.get(kind, 0.0)) * 1000 / customers for kind, used in after.items()}
        for name, (calls, cpu) in nodes.items():
            if cpu * 1000 / customers >= 0.05:
                trial[f"graph node {name}"] = cpu * 1000 / customers
                trial[f"calls: {name}"] = calls / customers
        trial["action server"] = (cpu_seconds(action_pid) - actions) * 1000 / customers
        trial["wall ms per customer"] = elapsed * 1000 / customers
        results.append(trial)
        print(", ".join(f"{key} {value:.1f}" for key, value in trial.items()), flush=True)
    return results


def render(results: dict[str, Any]) -> str:
    """Return the figures as docs/benchmarks.md quotes them."""
    trials = results["trials"]
    lines = [
        f"Rasa alone in one process, {results['customers']} new customers' first messages one after another, "
        f"{len(trials)} trials (load average before: {results['loadavg_before']}, after: {results['loadavg_after']})",
        "", "| CPU per new customer (ms) | median | lowest-highest |", "| --- | --- | --- |",
    ]  # fmt: skip
    median = {key: statistics.median(trial.get(key, 0.0) for trial in trials) for trial in trials for key in trial}
    keys = sorted((key for key in median if not key.startswith("calls: ")),
                  key=lambda key: (key.startswith("wall"), key.startswith("graph node"), -median[key]))  # fmt: skip
    for key in keys:
        values = sorted(trial.get(key, 0.0) for trial in trials)
        label = key
        if key.startswith("graph node "):
            label = f"{key} ({median.get('calls: ' + key[len('graph node '):], 0.0):.1f} calls per customer)"
        lines.append(f"| {label} | {statistics.median(values):.1f} | {values[0]:.1f}-{values[-1]:.1f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    """Run the measurement and write its results."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=100, help="new customers per trial (default 100)")
    parser.add_argument("--trials", type=int, default=3, help="trials (default 3)")
    parser.add_argument("--warm-up", type=int, default=20, help="unmeasured customers first (default 20)")
    args = parser.parse_args()
    results: dict[str, Any] = {"customers": args.customers, "machine": machine_facts(), "loadavg_before": loadavg()}
    with tempfile.TemporaryDirectory(prefix="firstreply-in-process-") as work:
        [port] = free_ports(1)
        env = {**base_env(), "FIRSTREPLY_CASE_DB": f"sqlite:///{Path(work) / 'cases.db'}"}
        actions = start_action_server("action server", port, env, Path(work) / "actions.log")
        try:
            wait_until_up(actions, f"http://127.0.0.1:{port}/health")
            results["trials"] = asyncio.run(
                _serve(args.customers, args.trials, args.warm_up, f"http://127.0.0.1:{port}/webhook", actions.popen.pid)
            )
        finally:
            actions.stop()
    results["loadavg_after"] = loadavg()
    publish("in-process", results, render(results))


if __name__ == "__main__":
    main()
