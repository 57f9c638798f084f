"""The Redis lock store on a real Redis: tickets in turn, and a dead replica's tickets let go within a lease.

Each test uses its own key prefix in a database of its own (``REDIS_DB_LOCKS``) of the test
Redis (``FIRSTREPLY_TEST_REDIS_URL``, set by ``scripts/test-services.sh``).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from urllib.parse import unquote, urlparse

import pytest
from rasa.core.lock_store import LockError
from rasa.utils.endpoints import EndpointConfig

from bot.locks import AtomicRedisLockStore
from tests.integration.conftest import production_services
from tests.lock_support import hold, three_in_turn

pytestmark = pytest.mark.integration

REDIS_DB_LOCKS = 7
# Short leases so a dead replica's ticket goes within a test; lifetimes long enough never to end one.
LEASE_S = 0.4
LIFETIME_S = 60.0


def _store(prefix: str, **settings: object) -> AtomicRedisLockStore:
    redis = urlparse(production_services().redis_url)
    config = EndpointConfig(url=redis.hostname, type="bot.locks.AtomicRedisLockStore", port=redis.port,
                            db=REDIS_DB_LOCKS, password=unquote(redis.password or ""), key_prefix=prefix,
                            **settings)  # fmt: skip
    return AtomicRedisLockStore(config)


@pytest.fixture()
def prefix() -> Iterator[str]:
    name = f"t{secrets.token_hex(4)}"
    yield name
    store = _store(name)
    for key in store.red.scan_iter(f"{store.key_prefix}*"):
        store.red.delete(key)


def _redis_ms(store: AtomicRedisLockStore) -> int:
    seconds, micros = store.red.time()
    return int(seconds) * 1000 + int(micros) // 1000


def _deadline_ms(store: AtomicRedisLockStore, conversation: str, ticket: int) -> int:
    return int(store.red.hget(store._keys(conversation)[2], ticket) or 0)


def test_one_conversation_is_served_in_turn_across_replicas_and_a_holder_keeps_it_past_many_leases(
    prefix: str,
) -> None:
    # Two stores: two replicas. The first holds the turn for several leases, renewing it.
    one, other = _store(prefix, lease_seconds=LEASE_S), _store(prefix, lease_seconds=LEASE_S)

    log = three_in_turn(one, other, 5 * LEASE_S, lock_lifetime=LIFETIME_S)

    assert log == ["a in", "a out", "b in", "b out", "c in", "c out"]
    assert list(one.red.scan_iter(f"{one.key_prefix}*")) == []  # the last one out removed the keys


def test_a_dead_replicas_ticket_is_dropped_once_its_lease_runs_out_not_at_the_end_of_its_lifetime(
    prefix: str,
) -> None:
    dead, alive = _store(prefix, lease_seconds=LEASE_S), _store(prefix, lease_seconds=LEASE_S)
    # The dead replica took the turn and never renewed or gave it up (killed with -9).
    ticket = dead._take_ticket("maria", LIFETIME_S)
    assert dead._ticket_turn("maria", ticket) == 1
    deadline = _deadline_ms(dead, "maria", ticket)
    entered: list[int] = []

    async def run() -> None:
        async with alive.lock("maria", lock_lifetime=LIFETIME_S):
            entered.append(_redis_ms(alive))

    asyncio.run(asyncio.wait_for(run(), LIFETIME_S / 2))

    assert entered and entered[0] < deadline  # taken over long before the dead ticket's lifetime
    assert dead._ticket_turn("maria", ticket) == -1  # and the dead ticket is gone for good


def test_a_ticket_without_a_lease_lives_to_its_deadline(prefix: str) -> None:
    # A ticket issued by a replica of an older release has a deadline but no lease.
    alive = _store(prefix, lease_seconds=LEASE_S)
    next_key, queue, deadlines, _ = alive._keys("maria")
    deadline = _redis_ms(alive) + 1500
    alive.red.set(next_key, 1)
    alive.red.zadd(queue, {"1": 1})
    alive.red.hset(deadlines, "1", deadline)
    entered: list[int] = []

    async def run() -> None:
        async with alive.lock("maria", lock_lifetime=LIFETIME_S):
            entered.append(_redis_ms(alive))

    asyncio.run(asyncio.wait_for(run(), LIFETIME_S / 2))

    assert entered and entered[0] >= deadline


def test_a_lease_is_never_renewed_past_the_locks_lifetime_and_a_waiter_past_its_own_gets_lock_error(
    prefix: str,
) -> None:
    store = _store(prefix, lease_seconds=LEASE_S)
    ticket = store._take_ticket("maria", 0.3)
    assert store._ticket_turn("maria", ticket) == 1
    assert store._renew_ticket("maria", ticket)
    asyncio.run(asyncio.sleep(0.4))
    assert not store._renew_ticket("maria", ticket)

    # A holder renewing its lease keeps a waiter out; the waiter's own lifetime then ends.
    holder, waiter = _store(prefix, lease_seconds=LEASE_S), _store(prefix, lease_seconds=LEASE_S)

    async def run() -> None:
        held = asyncio.create_task(hold(holder, "sam", "a", [], 3 * LEASE_S, lock_lifetime=LIFETIME_S))
        await asyncio.sleep(0.05)
        with pytest.raises(LockError):
            async with waiter.lock("sam", lock_lifetime=LEASE_S):
                pass
        await held

    asyncio.run(run())


@pytest.mark.parametrize("lease", [0, -1, "0"])
def test_a_lease_of_zero_or_less_is_refused_at_start_up(prefix: str, lease: object) -> None:
    with pytest.raises(ValueError, match="lease_seconds"):
        _store(prefix, lease_seconds=lease)


def test_the_default_lease_applies_when_endpoints_yml_sets_none(prefix: str) -> None:
    store = _store(prefix)
    ticket = store._take_ticket("maria", LIFETIME_S)
    lease = int(store.red.hget(store._keys("maria")[3], ticket) or 0)
    assert 9_000 <= lease - _redis_ms(store) <= 10_000
    store._give_ticket_up("maria", ticket)
