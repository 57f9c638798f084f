"""Kills at random moments of a burst of 30 new Telegram customers, on what ``make run`` starts.

Real Rasa (through ``bot.launcher``) and action server on SQLite files, the real Telegram
connector against the local fake Bot API (``crash_support``), the front process on the public
port as ``make run`` starts it. Each trial kills Rasa, the front or the action server with
SIGKILL at a random moment of the burst and starts it again at once; the first trial kills
Rasa, the second the front. Then, for every customer: the message was handled exactly once,
nobody was greeted twice, nobody misses a reply (a greeting cut off mid-send may stay unsent),
a reply was received twice only by a customer who had a reply in flight at the kill, and
updates the killed Rasa held were taken over by the new one at once (its default 60 s lease
would otherwise hold them).

``FIRSTREPLY_CRASH_SEED`` replays a run (the seed is printed); ``FIRSTREPLY_CRASH_TRIALS``
sets the number of trials (3). ``make bench-crash`` runs the long sweep (docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Iterator

import pytest

from tests.fakes.telegram_api import FakeTelegramAPI
from tests.integration.crash_support import FRONT, RASA, SoloStack, TelegramPlatform, kill_window, new_customers
from tests.integration.crash_support import run_trial, solo_stack
from tests.processes import require_model

pytestmark = pytest.mark.integration

TRIALS = int(os.environ.get("FIRSTREPLY_CRASH_TRIALS", "3"))
SEED = int(os.environ.get("FIRSTREPLY_CRASH_SEED") or random.SystemRandom().randrange(1_000_000))
CUSTOMERS = 30
# The burst of 30 first messages is answered in about 2 s on two cores (the front and Rasa).
KILL_WINDOW_S = (0.2, 1.8)
# Rasa first, then the front, then any of them.
FIRST_TARGETS = (RASA, FRONT)


@pytest.fixture(scope="module")
def api() -> Iterator[FakeTelegramAPI]:
    with FakeTelegramAPI() as fake:
        yield fake


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, api: FakeTelegramAPI) -> Iterator[SoloStack]:
    require_model()
    with solo_stack(tmp_path_factory.mktemp("crash-random"), [TelegramPlatform(api)]) as running:
        yield running


def test_random_kills_in_a_burst_lose_nothing_greet_nobody_twice_and_repeat_only_what_was_in_flight(
    stack: SoloStack, api: FakeTelegramAPI
) -> None:
    rng = random.Random(SEED)
    recorded = []
    print(f"\nrandom kills: seed {SEED} (FIRSTREPLY_CRASH_SEED={SEED} replays it)")
    for trial in range(TRIALS):
        target = FIRST_TARGETS[trial] if trial < len(FIRST_TARGETS) else rng.choice(stack.targets)
        customers = new_customers(800_000 + 1000 * trial, CUSTOMERS)
        kill_at = rng.uniform(*kill_window(target, KILL_WINDOW_S))
        outcome = asyncio.run(run_trial(stack, stack.platforms[0], "sqlite", customers, target, kill_at, rng))
        print(f"trial {trial + 1}: {outcome.as_dict()}")

        assert outcome.lost == 0 and outcome.handled_twice == 0, outcome.problems
        assert outcome.greeted_twice == 0 and outcome.held_twice == 0, outcome.problems
        assert outcome.missing == 0, outcome.problems
        assert outcome.repeated_without_reply_in_flight == 0, outcome.problems
        if target == RASA and outcome.leased_at_kill:
            assert outcome.taken_over_at_once >= 1, stack.logs()[-3000:]
        # Read after each trial: a Rasa killed once the burst was answered leaves its successor none.
        windows = stack.reply_windows()
        print(f"reply records of the running Rasa: {windows}")
        recorded.append(windows["replies"])
    assert max(recorded) > 0, recorded
