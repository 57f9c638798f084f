"""``python -m bench.sim``: simulate a week of promises and write bench/sim/results.{md,json}.

Runs both profiles (the Northwind week, the public-figures replay) with ``--seed``, and
then ``--seeds`` more seeds for the spread of the headline figures. About ten seconds per
seed on one core.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.sim import profiles
from bench.sim.metrics import PolicySummary, RunSummary, summarize
from bench.sim.model import (
    FIXED_PROMISE_MINUTES,
    POLICIES,
    POLICY_CALIBRATED,
    POLL_MINUTES,
    SCAN_MINUTES,
    WARN_AT_SHARE,
    Scenario,
    Simulation,
)
from bot.ops import SupportConfig, load_support_config

COMMAND = "python -m bench.sim"
HERE = Path(__file__).resolve().parent
# The targets the calibrated promise is held to.
TARGET_KEPT = 0.90
TARGET_RATIO = 2.0
TARGET_UPDATED = 1.0


def _scenarios(config: SupportConfig, seed: int, mixture: profiles.ReplyTimeMixture) -> list[Scenario]:
    window = config.history_window_days
    return [
        profiles.northwind_week(config.calendar, config.targets, window, seed),
        profiles.public_replay(config.calendar, config.targets, window, seed, mixture),
    ]


def run_seed(config: SupportConfig, seed: int, mixture: profiles.ReplyTimeMixture) -> list[RunSummary]:
    """Run both profiles with one seed."""
    summaries = []
    for scenario in _scenarios(config, seed, mixture):
        customers = Simulation(scenario, POLICIES).run()
        summaries.append(summarize(scenario, customers, POLICIES))
    return summaries


def _percent(share: float | None) -> str:
    return "n/a" if share is None else f"{100 * share:.1f} %"


def _minutes(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}"


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _row(policy: PolicySummary) -> str:
    updated = f"{policy.slipped_updated_before_deadline}/{policy.slipped}"
    if policy.updated_before_deadline_share is not None:
        updated += f" ({_percent(policy.updated_before_deadline_share)})"
    return (
        f"| {policy.policy} | {_percent(policy.kept_share)} | {_minutes(policy.promised_p50)} / "
        f"{_minutes(policy.promised_p90)} | {policy.ratio_p50:.2f} / {policy.ratio_p90:.2f} | "
        f"{_ratio(policy.ratio_p50_long_waits)} | {updated} | {policy.customers_updated} ({policy.needless_updates} needless) | "
        f"{_percent(policy.updated_promises_kept_share)} |"
    )


def _verdict(summary: RunSummary) -> str:
    calibrated = next(p for p in summary.policies if p.policy == POLICY_CALIBRATED)
    checks = [
        (f"kept ≥ {TARGET_KEPT:.0%}", calibrated.kept_share >= TARGET_KEPT, _percent(calibrated.kept_share)),
        (
            f"median promised/actual ≤ {TARGET_RATIO:.1f}",
            calibrated.ratio_p50 <= TARGET_RATIO,
            f"{calibrated.ratio_p50:.2f}",
        ),
        (
            "at-risk customers updated before the deadline = 100 %",
            calibrated.updated_before_deadline_share in (None, TARGET_UPDATED),
            _percent(calibrated.updated_before_deadline_share),
        ),
    ]
    return "; ".join(f"{name}: {'met' if ok else 'NOT met'} ({value})" for name, ok, value in checks)


def render_markdown(
    config: SupportConfig,
    seed: int,
    main: Sequence[RunSummary],
    spread: dict[int, list[RunSummary]],
    mixture: profiles.ReplyTimeMixture,
    seeds: int,
) -> str:
    """Return results.md."""
    first, last = profiles.measured_dates()
    fitted = ", ".join(
        f"{100 * mixture.cdf(minutes):.1f} % within {minutes:g} min (target {100 * share:.0f} %)"
        for minutes, share in profiles.PUBLIC_FIGURES
    )
    lines = [
        "# Promise simulation",
        "",
        f"Command: `{COMMAND} --seed {seed} --seeds {seeds}`"
        " (writes this file and results.json). Not a test; see docs/promises.md.",
        "",
        f"Calendar and targets: `{config.path.name}` ({config.calendar.timezone.key}, first response "
        f"{config.targets.first_response_minutes:g} min, promise quantile "
        f"{config.targets.promise_quantile:g}, history window {config.history_window_days} days). "
        f"A warm-up week builds history; measured: customers arriving {first:%a %d %b} to "
        f"{last:%a %d %b %Y} (Good Friday closed; clocks go forward on the Sunday; on the "
        f"Wednesday a viral complaint brings {profiles.BURST_FACTOR:g}× the arrivals from 15:00 to "
        "16:00, and two agents are called in at 15:30). Agents work shifts; nights are closed. "
        "Every customer gets a promise from each policy at the same moment, so the policies are "
        "compared on the same customers.",
        "",
        f"Watchdog: a customer not yet answered at {WARN_AT_SHARE:.0%} of the promised business "
        f"minutes (polled every {POLL_MINUTES:g} min), or whose predicted pickup passes the "
        f"deadline (checked every {SCAN_MINUTES:g} min), gets an update; for FirstReply the "
        "update carries a new estimate, which is watched in turn.",
        "",
        f"Replay profile: reply times drawn (in business minutes) from two lognormals fitted to "
        f"the public figures: {100 * mixture.fast_share:.1f} % answered in the flow (median "
        f"{mixture.fast_median:.1f} min), the rest slipped through (median "
        f"{mixture.slow_median:.0f} min), shared log-sd {mixture.log_sd:.3f}; the fit gives "
        f"{fitted}.",
        "",
    ]
    for summary in main:
        lines += [
            f"## {summary.scenario} — seed {seed}",
            "",
            f"{summary.customers} customers; actual wait (business minutes) p50 "
            f"{summary.actual_p50:.0f}, p90 {summary.actual_p90:.0f}. FirstReply's promises came "
            "from: "
            + ", ".join(f"{basis} {count}" for basis, count in summary.calibrated_basis.items())
            + ".",
            "",
            "| Policy | Kept | Promised p50 / p90 (min) | Promised/actual p50 / p90 | "
            f"Promised/actual p50, waited ≥ {config.targets.first_response_minutes:g} min | "
            "Slipped: updated before deadline | Customers updated | New promise kept |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
            *(_row(policy) for policy in summary.policies),
            "",
            f"FirstReply against the targets: {_verdict(summary)}.",
            "",
        ]
    if spread:
        lines += [
            f"## Spread over seeds {', '.join(str(s) for s in sorted(spread))}",
            "",
            "| Profile | Policy | Kept (min–max) | Promised/actual p50 (min–max) |",
            "| --- | --- | --- | --- |",
        ]
        for index, summary in enumerate(main):
            for policy_index, policy in enumerate(summary.policies):
                runs = [runs_of_seed[index].policies[policy_index] for runs_of_seed in spread.values()]
                kept = [run.kept_share for run in runs]
                ratio = [run.ratio_p50 for run in runs]
                lines.append(
                    f"| {summary.scenario.split(' (')[0]} | {policy.policy} | "
                    f"{_percent(min(kept))} – {_percent(max(kept))} | "
                    f"{min(ratio):.2f} – {max(ratio):.2f} |"
                )
        lines.append("")
    lines += [
        f"Fixed promise: {FIXED_PROMISE_MINUTES} business minutes. Trailing median: the median "
        "first-reply time (business minutes) of the cases answered in the last 7 days, rounded "
        "up like FirstReply's. Promised/actual divides by at least one minute; the column for "
        "customers who waited at least the first-response target leaves out those answered "
        "faster than the shortest promise allows for.",
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the simulation and write the results; return the exit code."""
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=7, help="seed of the main run (default 7)")
    parser.add_argument(
        "--seeds", type=int, default=4, help="further seeds for the spread table (default 4; 0: none)"
    )
    parser.add_argument(
        "--out", type=Path, default=HERE, help="directory for results.md and results.json"
    )
    args = parser.parse_args(argv)
    config = load_support_config()
    mixture = profiles.fit_public_figures()
    main_runs = run_seed(config, args.seed, mixture)
    spread = {
        seed: run_seed(config, seed, mixture)
        for seed in range(args.seed + 1, args.seed + 1 + args.seeds)
    }
    if spread:
        spread[args.seed] = main_runs
    markdown = render_markdown(config, args.seed, main_runs, spread, mixture, args.seeds)
    data: dict[str, Any] = {
        "command": f"{COMMAND} --seed {args.seed} --seeds {args.seeds}",
        "seed": args.seed,
        "mixture": {
            "fast_share": mixture.fast_share,
            "fast_median_minutes": mixture.fast_median,
            "slow_median_minutes": mixture.slow_median,
            "log_sd": mixture.log_sd,
        },
        "runs": [summary.to_dict() for summary in main_runs],
        "spread": {
            str(seed): [summary.to_dict() for summary in runs] for seed, runs in sorted(spread.items())
        },
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.md").write_text(markdown, encoding="utf-8")
    (args.out / "results.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
