"""The load generator: new conversations against Rasa's REST channel, timed per request.

Every request is ``POST /webhooks/rest/webhook``; a request counts as answered when the
HTTP status is 200 and, for the first message of a conversation, one of the replies is
the greeting (its text starts with "Hi" for both bots). Anything else -- a status other
than 200, a timeout, a connection error, an empty or greeting-less reply -- is an error.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import aiohttp
import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
GREETING_PREFIX = "Hi"
REQUEST_TIMEOUT_S = 30.0
_ANNOTATION = re.compile(r"\[([^\]]+)\]\([^)]*\)|\[([^\]]+)\]\{[^}]*\}")
_NAMES = ("Maria", "Tom", "Aisha", "Kenji", "Lena", "Carlos", "Priya", "Sam")


def nlu_examples(nlu_dir: Path = ROOT / "data" / "nlu") -> List[str]:
    """Return every intent example of the NLU data as a customer would type it."""
    examples: List[str] = []
    for path in sorted(nlu_dir.glob("*.yml")):
        for block in (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("nlu") or []:
            if "intent" not in block:
                continue
            for line in str(block.get("examples") or "").splitlines():
                line = line.strip()
                if line.startswith("- "):
                    text = _ANNOTATION.sub(lambda m: m.group(1) or m.group(2), line[2:]).strip()
                    if text:
                        examples.append(text)
    return examples


@dataclass
class Sample:
    """One request: when it finished (s since phase start), its latency and outcome."""

    done_at: float
    latency: float
    ok: bool
    error: Optional[str] = None


@dataclass
class PhaseResult:
    """The requests of one phase."""

    samples: List[Sample] = field(default_factory=list)
    duration: float = 0.0
    sent: int = 0
    max_schedule_lag: float = 0.0

    def summary(self) -> Dict[str, Any]:
        """Return counts, error share and latency percentiles (milliseconds)."""
        ok = np.array([s.latency for s in self.samples if s.ok]) * 1000.0
        errors = [s.error for s in self.samples if not s.ok]
        kinds: Dict[str, int] = {}
        for error in errors:
            kinds[str(error)] = kinds.get(str(error), 0) + 1
        out: Dict[str, Any] = {
            "sent": self.sent,
            "answered": int(ok.size),
            "errors": len(errors),
            "error_kinds": kinds,
            "duration_s": round(self.duration, 3),
            "throughput_msg_s": round(ok.size / self.duration, 2) if self.duration > 0 else 0.0,
            "max_schedule_lag_ms": round(self.max_schedule_lag * 1000.0, 1),
        }
        for name, q in (("p50", 50), ("p95", 95), ("p99", 99)):
            out[f"{name}_ms"] = round(float(np.percentile(ok, q)), 1) if ok.size else None
        out["max_ms"] = round(float(ok.max()), 1) if ok.size else None
        out["mean_ms"] = round(float(ok.mean()), 1) if ok.size else None
        return out


class LoadGenerator:
    """Sends conversations to one bot's REST channel."""

    def __init__(self, base_url: str, examples: Sequence[str], seed: int = 7) -> None:
        """Target ``base_url`` (``http://host:port``); draw messages from ``examples``."""
        self.url = base_url.rstrip("/") + "/webhooks/rest/webhook"
        self.examples = list(examples)
        self.rng = random.Random(seed)
        self._ids = itertools.count()
        self._run = uuid.uuid4().hex[:8]
        self._session: Optional[aiohttp.ClientSession] = None

    async def __aenter__(self) -> "LoadGenerator":
        connector = aiohttp.TCPConnector(limit=0, force_close=False)
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
        self._session = aiohttp.ClientSession(connector=connector, timeout=timeout)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        assert self._session is not None
        await self._session.close()

    def new_sender(self) -> str:
        """Return a sender id never used before."""
        return f"bench-{self._run}-{next(self._ids)}"

    def message(self) -> str:
        """Return a random realistic customer message."""
        return self.rng.choice(self.examples)

    def metadata(self) -> Dict[str, Any]:
        """Half the conversations come with the customer's name, as a channel would send it."""
        return {"customer_name": self.rng.choice(_NAMES)} if self.rng.random() < 0.5 else {}

    async def send(self, sender: str, text: str, first: bool, t0: float) -> Sample:
        """Send one message and time it until the whole HTTP response is read."""
        assert self._session is not None
        payload: Dict[str, Any] = {"sender": sender, "message": text}
        if first:
            payload["metadata"] = self.metadata()
        start = time.perf_counter()
        error: Optional[str] = None
        try:
            async with self._session.post(self.url, json=payload) as response:
                body = await response.json(content_type=None)
                if response.status != 200:
                    error = f"http {response.status}"
                elif first and not any(
                    str(m.get("text") or "").startswith(GREETING_PREFIX) for m in body or [] if isinstance(m, dict)
                ):
                    error = "no greeting" if body else "empty reply"
        except asyncio.TimeoutError:
            error = "timeout"
        except (aiohttp.ClientError, ValueError, OSError) as exc:
            error = type(exc).__name__
        end = time.perf_counter()
        return Sample(done_at=end - t0, latency=end - start, ok=error is None, error=error)

    async def first_message(self, t0: float) -> Sample:
        """Open a new conversation with a realistic first message."""
        return await self.send(self.new_sender(), self.message(), True, t0)

    async def open_loop(self, rate: float, duration: float) -> PhaseResult:
        """Start new conversations as a Poisson process of ``rate``/s for ``duration`` s.

        Open loop: each request is sent on its schedule whether or not earlier ones
        have been answered, as independent customers would.
        """
        result = PhaseResult()
        tasks: List[asyncio.Task] = []
        t0 = time.perf_counter()
        due = self.rng.expovariate(rate)
        while due < duration:
            delay = due - (time.perf_counter() - t0)
            if delay > 0:
                await asyncio.sleep(delay)
            result.max_schedule_lag = max(result.max_schedule_lag, (time.perf_counter() - t0) - due)
            tasks.append(asyncio.ensure_future(self.first_message(t0)))
            due += self.rng.expovariate(rate)
        result.sent = len(tasks)
        result.samples = list(await asyncio.gather(*tasks))
        result.duration = duration
        return result

    async def burst(self, size: int) -> PhaseResult:
        """Start ``size`` new conversations at the same instant."""
        result = PhaseResult(sent=size)
        t0 = time.perf_counter()
        result.samples = list(await asyncio.gather(*(self.first_message(t0) for _ in range(size))))
        result.duration = max(s.done_at for s in result.samples)
        return result

    async def closed_loop(self, concurrency: int, duration: float, follow_ups: int = 3) -> PhaseResult:
        """``concurrency`` customers each send a message as soon as the previous is answered.

        Each customer opens a conversation, sends ``follow_ups`` more messages in it,
        then opens a new one, until ``duration`` s have passed.
        """
        result = PhaseResult()
        t0 = time.perf_counter()

        async def customer() -> List[Sample]:
            samples: List[Sample] = []
            while time.perf_counter() - t0 < duration:
                sender = self.new_sender()
                for turn in range(follow_ups + 1):
                    if time.perf_counter() - t0 >= duration:
                        break
                    samples.append(await self.send(sender, self.message(), turn == 0, t0))
            return samples

        per_customer = await asyncio.gather(*(customer() for _ in range(concurrency)))
        result.samples = [s for samples in per_customer for s in samples]
        result.sent = len(result.samples)
        # Throughput over the time the requests took (the last ones finish after `duration`).
        result.duration = max([duration] + [s.done_at for s in result.samples])
        return result
