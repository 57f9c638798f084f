"""Medians, ratios and the markdown report of ``bench.stack``."""

from __future__ import annotations

import statistics
from typing import Any, Dict, Iterable, List, Optional

BASE, SCALED = "pg-1", "pg-2"


def _median(values: Iterable[Optional[float]]) -> Optional[float]:
    found = [float(v) for v in values if v is not None]
    return round(statistics.median(found), 2) if found else None


def _best_level(trial: Dict[str, Any]) -> Dict[str, Any]:
    """Return the closed-loop level that gave the trial's saturation figure."""
    levels = [s for s in trial["saturation"].values() if s["throughput_msg_s"] == trial["saturation_msg_s"]]
    return levels[0] if levels else {}


def _is_role(key: str, role: str) -> bool:
    """Return whether ``key`` names ``role`` or one of its replicas (``rasa`` for rasa, rasa1, rasa2)."""
    return key == role or (key.startswith(role) and key[len(role):].isdigit())


def _cpu(summary: Dict[str, Any], role: str) -> Optional[float]:
    """Sum ``cpu_ms_per_msg_<key>`` over the replicas of ``role``."""
    prefix = "cpu_ms_per_msg_"
    values = [v for k, v in summary.items() if k.startswith(prefix) and _is_role(k[len(prefix):], role) and v is not None]
    return round(sum(values), 2) if values else None


ROLES = (("rasa", "Rasa"), ("actions", "action server"), ("postgres", "PostgreSQL"), ("redis", "Redis"),
         ("front-proxy", "front proxy"), ("actions-proxy", "actions proxy"))  # fmt: skip


def summarize(results: Dict[str, Any]) -> Dict[str, Any]:
    """Return the medians over trials per stack, and the ratios between stacks per trial."""
    out: Dict[str, Any] = {}
    for name, entry in (results.get("stacks") or {}).items():
        trials = entry.get("trials") or []
        rates = sorted({int(r) for t in trials for r in t["steps"]})
        steps = {}
        for rate in rates:
            runs = [t["steps"][str(rate)] for t in trials if str(rate) in t["steps"]]
            steps[str(rate)] = {
                "trials": len(runs),
                "met": sum(bool(r["meets"]) for r in runs),
                "p50_ms": _median(r["p50_ms"] for r in runs),
                "p99_ms": _median(r["p99_ms"] for r in runs),
                "errors": sum(r["errors"] for r in runs),
                "sent": sum(r["sent"] for r in runs),
                "answered_msg_s": _median(r["throughput_msg_s"] for r in runs),
            }
        best = [_best_level(t) for t in trials]
        cpu = {role: _median(_cpu(b, role) for b in best) for role, _ in ROLES}
        cpu["loadgen"] = _median(b.get("cpu_ms_per_msg_loadgen") for b in best)
        cores = _median(
            (sum(v for k, v in b.items() if k.startswith("cpu_cores_") and k != "cpu_cores_loadgen" and v is not None)
             if b else None) for b in best
        )  # fmt: skip
        out[name] = {
            "sustained_msg_s": _median(t["sustained_msg_s"] for t in trials),
            "sustained_per_trial": [t["sustained_msg_s"] for t in trials],
            "saturation_msg_s": _median(t["saturation_msg_s"] for t in trials),
            "saturation_per_trial": [t["saturation_msg_s"] for t in trials],
            "saturation_p50_ms": _median(b.get("p50_ms") for b in best),
            "saturation_p99_ms": _median(b.get("p99_ms") for b in best),
            "saturation_customers": [int(k) for t, b in zip(trials, best) for k, v in t["saturation"].items() if v is b],
            "cpu_ms_per_msg": cpu,
            "server_cores_at_saturation": cores,
            "loadgen_cores_at_saturation": _median(b.get("cpu_cores_loadgen") for b in best),
            "steps": steps,
        }
    ratios: Dict[str, Any] = {}
    for top, bottom in ((SCALED, BASE), (BASE, "sqlite"), (SCALED, "sqlite")):
        if top in out and bottom in out:
            pairs = list(zip(results["stacks"][top]["trials"], results["stacks"][bottom]["trials"]))
            entry: Dict[str, Any] = {}
            for figure in ("sustained_msg_s", "saturation_msg_s"):
                per_trial = [round(t[figure] / b[figure], 2) if b[figure] else None for t, b in pairs]
                entry[f"{figure}_per_trial"], entry[figure] = per_trial, _median(per_trial)
            ratios[f"{top}/{bottom}"] = entry
    return {"stacks": out, "ratios": ratios}


def _n(value: Any, digits: int = 0, unit: str = "") -> str:
    if value is None:
        return "—"
    return f"{value:.{digits}f}{unit}" if isinstance(value, float) else f"{value}{unit}"


def _x(value: Any) -> str:
    return "—" if value is None else f"{value:.2f}×"


def render(results: Dict[str, Any]) -> str:
    """Return the markdown report."""
    summary = results.get("summary") or summarize(results)
    stacks: Dict[str, Any] = summary["stacks"]
    names = list(stacks)
    labels = [results["stacks"][n]["label"] for n in names]
    ratio = summary["ratios"].get(f"{SCALED}/{BASE}", {})
    machine = results["machine"]
    lines = [
        f"### {results['date']}{' (QUICK smoke run: do not quote)' if results.get('quick') else ''}",
        "",
        f"Machine: {machine['nproc']} CPUs ({machine['cpu']}), {machine['mem_gib']} GiB RAM, Python {machine['python']}, "
        f"Rasa {machine['rasa']}, rasa-sdk {machine['rasa_sdk']}; load average at start {machine['loadavg_start']}, "
        f"at end {machine.get('loadavg_end')}. Commit {machine['commit']}{' (uncommitted changes)' if machine.get('dirty') else ''}. "
        f"{results['settings']['trials']} trials per stack, interleaved; run took {results.get('wall_s', 0):.0f} s.",
        "",
    ]
    if results.get("error"):
        lines += [f"**The run failed:** `{results['error']}`", ""]
    if not names:
        return "\n".join(lines)
    has_ratio = BASE in stacks and SCALED in stacks
    head = "| Measure (median of trials) | " + " | ".join(labels) + (" | 2 replicas / 1 |" if has_ratio else " |")
    lines += [head, "|---" + "|---:" * (len(names) + has_ratio) + "|"]

    def row(title: str, values: List[str], last: str = "") -> None:
        lines.append(f"| {title} | " + " | ".join(values) + (f" | {last} |" if has_ratio else " |"))

    row(f"Sustained msg/s with first-response p99 ≤ {results['p99_limit_ms']:.0f} ms",
        [_n(stacks[n]["sustained_msg_s"]) for n in names], _x(ratio.get("sustained_msg_s")))  # fmt: skip
    row("… per trial", [", ".join(_n(v) for v in stacks[n]["sustained_per_trial"]) for n in names],
        ", ".join(_x(v) for v in ratio.get("sustained_msg_s_per_trial", [])))  # fmt: skip
    row("Saturation, closed loop (msg/s)", [_n(stacks[n]["saturation_msg_s"], 1) for n in names], _x(ratio.get("saturation_msg_s")))
    row("… per trial", [", ".join(_n(v, 1) for v in stacks[n]["saturation_per_trial"]) for n in names],
        ", ".join(_x(v) for v in ratio.get("saturation_msg_s_per_trial", [])))  # fmt: skip
    row("… first response there, p50 / p99 (ms)",
        [f"{_n(stacks[n]['saturation_p50_ms'])} / {_n(stacks[n]['saturation_p99_ms'])}" for n in names])
    row("… CPU cores busy there: servers (+ load generator)",
        [f"{_n(stacks[n]['server_cores_at_saturation'], 2)} (+ {_n(stacks[n]['loadgen_cores_at_saturation'], 2)})"
         for n in names])  # fmt: skip
    for role, title in ROLES:
        values = [stacks[n]["cpu_ms_per_msg"].get(role) for n in names]
        if any(v is not None for v in values):
            row(f"… CPU per message, {title} (ms){' (all replicas)' if role in ('rasa', 'actions') else ''}",
                [_n(v, 1) for v in values])  # fmt: skip
    row("… CPU per message, load generator + fake Bot API (ms)", [_n(stacks[n]["cpu_ms_per_msg"].get("loadgen"), 1) for n in names])
    memory = {n: results["stacks"][n].get("memory_after_mb") or {} for n in names}
    for role, title in (("rasa", "Rasa"), ("actions", "action server")):
        row(f"RSS per {title} process after the load (MiB)",
            [" + ".join(_n(v) for k, v in sorted(memory[n].items()) if _is_role(k, role)) or "—" for n in names])  # fmt: skip
    row("RSS of PostgreSQL, all its processes (MiB; PSS in brackets)",
        [f"{_n(memory[n].get('postgres'))} ({_n(memory[n].get('postgres_pss'))})" if "postgres" in memory[n] else "—"
         for n in names])  # fmt: skip
    row("RSS of Redis (MiB)", [_n(memory[n].get("redis")) for n in names])
    row("RSS per proxy (MiB)", [" + ".join(_n(v) for k, v in sorted(memory[n].items()) if k.endswith("proxy")) or "—" for n in names])
    row("Conversations handed off / cases in the store",
        [f"{results['stacks'][n].get('conversations_handed_off', '—')} / {results['stacks'][n].get('cases_in_store', '—')}"
         for n in names])  # fmt: skip
    lines += ["", "Open-loop steps (offered customer messages/s → first response p50 / p99 in ms, median of trials; "
              "errors / messages over all trials; ✓ = trials meeting the limit):", ""]  # fmt: skip
    rates = sorted({int(r) for n in names for r in stacks[n]["steps"]})
    lines += ["| Offered msg/s | " + " | ".join(labels) + " |", "|---:" + "|---" * len(names) + "|"]
    for rate in rates:
        cells = []
        for n in names:
            step = stacks[n]["steps"].get(str(rate))
            cells.append(
                "—" if step is None else
                f"{_n(step['p50_ms'])} / {_n(step['p99_ms'])} · {step['errors']}/{step['sent']} · ✓ {step['met']}/{step['trials']}"
            )  # fmt: skip
        lines.append(f"| {rate} | " + " | ".join(cells) + " |")
    lines += [""] + [f"- {note}" for note in standard_notes(results) + results.get("notes", [])]
    return "\n".join(lines)


def standard_notes(results: Dict[str, Any]) -> List[str]:
    """Return the notes every report carries, so its figures are read correctly."""
    settings = results["settings"]
    return [
        "Channel: Telegram. Each customer is a private chat whose messages are posted to Rasa's Telegram webhook "
        "as Telegram sends them; first response = from the webhook POST to the first message delivered to that "
        "chat at the fake Bot API (tests/fakes/telegram_api.py), every customer message counted (greeting, answers, "
        "button presses).",
        f"Whole conversations: /start, the questions, the summary, the confirm button, the hand-off into the case "
        f"store ({len(results.get('scripts', {}))} scripts of {', '.join(map(str, results.get('scripts', {}).values()))} "
        "messages).",
        f"Open loop: conversations start as a Poisson process (offered msg/s ÷ mean messages per conversation), "
        f"customers think 0.25-0.75 s between messages; {settings['ramp_s']:.0f} s ramp, then {settings['measure_s']:.0f} s "
        f"measured; a step meets the limit with p99 ≤ {results['p99_limit_ms']:.0f} ms and ≤ 1 % errors; the step-up "
        "stops after two steps over the limit.",
        f"Saturation: closed loop with {', '.join(map(str, settings['customers']))} customers, no think time, "
        f"{settings['closed_measure_s']:.0f} s measured after {settings['closed_ramp_s']:.0f} s; the best level with "
        "≤ 1 % errors. CPU figures are at that level, from /proc (children included).",
        "The PostgreSQL stacks run `endpoints.prod.yml` as shipped, each with its own PostgreSQL and Redis "
        "(scripts/test-services.sh: fsync off) and a round-robin proxy (bench/stack_proxy.py) in front of the "
        "Rasa replica(s) and of the action server(s), also with one replica, so the ratio compares like with like.",
        "Everything runs on the same machine: the servers, PostgreSQL, Redis, the proxies and the load generator "
        "share its CPUs. Ratios are per trial (stacks measured in turn within a round), then the median.",
    ]
