"""A Redis lock store for Rasa whose every step is one atomic Redis script.

Rasa 3.6's ``RedisLockStore`` keeps each conversation's ticket queue as one JSON value
and changes it by read-modify-write (GET, change, SET): two replicas receiving messages of
the same conversation at the same moment can both read "no lock", both issue ticket 0 and
both process at once (one message then goes missing from the tracker), and ``cleanup`` can
delete a lock another replica has just queued on. Here issuing a ticket, checking whose turn
it is and giving the turn up are each a Lua script, so Redis runs them one at a time.

endpoints.yml::

    lock_store:
      type: bot.locks.AtomicRedisLockStore
      url: ${REDIS_HOST}
      port: ${REDIS_PORT}
      ...                       (the same keys as Rasa's ``type: redis``)
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from typing import Any, AsyncGenerator, Optional

from rasa.core.lock import TicketLock
from rasa.core.lock_store import LOCK_LIFETIME, LockError, RedisLockStore
from rasa.utils.endpoints import EndpointConfig

log = logging.getLogger(__name__)

# KEYS: next-ticket counter, queue (ZSET ticket -> ticket), expiries (HASH ticket -> ms).
# ARGV: lifetime in ms. Returns the new ticket. Redis's own clock: replicas' clocks may differ.
_ISSUE = """
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local ticket = redis.call('INCR', KEYS[1])
redis.call('ZADD', KEYS[2], ticket, ticket)
redis.call('HSET', KEYS[3], ticket, ms + tonumber(ARGV[1]))
for _, key in ipairs(KEYS) do redis.call('PEXPIRE', key, 2 * tonumber(ARGV[1])) end
return ticket
"""
# ARGV: ticket. Drops expired tickets; returns 1 (its turn), 0 (wait) or -1 (it expired).
_TURN = """
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
for _, ticket in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  local expires = tonumber(redis.call('HGET', KEYS[3], ticket) or 0)
  if expires <= ms then
    redis.call('ZREM', KEYS[2], ticket)
    redis.call('HDEL', KEYS[3], ticket)
  end
end
if not redis.call('ZSCORE', KEYS[2], ARGV[1]) then return -1 end
local head = redis.call('ZRANGE', KEYS[2], 0, 0)[1]
if head == ARGV[1] then return 1 end
return 0
"""
# ARGV: ticket. Gives the turn up; the last one out removes the keys.
_RELEASE = """
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
if redis.call('ZCARD', KEYS[2]) == 0 then redis.call('DEL', KEYS[1], KEYS[2], KEYS[3]) end
return 1
"""
FIRST_POLL_S = 0.01


class AtomicRedisLockStore(RedisLockStore):
    """``RedisLockStore`` with atomic tickets: one conversation, one replica at a time, in order."""

    def __init__(self, endpoint_config: Optional[EndpointConfig] = None, **kwargs: Any) -> None:
        """Take the ``lock_store`` section of endpoints.yml, or ``RedisLockStore``'s arguments."""
        if endpoint_config is not None:
            kwargs = {"host": endpoint_config.url or "localhost", **endpoint_config.kwargs, **kwargs}
        super().__init__(**kwargs)
        self._issue = self.red.register_script(_ISSUE)
        self._turn = self.red.register_script(_TURN)
        self._release = self.red.register_script(_RELEASE)

    def _keys(self, conversation_id: str) -> list[str]:
        # One hash tag, so a Redis Cluster keeps the three keys on one node.
        base = f"{self.key_prefix}{{{conversation_id}}}"
        return [f"{base}:next", f"{base}:queue", f"{base}:expires"]

    @asynccontextmanager
    async def lock(
        self, conversation_id: str, lock_lifetime: float = LOCK_LIFETIME, wait_time_in_seconds: float = 1
    ) -> AsyncGenerator[TicketLock, None]:
        """Wait for this conversation's turn (first come, first served), hold it, give it up.

        Raises:
            LockError: the ticket expired (``lock_lifetime`` seconds) before its turn came.
        """
        keys = self._keys(conversation_id)
        ticket = int(self._issue(keys=keys, args=[int(lock_lifetime * 1000)]))
        try:
            poll = FIRST_POLL_S
            while True:
                turn = int(self._turn(keys=keys, args=[ticket]))
                if turn == 1:
                    break
                if turn == -1:
                    raise LockError(f"Could not acquire lock for conversation_id '{conversation_id}'.")
                await asyncio.sleep(poll)
                poll = min(poll * 2, wait_time_in_seconds)
            yield TicketLock(conversation_id)
        finally:
            self._release(keys=keys, args=[ticket])
