"""One clock for the whole relay: Redis's.

Job scores decide when a job runs, heartbeats decide when a worker counts as gone and
`webhook-timestamp` is checked by receivers against their own clocks. If each process used its
own host clock, a worker 10 minutes behind would see no job as due and a worker ahead would
sign timestamps receivers reject. So every such time is Redis's `TIME`:

- scripts that score jobs read `TIME` themselves (the ingress's store, the worker's claim);
- everything else uses `now()`: the host clock plus an offset measured against `TIME`
  (half the round trip is the error, well under a millisecond on a local network), refreshed
  by every poll tick of a worker and every few seconds by the ingress.

`monotonic()` stays the host's, for measuring durations.
"""

from __future__ import annotations

import time
from typing import Any


class RedisClock:
    """Wall-clock seconds as Redis sees them."""

    def __init__(self) -> None:
        self.offset = 0.0  # Redis TIME minus the host clock
        self.synced = False

    def now(self) -> float:
        return time.time() + self.offset

    def now_ms(self) -> int:
        return int(self.now() * 1000)

    def observe(self, redis_ms: int, sent_at: float, answered_at: float) -> None:
        """Take a Redis time (ms) read between two host-clock readings."""
        self.offset = redis_ms / 1000 - (sent_at + answered_at) / 2
        self.synced = True

    async def sync(self, redis: Any) -> None:
        """Measure the offset with one `TIME` round trip."""
        sent_at = time.time()
        seconds, micros = await redis.time()
        self.observe(int(seconds) * 1000 + int(micros) // 1000, sent_at, time.time())

    def host_defer(self, seconds: float) -> float:
        """A delay for APIs that add it to the host clock (arq's `Retry(defer=...)` scores
        `host now + defer`), so that the job lands at Redis now + `seconds`."""
        return seconds + self.offset


CLOCK = RedisClock()
"""The process's clock; every module reads time through it."""


def now() -> float:
    return CLOCK.now()


def now_ms() -> int:
    return CLOCK.now_ms()


# Lua: Redis's own time in milliseconds, for scripts that score jobs.
LUA_NOW_MS = """
local __t = redis.call('TIME')
local now_ms = tonumber(__t[1]) * 1000 + math.floor(tonumber(__t[2]) / 1000)
"""
