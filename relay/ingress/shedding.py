"""The ingress's load shedding: whether to answer 503 now, decided from memory, not Redis.

A background task reads `INFO memory` about once a second (`IngressGuard.run`); a webhook only
consults the verdict kept here, so shedding adds no Redis round trip per webhook. Between two
readings the guard adds an estimate of what this process stored since, so a burst cannot run
Redis from just under the threshold to full within one interval. The same task adds the 503s
counted here to the stats hash (`in:<source>:unavailable`), also when they were answered
because Redis was unreachable: they reach Redis once it answers again.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from redis.exceptions import OutOfMemoryError, RedisError

from relay.clock import CLOCK
from relay.config.model import RelayConfig
from relay.keys import UNAVAILABLE, Keys, inbound_stat
from relay.redis_memory import MemoryState, eviction_message, memory_message, read_memory

INTERVAL_S = 1.0
# What one stored webhook adds to Redis: its body in the job, allocator rounding (measured
# ~1.45 x the body for 4 KB bodies) and the envelope, queue entry and marker (~630 bytes, see
# README). Overestimated on purpose: it only holds back near the threshold, until the next
# reading, while an underestimate would let a burst eat the workers' headroom.
STORE_BODY_FACTOR = 2
STORE_OVERHEAD_BYTES = 1024


@dataclass(frozen=True)
class Shed:
    """Why the ingress answers 503: `code` is /readyz's error, `detail` says what to do."""

    code: str  # redis_memory_high | redis_out_of_memory | redis_evicts
    detail: str


def is_out_of_memory(exc: BaseException) -> bool:
    """Redis refused a write under noeviction (`-OOM command not allowed ...`; redis-py
    strips the OOM code into the exception class)."""
    return isinstance(exc, OutOfMemoryError)


class IngressGuard:
    def __init__(
        self, redis: Any, keys: Keys, config: RelayConfig, log: Any, interval: float = INTERVAL_S
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.ratio = config.server.shed_memory_ratio
        self.allow_eviction = config.allow_redis_eviction
        self.timeout = config.server.redis_timeout
        self.interval = interval
        self.log = log
        self.state: MemoryState | None = None  # the last reading; None: never read
        self._stored_bytes = 0  # estimated bytes stored since that reading
        self._oom = False  # a write was refused as out of memory since that reading
        self._unavailable: dict[str, int] = {}  # source -> 503s not yet added to Redis
        self._last_policy: str | None = None
        self._last_code: str | None = None

    # --- called per webhook: memory only --------------------------------------------------

    def verdict(self) -> Shed | None:
        """Shed now (and why), or None to accept."""
        if self._oom:
            return Shed("redis_out_of_memory", "Redis refused a write as out of memory")
        state = self.state
        if state is None:
            return None  # never read: Redis itself will say (503 on error) until it is
        if state.evicting and not self.allow_eviction:
            return Shed("redis_evicts", eviction_message(str(state.policy), allowed=False))
        detail = memory_message(state, self.ratio, self._stored_bytes)
        return Shed("redis_memory_high", detail) if detail else None

    def warning(self) -> str | None:
        """Something an operator must fix that does not stop the ingress (an allowed policy)."""
        state = self.state
        if state is not None and state.evicting and self.allow_eviction:
            return eviction_message(str(state.policy), allowed=True)
        return None

    def stored(self, body_bytes: int) -> None:
        self._stored_bytes += STORE_BODY_FACTOR * body_bytes + STORE_OVERHEAD_BYTES

    def out_of_memory(self) -> None:
        self._oom = True

    def unavailable(self, source: str) -> None:
        """Count one 503 for a configured source (names are bounded, so is the stats hash)."""
        self._unavailable[source] = self._unavailable.get(source, 0) + 1

    def pending_unavailable(self) -> int:
        return sum(self._unavailable.values())

    # --- the background task ----------------------------------------------------------------

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.refresh()
            except Exception:  # the monitor must outlive any one bad tick
                self.log.exception("memory monitor tick failed")

    async def refresh(self) -> MemoryState | None:
        """Read the memory state and add the counted 503s; the reading, or None when Redis
        did not answer (the previous verdict stands until it does)."""
        state = await self._read()
        await self.flush()
        await self._sync_clock()
        return state

    async def _sync_clock(self) -> None:
        """Keep relay.clock (received_at, rejection times, provider timestamp tolerance) on
        Redis's time, whatever this host's clock says."""
        try:
            async with asyncio.timeout(self.timeout):
                await CLOCK.sync(self.redis)
        except (RedisError, OSError, TimeoutError):
            return  # the last offset stands

    async def _read(self) -> MemoryState | None:
        counted = self._stored_bytes  # stores finishing during the read stay counted
        try:
            async with asyncio.timeout(self.timeout):
                state = await read_memory(self.redis)
        except (RedisError, OSError, TimeoutError):
            return None
        self._stored_bytes -= counted
        self._oom = False
        self.state = state
        self._log_changes(state)
        return state

    async def flush(self) -> None:
        """Add the 503s counted in memory to the stats hash, all or nothing (MULTI), so a
        failed flush is retried whole. A timeout after Redis applied it may count twice."""
        counts = dict(self._unavailable)
        if not counts:
            return
        try:
            async with asyncio.timeout(self.timeout):
                async with self.redis.pipeline(transaction=True) as pipe:
                    for source, n in counts.items():
                        pipe.hincrby(self.keys.stats, inbound_stat(source, UNAVAILABLE), n)
                    await pipe.execute()
        except (RedisError, OSError, TimeoutError):
            return  # kept: the next tick tries again
        for source, n in counts.items():
            left = self._unavailable.get(source, 0) - n
            if left > 0:
                self._unavailable[source] = left
            else:
                self._unavailable.pop(source, None)

    def _log_changes(self, state: MemoryState) -> None:
        """Log a policy or a shedding change once, not every second."""
        if state.policy != self._last_policy:
            self._last_policy = state.policy
            if state.policy is None:
                self.log.warning(
                    "cannot read Redis maxmemory-policy (INFO memory gave none): "
                    "not checked; make sure it is noeviction"
                )
            elif state.evicting:
                self.log.error(
                    "redis may evict queued webhooks",
                    policy=state.policy,
                    detail=eviction_message(state.policy, self.allow_eviction),
                )
        shed = self.verdict()
        code = shed.code if shed else None
        if code != self._last_code:
            self._last_code = code
            if shed:
                self.log.error(
                    "ingress shedding: answering 503",
                    reason=shed.code,
                    detail=shed.detail,
                    fraction=state.fraction,
                )
            else:
                self.log.info("ingress accepting again", fraction=state.fraction)
