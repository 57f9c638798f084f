"""The scenarios ``python -m bench.sim`` runs: a Northwind week, and a replay of public figures.

Both use the calendar and targets of support.yml and the same seeded arrivals: a
warm-up week (history only) and a measured week, Monday 22 to Sunday 28 March 2027,
which holds Good Friday (closed), the clocks going forward (Sunday) and, on the
Wednesday, a viral complaint: ten times the usual arrivals from 15:00 to 16:00.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone

import numpy as np
from scipy import optimize, stats

from bench.sim.model import Arrival, Scenario, Shift
from bot.eta import BusinessCalendar, ServiceTargets
from bot.eta.calendar import first_instant_at

# Monday 15 March 2027, 00:00 UTC (= London, still GMT): the warm-up week starts.
EPOCH = datetime(2027, 3, 15, tzinfo=timezone.utc)
WARM_UP_DAYS = 7
MEASURED_DAYS = 7
# Agents keep working this many days after the last arrival, so every case is answered.
TAIL_DAYS = 10

# Customers per hour on a weekday, by local hour (0-23).
WEEKDAY_RATES: tuple[float, ...] = (
    1, 1, 1, 1, 1, 1, 2, 4, 7, 9, 9, 9, 10, 10, 8, 8, 8, 7, 7, 7, 5, 5, 2, 2,
)  # fmt: skip
# Weekends and holidays: fewer customers write.
QUIET_DAY_FACTOR = 0.6
# The viral complaint: this many times the usual rate, for one hour.
BURST_FACTOR = 10.0
BURST_START = datetime(2027, 3, 24, 15, 0)  # local (GMT), the measured week's Wednesday
BURST_HOURS = 1
PRIORITY_SHARES: dict[str, float] = {"low": 0.03, "normal": 0.80, "high": 0.12, "urgent": 0.05}
# Handle time (claim to resolve): lognormal with this mean (minutes) and log-sd.
HANDLE_MEAN_MINUTES = 12.0
HANDLE_LOG_SD = 0.6
# Claim to first human reply: lognormal median (minutes) and log-sd.
REPLY_MEDIAN_MINUTES = 2.0
REPLY_LOG_SD = 0.5

# Two agents called in half an hour into the viral complaint, until closing.
BURST_HELP: tuple[time, time, int] = (time(15, 30), time(20), 2)
# Shifts by weekday (0 = Monday): (local start, local end, agents). Closed on holidays.
SHIFTS: dict[int, tuple[tuple[time, time, int], ...]] = {
    **{weekday: ((time(8), time(14), 3), (time(12), time(20), 2)) for weekday in range(5)},
    5: ((time(9), time(17), 3),),
    6: ((time(10), time(16), 3),),
}

# Public figures for brand support accounts (Twitter, 2017): share answered within
# so many minutes. Median 12 min, 55 % within 15 min, 76 % within an hour, 10 % after 6 h.
PUBLIC_FIGURES: tuple[tuple[float, float], ...] = ((12, 0.50), (15, 0.55), (60, 0.76), (360, 0.90))


@dataclass(frozen=True)
class ReplyTimeMixture:
    """Two lognormals with one shared log-sd: answered in the flow, or slipped through.

    Attributes:
        fast_share: Share of messages answered in the normal flow.
        fast_median: Median minutes of those.
        slow_median: Median minutes of the ones that slipped through.
        log_sd: The shared log-sd.
    """

    fast_share: float
    fast_median: float
    slow_median: float
    log_sd: float

    def cdf(self, minutes: float) -> float:
        """Return the share answered within ``minutes``."""
        x = math.log(minutes)
        fast = stats.norm.cdf((x - math.log(self.fast_median)) / self.log_sd)
        slow = stats.norm.cdf((x - math.log(self.slow_median)) / self.log_sd)
        return float(self.fast_share * fast + (1 - self.fast_share) * slow)

    def sample(self, rng: np.random.Generator) -> float:
        """Draw one reply time (minutes)."""
        median = self.fast_median if rng.random() < self.fast_share else self.slow_median
        return float(median * math.exp(self.log_sd * rng.standard_normal()))


def fit_public_figures() -> ReplyTimeMixture:
    """Fit the mixture to ``PUBLIC_FIGURES``: four figures, four parameters, solved exactly.

    One lognormal cannot hold them (a median of 12 min with 10 % beyond 6 hours needs a
    much heavier tail than 55 % within 15 min allows); a share answered in the flow plus
    a share that slipped through can.
    """
    minutes = np.array([point for point, _ in PUBLIC_FIGURES], dtype=float)
    shares = np.array([share for _, share in PUBLIC_FIGURES], dtype=float)

    def misfit(parameters: np.ndarray) -> np.ndarray:
        share, fast_log, slow_log, log_sd = parameters
        x = np.log(minutes)
        cdf = share * stats.norm.cdf((x - fast_log) / log_sd) + (1 - share) * stats.norm.cdf(
            (x - slow_log) / log_sd
        )
        return np.asarray(cdf - shares, dtype=float)

    fitted = optimize.least_squares(
        misfit,
        x0=[0.7, math.log(10), math.log(240), 1.2],
        bounds=([0.05, 0.0, 0.0, 0.05], [0.95, 6.0, 9.0, 4.0]),
    )
    share, fast_log, slow_log, log_sd = (float(value) for value in fitted.x)
    return ReplyTimeMixture(share, math.exp(fast_log), math.exp(slow_log), log_sd)


def _local_hours(calendar: BusinessCalendar, days: int) -> list[tuple[float, datetime]]:
    """Return (minutes after EPOCH, local start) for every UTC hour of ``days`` days."""
    return [
        (hour * 60.0, (EPOCH + timedelta(hours=hour)).astimezone(calendar.timezone))
        for hour in range(days * 24)
    ]


def _rate(calendar: BusinessCalendar, local: datetime) -> float:
    rate = WEEKDAY_RATES[local.hour]
    if local.weekday() >= 5 or local.date() in calendar.holidays:
        rate *= QUIET_DAY_FACTOR
    burst_start = BURST_START.replace(tzinfo=calendar.timezone)
    if burst_start <= local < burst_start + timedelta(hours=BURST_HOURS):
        rate *= BURST_FACTOR
    return rate


def arrivals(
    calendar: BusinessCalendar, seed: int, replay: ReplyTimeMixture | None = None
) -> tuple[Arrival, ...]:
    """Draw the customers of the warm-up and measured weeks.

    A Poisson number per hour from the daily profile, spread uniformly in the hour.
    With ``replay``, each also gets its first-reply time from the fitted mixture
    (business minutes), drawn from a separate stream so both profiles share arrivals.
    """
    rng = np.random.default_rng(seed)
    replay_rng = np.random.default_rng([seed, 1])
    names = tuple(PRIORITY_SHARES)
    weights = np.array([PRIORITY_SHARES[name] for name in names])
    handle_log_mean = math.log(HANDLE_MEAN_MINUTES) - HANDLE_LOG_SD**2 / 2
    drawn: list[Arrival] = []
    for start, local in _local_hours(calendar, WARM_UP_DAYS + MEASURED_DAYS):
        for _ in range(rng.poisson(_rate(calendar, local))):
            pickup = replay.sample(replay_rng) if replay is not None else None
            drawn.append(
                Arrival(
                    at=start + 60.0 * rng.random(),
                    priority=str(names[rng.choice(len(names), p=weights)]),
                    handle_minutes=float(rng.lognormal(handle_log_mean, HANDLE_LOG_SD)),
                    reply_after_minutes=float(
                        rng.lognormal(math.log(REPLY_MEDIAN_MINUTES), REPLY_LOG_SD)
                    ),
                    pickup_minutes=pickup,
                )
            )
    return tuple(sorted(drawn, key=lambda arrival: arrival.at))


def shifts(calendar: BusinessCalendar) -> tuple[Shift, ...]:
    """Return the rota from the epoch to the end of the tail; nobody works on holidays."""
    rota: list[Shift] = []
    first_day = EPOCH.astimezone(calendar.timezone).date()
    for offset in range(WARM_UP_DAYS + MEASURED_DAYS + TAIL_DAYS):
        day = first_day + timedelta(days=offset)
        if day in calendar.holidays:
            continue
        day_shifts = SHIFTS.get(day.weekday(), ())
        if day == BURST_START.date():
            day_shifts = (*day_shifts, BURST_HELP)
        for number, (start, end, agents) in enumerate(day_shifts):
            for seat in range(agents):
                rota.append(
                    Shift(
                        agent=f"shift{number}-agent{seat}",
                        start=_minutes(first_instant_at(day, start, calendar.timezone)),
                        end=_minutes(first_instant_at(day, end, calendar.timezone)),
                    )
                )
    return tuple(rota)


def _minutes(moment: datetime) -> float:
    return (moment - EPOCH).total_seconds() / 60


def measured_window() -> tuple[float, float]:
    """Return the measured week as minutes after the epoch."""
    start = WARM_UP_DAYS * 24 * 60.0
    return start, start + MEASURED_DAYS * 24 * 60.0


def measured_dates() -> tuple[date, date]:
    """Return the first and last local dates of the measured week."""
    first = (EPOCH + timedelta(days=WARM_UP_DAYS)).date()
    return first, first + timedelta(days=MEASURED_DAYS - 1)


def northwind_week(
    calendar: BusinessCalendar, targets: ServiceTargets, window_days: int, seed: int
) -> Scenario:
    """Agents on shifts serve the queue by priority, oldest first; random handle times."""
    return _measured_week(
        "Northwind week (queue, shifts, burst, holiday)",
        calendar,
        targets,
        window_days,
        arrivals(calendar, seed),
        shifts(calendar),
    )


def public_replay(
    calendar: BusinessCalendar,
    targets: ServiceTargets,
    window_days: int,
    seed: int,
    mixture: ReplyTimeMixture,
) -> Scenario:
    """The same customers, each answered after a draw from the public-figures fit."""
    return _measured_week(
        "Public figures replay (fitted reply-time distribution)",
        calendar,
        targets,
        window_days,
        arrivals(calendar, seed, mixture),
        (),
    )


def _measured_week(
    name: str,
    calendar: BusinessCalendar,
    targets: ServiceTargets,
    window_days: int,
    customers: tuple[Arrival, ...],
    agents: tuple[Shift, ...],
) -> Scenario:
    """Return a scenario from ``EPOCH`` that measures the week after the warm-up."""
    start, end = measured_window()
    return Scenario(
        name=name, epoch=EPOCH, calendar=calendar, targets=targets, arrivals=customers, shifts=agents,
        measure_from=start, measure_until=end, window_days=window_days,
    )
