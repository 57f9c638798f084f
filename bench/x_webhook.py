"""How fast the X connector takes an event: the webhook's answer, and the whole way to the reply.

In one process, no Rasa: the real connector in Rasa's Sanic app (as the channel tests serve it),
an agent that answers every message at once, the fake X API for the replies, the inbox on a fresh
SQLite file. ``COUNT`` DMs from as many customers are POSTed one after the other, signed; each
answer's time is from the POST to X's 200 (verify, store, start). Then the time until every reply
was delivered to the fake. A few seconds::

    .venv/bin/python -m bench.x_webhook [COUNT]
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time


async def measure(count: int) -> str:
    """Return the figures for ``count`` DMs, as one line."""
    from bot.channels.x import XInput
    from bot.channels.x_client import XSettings
    from tests.channel_support import RecordingAgent
    from tests.fakes.x_api import FakeXAPI, activity, dm_event, signed_headers, user
    from tests.test_x_channel import ENV, REPLY, serve

    with FakeXAPI() as api:
        settings = XSettings.from_credentials({"base_url": api.base_url}, ENV)
        async with serve(XInput(settings, REPLY), RecordingAgent(replies=[{"text": "On it."}])) as served:
            acks, started = [], time.perf_counter()
            for number in range(count):
                customer = user(str(5_000_000 + number), f"Customer {number}", f"customer{number}")
                body = activity(dms=[dm_event(str(10_000 + number), customer, f"message {number}")], users=[customer])
                sent = time.perf_counter()
                answer = await served.client.post("/webhooks/x/webhook", content=body, headers=signed_headers(body))
                acks.append((time.perf_counter() - sent) * 1000)
                if answer.status_code != 200:
                    raise RuntimeError(f"the webhook answered {answer.status_code}: {answer.text[:200]}")
            await served.channel.tasks.wait()
            while len(api.dms()) < count and time.perf_counter() - started < 300:
                await asyncio.sleep(0.05)
            total = time.perf_counter() - started
    acks.sort()
    return (f"{count} DMs: answer to X p50 {statistics.median(acks):.1f} ms, p95 {acks[int(0.95 * count)]:.1f} ms, "
            f"max {acks[-1]:.1f} ms; {len(api.dms())} replies delivered {total:.1f} s after the first POST")


def main() -> None:
    """Run the measurement and print its line."""
    os.environ["FIRSTREPLY_CHANNEL_DB"] = os.path.join(tempfile.mkdtemp(prefix="x-bench-"), "channels.db")
    print(asyncio.run(measure(int(sys.argv[1]) if len(sys.argv) > 1 else 300)))


if __name__ == "__main__":
    main()
