"""Kills at random moments while the desk's outbox delivers agents' replies to Telegram customers.

The real desk process (``python -m bot desk``) on a SQLite case store, against the local fakes
of Slack, Telegram (answering each message after a platform's latency) and Rasa's HTTP API
(``crash_desk``). Each trial opens new cases, queues agents' replies at random moments of a few
seconds, kills the desk with SIGKILL at a random moment and starts it again at once. Then no
reply is lost or given up, no Slack post is made twice, and a reply reached a customer twice
only if it was in doubt at the kill (under way, the customer having it, the desk not yet
knowing: Telegram has no look-up, so the outbox sends it again).

``FIRSTREPLY_CRASH_SEED`` replays a run (the seed is printed); ``FIRSTREPLY_CRASH_DESK_TRIALS``
sets the number of trials (3). ``make bench-crash`` runs the long sweep (docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Iterator

import pytest

from tests.integration.crash_desk import DESK, DeskStack, desk_stack, run_desk_trial

pytestmark = pytest.mark.integration

TRIALS = int(os.environ.get("FIRSTREPLY_CRASH_DESK_TRIALS", "3"))
SEED = int(os.environ.get("FIRSTREPLY_CRASH_SEED") or random.SystemRandom().randrange(1_000_000))
CUSTOMERS = 8
REPLIES_EACH = 3
KILL_WINDOW_S = (0.3, 3.5)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DeskStack]:
    with desk_stack(tmp_path_factory.mktemp("crash-desk")) as running:
        yield running


def test_random_kills_of_the_desk_lose_no_reply_and_repeat_only_what_was_in_doubt(stack: DeskStack) -> None:
    rng = random.Random(SEED)
    print(f"\nrandom kills (desk outbox): seed {SEED} (FIRSTREPLY_CRASH_SEED={SEED} replays it)")
    for trial in range(TRIALS):
        kill_at = rng.uniform(*KILL_WINDOW_S)
        outcome = asyncio.run(
            run_desk_trial(stack, "sqlite/desk", 600_000 + 1000 * trial, CUSTOMERS, REPLIES_EACH, DESK, kill_at, rng)
        )
        print(f"trial {trial + 1}: {outcome.as_dict()}")

        assert outcome.lost == 0 and outcome.given_up == 0, (outcome.problems, stack.logs()[-3000:])
        assert outcome.repeated_not_in_doubt == 0, outcome.problems
        assert outcome.slack_posts_twice == 0, outcome.problems
        assert outcome.repeated <= outcome.in_doubt_at_kill
