"""Kills at random moments while the desk's outbox delivers agents' replies to Telegram customers.

The real desk process (``python -m bot desk``) on a SQLite case store and, when the test
services are there (``make test``), on PostgreSQL, against the local fakes of Slack, Telegram
(answering each message after a platform's latency) and Rasa's HTTP API (``crash_desk``). Each
trial opens new cases, queues agents' replies at random moments of a few seconds, and at a
random moment kills the desk with SIGKILL (started again at once) or, on PostgreSQL, terminates
every database connection (the first trial there). Then no reply is lost or given up, no Slack
post is made twice, and a reply reached a customer twice only if it was in doubt: under way at
the kill, or cut off by the lost lead that terminated connections cause (the customer having it,
the desk not knowing: Telegram has no look-up, so the outbox sends it again).

``FIRSTREPLY_CRASH_SEED`` replays a run (the seed is printed); ``FIRSTREPLY_CRASH_DESK_TRIALS``
sets the number of trials per case store (2). ``make bench-crash`` runs the long sweep
(docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Iterator

import pytest

from tests.integration.conftest import BACKENDS, fresh_database, production_services
from tests.integration.crash_desk import DESK, DeskStack, desk_stack, run_desk_trial
from tests.integration.crash_support import DATABASE

pytestmark = pytest.mark.integration

TRIALS = int(os.environ.get("FIRSTREPLY_CRASH_DESK_TRIALS", "2"))
SEED = int(os.environ.get("FIRSTREPLY_CRASH_SEED") or random.SystemRandom().randrange(1_000_000))
CUSTOMERS = 8
REPLIES_EACH = 3
KILL_WINDOW_S = (0.3, 3.5)


@pytest.fixture(scope="module", params=BACKENDS)
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DeskStack]:
    work = tmp_path_factory.mktemp(f"crash-desk-{request.param}")
    if request.param == "sqlite":
        with desk_stack(work) as running:
            yield running
        return
    with fresh_database(production_services().postgres_url) as url, desk_stack(work, url) as running:
        yield running


def test_random_kills_of_the_desk_lose_no_reply_and_repeat_only_what_was_in_doubt(stack: DeskStack) -> None:
    rng = random.Random(SEED)
    print(f"\nrandom kills (desk outbox): seed {SEED} (FIRSTREPLY_CRASH_SEED={SEED} replays it)")
    for trial in range(TRIALS):
        target = (DATABASE if DATABASE in stack.targets else DESK) if trial == 0 else rng.choice(stack.targets)
        kill_at = rng.uniform(*KILL_WINDOW_S)
        first_chat = 600_000 + 1000 * trial
        outcome = asyncio.run(run_desk_trial(stack, "desk", first_chat, CUSTOMERS, REPLIES_EACH, target, kill_at, rng))
        print(f"trial {trial + 1}: {outcome.as_dict()}")

        assert outcome.lost == 0 and outcome.given_up == 0, (outcome.problems, stack.logs()[-3000:])
        assert outcome.repeated_not_in_doubt == 0, outcome.problems
        assert outcome.slack_posts_twice == 0, outcome.problems
        assert outcome.repeated <= outcome.in_doubt_at_kill + outcome.cut_off
