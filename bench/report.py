"""Render the benchmark's results as a markdown report."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

TARGETS = {
    "saturation_ratio": 3.0,
    "saturation_msg_s": 100.0,
    "p99_20_ms": 150.0,
    "burst_last_s": 1.0,
    "train_full_s": 60.0,
}


def _num(value: Any, digits: int = 1, unit: str = "") -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        text = f"{value:.{digits}f}"
    else:
        text = str(value)
    return f"{text}{unit}"


def _ratio(ours: Any, bare: Any) -> str:
    if not isinstance(ours, (int, float)) or not isinstance(bare, (int, float)) or bare == 0:
        return "—"
    ratio = ours / bare
    return f"{ratio:.2f}×" if ratio < 10 else f"{ratio:.0f}×"


def _pct(value: Any) -> str:
    return "—" if value is None else f"{100.0 * value:.1f} %"


def _verdict(ok: Optional[bool]) -> str:
    return "—" if ok is None else ("met" if ok else "**missed**")


def targets(results: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Return each target with the measured value and whether it is met."""
    ours, bare = results["bots"].get("ours", {}), results["bots"].get("bare", {})
    sat_o = (ours.get("saturation_best") or {}).get("throughput_msg_s")
    sat_b = (bare.get("saturation_best") or {}).get("throughput_msg_s")
    p99 = ((ours.get("open_loop") or {}).get("20") or {}).get("p99_ms")
    burst = ours.get("burst") or {}
    burst_last = burst.get("duration_s") if burst and not burst.get("errors") else None
    train = (results.get("training") or {}).get("ours_full_s")
    rows = [
        ("Saturation ≥ 3× bare", f"{_ratio(sat_o, sat_b)}", None if not (sat_o and sat_b) else sat_o / sat_b >= TARGETS["saturation_ratio"]),
        ("Saturation ≥ 100 msg/s per process", _num(sat_o, 1, " msg/s"), None if sat_o is None else sat_o >= TARGETS["saturation_msg_s"]),
        ("First reply p99 ≤ 150 ms at 20/s", _num(p99, 0, " ms"), None if p99 is None else p99 <= TARGETS["p99_20_ms"]),
        (
            "Burst of 50 all greeted within 1 s",
            _num(burst.get("duration_s"), 2, " s") + (f" ({burst.get('errors')} errors)" if burst.get("errors") else ""),
            None if not burst else (burst_last is not None and burst_last <= TARGETS["burst_last_s"]),
        ),
        ("Full training ≤ 60 s", _num(train, 1, " s"), None if train is None else train <= TARGETS["train_full_s"]),
    ]
    return [{"target": t, "measured": m, "met": ok} for t, m, ok in rows]


def render(results: Dict[str, Any]) -> str:
    """Return the markdown report."""
    m = results["machine"]
    ours, bare = results["bots"].get("ours", {}), results["bots"].get("bare", {})
    tr = results.get("training") or {}
    out: List[str] = []
    out.append(f"## FirstReply benchmark — {results['date']}{' (QUICK smoke run, not representative)' if results['quick'] else ''}")
    out.append("")
    out.append(
        f"Machine: {m['nproc']} CPUs ({m['cpu']}), {m['mem_gib']} GiB RAM, Python {m['python']}, Rasa {m['rasa']}, "
        f"rasa-sdk {m['rasa_sdk']}; load average at start {m['loadavg_start']}, at end {m.get('loadavg_end', '—')}. "
        f"Commit {m['commit']}{' (+ uncommitted changes)' if m.get('dirty') else ''}. Run took {_num(results.get('wall_s'), 0, ' s')}."
    )
    out.append("")
    out.append("| Measure | FirstReply | Bare Rasa (defaults) | Ours / bare |")
    out.append("|---|---:|---:|---:|")

    def row(label: str, o: Any, b: Any, digits: int = 1, unit: str = "", ratio: bool = True) -> None:
        out.append(f"| {label} | {_num(o, digits, unit)} | {_num(b, digits, unit)} | {_ratio(o, b) if ratio else '—'} |")

    row("`rasa train`, whole project, 100 % NLU data (s)", tr.get("ours_full_s"), tr.get("bare_full_s"))
    row("`rasa train`, whole project, same 80 % NLU split (s)", tr.get("ours_split_s"), tr.get("bare_split_s"))
    row("Server start until ready (s)", ours.get("startup_s"), bare.get("startup_s"))
    for rate in results["settings"]["rates"]:
        o = (ours.get("open_loop") or {}).get(str(rate)) or {}
        b = (bare.get("open_loop") or {}).get(str(rate)) or {}
        for q in ("p50", "p95", "p99"):
            row(f"First reply at {rate}/s, {q} (ms)", o.get(f"{q}_ms"), b.get(f"{q}_ms"), 0)
        row(f"First reply at {rate}/s, errors / sent", f"{o.get('errors', '—')} / {o.get('sent', '—')}",
            f"{b.get('errors', '—')} / {b.get('sent', '—')}", ratio=False)
    ob, bb = ours.get("burst") or {}, bare.get("burst") or {}
    size = results["settings"]["burst"]
    row(f"Burst of {size}: p50 (ms)", ob.get("p50_ms"), bb.get("p50_ms"), 0)
    row(f"Burst of {size}: p99 (ms)", ob.get("p99_ms"), bb.get("p99_ms"), 0)
    row(f"Burst of {size}: last one greeted after (s)", ob.get("duration_s"), bb.get("duration_s"), 2)
    row(f"Burst of {size}: errors", ob.get("errors"), bb.get("errors"), ratio=False)
    so, sb = ours.get("saturation_best") or {}, bare.get("saturation_best") or {}
    row("Saturation: max sustained msg/s (one Rasa process)", so.get("throughput_msg_s"), sb.get("throughput_msg_s"))
    row("… at concurrency", so.get("concurrency"), sb.get("concurrency"), ratio=False)
    row("… p50 latency there (ms)", so.get("p50_ms"), sb.get("p50_ms"), 0)
    row("… p99 latency there (ms)", so.get("p99_ms"), sb.get("p99_ms"), 0)
    cr_o, cr_b = so.get("cpu_ms_per_msg_rasa"), sb.get("cpu_ms_per_msg_rasa")
    ca_o = so.get("cpu_ms_per_msg_actions")
    row("… CPU per message, Rasa process (ms)", cr_o, cr_b, 2)
    row("… CPU per message, action server (ms)", ca_o, None, 2, ratio=False)
    tot_o = (cr_o or 0) + (ca_o or 0) if cr_o is not None else None
    row("… CPU per message, all server processes (ms)", tot_o, cr_b, 2)
    cap = lambda ms: round(1000.0 / ms, 1) if ms else None  # noqa: E731
    row("Rasa process capacity at 1 full core (1000 / its CPU ms per msg, msg/s)", cap(cr_o), cap(cr_b))
    row("RSS of Rasa after the load (MiB)", ours.get("rss_rasa_after_mb"), bare.get("rss_rasa_after_mb"), 0)
    row("RSS of the action server after the load (MiB)", ours.get("rss_actions_after_mb"), None, 0, ratio=False)
    row("RSS total after the load (MiB)", ours.get("rss_total_after_mb"), bare.get("rss_total_after_mb"), 0)
    no, nb = (results.get("nlu") or {}).get("ours") or {}, (results.get("nlu") or {}).get("bare") or {}
    out.append(f"| NLU intent accuracy, `rasa test nlu` report (fallback undone) | {_pct(no.get('rasa_accuracy'))} | {_pct(nb.get('rasa_accuracy'))} | {_ratio(no.get('rasa_accuracy'), nb.get('rasa_accuracy'))} |")
    out.append(f"| NLU intent macro F1, `rasa test nlu` report | {_num(no.get('rasa_macro_f1'), 3)} | {_num(nb.get('rasa_macro_f1'), 3)} | {_ratio(no.get('rasa_macro_f1'), nb.get('rasa_macro_f1'))} |")
    out.append(f"| NLU accuracy as served (nlu_fallback counts as wrong) | {_pct(no.get('served_accuracy'))} | {_pct(nb.get('served_accuracy'))} | {_ratio(no.get('served_accuracy'), nb.get('served_accuracy'))} |")
    out.append(f"| NLU macro F1 as served | {_num(no.get('served_macro_f1'), 3)} | {_num(nb.get('served_macro_f1'), 3)} | {_ratio(no.get('served_macro_f1'), nb.get('served_macro_f1'))} |")
    out.append(f"| Share answered nlu_fallback | {_pct(no.get('fallback_share'))} | {_pct(nb.get('fallback_share'))} | — |")
    out.append(f"| Share confidently wrong (wrong intent, no fallback) | {_pct(no.get('wrong_answered_share'))} | {_pct(nb.get('wrong_answered_share'))} | — |")
    out.append("")

    out.append("Saturation, closed loop (msg/s · p50 / p99 ms · errors · Rasa CPU ms per message):")
    out.append("")
    out.append("| Concurrent senders | FirstReply | Bare Rasa |")
    out.append("|---:|---|---|")
    for level in results["settings"]["concurrency"]:
        cells = []
        for bot in (ours, bare):
            s = (bot.get("saturation") or {}).get(str(level)) or {}
            cells.append(
                f"{_num(s.get('throughput_msg_s'))} · {_num(s.get('p50_ms'), 0)} / {_num(s.get('p99_ms'), 0)} · "
                f"{s.get('errors', '—')} · {_num(s.get('cpu_ms_per_msg_rasa'), 2)}"
                if s else "—"
            )
        out.append(f"| {level} | {cells[0]} | {cells[1]} |")
    out.append("")

    out.append("Targets (FirstReply):")
    out.append("")
    out.append("| Target | Measured | |")
    out.append("|---|---:|---|")
    for t in targets(results):
        out.append(f"| {t['target']} | {t['measured']} | {_verdict(t['met'])} |")
    out.append("")
    notes = results.get("notes") or []
    if notes:
        out.append("Notes:")
        out.append("")
        out += [f"- {note}" for note in notes]
        out.append("")
    return "\n".join(out)
