"""A sink's `rate_limit` (e.g. `5/2s`), shared by every worker process through Redis.

A sliding-window log in one sorted set per sink, decided inside Redis with Redis's own clock,
so processes on different machines agree. No library does this for redis.asyncio well enough.
"""

from __future__ import annotations

import uuid
from typing import Any

from relay.config.types import RateLimit

_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], window)
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return math.max(1, tonumber(oldest[2]) + window - now)
"""


class RateLimiter:
    def __init__(self, redis: Any) -> None:
        self._script = redis.register_script(_ACQUIRE)

    async def acquire(self, key: str, limit: RateLimit) -> float:
        """Take a slot: 0.0 when granted, else the seconds until one frees up."""
        wait_ms = await self._script(
            keys=[key], args=[int(limit.per * 1000), limit.count, uuid.uuid4().hex]
        )
        return int(wait_ms) / 1000.0
