"""Kills at random moments of a burst of 30 new web chat customers, on what ``make run`` starts.

Real Rasa (through ``bot.launcher``) and action server on SQLite files, the web chat served by
Rasa itself; each customer behaves as the page does with a failed request (``crash_webchat``).
Each trial kills Rasa or the action server with SIGKILL at a random moment of the burst and
starts it again at once; the first trial kills Rasa. Then, for every customer: the message was
answered and handled exactly once, nobody was greeted twice, nobody misses a reply and nobody
sees a reply twice (the web chat's answer is stored with the message, so nothing is ever in
doubt on the customer's side), and messages the killed Rasa was answering were taken over by
the new one at once (not after ``STALE_CLAIM_SECONDS``).

``FIRSTREPLY_CRASH_SEED`` replays a run (the seed is printed); ``FIRSTREPLY_CRASH_WEBCHAT_TRIALS``
sets the number of trials (2). ``make bench-crash`` runs the long sweep (docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Iterator

import pytest

from tests.integration.crash_support import RASA, SoloStack, new_customers, solo_stack
from tests.integration.crash_webchat import WebChatPlatform, run_webchat_trial
from tests.processes import require_model

pytestmark = pytest.mark.integration

TRIALS = int(os.environ.get("FIRSTREPLY_CRASH_WEBCHAT_TRIALS", "2"))
SEED = int(os.environ.get("FIRSTREPLY_CRASH_SEED") or random.SystemRandom().randrange(1_000_000))
CUSTOMERS = 30
KILL_WINDOW_S = (0.3, 4.0)


@pytest.fixture(scope="module")
def platform() -> WebChatPlatform:
    return WebChatPlatform()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, platform: WebChatPlatform) -> Iterator[SoloStack]:
    require_model()
    with solo_stack(tmp_path_factory.mktemp("crash-webchat"), [platform]) as running:
        yield running


def test_random_kills_in_a_web_chat_burst_lose_nothing_and_show_every_reply_once(
    stack: SoloStack, platform: WebChatPlatform
) -> None:
    rng = random.Random(SEED)
    print(f"\nrandom kills (web chat): seed {SEED} (FIRSTREPLY_CRASH_SEED={SEED} replays it)")
    for trial in range(TRIALS):
        target = RASA if trial == 0 else rng.choice(stack.targets)
        customers = new_customers(700_000 + 1000 * trial, CUSTOMERS)
        kill_at = rng.uniform(*KILL_WINDOW_S)
        outcome = asyncio.run(run_webchat_trial(stack, platform, "sqlite/webchat", customers, target, kill_at, rng))
        print(f"trial {trial + 1}: {outcome.as_dict()}")

        assert outcome.lost == 0 and outcome.handled_twice == 0, outcome.problems
        assert outcome.greeted_twice == 0 and outcome.repeated == 0, outcome.problems
        assert outcome.missing == 0, outcome.problems
        if target == RASA and outcome.in_flight_at_kill:
            assert outcome.taken_over_at_once >= 1, stack.logs()[-3000:]
