"""How long a reply stays in doubt, and what came of the replies a crash left in doubt.

A reply is recorded "sending" just before its platform call and "sent" right after the
platform's answer (``bot.channels.replies.RecordedOutput.recorded``); a crash between the two
leaves it in doubt. Every Rasa process measures, for its latest replies, the time from the
answer to the "sent" record and from "sending" to "sent" (``REPLY_WINDOWS``; served as
``GET /webhooks/<channel>/replies`` and as Prometheus histograms), and counts the replies it
found in doubt when handling an event again.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any

from prometheus_client import Counter, Histogram

REPLIES_IN_DOUBT = Counter(
    "firstreply_channel_replies_in_doubt",
    "Replies a crash cut off while their platform call was in flight, found when the event was "
    "handled again: sent again (the customer may read them twice), looked up on the platform "
    "(those that can be), or not sent again (a greeting).",
    ("channel", "outcome"),
)
# Seconds from the platform's answer to the reply's "sent" record, and from its "sending"
# record to its "sent" record: a crash inside the second leaves the reply in doubt.
WINDOW_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
REPLY_RECORD_LAG = Histogram(
    "firstreply_channel_reply_record_lag_seconds",
    "Time from the platform's answer to a reply to the reply's 'sent' record.",
    ("channel",),
    buckets=WINDOW_BUCKETS,
)
REPLY_IN_DOUBT_WINDOW = Histogram(
    "firstreply_channel_reply_in_doubt_seconds",
    "Time a reply spends recorded as 'sending': its platform call and the two records around it.",
    ("channel",),
    buckets=WINDOW_BUCKETS,
)


class ReplyWindows:
    """The in-doubt windows of this process's latest replies, for ``GET /webhooks/<name>/replies``."""

    def __init__(self, size: int = 10_000) -> None:
        """Keep the latest ``size`` replies' figures."""
        self.lag: deque[float] = deque(maxlen=size)
        self.window: deque[float] = deque(maxlen=size)
        self.in_doubt: dict[str, int] = {}

    def add(self, channel: str, lag: float, window: float) -> None:
        """Note one reply's record lag and in-doubt window (seconds)."""
        self.lag.append(lag)
        self.window.append(window)
        REPLY_RECORD_LAG.labels(channel).observe(lag)
        REPLY_IN_DOUBT_WINDOW.labels(channel).observe(window)

    def found_in_doubt(self, channel: str, outcome: str) -> None:
        """Note a reply found in doubt and what came of it."""
        self.in_doubt[outcome] = self.in_doubt.get(outcome, 0) + 1
        REPLIES_IN_DOUBT.labels(channel, outcome).inc()

    def summary(self) -> dict[str, Any]:
        """Return the count, p50, p99 and maximum of both, in milliseconds, and the replies found in doubt."""
        return {
            "replies": len(self.window),
            "record_lag_ms": percentiles_ms(self.lag),
            "in_doubt_window_ms": percentiles_ms(self.window),
            "found_in_doubt": dict(self.in_doubt),
        }


def percentiles_ms(seconds: Iterable[float]) -> dict[str, float | None]:
    """Return the p50, p99 and maximum of ``seconds``, in milliseconds (``None`` for none)."""
    ordered = sorted(seconds)
    if not ordered:
        return {"p50": None, "p99": None, "max": None}
    at = {share: ordered[min(len(ordered) - 1, int(share * len(ordered)))] for share in (0.5, 0.99)}
    return {"p50": round(at[0.5] * 1000, 3), "p99": round(at[0.99] * 1000, 3), "max": round(ordered[-1] * 1000, 3)}


REPLY_WINDOWS = ReplyWindows()
